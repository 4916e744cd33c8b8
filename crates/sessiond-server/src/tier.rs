//! The durable tier in the service (`docs/design.md` §10): connecting it at start-up, the
//! shipper that drains the store's outbox into it, the retention purge, and the demoter that
//! takes idle sessions out of the hot store (`tier.demote_after`).
//!
//! The shipper reads the oldest entries of the outbox, hands them to the tier in one batch,
//! and removes them only once the tier has committed them; killed between the two, it ships
//! them again on its next start, and the tier applies them once. While the tier cannot be
//! reached the outbox keeps growing (up to `tier.max_outbox`) and the hot store keeps serving:
//! the tier is never on the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sessiond_core::tier::{
    AuditEvent, DurableChange, DurableTier, EventId, OutboxEntry, Position, Retention,
};
use sessiond_core::{Clock, EventKind, EventSink, SessionEvent, SessionStore, StoreError};
use sessiond_tier_postgres::{PgOptions, PgTier};
use tokio::sync::watch;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::config::{Config, TierConfig};
use crate::journal::Journal;
use crate::metrics::Metrics;
use crate::trust::{RENEW_EVERY, Trust};

/// Refused tokens and binding mismatches waiting for the tier, at most.
const REFUSALS_QUEUED: usize = 10_000;
/// Most refusals one shipment carries.
const REFUSALS_BATCH: usize = 500;

/// How often the retention purge runs.
const PURGE_EVERY: Duration = Duration::from_secs(3_600);
/// Longest wait between shipping attempts while the tier fails.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the backlog metrics are refreshed while the shipper is busy.
const MEASURE_EVERY: Duration = Duration::from_secs(1);
/// Longest the final drain at shutdown may take.
const FINAL_DRAIN: Duration = Duration::from_secs(5);

/// Connects the tier `config` names, if any: migrations run, this month's partitions made.
pub async fn connect(
    config: &Config,
    clock: &dyn Clock,
) -> anyhow::Result<Option<Arc<dyn DurableTier>>> {
    let Some(url) = &config.tier.postgres_url else {
        return Ok(None);
    };
    let tls_ca = match &config.tier.tls_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading tier.tls_ca_file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let options = PgOptions {
        pool_size: config.tier.pool_size,
        tls_ca,
        ..PgOptions::new(url.0.clone())
    };
    let tier = PgTier::connect(&options, clock.now())
        .await
        .map_err(|e| anyhow::anyhow!("tier.postgres_url: {e}"))?;
    Ok(Some(Arc::new(tier)))
}

/// Ships everything in `store`'s outbox to `tier` now, batch after batch (what a command that
/// changed sessions without a running shipper does before it exits: `sessiond revoke`).
/// Returns how many entries it shipped.
pub async fn ship_all(store: &dyn SessionStore, tier: &dyn DurableTier) -> Result<u64, StoreError> {
    const BATCH: usize = 1_000;
    let mut shipped = 0u64;
    loop {
        let n = ship_batch(store, tier, BATCH).await?;
        shipped += n as u64;
        if n < BATCH {
            return Ok(shipped);
        }
    }
}

/// Ships the oldest `max` entries of `store`'s outbox to `tier`, and removes them only once
/// the tier has committed them. Returns how many it shipped.
async fn ship_batch(
    store: &dyn SessionStore,
    tier: &dyn DurableTier,
    max: usize,
) -> Result<usize, StoreError> {
    let entries = store.outbox_read(max).await?;
    if entries.is_empty() {
        return Ok(0);
    }
    tier.ship(&entries).await?;
    store.outbox_remove(&entries).await?;
    Ok(entries.len())
}

/// What the shipper last saw, for `/readyz`.
#[derive(Debug, Default)]
pub struct TierStatus {
    /// Whether the last shipping attempt reached the tier.
    pub up: AtomicBool,
}

/// The outbox's backlog now: entries waiting, and the age of the oldest in milliseconds (0
/// when none waits).
pub async fn backlog(
    store: &dyn SessionStore,
    clock: &dyn Clock,
) -> Result<(u64, u64), StoreError> {
    let backlog = store.outbox_backlog().await?.unwrap_or_default();
    let lag_ms = backlog.oldest.map_or(0, |p| {
        clock
            .now()
            .as_millis()
            .saturating_sub(p.millis().as_millis())
    });
    Ok((backlog.entries, lag_ms))
}

