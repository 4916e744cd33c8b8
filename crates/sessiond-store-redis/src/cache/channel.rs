//! The invalidation channel: one RESP3 connection to the primary with `CLIENT TRACKING ON`,
//! on which the near cache sends its reads, receives Redis's invalidations, and proves with a
//! heartbeat that it has received all of them up to a recent moment.
//!
//! Redis remembers the keys each tracking connection read, and when one of them changes (a
//! script's write, an expiry, an eviction, a `FLUSHALL`, a full resync) it writes an
//! `invalidate` push into that connection's output, before the reply to any command it
//! processes later. redis-rs hands pushes to [`Channel::push`] in the order they arrive, before
//! later replies reach their callers. So when the reply to a heartbeat sent at instant `p`
//! has arrived, every invalidation for a write Redis applied before `p` has been applied to the
//! entries. [`Channel::fresh`] is true while the latest answered heartbeat was sent less than
//! the invalidation window ago; the store serves hits only then, and a write that must be seen
//! everywhere waits that window before it answers (`docs/design.md`, "The near cache").
//!
//! Default tracking mode, not `BCAST`: Redis sends only invalidations for keys this
//! connection read, so a process's invalidation traffic follows its own working set rather
//! than every write of every instance; and not `OPTIN`, because every read on this connection
//! is one the cache stores.
//!
//! Anything that puts the channel in doubt drops every entry and the connection (the next tick
//! opens a new one): a `disconnection` push (a reset or closed socket), a heartbeat not
//! answered within the store's timeout (a silently dead or paused connection), a node that
//! answers it is no longer the primary, the engine having opened a new primary connection (a
//! failover it followed), or a read that failed on the channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::time::Instant;

use super::Shared;
use crate::connection::tracking;
use crate::replication::Replicated;

/// The connection now, with the entries' epoch it serves.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) conn: MultiplexedConnection,
    pub(crate) epoch: u64,
    /// The engine's primary connection count when this channel was opened.
    generation: u64,
}

