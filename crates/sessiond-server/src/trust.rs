//! Whether read-through may trust the durable tier, when several processes share a hot store
//! (`docs/design.md` §10, "Other processes' journals").
//!
//! A revocation answered while PostgreSQL was down waits in its process's journal
//! (`crate::journal`). That process refuses to read through until its journal has shipped;
//! the others must refuse too, or one of them could serve the revoked session from
//! PostgreSQL after Redis lost its data. So each process says what its journal holds in two
//! places:
//!
//! - **in Redis**, at once: when it appends to its journal it adds its instance id to the set
//!   `<prefix>journals` (before the request answers), and takes it out once the journal has
//!   shipped. Every read-through checks that the set is empty. Redis also keeps an epoch, a
//!   random value made once: a Redis that lost its data (and the set with it) has another.
//! - **in PostgreSQL**, every second: a lease (`sessiond_instances`) with the epoch the
//!   process last saw and its journal's length.
//!
//! Read-through trusts the tier while this process's journal is empty, the set is empty, the
//! epoch is the one every lease names, no lease counts a journal entry, and the epoch is older
//! than [`GRACE`]. A lease of an older epoch means: that process may have marked its journal
//! in a Redis that has since lost the mark; until it renews in the new epoch (it marks its
//! journal again first) nobody trusts the tier. The grace gives every live process the time to
//! renew after Redis loses its data.
//!
//! A process that stops (killed, its data directory lost) leaves its lease. One that was in
//! the current epoch with an empty journal and no mark in Redis had nothing to ship: its lease
//! is dropped after [`IDLE_AFTER`]. Any other lease blocks read-through until its process
//! comes back on the same data directory and ships, an operator runs
//! `sessiond tier forget-instance`, or `session.absolute_timeout` has passed since it last
//! renewed (every session it could have revoked has expired by then).
//!
//! On a hot store only one process uses (the embedded store), the journal is the whole answer.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessiond_core::tier::{DurableTier, EventId, JournalMarks, Lease, LeaseTerms};
use sessiond_core::{Clock as _, SessionStore, StoreError, SystemClock, Timestamp};

use crate::journal::Journal;

/// How often a process renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// A lease not renewed for this long, with nothing to ship, is dropped.
pub const IDLE_AFTER: Duration = Duration::from_secs(5);

/// How long after Redis gets a new epoch read-through waits before trusting the tier, so every
/// process still holding a journal marks it again.
pub const GRACE: Duration = Duration::from_secs(2);

/// How old the last renewal's verdict may be and still count.
const FRESH_FOR: Duration = Duration::from_secs(3);

/// The instance id's file in `data_dir`.
pub const INSTANCE_FILE: &str = "instance-id";

/// Why read-through does not trust the tier now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distrust {
    /// This process's journal holds revocations the tier lacks.
    OwnJournal,
    /// Another process's may (a mark in Redis, a lease with journal entries or of an older
    /// epoch), or Redis has just lost its data, or the last renewal failed.
    OtherProcesses,
}

/// What the last renewal found.
#[derive(Debug, Clone, Default)]
struct Verdict {
    /// The epoch it saw.
    epoch: Option<String>,
    /// Whether the tier could be trusted then.
    trusted: bool,
    /// When.
    at: Option<Instant>,
    /// The leases it read.
    leases: Vec<Lease>,
}

/// What `/readyz` shows of the leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustStatus {
    /// Leases in PostgreSQL, this process's included.
    pub leases: usize,
    /// Leases that keep read-through from trusting the tier.
    pub blocking: usize,
}

/// This process's part in keeping read-through honest.
#[derive(Debug)]
pub struct Trust {
    instance: String,
    journal: Arc<Journal>,
    engine: Arc<dyn SessionStore>,
    tier: Arc<dyn DurableTier>,
    terms: LeaseTerms,
    /// Whether other processes may share the hot store (known after the first renewal).
    shared: AtomicBool,
    verdict: Mutex<Verdict>,
}

