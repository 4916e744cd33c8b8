//! What a validation costs Redis, counted by Redis itself (`INFO commandstats` on every node):
//! one read for a live session and one for a guessed token (D14), whichever node answers.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::Map;
use sessiond_core::{
    Client, NewSession, Origin, Policy, SessionError, Sessions, SystemClock, Token, UserId,
};
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
use sessiond_testkit::redis::{RedisReplicated, RedisServer};

/// Calls of `command` that `node` has served since its stats were last reset.
fn calls(node: &RedisServer, command: &str) -> u64 {
    node.cli(&["info", "commandstats"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn reset(data: &RedisReplicated) {
    for node in std::iter::once(&data.primary).chain(&data.replicas) {
        node.cli(&["config", "resetstat"]);
    }
}

/// Reads of session records on all nodes together. (The replica refresher's `MGET` of the
/// shared fence records, on the primary every 200 ms whatever the load, is not one.)
fn reads(data: &RedisReplicated) -> u64 {
    std::iter::once(&data.primary)
        .chain(&data.replicas)
        .map(|n| calls(n, "get") + calls(n, "getrange"))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d14_a_guessed_token_costs_one_read_with_replica_reads() {
    let data = tokio::task::spawn_blocking(|| RedisReplicated::start(2))
        .await
        .expect("start redis");
    let options = RedisOptions {
        timeout: Duration::from_secs(1),
        ..RedisOptions::new(Topology::parse(&data.url()).expect("a valid URL"))
    };
    let store = Arc::new(RedisStore::connect(&options).await.expect("connect"));
    for _ in 0..200 {
        if store.readable_replicas() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(store.readable_replicas(), 2, "both replicas readable");
    let sessions = Sessions::new(store.clone(), Policy::default(), Arc::new(SystemClock));
    let user = UserId::parse("user_d14").expect("valid user id");
    let issued = sessions
        .create(
            NewSession {
                user_id: user.clone(),
                user_data: Map::new(),
                metadata: Map::new(),
                ttl: None,
                replaces: None,
            },
            Origin::CLI,
        )
        .await
        .expect("create");

    reset(&data);
    let guesses = 100;
    for _ in 0..guesses {
        // Well-formed, for the same user's shard, never issued.
        let guess = Token::generate(&user).expect("token");
        let err = sessions
            .authenticate(&guess, Origin::holder(Client::NONE))
            .await
            .expect_err("a guessed token is refused");
        assert!(matches!(err, SessionError::Unauthenticated), "{err:?}");
    }
    assert_eq!(
        reads(&data),
        guesses,
        "one read per guessed token, on all nodes together"
    );

    reset(&data);
    for _ in 0..guesses {
        sessions
            .authenticate(&issued.token, Origin::holder(Client::NONE))
            .await
            .expect("the live session validates");
    }
    // The first validation may be due a touch (a script on the primary, not a read).
    assert_eq!(
        reads(&data),
        guesses,
        "one read per validation of a live session"
    );
}