/// The channel's state, shared by the store and its maintenance task.
pub(crate) struct Channel {
    live: Mutex<Option<Live>>,
    /// Hits may be served until this instant (nanoseconds after `base`): the send time of
    /// the latest answered heartbeat plus the window. 0 while there is none.
    fresh_until: AtomicU64,
    base: Instant,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

impl Channel {
    pub(crate) fn new() -> Self {
        Channel {
            live: Mutex::new(None),
            fresh_until: AtomicU64::new(0),
            base: Instant::now(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether hits may be served now.
    pub(crate) fn fresh(&self) -> bool {
        self.nanos(Instant::now()) < self.fresh_until.load(Ordering::Acquire)
    }

    /// The connection, if one is open.
    pub(crate) fn live(&self) -> Option<Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the engine still uses the primary connection this channel was opened beside.
    pub(crate) fn follows(&self, live: &Live, replicated: &Replicated) -> bool {
        live.generation == replicated.primary_generation()
    }
}

impl Shared {
    /// Drops every entry, and the connection with them if it is the one of `epoch` (`None`:
    /// whichever is open). Hits stop until a heartbeat on a new connection is answered.
    pub(crate) fn doubt(&self, epoch: Option<u64>, why: &'static str) {
        let mut live = self
            .channel
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let (Some(e), Some(l)) = (epoch, live.as_ref())
            && l.epoch != e
        {
            // A connection already replaced: its doubt is not the current one's.
            return;
        }
        let had = live.take().is_some();
        self.channel.fresh_until.store(0, Ordering::Release);
        self.entries.flush();
        drop(live);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        if had {
            tracing::warn!(
                reason = why,
                "near cache flushed: its invalidation channel is in doubt"
            );
        }
    }

    /// Drops the channel and every entry at shutdown (no doubt to report).
    pub(crate) fn close_channel(&self) {
        let mut live = self
            .channel
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.take();
        self.channel.fresh_until.store(0, Ordering::Release);
        self.entries.flush();
    }

    /// Applies a push from the connection of `epoch`.
    fn push(&self, epoch: u64, info: &PushInfo) {
        match info.kind {
            PushKind::Invalidate => match info.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        if let Value::BulkString(key) = key
                            && let Ok(key) = std::str::from_utf8(key)
                            && self.entries.invalidate(key)
                        {
                            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // `FLUSHALL`, `FLUSHDB`, a full resync: every key may have changed.
                _ => self.doubt(Some(epoch), "Redis invalidated every key"),
            },
            PushKind::Disconnection => self.doubt(Some(epoch), "the connection closed"),
            _ => {}
        }
    }

    /// Opens a channel to the engine's primary: tracking on, entries flushed (they belong to no
    /// connection now), and the new epoch recorded.
    async fn open(self: &Arc<Self>) -> Result<(), redis::RedisError> {
        let replicated = &self.replicated;
        let (info, generation) = replicated
            .primary_address()
            .await
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
        // The epoch this connection will serve: the one after the flush below.
        let epoch = self.entries.epoch() + 1;
        let weak: Weak<Shared> = Arc::downgrade(self);
        let pushes = move |info: PushInfo| -> Result<(), ()> {
            if let Some(shared) = weak.upgrade() {
                shared.push(epoch, &info);
            }
            Ok(())
        };
        let opened = async {
            let mut conn = tracking(info, replicated.tls_roots(), self.timeout, pushes).await?;
            redis::cmd("CLIENT")
                .arg("TRACKING")
                .arg("ON")
                .query_async::<()>(&mut conn)
                .await?;
            Ok::<_, redis::RedisError>(conn)
        };
        let conn = match opened.await {
            Ok(conn) => conn,
            Err(e) => {
                // The node the engine calls the primary did not take the channel: if it is
                // gone, the engine finds the primary again (through Sentinel) on its next
                // call, which this also makes sooner.
                if crate::connection::means_primary_moved(&e) {
                    replicated.primary_forget();
                }
                return Err(e);
            }
        };
        let mut live = self
            .channel
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.entries.flush();
        if self.entries.epoch() != epoch {
            // Another flush raced this open; the next tick tries again.
            return Ok(());
        }
        *live = Some(Live {
            conn,
            epoch,
            generation,
        });
        Ok(())
    }

    /// One heartbeat on `live`: `ROLE`, sent now. Answered by the primary in time, it makes
    /// hits servable until its send time plus the window; anything else puts the channel in
    /// doubt.
    async fn heartbeat(&self, mut live: Live) {
        if !self.channel.follows(&live, &self.replicated) {
            self.doubt(
                Some(live.epoch),
                "the engine moved to a new primary connection",
            );
            return;
        }
        let sent = Instant::now();
        let role = tokio::time::timeout(
            self.timeout,
            redis::cmd("ROLE").query_async::<Value>(&mut live.conn),
        )
        .await;
        let primary = match role {
            Ok(Ok(Value::Array(items))) => {
                matches!(items.first(), Some(Value::BulkString(b)) if b == b"master")
            }
            Ok(Ok(_)) => false,
            Ok(Err(_)) | Err(_) => {
                self.doubt(Some(live.epoch), "a heartbeat was not answered in time");
                return;
            }
        };
        if !primary {
            self.doubt(Some(live.epoch), "the node is no longer the primary");
            return;
        }
        if self.entries.epoch() == live.epoch {
            let until = self.channel.nanos(sent + self.window);
            self.channel.fresh_until.fetch_max(until, Ordering::AcqRel);
        }
    }
}

/// The maintenance loop: opens the channel when there is none, and sends a heartbeat every
/// `interval`. Holds only a weak reference, so dropping the store ends it.
pub(crate) async fn maintain(weak: Weak<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures: u32 = 0;
    loop {
        tick.tick().await;
        let Some(shared) = weak.upgrade() else { return };
        match shared.channel.live() {
            Some(live) => shared.heartbeat(live).await,
            None => match shared.open().await {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 {
                        tracing::warn!(error = %e, "near cache: cannot open its invalidation channel; serving from Redis");
                    }
                    drop(shared);
                    // Back off to at most a second between attempts while Redis is away.
                    let pause = interval.saturating_mul(failures.min(200));
                    tokio::time::sleep(pause.min(Duration::from_secs(1))).await;
                }
            },
        }
    }
}
