//! Connecting to the configured topology, and one connection type for all of them.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Value};

/// Why a Redis URL or connection was refused at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not one of the supported forms. The message never repeats the URL, which
    /// may hold a password.
    #[error("SESSIOND_REDIS_URL: {0}")]
    InvalidUrl(String),
    /// The client could not be set up or the cluster could not be reached.
    #[error("connecting to Redis")]
    Redis(#[source] redis::RedisError),
}

/// The deployments sessiond can run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: `redis://[user:password@]host:port[/db]`.
    Standalone(String),
    /// A Redis Cluster, seeded from any of its nodes:
    /// `redis-cluster://[user:password@]host:port,host:port`.
    Cluster(Vec<String>),
}

impl Topology {
    /// Parses a `SESSIOND_REDIS_URL`.
    pub fn parse(url: &str) -> Result<Topology, ConnectError> {
        let invalid = |why: &str| ConnectError::InvalidUrl(why.to_owned());
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("missing scheme"))?;
        match scheme {
            "redis" => Ok(Topology::Standalone(url.to_owned())),
            "redis-cluster" => {
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let hosts = hosts.trim_end_matches('/');
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("redis://{auth}{h}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(invalid("redis-cluster:// needs at least one host:port"));
                }
                Ok(Topology::Cluster(nodes))
            }
            "rediss" | "rediss-cluster" | "rediss-sentinel" => {
                Err(invalid("TLS (rediss) is not available in this build yet"))
            }
            "redis-sentinel" => Err(invalid("Sentinel is not available in this build yet")),
            _ => Err(invalid(
                "the scheme must be redis, redis-cluster or redis-sentinel",
            )),
        }
    }

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Topology::Standalone(_) => "standalone",
            Topology::Cluster(_) => "cluster",
        }
    }
}

/// A multiplexed, self-reconnecting connection to the topology. Cheap to clone: clones share
/// the underlying connections.
#[derive(Clone)]
pub(crate) enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connection::Standalone(_) => f.write_str("Connection::Standalone"),
            Connection::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl Connection {
    /// Connects. A standalone connection is made lazily, so sessiond starts (and reports
    /// not-ready) while Redis is down; a cluster needs one reachable node to learn its slots.
    pub(crate) async fn open(topology: &Topology, timeout: Duration) -> Result<Self, ConnectError> {
        match topology {
            Topology::Standalone(url) => {
                let client = redis::Client::open(url.as_str()).map_err(ConnectError::Redis)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(ConnectError::Redis)?;
                Ok(Connection::Standalone(manager))
            }
            Topology::Cluster(nodes) => {
                let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .build()
                    .map_err(ConnectError::Redis)?;
                let conn = client
                    .get_async_connection()
                    .await
                    .map_err(ConnectError::Redis)?;
                Ok(Connection::Cluster(conn))
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Maps a client error to the store's error kinds: anything that says "Redis is not there or
/// not able to serve right now" is unavailable (503, retry), the rest is internal.
pub(crate) fn store_error(e: redis::RedisError) -> sessiond_core::StoreError {
    use sessiond_core::StoreError;
    if e.is_timeout() {
        return StoreError::Timeout;
    }
    let transient_code = matches!(
        e.code(),
        Some(
            "OOM"
                | "LOADING"
                | "MASTERDOWN"
                | "READONLY"
                | "TRYAGAIN"
                | "CLUSTERDOWN"
                | "BUSY"
                | "NOREPLICAS"
                | "MOVED"
                | "ASK"
        )
    );
    if transient_code
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
    {
        StoreError::unavailable(e)
    } else {
        StoreError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            Topology::parse("redis://:pw@127.0.0.1:6379/0").unwrap(),
            Topology::Standalone("redis://:pw@127.0.0.1:6379/0".into())
        );
        assert_eq!(
            Topology::parse("redis-cluster://u:p@a:1,b:2").unwrap(),
            Topology::Cluster(vec!["redis://u:p@a:1".into(), "redis://u:p@b:2".into()])
        );
        for bad in ["", "127.0.0.1:6379", "http://x", "redis-cluster://"] {
            assert!(Topology::parse(bad).is_err(), "{bad}");
        }
        let e = Topology::parse("redis-sentinel://:secret@a:1/?service=m").unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }
}
