//! Where each command goes: the primary (fixed, or found through Sentinel) and how far a write
//! must reach before it is acknowledged, or a replica for a validation's read, or the Cluster.
//! One store call is one function here; the trait impl in the crate root only says which.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands as _;
use sessiond_core::{SessionId, SessionRecord, StoreError, Timestamp};

use crate::RedisStore;
use crate::codec::decode_with;
use crate::connection::{Connection, store_error};
use crate::replication::Replicated;

/// `f`, failed as timed out past `timeout` (so a hung node fails like an unreachable one).
pub(crate) async fn timed<T>(
    timeout: Duration,
    f: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(timeout, f).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "Redis did not answer in time",
        )))
    })
}

/// Pause between read attempts when every node failed.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Where commands go.
#[derive(Debug)]
pub(crate) enum Backend {
    /// A primary (fixed or found through Sentinel) with its replicas.
    Replicated(Arc<Replicated>),
    /// A cluster: the client routes by key; reads go to primaries.
    Cluster(Connection),
}

/// How far a write must reach before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The primary is enough (touches: losing one only ages `lastActivity`).
    Primary,
    /// Every read path, so the next request sees it (patches).
    Visible,
    /// Every read path, and the configured number of replica acknowledgements (create,
    /// rotate, revoke).
    Durable,
}

impl RedisStore {
    /// Runs `f` on the primary (the cluster) with the store's timeout, then makes the write
    /// reach as far as `reach` says.
    pub(crate) async fn call_reaching<T, F>(
        &self,
        reach: Reach,
        f: impl FnOnce(Connection) -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        match &self.backend {
            Backend::Cluster(conn) => self.timed(f(conn.clone())).await.map_err(store_error),
            Backend::Replicated(r) => {
                let conn = r.primary().await?;
                let mut same = conn.clone();
                let value = match self.timed(f(conn)).await {
                    Ok(v) => v,
                    Err(e) => {
                        r.primary_failed(&e);
                        return Err(store_error(e));
                    }
                };
                if reach != Reach::Primary {
                    r.settle(&mut same, reach == Reach::Durable).await?;
                }
                Ok(value)
            }
        }
    }

    /// Runs `f` on the primary (the cluster): reads and index upkeep.
    pub(crate) async fn call<T, F>(&self, f: impl FnOnce(Connection) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.call_reaching(Reach::Primary, f).await
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        timed(self.timeout, f).await
    }

    /// The record of `id` if it is live at `now`, with `userData` decoded or left empty.
    pub(crate) async fn load_live(
        &self,
        id: &SessionId,
        now: Timestamp,
        user_data: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let Some(bytes) = self.read_record(self.keys.record(id)).await? else {
            return Ok(None);
        };
        let record = decode_with(id, &bytes, user_data)?;
        Ok(record.is_live(now).then_some(record))
    }

    /// `GET` on the primary, bounded by redis-rs's response timeout alone (one command).
    async fn get_on_primary(
        &self,
        r: &Replicated,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = r.primary().await?;
        conn.get(key).await.map_err(|e| {
            r.primary_failed(&e);
            store_error(e)
        })
    }

    /// The stored bytes of a record: from a replica when reads go there, else from the
    /// primary. A replica's miss is the answer: every write is made visible on the readable
    /// replicas before it is acknowledged (a replica that misses one is fenced), so an unknown
    /// token costs one read, not two (D14). Failed attempts are retried on the other nodes
    /// until the store's timeout, so a replica or primary connection killed by a failover does
    /// not fail a validation that another node can answer.
    async fn read_record(&self, key: String) -> Result<Option<Vec<u8>>, StoreError> {
        let Backend::Replicated(r) = &self.backend else {
            return self.call(|mut c| async move { c.get(key).await }).await;
        };
        let start = tokio::time::Instant::now();
        let deadline = start + self.timeout;
        let mut last = None;
        loop {
            let mut replicas_failed = false;
            if r.reads_from_replicas() {
                for mut conn in r.readable_replicas() {
                    // One command: redis-rs's response timeout (`redis.timeout`) bounds it, so
                    // the hot path arms no second timer.
                    match conn.get::<_, Option<Vec<u8>>>(&key).await {
                        Ok(v) => return Ok(v),
                        Err(e) => {
                            replicas_failed = true;
                            last = Some(store_error(e));
                        }
                    }
                }
            }
            // Replicas that fail are usually reconnecting (Sentinel kills their clients during
            // a failover), while a primary that fails at the same time can take the whole
            // budget to find again. So while replicas fail, retry them for half the budget
            // before asking the primary.
            let ask_primary =
                !replicas_failed || tokio::time::Instant::now() >= start + self.timeout / 2;
            if ask_primary {
                match self.get_on_primary(r, &key).await {
                    Ok(v) => return Ok(v),
                    Err(e) if e.is_unavailable() => last = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(last.unwrap_or(StoreError::Timeout));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}
