//! The Redis engine keeping an outbox for the durable tier: the outbox conformance suite on
//! standalone and on a Cluster, the store conformance suite again with the outbox on (keeping
//! one changes no answer), and what only this engine must get right: entries of every shard,
//! in the one stream of standalone or spread over the shards' streams of a Cluster, found by a
//! process that did not write them, a revoke-all in several
//! batches, and revoke-everyone recorded before its walk.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "the helpers below fail the test they serve by panicking"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use sessiond_core::tier::{AuditKind, DurableChange, OutboxEntry};
use sessiond_core::{Origin, SessionStore};
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
use sessiond_testkit::conformance::{NO_LIMIT, at, fresh_user, record};
use sessiond_testkit::guarded::Guarded;
use sessiond_testkit::redis::{RedisCluster, RedisServer};

fn options(url: &str, per_stream: u64) -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(2),
        outbox_per_stream: Some(per_stream),
        ..RedisOptions::new(Topology::parse(url).expect("a valid URL"))
    }
}

async fn standalone(per_stream: u64) -> Arc<dyn SessionStore> {
    let server = RedisServer::start();
    let store = RedisStore::connect(&options(&server.url(), per_stream))
        .await
        .expect("connect");
    Guarded::wrap(Arc::new(store), server)
}

sessiond_testkit::outbox_conformance_tests!(standalone);

mod cluster {
    use super::*;

    async fn store(per_stream: u64) -> Arc<dyn SessionStore> {
        let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
            .await
            .expect("start the cluster");
        let store = RedisStore::connect(&options(&cluster.url(), per_stream))
            .await
            .expect("connect");
        Guarded::wrap(Arc::new(store), cluster)
    }

    sessiond_testkit::outbox_conformance_tests!(store);
}

mod with_the_outbox_on {
    async fn store() -> std::sync::Arc<dyn sessiond_core::SessionStore> {
        super::standalone(1_000_000).await
    }

    sessiond_testkit::store_conformance_tests!(store);
}

/// Everything in the outbox, read until it is empty (without removing it).
async fn all(store: &dyn SessionStore) -> Vec<OutboxEntry> {
    store.outbox_read(1_000_000).await.expect("read the outbox")
}

/// Creates sessions of users of many shards through one process, drops it (it died before
/// shipping), and ships everything through another: returns the ids created, the backlog the
/// second process reported before its first read, and its backlog once it has shipped all.
async fn written_by_one_shipped_by_another(
    url: &str,
) -> (HashSet<sessiond_core::SessionId>, Option<u64>, Option<u64>) {
    let writer = RedisStore::connect(&options(url, 1_000))
        .await
        .expect("connect");
    let mut ids = HashSet::new();
    let mut shards = HashSet::new();
    for i in 0..300 {
        let user = fresh_user(&format!("spread-{i}"));
        let r = record(&user, at(0));
        let _ = writer
            .create(&r, None, NO_LIMIT, at(0), Origin::CLI)
            .await
            .expect("create");
        shards.insert(r.id.shard());
        ids.insert(r.id);
    }
    assert!(
        shards.len() > 200,
        "spread over many shards: {}",
        shards.len()
    );
    drop(writer);
    let shipper = RedisStore::connect(&options(url, 1_000))
        .await
        .expect("connect");
    let before = shipper.outbox_backlog().await.expect("backlog");
    let mut found = HashSet::new();
    loop {
        let batch = shipper.outbox_read(64).await.expect("read");
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 64, "a read gives at most what was asked");
        assert!(
            // Two streams (on two Cluster nodes) may give the same position.
            batch.windows(2).all(|w| w[0].position <= w[1].position),
            "a batch is in position order"
        );
        for e in &batch {
            match &e.change {
                DurableChange::Live(r) => assert!(found.insert(r.id.clone()), "read once"),
                other => panic!("only creates were made: {other:?}"),
            }
        }
        shipper.outbox_remove(&batch).await.expect("remove");
    }
    assert_eq!(found, ids, "every entry, each once");
    let after = shipper.outbox_backlog().await.expect("backlog");
    assert_eq!(
        after.map(|b| b.oldest),
        Some(None),
        "nothing is left, so nothing is oldest"
    );
    (ids, before.map(|b| b.entries), after.map(|b| b.entries))
}

/// Standalone keeps one stream: a process that wrote none of the entries sees them all in its
/// backlog at once, and ships them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_and_ships_every_entry_of_the_one_stream() {
    let server = RedisServer::start();
    let (ids, before, after) = written_by_one_shipped_by_another(&server.url()).await;
    assert_eq!(
        before,
        Some(ids.len() as u64),
        "the one stream is read live"
    );
    assert_eq!(after, Some(0));
}

