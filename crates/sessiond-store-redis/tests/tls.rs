//! TLS to Redis (`rediss://`): sessions work over a TLS connection to a `redis-server` with a
//! certificate from a CA of the test's own, and a server whose certificate is not trusted is
//! refused (503), never used.
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
use sessiond_store_redis::{RedisOptions, RedisStore, TlsRoots, Topology};
use sessiond_testkit::redis::RedisServer;

async fn sessions(url: &str, roots: TlsRoots) -> Sessions {
    let options = RedisOptions {
        timeout: Duration::from_secs(1),
        tls_roots: roots,
        ..RedisOptions::new(Topology::parse(url).expect("url"))
    };
    let store = RedisStore::connect(&options).await.expect("connect");
    Sessions::new(Arc::new(store), Policy::default(), Arc::new(SystemClock))
}

fn new_session() -> NewSession {
    NewSession {
        user_id: UserId::parse("user_tls").expect("valid"),
        user_data: Map::new(),
        metadata: Map::new(),
        ttl: None,
        replaces: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s23_sessions_work_over_tls_with_a_trusted_ca() {
    let (server, url, ca) = tokio::task::spawn_blocking(RedisServer::start_tls)
        .await
        .expect("tls redis");
    let sessions = sessions(&url, TlsRoots(Some(ca))).await;
    let issued = sessions
        .create(new_session(), Origin::CLI)
        .await
        .expect("create over TLS");
    sessions
        .authenticate(&issued.token, Origin::holder(Client::NONE))
        .await
        .expect("validate over TLS");
    assert!(
        sessions
            .revoke(&issued.record.id, Origin::CLI)
            .await
            .expect("revoke over TLS")
    );
    // The session really went through this server.
    assert!(
        server
            .cli(&["INFO", "stats"])
            .contains("total_commands_processed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s23_an_untrusted_certificate_is_refused() {
    let (_server, url, _ca) = tokio::task::spawn_blocking(RedisServer::start_tls)
        .await
        .expect("tls redis");
    // The system's roots do not include the test's CA.
    let sessions = sessions(&url, TlsRoots(None)).await;
    match sessions.create(new_session(), Origin::CLI).await {
        Err(SessionError::Store(e)) => assert!(e.is_unavailable(), "{e}"),
        other => panic!("an untrusted server must not be used, got {other:?}"),
    }
}