impl Trust {
    /// The trust of the process whose data directory is `data_dir` (its instance id is read
    /// from there, or made), over `engine` (the hot store, without the stack's layers).
    /// Leases not renewed for `forget_after` are dropped whatever they say.
    pub fn new(
        data_dir: &Path,
        journal: Arc<Journal>,
        engine: Arc<dyn SessionStore>,
        tier: Arc<dyn DurableTier>,
        forget_after: Duration,
    ) -> std::io::Result<Self> {
        Ok(Trust {
            instance: instance_id(data_dir)?,
            journal,
            engine,
            tier,
            terms: LeaseTerms {
                idle_after: IDLE_AFTER,
                forget_after,
            },
            shared: AtomicBool::new(true),
            verdict: Mutex::new(Verdict::default()),
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    fn verdict(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether read-through may trust the tier now. Costs, on a shared hot store, two reads
    /// of it (the epoch and the marks): a read-through is a miss, already paying a PostgreSQL
    /// read.
    pub async fn check(&self) -> Result<(), Distrust> {
        if !self.journal.is_empty() {
            return Err(Distrust::OwnJournal);
        }
        if !self.shared.load(Ordering::Acquire) {
            return Ok(());
        }
        let (epoch, trusted) = {
            let v = self.verdict();
            let fresh = v.at.is_some_and(|at| at.elapsed() < FRESH_FOR);
            (v.epoch.clone(), v.trusted && fresh)
        };
        if !trusted {
            return Err(Distrust::OtherProcesses);
        }
        match self.engine.journal_marks(None).await {
            Ok(Some(marks)) if marks.pending == 0 && marks.epoch == epoch => Ok(()),
            Ok(None) => Ok(()),
            _ => Err(Distrust::OtherProcesses),
        }
    }

    /// Marks this process's journal in the hot store: called once something was appended to
    /// it, before the request answers.
    pub async fn journaled(&self) {
        if let Err(e) = self
            .engine
            .journal_marks(Some((&self.instance, true)))
            .await
        {
            // The lease (journal entries counted) says it at the next renewal.
            tracing::error!(
                event = "tier.journal_mark_failed",
                error = %e,
                "the journal could not be marked in the hot store"
            );
        }
    }

    /// Renews this process's lease and decides whether the tier can be trusted.
    pub async fn renew(&self) -> Result<(), StoreError> {
        let result = self.renew_once().await;
        if result.is_err() {
            let mut v = self.verdict();
            v.trusted = false;
            v.at = Some(Instant::now());
        }
        result
    }

    async fn renew_once(&self) -> Result<(), StoreError> {
        let entries = self.journal.len();
        let mark = Some((self.instance.as_str(), entries > 0));
        let Some(marks) = self.engine.journal_marks(mark).await? else {
            self.shared.store(false, Ordering::Release);
            return Ok(());
        };
        self.shared.store(true, Ordering::Release);
        let Some(epoch) = marks.epoch else {
            return Err(StoreError::unavailable("the hot store has no epoch yet"));
        };
        let lease = Lease {
            instance: self.instance.clone(),
            epoch: epoch.clone(),
            journal_entries: entries as u64,
            renewed_at: Timestamp::from_millis(0),
        };
        let leases = self
            .tier
            .renew_lease(&lease, self.terms, marks.pending == 0)
            .await?;
        let settled = epoch_age(&epoch).is_some_and(|age| age >= GRACE);
        let trusted = settled && marks.pending == 0 && leases.iter().all(|l| clean(l, &epoch));
        let mut v = self.verdict();
        *v = Verdict {
            epoch: Some(epoch),
            trusted,
            at: Some(Instant::now()),
            leases,
        };
        Ok(())
    }

    /// At a clean shutdown: with an empty journal, this process's mark and lease go (nothing
    /// of it must hold read-through back); with entries, both stay until it ships them.
    pub async fn release(&self) {
        if !self.journal.is_empty() || !self.shared.load(Ordering::Acquire) {
            return;
        }
        let _ = self
            .engine
            .journal_marks(Some((&self.instance, false)))
            .await;
        if let Err(e) = self.tier.release_lease(&self.instance).await {
            tracing::warn!(error = %e, "the lease was not released; it is dropped once idle");
        }
    }

    /// What `/readyz` shows.
    pub fn status(&self) -> TrustStatus {
        let v = self.verdict();
        let epoch = v.epoch.clone().unwrap_or_default();
        TrustStatus {
            leases: v.leases.len(),
            blocking: v.leases.iter().filter(|l| !clean(l, &epoch)).count(),
        }
    }
}

/// Whether a lease lets the tier be trusted in `epoch`.
fn clean(lease: &Lease, epoch: &str) -> bool {
    lease.epoch == epoch && lease.journal_entries == 0
}

/// How old `epoch` is on this machine's clock (`None` when it does not say, or says a time
/// ahead of this clock: not settled either way).
fn epoch_age(epoch: &str) -> Option<Duration> {
    let made = JournalMarks::epoch_made(epoch)?;
    let now = SystemClock.now();
    (now >= made).then(|| now.saturating_since(made))
}

/// The instance id kept in `data_dir`, made on first use.
pub fn instance_id(data_dir: &Path) -> std::io::Result<String> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(INSTANCE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = EventId::generate()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_id_is_made_once_and_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = instance_id(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let again = instance_id(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(first, again);
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(
            first,
            instance_id(other.path()).unwrap_or_else(|e| panic!("{e}"))
        );
    }

    #[test]
    fn a_new_epoch_is_not_settled_and_an_old_one_is() {
        let fresh = JournalMarks::new_epoch().unwrap_or_else(|e| panic!("{e}"));
        assert!(epoch_age(&fresh).is_some_and(|age| age < GRACE));
        assert!(epoch_age("1000-x").is_some_and(|age| age >= GRACE));
        assert_eq!(epoch_age("no time"), None, "unknown: not settled");
        let lease = |epoch: &str, journal_entries| Lease {
            instance: "i".to_owned(),
            epoch: epoch.to_owned(),
            journal_entries,
            renewed_at: Timestamp::from_millis(0),
        };
        assert!(clean(&lease("e", 0), "e"));
        assert!(!clean(&lease("e", 1), "e"), "a journal to ship");
        assert!(
            !clean(&lease("old", 0), "e"),
            "of a Redis that lost its data"
        );
    }
}
