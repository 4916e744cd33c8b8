//! Connecting to the configured topology, and one connection type for all of them.

use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, RedisFuture, Value};

/// Why a Redis URL or connection was refused at start-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not one of the supported forms. The message never repeats the URL, which
    /// may hold a password.
    #[error("SESSIOND_REDIS_URL: {0}")]
    InvalidUrl(String),
    /// A setting cannot be used with this deployment (the message names the setting).
    #[error("{0}")]
    InvalidOption(String),
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
    /// A primary and its replicas found through Sentinel and followed across failovers:
    /// `redis-sentinel://[user:password@]host:port,host:port[/db]?service=mymaster`. The
    /// credentials and db are those of the data nodes.
    Sentinel {
        /// The sentinels, in the order they are asked.
        sentinels: Vec<(String, u16)>,
        /// The monitored master's name.
        service: String,
        /// A URL of the data nodes without host (`redis://user:password@_/db`), for the
        /// resolved primary and replicas.
        node_url: String,
    },
}

impl Topology {
    /// Parses a `SESSIOND_REDIS_URL`.
    pub fn parse(url: &str) -> Result<Topology, ConnectError> {
        let invalid = |why: &str| ConnectError::InvalidUrl(why.to_owned());
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("missing scheme"))?;
        match scheme {
            "redis" | "rediss" => Ok(Topology::Standalone(url.to_owned())),
            "redis-cluster" | "rediss-cluster" => {
                let node_scheme = if scheme == "rediss-cluster" {
                    "rediss"
                } else {
                    "redis"
                };
                let (auth, hosts) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let hosts = hosts.trim_end_matches('/');
                let nodes: Vec<String> = hosts
                    .split(',')
                    .filter(|h| !h.is_empty())
                    .map(|h| format!("{node_scheme}://{auth}{h}"))
                    .collect();
                if nodes.is_empty() {
                    return Err(invalid("redis-cluster:// needs at least one host:port"));
                }
                Ok(Topology::Cluster(nodes))
            }
            "redis-sentinel" | "rediss-sentinel" => {
                let node_scheme = if scheme == "rediss-sentinel" {
                    "rediss"
                } else {
                    "redis"
                };
                let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
                let service = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("service="))
                    .unwrap_or("mymaster")
                    .to_owned();
                let (auth, rest) = match rest.rsplit_once('@') {
                    Some((auth, hosts)) => (format!("{auth}@"), hosts),
                    None => (String::new(), rest),
                };
                let (hosts, db) = rest.split_once('/').unwrap_or((rest, ""));
                let mut sentinels = Vec::new();
                for h in hosts.split(',').filter(|h| !h.is_empty()) {
                    let (host, port) = h
                        .rsplit_once(':')
                        .ok_or_else(|| invalid("sentinels are host:port"))?;
                    let port = port
                        .parse()
                        .map_err(|_| invalid("a sentinel port is not a number"))?;
                    sentinels.push((host.to_owned(), port));
                }
                if sentinels.is_empty() || service.is_empty() {
                    return Err(invalid(
                        "redis-sentinel:// needs host:port of sentinels and ?service=",
                    ));
                }
                // Parse once now so a bad db or credential stops start-up.
                let node_url = format!("{node_scheme}://{auth}sentinel-resolved-host/{db}");
                redis::Client::open(node_url.as_str())
                    .map_err(|_| invalid("the credentials or db of the data nodes are invalid"))?;
                Ok(Topology::Sentinel {
                    sentinels,
                    service,
                    node_url,
                })
            }
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
            Topology::Sentinel { .. } => "sentinel",
        }
    }
}

/// A connection to one node or to the cluster. Cheap to clone: clones share the underlying
/// multiplexed connection.
#[derive(Clone)]
pub(crate) enum Connection {
    /// Reconnects to its address by itself (a fixed primary, a replica).
    Managed(ConnectionManager),
    /// One connection to a resolved address (a Sentinel-resolved primary); replaced, not
    /// reconnected, when it fails, because the primary may have moved.
    Multiplexed(MultiplexedConnection),
    /// The cluster, routing by key and following MOVED/ASK.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Connection::Managed(_) => f.write_str("Connection::Managed"),
            Connection::Multiplexed(_) => f.write_str("Connection::Multiplexed"),
            Connection::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

/// Connection info of `host:port` with the credentials and db of `template`.
pub(crate) fn node_info(template: &ConnectionInfo, host: &str, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: *insecure,
            tls_params: None,
        },
        _ => ConnectionAddr::Tcp(host.to_owned(), port),
    };
    template.clone().set_addr(addr)
}

/// Certificate authorities trusted for TLS to Redis: a PEM bundle, or the system's roots.
#[derive(Clone, Default)]
pub struct TlsRoots(pub Option<Vec<u8>>);

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TlsRoots(configured)"
        } else {
            "TlsRoots(system)"
        })
    }
}

