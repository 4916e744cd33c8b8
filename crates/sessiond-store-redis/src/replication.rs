//! A primary with read replicas: where writes and reads go, and how a write is made visible on
//! every read path before it is acknowledged.
//!
//! - Writes go to the primary: fixed for `redis://`, found through Sentinel for
//!   `redis-sentinel://` (and found again whenever it fails or answers `READONLY`).
//! - Validations read from a replica when configured, round-robin, and fall back to the
//!   primary on an error. A miss is an answer: the write that created a session was made
//!   visible on every readable replica before it was acknowledged (below).
//! - After every write but a touch, `WAIT` asks every replica to acknowledge it. A replica
//!   that does not acknowledge within the sync timeout is *fenced*: no read goes to it until
//!   its acknowledged offset reaches the write's. The fence is also recorded on the primary
//!   (`<prefix>fence:<host>:<port>`), where every other sessiond process's refresher reads it,
//!   and the write waits one refresh interval before it answers. So once a logout, revoke or
//!   rotation has answered, no replica any sessiond process reads from still holds the old
//!   session (a process whose refresher has stalled for longer than that is the exception;
//!   `docs/design.md` discusses it).
//! - A background task refreshes the replica list from `ROLE` on the primary every
//!   [`REFRESH_INTERVAL`], connects new replicas, drops departed ones and lifts fences.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::{ConnectionInfo, Value};
use sessiond_core::StoreError;

use crate::connection::{ConnectError, Connection, TlsRoots, managed, node_info, store_error};
use crate::primary::PrimarySource;
use crate::scripts::FENCE;

/// How often replicas are rediscovered and fences re-checked.
pub(crate) const REFRESH_INTERVAL: Duration = Duration::from_millis(200);

/// How long a write that fenced a replica waits before it answers, so that every other
/// sessiond process's refresher has read the shared fence record (one refresh and a margin).
const FENCE_PROPAGATION: Duration = Duration::from_millis(250);

/// How long a shared fence record lives: far longer than any refresh interval, so every
/// process reads it; each then keeps its own fence until the replica catches up.
const FENCE_RECORD_TTL_MS: u64 = 60_000;

/// One read replica.
#[derive(Debug, Clone)]
struct Replica {
    addr: (String, u16),
    conn: Connection,
    /// The primary offset this replica must acknowledge before it is read again.
    fence: Option<i64>,
}

/// Settings of a replicated deployment.
#[derive(Debug, Clone)]
pub(crate) struct ReplicationOptions {
    /// Trusted roots for TLS to replicas.
    pub(crate) roots: TlsRoots,
    /// Key prefix of the shared fence records (`<prefix>fence:<host>:<port>`).
    pub(crate) fence_prefix: String,
    /// Read validations from replicas.
    pub(crate) read_from_replicas: bool,
    /// How long a write waits for replicas to acknowledge it.
    pub(crate) sync_timeout: Duration,
    /// Acknowledgements a durable write (create, rotate, revoke) needs; 0 for none.
    pub(crate) min_acks: usize,
    /// Timeout of every Redis call.
    pub(crate) timeout: Duration,
}

/// A primary and its replicas.
#[derive(Debug)]
pub(crate) struct Replicated {
    primary: PrimarySource,
    node: ConnectionInfo,
    replicas: RwLock<Vec<Replica>>,
    next: AtomicUsize,
    options: ReplicationOptions,
}

/// Parsed `ROLE` of a primary: its offset and each replica's address and acknowledged offset.
struct Role {
    offset: i64,
    replicas: Vec<((String, u16), i64)>,
}

fn parse_role(v: &Value) -> Option<Role> {
    let Value::Array(items) = v else { return None };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let number = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        other => text(other).and_then(|s| s.parse().ok()),
    };
    if text(items.first()?)? != "master" {
        return None;
    }
    let offset = number(items.get(1)?)?;
    let mut replicas = Vec::new();
    if let Some(Value::Array(list)) = items.get(2) {
        for r in list {
            let Value::Array(f) = r else { continue };
            let (Some(host), Some(port), Some(acked)) = (
                f.first().and_then(text),
                f.get(1)
                    .and_then(number)
                    .and_then(|p| u16::try_from(p).ok()),
                f.get(2).and_then(number),
            ) else {
                continue;
            };
            replicas.push(((host, port), acked));
        }
    }
    Some(Role { offset, replicas })
}

