//! Sentinel failover under load: `kill -9` of the primary while validations and creates run,
//! with `down-after-milliseconds` 1000 (the fixture's timing; `deploy/redis` uses 5000).
//!
//! Each test runs the same scenario on a deployment of its own and asserts one property.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Map;
use sessiond_core::{Client, NewSession, Origin, Policy, Sessions, SystemClock, Token, UserId};
use sessiond_store_redis::{RedisOptions, RedisStore, Topology};
use sessiond_testkit::redis::RedisSentinel;
use tokio::sync::Mutex;

/// What happened during one failover.
struct Failover {
    killed_at: Instant,
    /// Every validation of a session that existed before the kill: when, and whether it passed.
    validations: Vec<(Instant, bool)>,
    /// Every create: when it answered, and its token if it succeeded.
    creates: Vec<(Instant, Option<Token>)>,
    /// Sessions created (with a replica's acknowledgement) before the kill.
    existing: Vec<Token>,
    sessions: Sessions,
    _deployment: RedisSentinel,
}

fn new_session(i: usize) -> NewSession {
    NewSession {
        user_id: UserId::parse(&format!("user_{i}")).expect("valid user id"),
        user_data: Map::new(),
        metadata: Map::new(),
        ttl: None,
        replaces: None,
    }
}

async fn failover() -> Failover {
    let deployment = tokio::task::spawn_blocking(|| {
        let d = RedisSentinel::start(2);
        d.wait_for_quorum();
        d
    })
    .await
    .expect("start primary, replicas and sentinels");
    let options = RedisOptions {
        timeout: Duration::from_secs(1),
        replica_sync_timeout: Duration::from_secs(1),
        min_replica_acks: 1,
        ..RedisOptions::new(Topology::parse(&deployment.url()).expect("url"))
    };
    let store = Arc::new(RedisStore::connect(&options).await.expect("connect"));
    for _ in 0..200 {
        if store.readable_replicas() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let sessions = Sessions::new(store, Policy::default(), Arc::new(SystemClock));
    let mut existing = Vec::new();
    for i in 0..20 {
        existing.push(
            sessions
                .create(new_session(i), Origin::CLI)
                .await
                .expect("create before the kill")
                .token,
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let validations = Arc::new(Mutex::new(Vec::new()));
    let creates = Arc::new(Mutex::new(Vec::new()));
    let validator = {
        let (sessions, existing, stop, out) = (
            sessions.clone(),
            existing.clone(),
            stop.clone(),
            validations.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for token in &existing {
                    let ok = sessions
                        .authenticate(token, Origin::holder(Client::NONE))
                        .await
                        .is_ok();
                    out.lock().await.push((Instant::now(), ok));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let creator = {
        let (sessions, stop, out) = (sessions.clone(), stop.clone(), creates.clone());
        tokio::spawn(async move {
            let mut i = 1_000;
            while !stop.load(Ordering::Relaxed) {
                let token = sessions
                    .create(new_session(i), Origin::CLI)
                    .await
                    .ok()
                    .map(|s| s.token);
                out.lock().await.push((Instant::now(), token));
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut deployment = deployment;
    deployment.data.primary.kill();
    let killed_at = Instant::now();

    // Run until creates have worked again for 2 s, or 25 s at most.
    let deadline = killed_at + Duration::from_secs(25);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let recovered = creates
            .lock()
            .await
            .iter()
            .find(|(at, t)| *at > killed_at && t.is_some())
            .map(|(at, _)| *at);
        if recovered.is_some_and(|at| at.elapsed() > Duration::from_secs(2))
            || Instant::now() > deadline
        {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    validator.await.expect("validator");
    creator.await.expect("creator");
    let validations = std::mem::take(&mut *validations.lock().await);
    let creates = std::mem::take(&mut *creates.lock().await);
    Failover {
        killed_at,
        validations,
        creates,
        existing,
        sessions,
        _deployment: deployment,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validations_of_existing_sessions_keep_succeeding_through_a_failover() {
    let f = failover().await;
    let during = f
        .validations
        .iter()
        .filter(|(at, _)| *at > f.killed_at)
        .count();
    let failed = f.validations.iter().filter(|(_, ok)| !ok).count();
    println!(
        "validations: {} in all, {during} after the kill, {failed} failed",
        f.validations.len()
    );
    assert!(
        during > 100,
        "validations kept running after the kill ({during})"
    );
    assert_eq!(
        failed, 0,
        "every validation of an existing session succeeds throughout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_succeed_again_within_15_seconds_of_the_primary_dying() {
    let f = failover().await;
    let first_ok = f
        .creates
        .iter()
        .find(|(at, t)| *at > f.killed_at && t.is_some())
        .map(|(at, _)| at.duration_since(f.killed_at));
    let failed = f.creates.iter().filter(|(_, t)| t.is_none()).count();
    println!(
        "creates: {} in all, {failed} failed; first success after the kill: {first_ok:?}",
        f.creates.len()
    );
    let first_ok = first_ok.expect("creates succeed again after the failover");
    assert!(
        first_ok <= Duration::from_secs(15),
        "creates resumed after {first_ok:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_acknowledged_by_a_replica_before_the_kill_are_valid_after_the_failover() {
    let f = failover().await;
    let mut acknowledged: Vec<&Token> = f.existing.iter().collect();
    acknowledged.extend(
        f.creates
            .iter()
            .filter(|(at, _)| *at < f.killed_at)
            .filter_map(|(_, t)| t.as_ref()),
    );
    let mut lost = 0;
    for token in &acknowledged {
        if f.sessions
            .authenticate(token, Origin::holder(Client::NONE))
            .await
            .is_err()
        {
            lost += 1;
        }
    }
    println!(
        "acknowledged before the kill: {}, lost: {lost}",
        acknowledged.len()
    );
    assert!(acknowledged.len() > 20, "creates ran before the kill");
    assert_eq!(
        lost, 0,
        "no session acknowledged with a replica's acknowledgement is lost"
    );
}
