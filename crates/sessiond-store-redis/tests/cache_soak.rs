//! Three sessiond instances with the near cache on one Redis: random creates, validations on
//! every instance, logouts, revokes, revoke-alls and rotations, with a checker that records
//! every answer. The claim it proves: no instance answers a validation with a live session
//! for a token whose logout, revoke, revoke-all or rotation had answered before the
//! validation began.
//!
//! `SESSIOND_CACHE_SOAK_SECS` sets how long each deployment runs (10 s by default, what
//! `.ci/run` runs; `scripts/cache-soak` runs 600).
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Map;
use sessiond_core::wrap::Wrapped;
use sessiond_core::{
    NewSession, Origin, Policy, SessionError, SessionId, Sessions, SystemClock, Token, UserId,
};
use sessiond_store_redis::{
    CacheOptions, CacheProbe, CachingStore, RedisOptions, RedisStore, Topology,
};
use sessiond_testkit::redis::{RedisSentinel, RedisServer};
use tokio::sync::Mutex;

const INSTANCES: usize = 3;
const WORKERS: usize = 6;

struct Instance {
    sessions: Sessions,
    probe: CacheProbe,
}

async fn instance(url: &str) -> Instance {
    let options = RedisOptions {
        timeout: Duration::from_secs(2),
        ..RedisOptions::new(Topology::parse(url).expect("a valid URL"))
    };
    let redis = RedisStore::connect(&options).await.expect("connect");
    let cache = CachingStore::new(
        Arc::new(redis),
        CacheOptions {
            max_entries: 100_000,
            ..CacheOptions::default()
        },
    )
    .expect("start the cache");
    for _ in 0..1_000 {
        if cache.serving() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(cache.serving(), "the cache's channel never answered");
    let probe = cache.probe();
    Instance {
        sessions: Sessions::new(
            Arc::new(Wrapped(cache)),
            Policy::default(),
            Arc::new(SystemClock),
        ),
        probe,
    }
}

/// A token the checker knows, and when the call that ended it answered.
struct Known {
    token: Token,
    id: SessionId,
    user: UserId,
    ended_at: Option<Instant>,
}

#[derive(Default)]
struct Tally {
    validations: AtomicU64,
    accepted: AtomicU64,
    ends: AtomicU64,
    checked_after_end: AtomicU64,
    violations: AtomicU64,
}

/// A small generator for the workload's choices (xorshift; quality does not matter here).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::try_from(self.0 % n as u64).unwrap_or(0)
    }
}

fn new_session(user: &UserId) -> NewSession {
    NewSession {
        user_id: user.clone(),
        user_data: Map::new(),
        metadata: Map::new(),
        ttl: None,
        replaces: None,
    }
}

const ORIGIN: Origin<'static> = Origin::CLI;

/// Validates `token` on `instance` and checks the answer against what had ended before.
async fn validate(
    instance: &Instance,
    known: &Mutex<Vec<Known>>,
    index: usize,
    token: &Token,
    tally: &Tally,
) {
    let started = Instant::now();
    let answer = instance.sessions.authenticate(token, ORIGIN).await;
    tally.validations.fetch_add(1, Ordering::Relaxed);
    match answer {
        Ok(_) => {
            tally.accepted.fetch_add(1, Ordering::Relaxed);
            let known = known.lock().await;
            if let Some(ended) = known[index].ended_at
                && ended < started
            {
                tally.violations.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "VIOLATION: token of session {} accepted {:?} after its end answered",
                    known[index].id,
                    started - ended
                );
            }
        }
        Err(SessionError::Unauthenticated) => {}
        Err(e) => panic!("a validation failed: {e}"),
    }
}