/// The durable tier as the service holds it.
#[derive(Debug, Clone)]
pub struct Tier {
    /// The engine.
    pub tier: Arc<dyn DurableTier>,
    /// What the shipper last saw.
    pub status: Arc<TierStatus>,
    /// Asking the shipper to ship now, and waiting for it.
    pub flush: Arc<Flush>,
    /// Revocations answered while the tier could not take them.
    pub journal: Arc<Journal>,
    /// Whether read-through may trust the tier; this process's lease.
    pub trust: Arc<Trust>,
}

impl Tier {
    /// The tier `tier`, before its shipper starts, with this process's `trust` (and its
    /// journal).
    pub fn new(tier: Arc<dyn DurableTier>, trust: Arc<Trust>) -> Self {
        Tier {
            tier,
            status: Arc::default(),
            flush: Arc::new(Flush::new()),
            journal: trust.journal().clone(),
            trust,
        }
    }
}

/// Revocations written through: a request that has just ended sessions asks the shipper to
/// ship at once and waits (bounded) until what the outbox held is in PostgreSQL, so the durable
/// copy never holds a revoked session as live once the revoke has answered while PostgreSQL is
/// up. While it is down the wait times out, the revoke answers anyway (logout must work), and
/// the entry ships when PostgreSQL is back.
#[derive(Debug)]
pub struct Flush {
    /// Requests made so far.
    requested: AtomicU64,
    /// Wakes the shipper.
    wake: Notify,
    /// The number of requests the last complete shipment satisfied.
    done: watch::Sender<u64>,
}

impl Flush {
    fn new() -> Self {
        Flush {
            requested: AtomicU64::new(0),
            wake: Notify::new(),
            done: watch::channel(0).0,
        }
    }

    /// Asks for everything in the outbox now to be shipped, and waits at most `timeout`.
    /// Returns whether it was.
    pub async fn ship_now(&self, timeout: Duration) -> bool {
        let mine = self.requested.fetch_add(1, Ordering::AcqRel) + 1;
        let mut done = self.done.subscribe();
        self.wake.notify_one();
        tokio::time::timeout(timeout, done.wait_for(|d| *d >= mine))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// The running shipper and purge; [`Shipper::stop`] drains once more and stops them.
#[derive(Debug)]
pub struct Shipper {
    stop: watch::Sender<bool>,
    ship: JoinHandle<()>,
    purge: JoinHandle<()>,
    demote: Option<JoinHandle<()>>,
    lease: JoinHandle<()>,
    trust: Arc<Trust>,
}

impl Shipper {
    /// Starts shipping `store`'s outbox to `tier.tier`, and purging past `retention`.
    pub fn start(
        store: Arc<dyn SessionStore>,
        tier: &Tier,
        config: &TierConfig,
        sessions_kept: Duration,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (store_for_demoter, metrics_for_demoter) = (store.clone(), metrics.clone());
        let ship = tokio::spawn(ship_loop(
            Loop {
                store,
                tier: tier.clone(),
                batch: config.ship_batch,
                turn: turn_hold(config.ship_interval),
                clock: clock.clone(),
                metrics,
                measured: std::sync::Mutex::new(None),
            },
            config.ship_interval,
            stopped.clone(),
        ));
        let retention = Retention {
            events: config.retention,
            sessions: sessions_kept,
        };
        let demote = (!config.demote_after.is_zero()).then(|| {
            tokio::spawn(demote_loop(
                Demoter {
                    store: store_for_demoter,
                    tier: tier.tier.clone(),
                    after: config.demote_after,
                    clock: clock.clone(),
                    metrics: metrics_for_demoter,
                },
                stopped.clone(),
            ))
        });
        let lease = tokio::spawn(lease_loop(tier.trust.clone(), stopped.clone()));
        let purge = tokio::spawn(purge_loop(tier.tier.clone(), retention, clock, stopped));
        Shipper {
            stop,
            ship,
            purge,
            demote,
            lease,
            trust: tier.trust.clone(),
        }
    }

    /// Stops both loops, after one last attempt to ship what waits (bounded in time), so a
    /// clean shutdown leaves nothing in the outbox while the tier is up.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(FINAL_DRAIN, self.ship).await.is_err() {
            tracing::warn!("the outbox was not drained at shutdown; it ships at the next start");
        }
        self.purge.abort();
        if let Some(demote) = self.demote {
            demote.abort();
        }
        self.lease.abort();
        self.trust.release().await;
    }
}