/// Processes sharing the one stream take turns to ship it, so an entry is not shipped once
/// per process: the holder keeps the turn while it asks again within its hold; once it stops
/// (it died), another gets the turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_the_one_stream_ship_it_in_turn() {
    let server = RedisServer::start();
    let connect = || async {
        RedisStore::connect(&options(&server.url(), 1_000))
            .await
            .expect("connect")
    };
    let (first, second) = (connect().await, connect().await);
    // Long beside the renewals' pace, so a slow machine does not let it lapse between them.
    let hold = Duration::from_secs(2);
    assert!(
        first.outbox_turn(hold).await.expect("turn"),
        "a free turn is taken"
    );
    assert!(
        !second.outbox_turn(hold).await.expect("turn"),
        "one holder at a time"
    );
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            first.outbox_turn(hold).await.expect("turn"),
            "renewed, it stays"
        );
        assert!(!second.outbox_turn(hold).await.expect("turn"));
    }
    // The holder stops asking: the turn passes once its hold is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !second.outbox_turn(hold).await.expect("turn") {
        assert!(
            std::time::Instant::now() < deadline,
            "the turn never passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !first.outbox_turn(hold).await.expect("turn"),
        "and it does not come back"
    );
}

/// Cluster keeps a stream per shard: a process that wrote none of them (the writer died
/// before shipping) finds them all by its sweep, though before its first read it knows of none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_cluster_another_process_finds_every_entry_of_every_shard() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3, 0))
        .await
        .expect("start the cluster");
    // Each process reads the shards it wrote to: none waits for a turn.
    for _ in 0..2 {
        let store = RedisStore::connect(&options(&cluster.url(), 1_000))
            .await
            .expect("connect");
        assert!(
            store
                .outbox_turn(Duration::from_secs(60))
                .await
                .expect("turn"),
            "every process's turn on Cluster"
        );
    }
    let (_, before, after) = written_by_one_shipped_by_another(&cluster.url()).await;
    assert_eq!(
        before,
        Some(0),
        "before its first read, a process knows of no entry of another"
    );
    assert_eq!(after, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_all_in_several_batches_ends_every_session_and_counts_once() {
    let store = standalone(1_000_000).await;
    let user = fresh_user("many");
    let mut ids = Vec::new();
    for i in 0..1_200 {
        let r = record(&user, at(i));
        let _ = store
            .create(&r, None, NO_LIMIT, at(i), Origin::CLI)
            .await
            .expect("create");
        ids.push(r.id);
    }
    let created = all(&*store).await;
    store.outbox_remove(&created).await.expect("remove");
    let revoked = store
        .delete_user(&user, None, at(2_000), Origin::CLI)
        .await
        .expect("revoke all");
    assert_eq!(revoked, 1_200);
    let entries = all(&*store).await;
    let events: Vec<&AuditKind> = entries
        .iter()
        .filter_map(|e| e.event.as_ref().map(|ev| &ev.kind))
        .collect();
    assert_eq!(
        events,
        vec![&AuditKind::RevokedAll {
            count: 1_200,
            kept: None
        }],
        "one event, with the whole count"
    );
    let mut ended = HashSet::new();
    for e in &entries {
        match &e.change {
            DurableChange::Ended(id) => {
                ended.insert(id.clone());
            }
            DurableChange::UserEnded { ended: gone, .. } => ended.extend(gone.iter().cloned()),
            other => panic!("revoke-all records ends only: {other:?}"),
        }
    }
    assert_eq!(
        ended,
        ids.into_iter().collect::<HashSet<_>>(),
        "every session removed is ended by name"
    );
    assert!(
        matches!(
            entries.last().map(|e| &e.change),
            Some(DurableChange::UserEnded { .. })
        ),
        "the user's end comes last"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_everyone_leaves_one_entry_and_the_outbox_survives_it() {
    let store = standalone(1_000_000).await;
    let user = fresh_user("everyone");
    let r = record(&user, at(0));
    let _ = store
        .create(&r, None, NO_LIMIT, at(0), Origin::CLI)
        .await
        .expect("create");
    let removed = store
        .delete_all(at(1), Origin::CLI)
        .await
        .expect("revoke everyone");
    assert_eq!(removed, 1);
    let entries = all(&*store).await;
    let shapes: Vec<(Option<&AuditKind>, &DurableChange)> = entries
        .iter()
        .map(|e| (e.event.as_ref().map(|ev| &ev.kind), &e.change))
        .collect();
    assert_eq!(
        shapes,
        vec![
            (Some(&AuditKind::Created), &DurableChange::Live(r.clone())),
            (
                Some(&AuditKind::RevokedEveryone { count: 1 }),
                &DurableChange::AllEnded
            ),
        ],
        "the create (its stream is not purged) and revoke-everyone, whose marker is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_the_user_of_a_session_changed_by_id() {
    let store = standalone(1_000_000).await;
    let user = fresh_user("by-id");
    let r = record(&user, at(0));
    let _ = store
        .create(&r, None, NO_LIMIT, at(0), Origin::CLI)
        .await
        .expect("create");
    let _ = store
        .update_data(&r.id, 1, &serde_json::Map::new(), at(1), Origin::CLI)
        .await
        .expect("patch");
    let _ = store
        .delete(&r.id, at(2), Origin::CLI)
        .await
        .expect("revoke");
    let entries = all(&*store).await;
    assert_eq!(entries.len(), 3);
    for e in &entries {
        let ev = e.event.as_ref().expect("an event");
        assert_eq!(ev.user_id.as_ref(), Some(&user), "{:?}", ev.kind);
        assert_eq!(ev.session_id.as_ref(), Some(&r.id));
    }
}
