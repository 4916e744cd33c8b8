//! The local journal of revocations the durable tier did not get in time (`docs/design.md`
//! §10, "PostgreSQL is down during the revocation").
//!
//! A logout, revocation, revoke-all, revoke-everyone or rotation is written through to
//! PostgreSQL before it answers; while PostgreSQL is down it answers anyway, and its end then
//! waits in the hot store's outbox. If the hot store lost its data before PostgreSQL came back
//! (Redis flushed while PostgreSQL was down), the outbox entry would be lost with it and a
//! read-through could serve the revoked session again. So a revocation whose write-through
//! timed out is also appended here, to a file in `data_dir` (fsynced before the request
//! answers), and shipped to the tier by this process itself as soon as the tier takes it again
//! (at start-up too, for a journal a killed process left). Applying an end twice is applying
//! it once, so an end that arrives both ways is one end.
//!
//! While the journal holds anything, this process does not trust the tier for read-through:
//! a miss answers `503` instead of serving what the tier holds.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sessiond_core::tier::{DurableChange, DurableTier, OutboxEntry, Position};
use sessiond_core::{SessionId, SessionRecord, StoreError, Timestamp, UserId};

/// The journal's file name in `data_dir`.
pub const FILE: &str = "tier-journal.jsonl";

/// What a revocation ended, for the journal.
#[derive(Debug, Clone, Copy)]
pub enum Ended<'a> {
    /// One session (logout, revocation).
    Session(&'a SessionId),
    /// Sessions a create evicted or replaced.
    Sessions(&'a [SessionId]),
    /// Every session of a user created by `at`, but `kept` (revoke-all).
    User {
        /// The user.
        user: &'a UserId,
        /// The session spared.
        kept: Option<&'a SessionId>,
    },
    /// Every session created by now (revoke-everyone).
    Everyone,
    /// A rotation: the record with its new secret, so the old one is never served again.
    Rotated(&'a SessionRecord),
}

impl Ended<'_> {
    /// The changes the tier must apply.
    pub fn changes(self) -> Vec<DurableChange> {
        match self {
            Ended::Session(id) => vec![DurableChange::Ended(id.clone())],
            Ended::Sessions(ids) => ids.iter().cloned().map(DurableChange::Ended).collect(),
            Ended::User { user, kept } => vec![DurableChange::UserEnded {
                user_id: user.clone(),
                kept: kept.cloned(),
                ended: Vec::new(),
            }],
            Ended::Everyone => vec![DurableChange::AllEnded],
            Ended::Rotated(record) => vec![DurableChange::Live(record.clone())],
        }
    }
}

/// `entries` as the file holds them: one JSON line each.
fn lines(entries: &[OutboxEntry]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        serde_json::to_writer(&mut out, e).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The journal: its file, and what it holds.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// The entries not yet shipped, as in the file (the lock also orders file writes).
    pending: Mutex<Vec<OutboxEntry>>,
    /// `pending.len()`, read on every read-through without taking the lock.
    waiting: AtomicUsize,
}

impl Journal {
    /// Opens (or creates) the journal in `data_dir`, with what a previous process left. A
    /// torn last line (a crash mid-append, before the request answered) is dropped.
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(FILE);
        let mut pending = Vec::new();
        let mut torn = false;
        match File::open(&path) {
            Ok(f) => {
                for line in BufReader::new(f).lines() {
                    match serde_json::from_str::<OutboxEntry>(&line?) {
                        Ok(entry) => pending.push(entry),
                        Err(_) => torn = true,
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let journal = Journal {
            path,
            waiting: AtomicUsize::new(pending.len()),
            pending: Mutex::new(pending),
        };
        if torn {
            // Rewritten whole, so the next append does not land on the torn line.
            let pending = journal.lock().clone();
            journal.rewrite(&pending)?;
        }
        let pending = journal.lock().len();
        if pending > 0 {
            tracing::warn!(
                event = "tier.journal_found",
                entries = pending,
                "revocations the durable tier did not get are in the journal; read-through waits until they ship"
            );
        }
        Ok(journal)
    }

    /// Replaces the file's content by `entries`, atomically (a new file renamed over it).
    fn rewrite(&self, entries: &[OutboxEntry]) -> std::io::Result<()> {
        let lines = lines(entries)?;
        let tmp = self.path.with_extension("jsonl.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&lines)?;
        f.sync_data()?;
        std::fs::rename(&tmp, &self.path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OutboxEntry>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many entries wait.
    pub fn len(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Whether anything waits: read-through must not trust the tier meanwhile.
    pub fn is_empty(&self) -> bool {
        self.waiting.load(Ordering::Acquire) == 0
    }

    /// Appends `changes` (what a revocation ended, [`Ended::changes`]) made at `at`, on disk
    /// before it returns.
    pub fn append(&self, changes: Vec<DurableChange>, at: Timestamp) -> std::io::Result<()> {
        let mut pending = self.lock();
        // The last sequence of `at`'s millisecond: a rotation's record written here is not
        // older than the one its own outbox entry carries.
        let position = Position::from_parts(at.as_millis(), u64::MAX);
        let entries: Vec<OutboxEntry> = changes
            .into_iter()
            .map(|change| OutboxEntry {
                position,
                event: None,
                change,
            })
            .collect();
        let lines = lines(&entries)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(&lines)?;
        f.sync_data()?;
        pending.extend(entries);
        self.waiting.store(pending.len(), Ordering::Release);
        Ok(())
    }

    /// Ships what waits to `tier`; once it has committed, forgets it (the file rewritten with
    /// whatever was appended meanwhile).
    pub async fn ship(&self, tier: &dyn DurableTier) -> Result<(), StoreError> {
        let batch = self.lock().clone();
        if batch.is_empty() {
            return Ok(());
        }
        tier.ship(&batch).await?;
        let mut pending = self.lock();
        let shipped = batch.len().min(pending.len());
        let rest = pending.split_off(shipped);
        self.rewrite(&rest).map_err(StoreError::internal)?;
        *pending = rest;
        self.waiting.store(pending.len(), Ordering::Release);
        tracing::info!(
            event = "tier.journal_shipped",
            entries = batch.len(),
            "the durable tier has the revocations it missed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_appended_survives_a_reopen_and_a_torn_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let user = UserId::parse("journal-user").unwrap_or_else(|e| panic!("{e}"));
        let token = sessiond_core::Token::generate(&user).unwrap_or_else(|e| panic!("{e}"));
        let id = token.session_id().clone();
        let journal = Journal::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(journal.is_empty());
        journal
            .append(Ended::Session(&id).changes(), Timestamp::from_millis(5))
            .unwrap_or_else(|e| panic!("{e}"));
        journal
            .append(
                Ended::User {
                    user: &user,
                    kept: None,
                }
                .changes(),
                Timestamp::from_millis(6),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!journal.is_empty());
        drop(journal);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap_or_else(|e| panic!("{e}"));
        f.write_all(b"{\"position\":")
            .unwrap_or_else(|e| panic!("{e}"));
        let journal = Journal::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let pending = journal.lock().clone();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].change, DurableChange::Ended(id));
        assert_eq!(pending[1].position.millis(), Timestamp::from_millis(6));
        journal
            .append(Ended::Everyone.changes(), Timestamp::from_millis(7))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(journal);
        let journal = Journal::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            journal.lock().len(),
            3,
            "an append after a torn line is kept"
        );
    }
}
