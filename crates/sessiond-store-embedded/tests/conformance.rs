//! The embedded engine against the store conformance suite, plus what only this engine
//! promises: durability across a reopen, and reclaiming expired sessions with
//! `reclaim_expired` (which the service's sweeper calls).

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "the helpers below fail the test they serve by panicking"
)]

use std::path::Path;
use std::sync::Arc;

use redb::{MultimapTableDefinition, ReadableDatabase, ReadableTableMetadata, TableDefinition};
use serde_json::json;
use sessiond_core::{
    CreateOutcome, ExpiredSession, SessionId, SessionRecord, SessionStore, UpdateOutcome,
};
use sessiond_store_embedded::{DATABASE_FILE, EmbeddedOptions, EmbeddedStore};
use sessiond_testkit::conformance::{NO_LIMIT, at, fresh_user, object, record, record_with_idle};
use sessiond_testkit::guarded::Guarded;

/// A fresh, empty embedded store (the conformance suite's factory).
async fn embedded() -> Arc<dyn SessionStore> {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = open(dir.path());
    // The store is dropped before its directory.
    Guarded::wrap(Arc::new(store), dir)
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir, EmbeddedOptions::default()).expect("open the embedded store")
}

/// Opens the store in `dir` again after the store that had it open was dropped. Dropping
/// waits until the database file is closed, so this never races the previous owner
/// (`dropping_the_store_releases_the_database` pins that down).
fn reopen_store(dir: &Path) -> EmbeddedStore {
    open(dir)
}

sessiond_testkit::store_conformance_tests!(embedded);

// ---------------------------------------------------------------------------------------------
// Embedded only

/// Every acknowledged write is on disk: after the store is dropped and reopened from the same
/// directory, the session is there as last written, still indexed under its user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_reopen() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let user = fresh_user("durable");
    let rec = record(&user, at(0));
    let written = {
        let store = open(dir.path());
        assert_eq!(
            store
                .create(&rec, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
                .await
                .expect("create"),
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "create must succeed"
        );
        let data = object(json!({"step": 2}));
        let UpdateOutcome::Updated(updated) = store
            .update_data(
                &rec.id,
                rec.version,
                &data,
                at(10),
                sessiond_core::Origin::CLI,
            )
            .await
            .expect("update_data")
        else {
            panic!("update_data with the current version must succeed");
        };
        updated
    };

    let store = reopen_store(dir.path());
    assert_eq!(
        store.load(&rec.id, at(20)).await.expect("load"),
        Some(written),
        "a session must load after reopen exactly as last written"
    );
    let listed: Vec<SessionId> = store
        .list_user(&user, at(20))
        .await
        .expect("list_user")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        listed,
        vec![rec.id.clone()],
        "the user index must survive reopen"
    );
}

/// Touches skip fsync, but `close` makes them durable, so a clean shutdown loses no activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_makes_touches_durable() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let rec = record(&fresh_user("durable-touch"), at(0));
    {
        let store = open(dir.path());
        assert_eq!(
            store
                .create(&rec, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
                .await
                .expect("create"),
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "create must succeed"
        );
        assert!(
            store
                .touch(&rec.id, at(5_000), sessiond_core::Origin::CLI)
                .await
                .expect("touch"),
            "touch of a live session must report true"
        );
        store.close().await.expect("close");
    }

    let store = reopen_store(dir.path());
    let loaded = store
        .load(&rec.id, at(5_000))
        .await
        .expect("load")
        .expect("the session must load after reopen");
    assert_eq!(
        loaded.last_activity,
        at(5_000),
        "a touch followed by close must survive reopen"
    );
}

/// Dropping the store lets go of its database file at once, so the same process can open it
/// again right away (a restart in place, a test harness reopening a data directory). The
/// background tasks hold the database too; they must not outlive the store that owns them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_store_releases_the_database() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    // Opening starts the touch flusher, whose first run begins at once on the blocking pool:
    // each drop below races it. Reopen a number of times so a drop that
    // returns before they let go fails this test rather than a later one.
    for round in 0..20 {
        let store = match EmbeddedStore::open(dir.path(), EmbeddedOptions::default()) {
            Ok(store) => store,
            Err(e) => {
                panic!("reopening right after the store was dropped failed (round {round}): {e:?}")
            }
        };
        store.ping().await.expect("ping");
        drop(store);
    }
}

/// The on-disk `by_user` and `expiry` tables (see `src/tables.rs`), read directly to prove
/// the sweeper leaves no dangling entries; the store's own API cannot show an index entry
/// whose record is gone.
const BY_USER: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("by_user");
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("expiry");