async fn soak(url: &str) {
    let secs: u64 = std::env::var("SESSIOND_CACHE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        instances.push(instance(url).await);
    }
    let instances = Arc::new(instances);
    let known: Arc<Mutex<Vec<Known>>> = Arc::new(Mutex::new(Vec::new()));
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let users: Vec<UserId> = (0..20)
        .map(|i| UserId::parse(&format!("soak_user_{i}")).expect("user id"))
        .collect();
    let users = Arc::new(users);
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let (instances, known, tally, users) = (
            instances.clone(),
            known.clone(),
            tally.clone(),
            users.clone(),
        );
        workers.spawn(async move {
            let seed = (u64::try_from(w).unwrap_or(0) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut dice = Dice(seed);
            while Instant::now() < deadline {
                let at = &instances[dice.roll(INSTANCES)];
                let op = dice.roll(100);
                let len = known.lock().await.len();
                if op < 6 || len < 10 {
                    let user = &users[dice.roll(users.len())];
                    let issued = at
                        .sessions
                        .create(new_session(user), ORIGIN)
                        .await
                        .expect("create");
                    known.lock().await.push(Known {
                        token: issued.token,
                        id: issued.record.id,
                        user: user.clone(),
                        ended_at: None,
                    });
                    continue;
                }
                // A live token among the recent ones, so that caches hold it when it ends (a
                // few tries: revoke-alls and the per-user cap end many).
                let (index, token, id, user, ended) = {
                    let k = known.lock().await;
                    let mut index = len - 1 - dice.roll(len.min(60));
                    for _ in 0..8 {
                        if k[index].ended_at.is_none() {
                            break;
                        }
                        index = len - 1 - dice.roll(len.min(60));
                    }
                    let e = &k[index];
                    let ended = e.ended_at.is_some();
                    (index, e.token.clone(), e.id.clone(), e.user.clone(), ended)
                };
                if op < 85 || ended {
                    validate(at, &known, index, &token, &tally).await;
                    continue;
                }
                // Warm every instance's cache with the token, then end it on one.
                for other in instances.iter() {
                    validate(other, &known, index, &token, &tally).await;
                }
                let ended_now: Vec<usize> = match op {
                    85..=89 => {
                        let _ = at.sessions.revoke(&id, ORIGIN).await.expect("revoke");
                        vec![index]
                    }
                    90..=94 => match at.sessions.rotate(&token, ORIGIN).await {
                        Ok(issued) => {
                            let mut k = known.lock().await;
                            k.push(Known {
                                token: issued.token,
                                id: issued.record.id,
                                user: user.clone(),
                                ended_at: None,
                            });
                            vec![index]
                        }
                        Err(SessionError::Unauthenticated) => Vec::new(),
                        Err(e) => panic!("rotate failed: {e}"),
                    },
                    _ => {
                        // Only sessions whose create answered before the revoke-all began
                        // are its to end.
                        let before = known.lock().await.len();
                        at.sessions
                            .revoke_user(&user, None, ORIGIN)
                            .await
                            .expect("revoke-all");
                        let k = known.lock().await;
                        (0..before).filter(|&i| k[i].user == user).collect()
                    }
                };
                let answered = Instant::now();
                {
                    let mut k = known.lock().await;
                    for &i in &ended_now {
                        if k[i].ended_at.is_none() {
                            k[i].ended_at = Some(answered);
                            tally.ends.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // The very next request on every instance.
                for other in instances.iter() {
                    validate(other, &known, index, &token, &tally).await;
                    tally.checked_after_end.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a worker");
    }
    let hits: u64 = instances.iter().map(|i| i.probe.stats().hits).sum();
    let misses: u64 = instances.iter().map(|i| i.probe.stats().misses).sum();
    let t = &tally;
    eprintln!(
        "{secs} s: {} validations ({} accepted), {} sessions ended, {} validations right after an end, {hits} hits, {misses} misses, {} violations",
        t.validations.load(Ordering::Relaxed),
        t.accepted.load(Ordering::Relaxed),
        t.ends.load(Ordering::Relaxed),
        t.checked_after_end.load(Ordering::Relaxed),
        t.violations.load(Ordering::Relaxed),
    );
    assert_eq!(
        t.violations.load(Ordering::Relaxed),
        0,
        "tokens accepted after their end"
    );
    assert!(
        t.checked_after_end.load(Ordering::Relaxed) >= 30,
        "too few ends to check"
    );
    // A refused token is never cached, so the measure is the accepted validations: most of
    // them must have come from memory.
    let accepted = t.accepted.load(Ordering::Relaxed);
    assert!(
        hits * 2 > accepted,
        "the caches served too little: {hits} hits for {accepted} accepted validations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_accepts_an_ended_token_on_one_redis() {
    let server = RedisServer::start();
    soak(&server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instance_accepts_an_ended_token_on_sentinel_with_replicas() {
    let deployment = tokio::task::spawn_blocking(|| RedisSentinel::start(2))
        .await
        .expect("start primary, replicas and sentinels");
    soak(&deployment.url()).await;
}