/// What one shipping loop works with.
struct Loop {
    store: Arc<dyn SessionStore>,
    tier: Tier,
    batch: usize,
    /// How long this process's turn to ship lasts unless it ships again.
    turn: Duration,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// When the backlog metrics were last refreshed.
    measured: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Loop {
    /// Ships the journal, if anything waits there, then one batch of the outbox if it is this
    /// process's turn or the shipment is `urgent`; returns how many outbox entries it shipped.
    async fn ship_once(&self, urgent: bool) -> Result<usize, StoreError> {
        self.tier.journal.ship(&*self.tier.tier).await?;
        // Processes sharing one outbox take turns; a revocation waiting for the tier (or a
        // shutdown) cannot wait for another's turn, and shipping twice is harmless.
        if !urgent && !self.store.outbox_turn(self.turn).await? {
            return Ok(0);
        }
        let shipped = ship_batch(&*self.store, &*self.tier.tier, self.batch).await?;
        self.metrics.tier_shipped.inc_by(shipped as u64);
        Ok(shipped)
    }

    /// Refreshes the backlog and lag metrics, at most every [`MEASURE_EVERY`] unless `now`:
    /// reading the backlog costs the store a read per outbox stream on Redis, which must not
    /// be paid after every batch while a backlog drains.
    async fn measure(&self, now: bool) {
        {
            let mut last = self
                .measured
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !now && last.is_some_and(|at| at.elapsed() < MEASURE_EVERY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Ok((waiting, lag_ms)) = backlog(&*self.store, &*self.clock).await {
            self.metrics
                .tier_outbox_entries
                .set(i64::try_from(waiting).unwrap_or(i64::MAX));
            self.metrics.tier_lag_seconds.set(lag_ms as f64 / 1000.0);
        }
    }
}

async fn ship_loop(l: Loop, interval: Duration, mut stopped: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        let stopping = *stopped.borrow();
        // Requests made before this read had their entries in the outbox already: a shipment
        // that empties it satisfies them.
        let requested = l.tier.flush.requested.load(Ordering::Acquire);
        let urgent = stopping || requested > *l.tier.flush.done.borrow();
        let wait = match l.ship_once(urgent).await {
            Ok(shipped) => {
                if failures > 0 {
                    tracing::info!(
                        event = "tier.shipping_again",
                        "the durable tier takes the outbox again"
                    );
                }
                failures = 0;
                l.tier.status.up.store(true, Ordering::Relaxed);
                if shipped == l.batch && !stopping {
                    // More waits: go on at once.
                    l.measure(false).await;
                    continue;
                }
                l.tier.flush.done.send_if_modified(|done| {
                    let newer = requested > *done;
                    if newer {
                        *done = requested;
                    }
                    newer
                });
                interval
            }
            Err(e) => {
                l.tier.status.up.store(false, Ordering::Relaxed);
                l.metrics.tier_ship_failures.inc();
                if failures == 0 {
                    tracing::warn!(
                        event = "tier.shipping_failed",
                        error = %e,
                        "the durable tier cannot take the outbox; entries wait in the hot store"
                    );
                }
                failures = failures.saturating_add(1);
                interval
                    .saturating_mul(2u32.saturating_pow(failures.min(8)))
                    .min(MAX_BACKOFF)
            }
        };
        l.measure(false).await;
        if stopping {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = l.tier.flush.wake.notified(), if failures == 0 => {}
            _ = stopped.changed() => {}
        }
    }
}

/// How long a process's turn to ship a shared outbox lasts unless renewed: a few ship
/// intervals, so a holder that is busy shipping keeps it, and at least a second. It is also the
/// longest the outbox waits for another process when the holder dies.
fn turn_hold(interval: Duration) -> Duration {
    interval.saturating_mul(3).max(Duration::from_secs(1))
}

/// Most sessions one demoter round asks the tier for.
const DEMOTE_BATCH: usize = 1_000;

/// What the demoter works with.
struct Demoter {
    store: Arc<dyn SessionStore>,
    tier: Arc<dyn DurableTier>,
    after: Duration,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

impl Demoter {
    /// One round: asks the tier for sessions idle longer than `after` that the hot store
    /// holds, removes each from the hot store if it is still the state the tier has, and tells
    /// the tier which are cold now. Returns whether a full batch went cold (more may wait).
    async fn round(&self) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let idle_ms = u64::try_from(self.after.as_millis()).unwrap_or(u64::MAX);
        let before = sessiond_core::Timestamp::from_millis(now.as_millis().saturating_sub(idle_ms));
        let idle = self.tier.idle(before, now, DEMOTE_BATCH).await?;
        let mut cold = Vec::with_capacity(idle.len());
        for record in &idle {
            match self.store.demote(record).await? {
                sessiond_core::Demoted::Removed => {
                    self.metrics.tier_demoted.inc();
                    cold.push(record.id.clone());
                }
                sessiond_core::Demoted::Absent => cold.push(record.id.clone()),
                // Changed since the tier's copy: it ships, and is idle again later or not.
                sessiond_core::Demoted::Changed => {}
            }
        }
        if !cold.is_empty() {
            self.tier.cooled(&cold).await?;
        }
        Ok(idle.len() == DEMOTE_BATCH && !cold.is_empty())
    }
}

/// Demotes idle sessions every quarter of `tier.demote_after` (between 1 s and 1 min).
async fn demote_loop(d: Demoter, mut stopped: watch::Receiver<bool>) {
    let every = (d.after / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        loop {
            match d.round().await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the demoter could not run; sessions stay hot");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// Renews this process's lease every [`RENEW_EVERY`] (`crate::trust`).
async fn lease_loop(trust: Arc<Trust>, mut stopped: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(RENEW_EVERY) => {}
            _ = stopped.changed() => return,
        }
        match trust.renew().await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the lease is renewed again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    error = %e,
                    "the lease could not be renewed: read-through waits until it is"
                );
            }
            Err(_) => {}
        }
    }
}

