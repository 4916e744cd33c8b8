//! A primary with replicas: revocation is immediate on every read path even while a replica
//! lags, and durable writes need the configured replica acknowledgements.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use sessiond_core::{
    Client, NewSession, Origin, Policy, SessionError, Sessions, SystemClock, UserId,
};
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
use sessiond_testkit::redis::RedisReplicated;

fn options(url: &str, min_acks: usize) -> RedisOptions {
    RedisOptions {
        timeout: Duration::from_secs(1),
        // A durable write waits long enough for a busy replica; a fencing one does not need to.
        replica_sync_timeout: Duration::from_millis(if min_acks > 0 { 1000 } else { 100 }),
        min_replica_acks: min_acks,
        ..RedisOptions::new(Topology::parse(url).expect("a valid URL"))
    }
}

async fn connect(url: &str, min_acks: usize, replicas: usize) -> (Arc<RedisStore>, Sessions) {
    let store = Arc::new(
        RedisStore::connect(&options(url, min_acks))
            .await
            .expect("connect"),
    );
    wait_readable(&store, replicas).await;
    let sessions = Sessions::new(store.clone(), Policy::default(), Arc::new(SystemClock));
    (store, sessions)
}

async fn wait_readable(store: &RedisStore, replicas: usize) {
    for _ in 0..200 {
        if store.readable_replicas() == replicas {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the store did not find {replicas} readable replicas within 5 s");
}

fn new_session(user: &str) -> NewSession {
    NewSession {
        user_id: UserId::parse(user).expect("valid user id"),
        user_data: Map::new(),
        metadata: Map::new(),
        ttl: None,
        replaces: None,
    }
}

/// Whether the replica on `port` holds the session's record (its key ends with the id's
/// random part: the `sess_` prefix and the shard are in the key's hash tag).
fn replica_holds(data: &RedisReplicated, index: usize, session_id: &str) -> bool {
    let random_part = &session_id["sess_".len() + 2..];
    data.replicas[index]
        .cli(&["--scan", "--pattern", "sd:s:*"])
        .lines()
        .any(|key| key.ends_with(random_part))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_a_revoked_session_is_refused_at_once_while_a_replica_lags() {
    let (data, link) = tokio::task::spawn_blocking(RedisReplicated::start_with_lagging_replica)
        .await
        .expect("start redis");
    let (store, sessions) = connect(&data.url(), 0, 2).await;
    let issued = sessions
        .create(new_session("user_lag"), Origin::CLI)
        .await
        .expect("create");
    let id = issued.record.id.to_string();
    assert!(
        replica_holds(&data, 1, &id),
        "the lagging replica had the session before"
    );
    for _ in 0..10 {
        sessions
            .authenticate(&issued.token, Origin::holder(Client::NONE))
            .await
            .expect("a live session validates");
    }

    link.pause();
    assert!(
        sessions
            .revoke(&issued.record.id, Origin::CLI)
            .await
            .expect("revoke")
    );
    // The lagging replica still answers, with the revoked session in it: reading there would
    // accept the token. It must not be read.
    assert!(
        replica_holds(&data, 1, &id),
        "the paused link kept the revoke from the replica"
    );
    for _ in 0..100 {
        assert!(
            matches!(
                sessions
                    .authenticate(&issued.token, Origin::holder(Client::NONE))
                    .await,
                Err(SessionError::Unauthenticated)
            ),
            "a revoked token was accepted while a replica lagged"
        );
    }
    // The lagging replica is fenced off (on a busy machine the other one may miss the sync
    // timeout too, and reads then go to the primary: slower, never wrong).
    assert!(
        store.readable_replicas() <= 1,
        "the lagging replica is fenced off"
    );

    link.resume();
    wait_readable(&store, 2).await;
    assert!(
        !replica_holds(&data, 1, &id),
        "the caught-up replica dropped the session"
    );
    for _ in 0..20 {
        assert!(matches!(
            sessions
                .authenticate(&issued.token, Origin::holder(Client::NONE))
                .await,
            Err(SessionError::Unauthenticated)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s04_a_rotated_away_token_is_refused_at_once_while_a_replica_lags() {
    let (data, link) = tokio::task::spawn_blocking(RedisReplicated::start_with_lagging_replica)
        .await
        .expect("start redis");
    let (_store, sessions) = connect(&data.url(), 0, 2).await;
    let issued = sessions
        .create(new_session("user_rotate"), Origin::CLI)
        .await
        .expect("create");

    link.pause();
    let rotated = sessions
        .rotate(&issued.token, Origin::holder(Client::NONE))
        .await
        .expect("rotate");
    for _ in 0..100 {
        assert!(
            matches!(
                sessions
                    .authenticate(&issued.token, Origin::holder(Client::NONE))
                    .await,
                Err(SessionError::Unauthenticated)
            ),
            "a rotated-away token was accepted while a replica lagged"
        );
        sessions
            .authenticate(&rotated.token, Origin::holder(Client::NONE))
            .await
            .expect("the new token works");
    }
    link.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_fail_with_too_few_replica_acknowledgements() {
    let (data, link) = tokio::task::spawn_blocking(RedisReplicated::start_with_lagging_replica)
        .await
        .expect("start redis");
    let (store, sessions) = connect(&data.url(), 2, 2).await;
    sessions
        .create(new_session("user_durable"), Origin::CLI)
        .await
        .expect("both replicas acknowledge");

    link.pause();
    match sessions
        .create(new_session("user_durable"), Origin::CLI)
        .await
    {
        Err(SessionError::Store(e)) => assert!(e.is_unavailable(), "{e}"),
        other => panic!("a create one replica could not acknowledge must fail, got {other:?}"),
    }

    link.resume();
    wait_readable(&store, 2).await;
    sessions
        .create(new_session("user_durable"), Origin::CLI)
        .await
        .expect("acknowledged again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s09_another_sessiond_process_refuses_the_revoked_token_at_once_too() {
    let (data, link) = tokio::task::spawn_blocking(RedisReplicated::start_with_lagging_replica)
        .await
        .expect("start redis");
    // Two stores on one deployment: two sessiond processes behind one gateway.
    let (_revoker_store, revoker) = connect(&data.url(), 0, 2).await;
    let (other_store, other) = connect(&data.url(), 0, 2).await;
    let issued = revoker
        .create(new_session("user_two"), Origin::CLI)
        .await
        .expect("create");
    other
        .authenticate(&issued.token, Origin::holder(Client::NONE))
        .await
        .expect("the other process validates it");

    link.pause();
    assert!(
        revoker
            .revoke(&issued.record.id, Origin::CLI)
            .await
            .expect("revoke")
    );
    assert!(
        replica_holds(&data, 1, issued.record.id.as_str()),
        "the lagging replica still has the session"
    );
    for _ in 0..100 {
        assert!(
            matches!(
                other
                    .authenticate(&issued.token, Origin::holder(Client::NONE))
                    .await,
                Err(SessionError::Unauthenticated)
            ),
            "another process accepted a revoked token while a replica lagged"
        );
    }
    assert!(
        other_store.readable_replicas() <= 1,
        "the other process fenced the replica too"
    );
    link.resume();
    wait_readable(&other_store, 2).await;
}
