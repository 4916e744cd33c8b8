//! A full Redis (`maxmemory` reached, `noeviction`): creates fail loudly as unavailable (503),
//! every existing session still validates, and revoking still works, since that is what frees
//! memory.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};
use sessiond_core::{
    Client, NewSession, Origin, Policy, SessionError, Sessions, SystemClock, UserId,
};
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
use sessiond_testkit::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_creates_and_keeps_validating_and_revoking() {
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"])
    })
    .await
    .expect("start redis");
    let options = RedisOptions {
        timeout: Duration::from_secs(1),
        ..RedisOptions::new(Topology::parse(&server.url()).expect("url"))
    };
    let store = RedisStore::connect(&options).await.expect("connect");
    let sessions = Sessions::new(Arc::new(store), Policy::default(), Arc::new(SystemClock));
    let mut data = Map::new();
    data.insert("padding".into(), json!("x".repeat(1000)));

    let mut issued = Vec::new();
    let refusal = loop {
        let new = NewSession {
            user_id: UserId::parse(&format!("user_{}", issued.len())).expect("valid"),
            user_data: data.clone(),
            metadata: Map::new(),
            ttl: None,
            replaces: None,
        };
        match sessions.create(new, Origin::CLI).await {
            Ok(s) => issued.push(s),
            Err(e) => break e,
        }
        assert!(issued.len() < 50_000, "3 MB never filled up");
    };
    println!("created {} sessions before Redis was full", issued.len());
    match refusal {
        SessionError::Store(e) => assert!(e.is_unavailable(), "a full Redis is unavailable: {e}"),
        other => panic!("a full Redis must refuse creates as unavailable, got {other:?}"),
    }
    assert!(
        issued.len() > 100,
        "sessions were created before Redis filled up"
    );

    for s in &issued {
        sessions
            .authenticate(&s.token, Origin::holder(Client::NONE))
            .await
            .expect("an existing session still validates");
    }
    let first = &issued[0];
    assert!(
        sessions
            .revoke(&first.record.id, Origin::CLI)
            .await
            .expect("revoke works on a full Redis")
    );
    assert!(
        sessions
            .authenticate(&first.token, Origin::holder(Client::NONE))
            .await
            .is_err()
    );
    let user = &issued[1].record.user_id;
    assert_eq!(
        sessions
            .revoke_user(user, None, Origin::CLI)
            .await
            .expect("revoke-all works"),
        1
    );
}
