//! Redis AUTH with an ACL user and password: sessiond works with the least it needs, and a
//! wrong password fails as "unavailable" (503), never as a crash.
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
use sessiond_testkit::redis::RedisServer;

/// An ACL user allowed only sessiond's keys, and the commands it uses (no `&*`: no Pub/Sub,
/// so it cannot forge Sentinel hello messages).
const ACL: &[&str] = &[
    "--user",
    "sessiond",
    "on",
    ">s3ssi0nd-pw",
    "~sd:*",
    "resetchannels",
    "-@all",
    "+get",
    "+mget",
    "+set",
    "+getrange",
    "+setrange",
    "+pexpire",
    "+del",
    "+exists",
    "+zadd",
    "+zrem",
    "+zrange",
    "+zremrangebyscore",
    "+zcard",
    "+zscore",
    "+eval",
    "+evalsha",
    "+script|load",
    "+wait",
    "+role",
    "+ping",
    "+hello",
    "+select",
    "--user",
    "default",
    "off",
];

async fn sessions(url: &str) -> Sessions {
    let options = RedisOptions {
        timeout: Duration::from_millis(500),
        ..RedisOptions::new(Topology::parse(url).expect("url"))
    };
    let store = RedisStore::connect(&options).await.expect("connect");
    Sessions::new(Arc::new(store), Policy::default(), Arc::new(SystemClock))
}

fn new_session() -> NewSession {
    NewSession {
        user_id: UserId::parse("user_acl").expect("valid"),
        user_data: Map::new(),
        metadata: Map::new(),
        ttl: None,
        replaces: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s23_works_as_an_acl_user_limited_to_its_keys_and_commands() {
    let server = tokio::task::spawn_blocking(|| RedisServer::start_with(ACL))
        .await
        .expect("start redis");
    let url = format!("redis://sessiond:s3ssi0nd-pw@127.0.0.1:{}", server.port());
    let sessions = sessions(&url).await;
    let issued = sessions
        .create(new_session(), Origin::CLI)
        .await
        .expect("create as the ACL user");
    sessions
        .authenticate(&issued.token, Origin::holder(Client::NONE))
        .await
        .expect("validate as the ACL user");
    let list = sessions.list(&issued.record.user_id).await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(
        sessions
            .revoke_user(&issued.record.user_id, None, Origin::CLI)
            .await
            .expect("revoke all"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s21_a_wrong_password_is_unavailable_not_a_crash() {
    let server = tokio::task::spawn_blocking(|| {
        RedisServer::start_with(&["--requirepass", "right-password"])
    })
    .await
    .expect("start redis");
    let url = format!("redis://:wrong-password@127.0.0.1:{}", server.port());
    let sessions = sessions(&url).await;
    match sessions.create(new_session(), Origin::CLI).await {
        Err(SessionError::Store(e)) => assert!(e.is_unavailable(), "{e}"),
        other => panic!("a refused AUTH must fail as unavailable, got {other:?}"),
    }
}
