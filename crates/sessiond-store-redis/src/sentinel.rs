//! Finding the primary through Sentinel, following the Sentinel client rules: ask the
//! sentinels in turn with a short timeout and move the one that answered to the front; check
//! `ROLE` on the address it gives; find the primary again after any connection failure or
//! `READONLY`, never trusting a cached address after a reconnect.

use std::sync::Mutex;
use std::time::Duration;

use redis::{ConnectionInfo, Value};
use sessiond_core::StoreError;

use crate::connection::{Connection, TlsRoots, multiplexed, node_info};
use crate::primary::CachedConnection;

/// Timeout of one question to one sentinel.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(300);
/// Pause before asking again when the address given is not (yet) a primary.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why the primary could not be found (R9: which case it is).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolveError {
    /// No sentinel answered.
    #[error("no sentinel could be reached")]
    SentinelsUnreachable,
    /// The sentinels answered but do not know the service.
    #[error("the sentinels know no master named {0:?}")]
    UnknownService(String),
    /// The address the sentinels gave is not a primary (a failover is under way).
    #[error("the address the sentinels gave is not a primary yet")]
    NotPrimary,
}

/// The primary of a Sentinel-managed deployment.
#[derive(Debug)]
pub(crate) struct SentinelPrimary {
    /// Sentinels, the last one that answered first.
    sentinels: Mutex<Vec<(String, u16)>>,
    service: String,
    node: ConnectionInfo,
    roots: TlsRoots,
    /// The primary's connection; one resolution at a time, callers that wait share it.
    connection: CachedConnection,
    /// The address the current connection was opened to.
    resolved: Mutex<Option<ConnectionInfo>>,
    timeout: Duration,
}

impl SentinelPrimary {
    pub(crate) fn new(
        sentinels: Vec<(String, u16)>,
        service: String,
        node: ConnectionInfo,
        roots: TlsRoots,
        timeout: Duration,
    ) -> Self {
        SentinelPrimary {
            sentinels: Mutex::new(sentinels),
            service,
            node,
            roots,
            connection: CachedConnection::default(),
            resolved: Mutex::new(None),
            timeout,
        }
    }

    /// Forgets the primary; the next call finds it again.
    pub(crate) fn invalidate(&self) {
        self.connection.invalidate();
    }

    /// The address the current connection was opened to, and the connection count.
    pub(crate) fn address(&self) -> Result<(ConnectionInfo, u64), StoreError> {
        let resolved = self
            .resolved
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        resolved
            .map(|info| (info, self.connection.opened()))
            .ok_or_else(|| StoreError::unavailable("the Redis primary is not found yet"))
    }

    /// How many primary connections have been opened.
    pub(crate) fn generation(&self) -> u64 {
        self.connection.opened()
    }

    /// A connection to the current primary.
    pub(crate) async fn connection(&self) -> Result<Connection, StoreError> {
        self.connection
            .get_or_open(|| async {
                let deadline = tokio::time::Instant::now() + self.timeout;
                loop {
                    match self.resolve().await {
                        Ok(conn) => return Ok(conn),
                        Err(e) if tokio::time::Instant::now() + RETRY_PAUSE >= deadline => {
                            return Err(StoreError::unavailable(e));
                        }
                        Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
                    }
                }
            })
            .await
    }

    async fn resolve(&self) -> Result<Connection, ResolveError> {
        let (host, port) = self.ask_sentinels().await?;
        let info = node_info(&self.node, &host, port);
        let mut conn = multiplexed(info.clone(), &self.roots, self.timeout)
            .await
            .map_err(|_| ResolveError::NotPrimary)?;
        let role: Value =
            tokio::time::timeout(self.timeout, redis::cmd("ROLE").query_async(&mut conn))
                .await
                .map_err(|_| ResolveError::NotPrimary)?
                .map_err(|_| ResolveError::NotPrimary)?;
        match role {
            Value::Array(items) if matches!(items.first(), Some(Value::BulkString(b)) if b == b"master") =>
            {
                tracing::info!(primary = %format!("{host}:{port}"), "found the Redis primary through Sentinel");
                *self
                    .resolved
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(info);
                Ok(conn)
            }
            _ => Err(ResolveError::NotPrimary),
        }
    }

    async fn ask_sentinels(&self) -> Result<(String, u16), ResolveError> {
        let sentinels = self
            .sentinels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut unknown = false;
        for (i, (host, port)) in sentinels.iter().enumerate() {
            // Sentinels speak TLS when the data nodes do; they have no credentials or db.
            let Ok(plain) = redis::IntoConnectionInfo::into_connection_info(
                redis::ConnectionAddr::Tcp(host.clone(), *port),
            ) else {
                continue;
            };
            let info = node_info(&plain.set_addr(self.node.addr().clone()), host, *port);
            let Ok(mut conn) = multiplexed(info, &self.roots, SENTINEL_TIMEOUT).await else {
                continue;
            };
            let answer = tokio::time::timeout(
                SENTINEL_TIMEOUT,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.service)
                    .query_async::<Option<(String, u16)>>(&mut conn),
            )
            .await;
            match answer {
                Ok(Ok(Some(addr))) => {
                    if i > 0 {
                        let mut list = self
                            .sentinels
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        let answered = list.remove(i);
                        list.insert(0, answered);
                    }
                    return Ok(addr);
                }
                Ok(Ok(None)) => unknown = true,
                _ => {}
            }
        }
        if unknown {
            Err(ResolveError::UnknownService(self.service.clone()))
        } else {
            Err(ResolveError::SentinelsUnreachable)
        }
    }
}