impl Replicated {
    /// Sets up the deployment and starts its refresher (stopped when the store is dropped).
    pub(crate) fn start(
        primary: PrimarySource,
        node: ConnectionInfo,
        options: ReplicationOptions,
    ) -> Arc<Self> {
        let this = Arc::new(Replicated {
            primary,
            node,
            replicas: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            options,
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(refresh_loop(weak));
        this
    }

    /// The primary's connection (resolving it through Sentinel if needed).
    pub(crate) async fn primary(&self) -> Result<Connection, StoreError> {
        self.primary.connection().await
    }

    /// Where the primary is, and the engine's connection count (see `primary`).
    pub(crate) async fn primary_address(&self) -> Result<(redis::ConnectionInfo, u64), StoreError> {
        self.primary.address().await
    }

    /// The certificate authorities trusted for TLS to the nodes.
    pub(crate) fn tls_roots(&self) -> &TlsRoots {
        &self.options.roots
    }

    /// Makes the engine find the primary again on its next call.
    pub(crate) fn primary_forget(&self) {
        self.primary.forget();
    }

    /// The engine's primary connection count now.
    pub(crate) fn primary_generation(&self) -> u64 {
        self.primary.generation()
    }

    /// Notes a failed primary call: a moved or failed primary is found again next time.
    pub(crate) fn primary_failed(&self, e: &redis::RedisError) {
        self.primary.failed(e);
    }

    /// Whether validations read from replicas.
    pub(crate) fn reads_from_replicas(&self) -> bool {
        self.options.read_from_replicas
    }

    /// The replicas to read from now, starting with the next in turn; fenced ones left out.
    pub(crate) fn readable_replicas(&self) -> Vec<Connection> {
        let replicas = self
            .replicas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open: Vec<&Replica> = replicas.iter().filter(|r| r.fence.is_none()).collect();
        if open.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % open.len();
        open.iter()
            .cycle()
            .skip(start)
            .take(open.len())
            .map(|r| r.conn.clone())
            .collect()
    }

    /// Makes a write just done on `conn` visible on every read path before it is acknowledged:
    /// waits for every replica, fences those that did not acknowledge, and, for a `durable`
    /// write, fails unless enough replicas acknowledged.
    pub(crate) async fn settle(
        &self,
        conn: &mut Connection,
        durable: bool,
    ) -> Result<(), StoreError> {
        // Fencing matters only when validations read from replicas.
        let expected = if self.options.read_from_replicas {
            self.replicas.read().map(|r| r.len()).unwrap_or(0)
        } else {
            0
        };
        let needed = if durable { self.options.min_acks } else { 0 };
        if expected == 0 && needed == 0 {
            return Ok(());
        }
        let wait_ms = u64::try_from(self.options.sync_timeout.as_millis()).unwrap_or(u64::MAX);
        let acked: i64 = tokio::time::timeout(
            self.options.timeout + self.options.sync_timeout,
            redis::cmd("WAIT")
                .arg(expected.max(needed))
                .arg(wait_ms)
                .query_async(conn),
        )
        .await
        .map_err(|_| StoreError::Timeout)?
        .map_err(store_error)?;
        let acked = usize::try_from(acked).unwrap_or(0);
        if acked < expected {
            self.fence_laggards(conn, acked).await?;
        }
        if acked < needed {
            return Err(StoreError::unavailable(NotDurable { acked, needed }));
        }
        Ok(())
    }

    /// Fences the replicas that did not acknowledge the write `WAIT` just counted `acked`
    /// acknowledgements for.
    ///
    /// `ROLE` gives each replica's acknowledged offset but not the write's own offset (the
    /// primary's offset has moved on, if only by `WAIT`'s own `GETACK`). The `acked` replicas
    /// that acknowledged it are the `acked` highest offsets, so every replica below the
    /// lowest of those did not: it is fenced until it reaches that offset, which covers the
    /// write.
    async fn fence_laggards(&self, conn: &mut Connection, acked: usize) -> Result<(), StoreError> {
        let role: Value =
            tokio::time::timeout(self.options.timeout, redis::cmd("ROLE").query_async(conn))
                .await
                .map_err(|_| StoreError::Timeout)?
                .map_err(store_error)?;
        let Some(role) = parse_role(&role) else {
            // Not a primary any more: fence every replica until the refresher sees a primary.
            self.fence_all(i64::MAX);
            return Ok(());
        };
        let mut offsets: Vec<i64> = role.replicas.iter().map(|(_, o)| *o).collect();
        offsets.sort_unstable_by(|a, b| b.cmp(a));
        let target = match acked {
            0 => role.offset,
            n => offsets.get(n - 1).copied().unwrap_or(role.offset),
        };
        let mut fenced = Vec::new();
        {
            let mut replicas = self
                .replicas
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in replicas.iter_mut() {
                let acked = role
                    .replicas
                    .iter()
                    .find(|(a, _)| *a == r.addr)
                    .map(|(_, o)| *o);
                if acked.is_none_or(|o| o < target) {
                    tracing::warn!(replica = %format!("{}:{}", r.addr.0, r.addr.1), "replica did not acknowledge a write in time; not reading from it until it catches up");
                    r.fence = Some(r.fence.map_or(target, |f| f.max(target)));
                    fenced.push(r.addr.clone());
                }
            }
        }
        if fenced.is_empty() {
            return Ok(());
        }
        // Tell every other sessiond process: a record on the primary that their refreshers
        // read, then wait until they have, so no process reads the lagging replica after this
        // write has been acknowledged.
        for addr in &fenced {
            let key = self.fence_key(addr);
            let published = tokio::time::timeout(
                self.options.timeout,
                FENCE
                    .key(key)
                    .arg(target)
                    .arg(FENCE_RECORD_TTL_MS)
                    .invoke_async::<i64>(conn),
            )
            .await;
            if !matches!(published, Ok(Ok(_))) {
                return Err(StoreError::unavailable(
                    "could not record a replica fence on the primary",
                ));
            }
        }
        tokio::time::sleep(FENCE_PROPAGATION).await;
        Ok(())
    }

    fn fence_key(&self, addr: &(String, u16)) -> String {
        format!("{}{}:{}", self.options.fence_prefix, addr.0, addr.1)
    }

    fn fence_all(&self, offset: i64) {
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in replicas.iter_mut() {
            r.fence = Some(offset);
        }
    }

    /// One refresh: the replica list and fences from the primary's `ROLE`.
    async fn refresh(&self) {
        let Ok(mut conn) = self.primary().await else {
            return;
        };
        let role = tokio::time::timeout(
            self.options.timeout,
            redis::cmd("ROLE").query_async::<Value>(&mut conn),
        )
        .await;
        let role = match role {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                self.primary_failed(&e);
                return;
            }
            Err(_) => return,
        };
        let Some(role) = parse_role(&role) else {
            // A demoted primary: find the new one.
            if let PrimarySource::Sentinel(s) = &self.primary {
                s.invalidate();
            }
            return;
        };
        // Fences other processes recorded (see `fence_laggards`).
        let shared: Vec<Option<i64>> = if role.replicas.is_empty() {
            Vec::new()
        } else {
            let keys: Vec<String> = role
                .replicas
                .iter()
                .map(|(a, _)| self.fence_key(a))
                .collect();
            let mut cmd = redis::cmd("MGET");
            cmd.arg(keys);
            match tokio::time::timeout(self.options.timeout, cmd.query_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                // Without the shared fences this refresh would be blind to them: skip it.
                _ => return,
            }
        };
        let mut replicas = self
            .replicas
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ((addr, acked), fence) in role.replicas.iter().zip(&shared) {
            let Some(fence) = *fence else { continue };
            if *acked >= fence {
                continue;
            }
            if let Some(r) = replicas.iter_mut().find(|r| r.addr == *addr) {
                r.fence = Some(r.fence.map_or(fence, |f| f.max(fence)));
            }
        }
        // A replica the primary no longer lists is not replicating: stop reading from it. If
        // it comes back, it is added again below, fenced until it has caught up.
        replicas.retain(|r| role.replicas.iter().any(|(a, _)| *a == r.addr));
        for r in replicas.iter_mut() {
            // A replica fenced while no primary could be seen waits for the primary's offset.
            if r.fence == Some(i64::MAX) {
                r.fence = Some(role.offset);
            }
            if let (Some(fence), Some((_, acked))) =
                (r.fence, role.replicas.iter().find(|(a, _)| *a == r.addr))
                && *acked >= fence
            {
                r.fence = None;
                tracing::info!(replica = %format!("{}:{}", r.addr.0, r.addr.1), "replica caught up; reading from it again");
            }
        }
        for (addr, acked) in &role.replicas {
            if replicas.iter().any(|r| r.addr == *addr) {
                continue;
            }
            match managed(
                node_info(&self.node, &addr.0, addr.1),
                &self.options.roots,
                self.options.timeout,
            ) {
                Ok(conn) => {
                    // A replica joins readable only when it has everything written so far.
                    let fence = (*acked < role.offset).then_some(role.offset);
                    replicas.push(Replica {
                        addr: addr.clone(),
                        conn,
                        fence,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot set up a replica connection"),
            }
        }
    }
}

async fn refresh_loop(weak: Weak<Replicated>) {
    let mut tick = tokio::time::interval(REFRESH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(this) = weak.upgrade() else { return };
        this.refresh().await;
    }
}

/// A durable write was acknowledged by too few replicas.
#[derive(Debug, thiserror::Error)]
#[error("only {acked} of the {needed} required replicas acknowledged the write in time")]
pub(crate) struct NotDurable {
    acked: usize,
    needed: usize,
}

/// Connection info of the data nodes from a URL.
pub(crate) fn node_template(url: &str) -> Result<ConnectionInfo, ConnectError> {
    redis::IntoConnectionInfo::into_connection_info(url).map_err(ConnectError::Redis)
}