impl TlsRoots {
    fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: self.0.clone(),
        }
    }
}

/// A client for one node; TLS addresses trust `roots`.
pub(crate) fn client(info: ConnectionInfo, roots: &TlsRoots) -> redis::RedisResult<redis::Client> {
    match info.addr() {
        ConnectionAddr::TcpTls { .. } => {
            install_crypto_provider();
            redis::Client::build_with_tls(info, roots.certificates())
        }
        _ => redis::Client::open(info),
    }
}

/// rustls needs one process-wide crypto provider; sessiond uses ring.
fn install_crypto_provider() {
    // Fails only when a provider is installed already, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A self-reconnecting connection to one node, made lazily.
pub(crate) fn managed(
    info: ConnectionInfo,
    roots: &TlsRoots,
    timeout: Duration,
) -> Result<Connection, redis::RedisError> {
    let client = client(info, roots)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500));
    Ok(Connection::Managed(
        ConnectionManager::new_lazy_with_config(client, config)?,
    ))
}

/// One multiplexed connection to a node, established now.
pub(crate) async fn multiplexed(
    info: ConnectionInfo,
    roots: &TlsRoots,
    timeout: Duration,
) -> Result<Connection, redis::RedisError> {
    let client = client(info, roots)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    Ok(Connection::Multiplexed(
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await?,
    ))
}

/// A RESP3 connection to one node whose out-of-band pushes (the near cache's invalidations,
/// and a `disconnection` when it fails) go to `pushes`, in order with its replies: a push
/// Redis wrote before a reply reaches `pushes` before that reply reaches its caller.
pub(crate) async fn tracking(
    info: ConnectionInfo,
    roots: &TlsRoots,
    timeout: Duration,
    pushes: impl redis::aio::AsyncPushSender,
) -> Result<MultiplexedConnection, redis::RedisError> {
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let client = client(info.set_redis_settings(settings), roots)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_push_sender(pushes);
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Connects to a cluster; it needs one reachable node to learn its slots.
pub(crate) async fn cluster(
    nodes: &[String],
    roots: &TlsRoots,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str));
    if nodes.iter().any(|n| n.starts_with("rediss://")) {
        install_crypto_provider();
        builder = builder.certs(roots.certificates());
    }
    let client = builder
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

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(c) => c.req_packed_command(cmd),
            Connection::Multiplexed(c) => c.req_packed_command(cmd),
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
            Connection::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Multiplexed(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(c) => c.get_db(),
            Connection::Multiplexed(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether an error means the primary may have moved or gone: drop the connection and find
/// the primary again (Sentinel client rules: re-resolve on reconnect, `READONLY` means now).
pub(crate) fn means_primary_moved(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

/// Maps a client error to the store's error kinds: anything that says "Redis is not there or
/// not able to serve right now" is unavailable (503, retry), the rest is internal.
///
/// redis-rs's own [`retry_method`](redis::RedisError::retry_method) says which failures a
/// retry can cure (I/O, a dropped connection, `LOADING`, `MASTERDOWN`, `TRYAGAIN`,
/// `CLUSTERDOWN`, `READONLY`, redirects, a failed `AUTH`). On top of those, sessiond fails
/// closed with 503 on the answers that mean this Redis cannot take the request now, though
/// retrying at once would not help: a full Redis (`OOM`, with `noeviction`), too few replicas
/// (`NOREPLICAS`), a busy script (`BUSY`), and a refused password or ACL permission, so that
/// `/readyz` reports the store unusable rather than a request failing as a bug.
pub(crate) fn store_error(e: redis::RedisError) -> sessiond_core::StoreError {
    use sessiond_core::StoreError;
    if e.is_timeout() {
        return StoreError::Timeout;
    }
    // A reply sessiond cannot read (a script's reply of the wrong shape, see `replies`) is
    // sessiond's bug, not the store's absence; redis-rs would reconnect, sessiond fails it.
    if e.kind() == redis::ErrorKind::Parse {
        return StoreError::internal(e);
    }
    let retryable = !matches!(e.retry_method(), redis::RetryMethod::NoRetry);
    let cannot_serve_now = matches!(
        e.code(),
        Some("OOM" | "NOREPLICAS" | "BUSY" | "WRONGPASS" | "NOAUTH" | "NOPERM")
    );
    if retryable || cannot_serve_now || e.is_connection_refusal() || e.is_cluster_error() {
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
        let Topology::Sentinel {
            sentinels, service, ..
        } = Topology::parse("redis-sentinel://:pw@a:1,b:2/0?service=m").unwrap()
        else {
            panic!("a sentinel topology")
        };
        assert_eq!(sentinels, vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);
        assert_eq!(service, "m");
        let e = Topology::parse("memcached://:secret@a:1").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert_eq!(
            Topology::parse("rediss-cluster://a:1").unwrap(),
            Topology::Cluster(vec!["rediss://a:1".into()])
        );
    }
}
