//! The embedded engine keeping an outbox for the durable tier: the outbox conformance suite,
//! the whole store conformance suite again with the outbox on (keeping one changes no
//! answer), and what only this engine promises: the outbox survives a reopen, and positions
//! go on after it.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "the helpers below fail the test they serve by panicking"
)]

use std::sync::Arc;

use sessiond_core::SessionStore;
use sessiond_store_embedded::{EmbeddedOptions, EmbeddedStore};
use sessiond_testkit::conformance::{NO_LIMIT, at, fresh_user, record};
use sessiond_testkit::guarded::Guarded;

/// A fresh embedded store keeping an outbox of `capacity` entries.
async fn with_outbox(capacity: u64) -> Arc<dyn SessionStore> {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            outbox: Some(capacity),
            ..EmbeddedOptions::default()
        },
    )
    .expect("open the embedded store");
    Guarded::wrap(Arc::new(store), dir)
}

sessiond_testkit::outbox_conformance_tests!(with_outbox);

mod with_the_outbox_on {
    use super::with_outbox;

    async fn store() -> std::sync::Arc<dyn sessiond_core::SessionStore> {
        with_outbox(10_000_000).await
    }

    sessiond_testkit::store_conformance_tests!(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_survives_a_reopen_and_positions_go_on_after_it() {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let options = EmbeddedOptions {
        outbox: Some(1_000),
        ..EmbeddedOptions::default()
    };
    let user = fresh_user("outbox-reopen");
    let (a, b) = (record(&user, at(0)), record(&user, at(0)));
    let before = {
        let store = EmbeddedStore::open(dir.path(), options).expect("open");
        let _ = store
            .create(&a, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
            .await
            .expect("create");
        store.outbox_read(10).await.expect("read")
    };
    let store = EmbeddedStore::open(dir.path(), options).expect("reopen");
    assert_eq!(
        store.outbox_read(10).await.expect("read"),
        before,
        "kept on disk"
    );
    store.outbox_remove(&before).await.expect("remove");
    // A clock that went back (the test's times are fixed) still gets a later position.
    let _ = store
        .create(&b, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
        .await
        .expect("create");
    let after = store.outbox_read(10).await.expect("read");
    assert_eq!(after.len(), 1);
    assert!(after[0].position > before[0].position);
    drop(store);
    // Reopened on an empty outbox whose last position was removed: still later.
    let store = EmbeddedStore::open(dir.path(), options).expect("reopen");
    store.outbox_remove(&after).await.expect("remove");
    drop(store);
    let store = EmbeddedStore::open(dir.path(), options).expect("reopen");
    let c = record(&user, at(0));
    let _ = store
        .create(&c, None, NO_LIMIT, at(0), sessiond_core::Origin::CLI)
        .await
        .expect("create");
    let last = store.outbox_read(10).await.expect("read");
    assert!(
        last[0].position > after[0].position,
        "a new position is later than every one removed before the reopen"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_session_expires_with_its_event_and_leaves_its_users_index() {
    use sessiond_core::tier::DurableChange;
    use sessiond_core::{Demoted, Origin};
    use sessiond_testkit::conformance::IDLE_MS;

    let store = with_outbox(1_000).await;
    let user = fresh_user("cold-expiry");
    let cold = record(&user, at(0));
    let _ = store
        .create(&cold, None, NO_LIMIT, at(0), Origin::CLI)
        .await
        .expect("create");
    assert_eq!(store.demote(&cold).await.expect("demote"), Demoted::Removed);
    assert!(
        store
            .reclaim_expired(at(IDLE_MS - 1), 100)
            .await
            .expect("sweep")
            .is_empty(),
        "live until its expiry"
    );
    let reclaimed = store
        .reclaim_expired(at(IDLE_MS), 100)
        .await
        .expect("sweep");
    assert_eq!(
        reclaimed.iter().map(|s| &s.id).collect::<Vec<_>>(),
        vec![&cold.id],
        "the sweeper ends a cold session at its expiry, as any other"
    );
    let entries = store.outbox_read(100).await.expect("read");
    let last = entries.last().expect("an entry");
    assert_eq!(last.change, DurableChange::Ended(cold.id.clone()));
    assert_eq!(
        last.event.as_ref().map(|e| e.kind.name().as_str()),
        Some("expired")
    );
    assert_eq!(
        store
            .delete_user(&user, None, at(IDLE_MS + 1), Origin::CLI)
            .await
            .expect("revoke all"),
        0,
        "and its user's index no longer holds it"
    );
}