/// `reclaim_expired` reclaims expired sessions with their index and expiry entries and leaves live ones
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_reclaims_expired_sessions_only() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let user = fresh_user("sweep");
    let live = record(&user, at(0));
    let idled = record_with_idle(&user, at(0), 1_000);
    let ended = SessionRecord {
        absolute_expires_at: at(2_000),
        ..record(&user, at(0))
    };
    {
        let store = open(dir.path());
        for rec in [&live, &idled, &ended] {
            assert_eq!(
                store
                    .create(rec, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
                    .await
                    .expect("create"),
                CreateOutcome::Created {
                    evicted: vec![],
                    replaced: false,
                },
                "create must succeed"
            );
        }
        let before = store
            .count()
            .await
            .expect("count")
            .expect("the embedded store counts");

        let now = at(5_000);
        let mut reclaimed = store
            .reclaim_expired(now, 1_000)
            .await
            .expect("reclaim_expired");
        reclaimed.sort_by(|a, b| a.id.cmp(&b.id));
        let mut expected: Vec<ExpiredSession> = [&idled, &ended]
            .iter()
            .map(|r| ExpiredSession {
                id: r.id.clone(),
                user_id: user.clone(),
            })
            .collect();
        expected.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            reclaimed, expected,
            "sweep must reclaim the idle-expired and the absolutely-expired session, naming each"
        );
        assert_eq!(
            store
                .count()
                .await
                .expect("count")
                .expect("the embedded store counts"),
            before - 2,
            "the count must drop by the reclaimed sessions"
        );
        for rec in [&idled, &ended] {
            assert_eq!(
                store.load(&rec.id, at(500)).await.expect("load"),
                None,
                "a swept session must be gone, even for a time it was live"
            );
        }
        assert_eq!(
            store.load(&live.id, now).await.expect("load").as_ref(),
            Some(&live),
            "sweep must leave a live session as it was"
        );
        assert_eq!(
            store
                .reclaim_expired(now, 1_000)
                .await
                .expect("reclaim_expired")
                .len(),
            0,
            "a second sweep at the same time must find nothing"
        );
        store.close().await.expect("close");
    }

    let db = redb::Database::open(dir.path().join(DATABASE_FILE))
        .expect("the database must open once the store that had it is dropped");
    let txn = db.begin_read().expect("begin read");
    let by_user = txn.open_multimap_table(BY_USER).expect("open by_user");
    let indexed: Vec<String> = by_user
        .get(user.as_str())
        .expect("read by_user")
        .map(|e| e.expect("read by_user entry").value().to_owned())
        .collect();
    assert_eq!(
        indexed,
        vec![live.id.as_str().to_owned()],
        "sweep must remove the swept sessions' index entries and keep the live one's"
    );
    let expiry = txn.open_table(EXPIRY).expect("open expiry");
    assert_eq!(
        expiry.len().expect("count expiry"),
        1,
        "sweep must remove the swept sessions' expiry entries and keep the live one's"
    );
}

/// A session whose expiry is exactly `now` is expired at `now` (`is_live` is `now <
/// expires_at`), so `sweep(now)` must reclaim it like any other expired session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_reclaims_session_expiring_exactly_now() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = open(dir.path());
    let rec = record_with_idle(&fresh_user("sweep-edge"), at(0), 1_000);
    assert_eq!(
        store
            .create(&rec, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
            .await
            .expect("create"),
        CreateOutcome::Created {
            evicted: vec![],
            replaced: false,
        },
        "create must succeed"
    );
    assert_eq!(
        store.load(&rec.id, at(1_000)).await.expect("load"),
        None,
        "the session is expired at +1000 ms"
    );
    assert_eq!(
        store
            .reclaim_expired(at(1_000), 1_000)
            .await
            .expect("reclaim_expired")
            .len(),
        1,
        "sweep(now) must reclaim a session that expired exactly at now"
    );
    assert_eq!(
        store
            .count()
            .await
            .expect("count")
            .expect("the embedded store counts"),
        0,
        "nothing must remain"
    );
}

/// `reclaim_expired` never takes more than it is asked for, so one call is one bounded
/// transaction; repeated calls reclaim the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_expired_works_in_bounded_batches() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = open(dir.path());
    let user = fresh_user("sweep-batches");
    for _ in 0..5 {
        let rec = record_with_idle(&user, at(0), 1_000);
        assert_eq!(
            store
                .create(&rec, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
                .await
                .expect("create"),
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "create must succeed"
        );
    }
    let sizes: Vec<usize> = {
        let mut sizes = Vec::new();
        for _ in 0..4 {
            sizes.push(
                store
                    .reclaim_expired(at(5_000), 2)
                    .await
                    .expect("reclaim_expired")
                    .len(),
            );
        }
        sizes
    };
    assert_eq!(
        sizes,
        vec![2, 2, 1, 0],
        "batches of at most two, until none is left"
    );
}