async fn purge_loop(
    tier: Arc<dyn DurableTier>,
    retention: Retention,
    clock: Arc<dyn Clock>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        match tier.purge(clock.now(), retention).await {
            Ok(purged) if purged.events > 0 || purged.sessions > 0 => tracing::info!(
                event = "tier.purged",
                events = purged.events,
                sessions = purged.sessions,
                "the durable tier dropped what retention no longer keeps"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "the durable tier's retention purge failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_EVERY) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// With `tier.audit_refusals`: refused tokens and binding mismatches go to the audit trail too.
///
/// They change no session, so there is no store write to record them with: they are queued
/// (at most [`REFUSALS_QUEUED`]; past it, dropped and counted, so a flood of guesses can
/// neither fill memory nor slow a request) and shipped in batches by a task of their own.
/// Best effort: a refusal queued when the process dies is lost (every refusal is also counted
/// in `sessiond_session_events_total` and logged).
#[derive(Debug)]
pub struct RefusalSink {
    queue: mpsc::Sender<AuditEvent>,
    metrics: Arc<Metrics>,
}

impl RefusalSink {
    /// A sink queueing to a task that ships to `tier`; the task ends when the sink is dropped.
    pub fn start(tier: Arc<dyn DurableTier>, metrics: Arc<Metrics>) -> Self {
        let (queue, mut queued) = mpsc::channel::<AuditEvent>(REFUSALS_QUEUED);
        let task_metrics = metrics.clone();
        tokio::spawn(async move {
            let mut last = Position::default();
            let mut batch = Vec::with_capacity(REFUSALS_BATCH);
            while queued.recv_many(&mut batch, REFUSALS_BATCH).await > 0 {
                let entries: Vec<OutboxEntry> = batch
                    .drain(..)
                    .map(|event| {
                        last = last.next(event.at);
                        OutboxEntry {
                            position: last,
                            event: Some(event),
                            change: DurableChange::Nothing,
                        }
                    })
                    .collect();
                if let Err(e) = tier.ship(&entries).await {
                    task_metrics
                        .tier_refusals_dropped
                        .inc_by(entries.len() as u64);
                    tracing::debug!(error = %e, "refusals not recorded in the durable tier");
                }
            }
        });
        RefusalSink { queue, metrics }
    }
}

impl EventSink for RefusalSink {
    fn emit(&self, event: &SessionEvent<'_>) {
        if !matches!(
            event.kind,
            EventKind::InvalidToken { .. } | EventKind::BindingMismatch { .. }
        ) {
            return;
        }
        let Ok(id) = EventId::generate() else {
            self.metrics.tier_refusals_dropped.inc();
            return;
        };
        if self
            .queue
            .try_send(AuditEvent::from_event(id, event))
            .is_err()
        {
            self.metrics.tier_refusals_dropped.inc();
        }
    }
}
