//! The near cache on real Redis processes: what it answers from memory, and that no
//! instance serves a session another instance revoked, changed, or that Redis lost, once the
//! change has answered; a silent, killed, flushed or failed-over Redis empties it.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test set-up fails the test"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sessiond_core::wrap::Wrapped;
use sessiond_core::{
    CreateOutcome, RotateOutcome, SessionRecord, SessionStore, UpdateOutcome, UserId,
};
use sessiond_store_redis::{CacheOptions, CachingStore, RedisOptions, RedisStore, Topology};
use sessiond_testkit::conformance::{BY, NO_LIMIT, at, fresh_hash, fresh_user, record};
use sessiond_testkit::proxy::PausableProxy;
use sessiond_testkit::redis::{RedisSentinel, RedisServer};

type Cached = Arc<Wrapped<CachingStore>>;

fn options(url: &str, timeout: Duration) -> RedisOptions {
    RedisOptions {
        timeout,
        ..RedisOptions::new(Topology::parse(url).expect("a valid URL"))
    }
}

/// A sessiond instance's store: the near cache over Redis at `url`, once it serves hits.
async fn instance(url: &str, timeout: Duration) -> Cached {
    let redis = RedisStore::connect(&options(url, timeout))
        .await
        .expect("connect");
    let cache = CachingStore::new(
        Arc::new(redis),
        CacheOptions {
            max_entries: 10_000,
            ..CacheOptions::default()
        },
    )
    .expect("start the cache");
    let cache = Arc::new(Wrapped(cache));
    wait_serving(&cache).await;
    cache
}

async fn wait_serving(cache: &Cached) {
    for _ in 0..1_000 {
        if cache.0.serving() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the near cache's channel did not answer a heartbeat in 10 s");
}

async fn wait_for(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} within 10 s");
}

async fn create(store: &dyn SessionStore, user: &UserId) -> SessionRecord {
    let rec = record(user, at(0));
    let outcome = store
        .create(&rec, None, NO_LIMIT, at(0), BY)
        .await
        .expect("create");
    assert!(
        matches!(outcome, CreateOutcome::Created { .. }),
        "{outcome:?}"
    );
    rec
}

/// `calls` of `cmdstat_get` in `INFO commandstats`: the `GET`s Redis has served.
fn gets_served(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_validations_are_answered_from_memory() {
    let server = RedisServer::start();
    let store = instance(&server.url(), Duration::from_secs(2)).await;
    let rec = create(&*store, &fresh_user("hot")).await;
    let before = gets_served(&server);
    for _ in 0..200 {
        let got = store.load_identity(&rec.id, at(10)).await.expect("load");
        assert_eq!(got.map(|r| r.id), Some(rec.id.clone()));
    }
    let gets = gets_served(&server) - before;
    let stats = store.0.stats();
    // The first read fills the cache; a read that finds the channel between heartbeats
    // (a scheduling delay on a busy machine) goes to Redis, and is counted as a miss.
    assert_eq!(gets, stats.misses, "every miss is one GET, and a hit none");
    assert!(stats.hits >= 150, "{stats:?}");
    assert_eq!(stats.entries, 1, "{stats:?}");
    assert!(stats.bytes > 0, "{stats:?}");
    // A session that does not exist is never cached: each read asks Redis.
    let unknown = record(&fresh_user("unknown"), at(0));
    for _ in 0..3 {
        assert!(
            store
                .load(&unknown.id, at(10))
                .await
                .expect("load")
                .is_none()
        );
    }
    assert_eq!(store.0.stats().entries, 1);
}

/// Instance A changes a session while instance B has it cached; B's very next read, started
/// after A's call answered, must see the change. Each kind of write, many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_instance_is_seen_by_another_on_its_next_read() {
    let server = RedisServer::start();
    let a = instance(&server.url(), Duration::from_secs(2)).await;
    let b = instance(&server.url(), Duration::from_secs(2)).await;
    for i in 0..60 {
        let user = fresh_user("moving");
        let rec = create(&*a, &user).await;
        // B validates twice: the second is a hit.
        for _ in 0..2 {
            let got = b.load(&rec.id, at(10)).await.expect("load");
            assert_eq!(got.as_ref().map(|r| r.version), Some(1));
        }
        match i % 5 {
            0 => {
                assert!(
                    a.delete(&rec.id, at(20), BY)
                        .await
                        .expect("delete")
                        .is_some()
                );
                assert_eq!(b.load(&rec.id, at(21)).await.expect("load"), None);
            }
            1 => {
                let new = fresh_hash();
                let r = a
                    .rotate(&rec.id, &rec.secret_hash, &new, at(20), BY)
                    .await
                    .expect("rotate");
                assert!(matches!(r, RotateOutcome::Rotated(_)), "{r:?}");
                let got = b.load(&rec.id, at(21)).await.expect("load").expect("live");
                assert_eq!(got.secret_hash, new, "B still knows the old secret");
            }
            2 => {
                assert_eq!(
                    a.delete_user(&user, None, at(20), BY)
                        .await
                        .expect("revoke-all"),
                    1
                );
                assert_eq!(b.load(&rec.id, at(21)).await.expect("load"), None);
            }
            3 => {
                let data = sessiond_testkit::conformance::object(json!({"cart": [i]}));
                let r = a
                    .update_data(&rec.id, 1, &data, at(20), BY)
                    .await
                    .expect("patch");
                assert!(matches!(r, UpdateOutcome::Updated(_)), "{r:?}");
                let got = b.load(&rec.id, at(21)).await.expect("load").expect("live");
                assert_eq!((got.version, got.user_data), (2, data));
            }
            _ => {
                // A login that replaces the session ends it.
                let next = record(&user, at(20));
                let r = a
                    .create(&next, Some(&rec.id), NO_LIMIT, at(20), BY)
                    .await
                    .expect("create");
                assert!(
                    matches!(r, CreateOutcome::Created { replaced: true, .. }),
                    "{r:?}"
                );
                assert_eq!(b.load(&rec.id, at(21)).await.expect("load"), None);
            }
        }
    }
    // B's second read of each round is a hit unless a busy machine delayed a heartbeat past
    // the window (then it reads Redis: slower, never wrong).
    let stats = b.0.stats();
    assert!(
        stats.hits >= 30,
        "B served its second reads from memory: {stats:?}"
    );
    assert!(stats.invalidations >= 40, "{stats:?}");
}

/// A touch on A is seen by B: its idle expiry moves, as without the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_recorded_on_one_instance_extends_the_session_on_another() {
    let server = RedisServer::start();
    let a = instance(&server.url(), Duration::from_secs(2)).await;
    let b = instance(&server.url(), Duration::from_secs(2)).await;
    let rec = create(&*a, &fresh_user("active")).await;
    let idle = rec.idle_timeout_ms;
    assert!(b.load(&rec.id, at(10)).await.expect("load").is_some());
    assert!(a.touch(&rec.id, at(idle - 1), BY).await.expect("touch"));
    // Past the first activity's idle expiry, before the touch's: B serves it.
    wait_for("B dropped its entry", || b.0.stats().invalidations >= 1).await;
    let got = b.load(&rec.id, at(idle + 10)).await.expect("load");
    assert_eq!(got.map(|r| r.last_activity), Some(at(idle - 1)));
}

/// With the channel silent (a half-open connection: bytes held, nothing closed), B serves no
/// hit once the window has passed, so a revocation it cannot hear about is never undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_channel_serves_no_hits() {
    let server = RedisServer::start();
    let proxy = PausableProxy::start(server.port());
    let a = instance(&server.url(), Duration::from_secs(2)).await;
    let b = instance(
        &format!("redis://127.0.0.1:{}", proxy.port()),
        Duration::from_millis(300),
    )
    .await;
    let rec = create(&*a, &fresh_user("silent")).await;
    // Read until B serves it from memory (a read finding the channel between heartbeats on a
    // busy machine goes to Redis instead).
    for _ in 0..100 {
        assert!(b.load(&rec.id, at(10)).await.expect("load").is_some());
        if b.0.stats().hits > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hits = b.0.stats().hits;
    assert!(hits >= 1, "B never served the session from memory");
    proxy.pause();
    assert!(
        a.delete(&rec.id, at(20), BY)
            .await
            .expect("delete")
            .is_some()
    );
    // B cannot hear of the delete; it must not answer from memory.
    let got = b.load(&rec.id, at(21)).await;
    assert!(
        !matches!(got, Ok(Some(_))),
        "a revoked session served through a silent channel: {got:?}"
    );
    assert_eq!(b.0.stats().hits, hits, "no hit while the channel is silent");
    proxy.resume();
    wait_serving(&b).await;
    assert!(b.0.stats().flushes >= 1, "the silent channel was dropped");
    assert_eq!(b.load(&rec.id, at(22)).await.expect("load"), None);
}

/// Redis killed and started again empty: the cache is flushed, and serves nothing it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_flushes_the_cache() {
    let mut server = RedisServer::start();
    let store = instance(&server.url(), Duration::from_millis(500)).await;
    let rec = create(&*store, &fresh_user("restart")).await;
    for _ in 0..2 {
        assert!(store.load(&rec.id, at(10)).await.expect("load").is_some());
    }
    let server = tokio::task::spawn_blocking(move || {
        server.restart();
        server
    })
    .await
    .expect("restart");
    wait_for("the cache flushed", || store.0.stats().flushes >= 1).await;
    wait_serving(&store).await;
    assert_eq!(store.0.stats().entries, 0);
    assert_eq!(store.load(&rec.id, at(20)).await.expect("load"), None);
    drop(server);
}

/// `FLUSHALL` (an operator's, or a replica's full resync) tells every tracking client that
/// every key changed: the cache empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_empties_the_cache() {
    let server = RedisServer::start();
    let store = instance(&server.url(), Duration::from_secs(2)).await;
    let rec = create(&*store, &fresh_user("flushed")).await;
    for _ in 0..2 {
        assert!(store.load(&rec.id, at(10)).await.expect("load").is_some());
    }
    server.cli(&["FLUSHALL"]);
    wait_for("the cache flushed", || store.0.stats().flushes >= 1).await;
    assert_eq!(store.load(&rec.id, at(20)).await.expect("load"), None);
}

/// The primary killed, Sentinel promotes a replica: the cache drops what it held, follows the
/// new primary, and a revocation there is seen at once by another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_flushes_the_cache_and_it_follows_the_new_primary() {
    let mut deployment = tokio::task::spawn_blocking(|| {
        let d = RedisSentinel::start(2);
        d.wait_for_quorum();
        d
    })
    .await
    .expect("start primary, replicas and sentinels");
    let url = deployment.url();
    let a = instance(&url, Duration::from_secs(1)).await;
    let b = instance(&url, Duration::from_secs(1)).await;
    let rec = create(&*a, &fresh_user("failover")).await;
    for _ in 0..2 {
        assert!(b.load(&rec.id, at(10)).await.expect("load").is_some());
    }
    let old = deployment.primary_port();
    deployment = tokio::task::spawn_blocking(move || {
        deployment.data.primary.kill();
        deployment
    })
    .await
    .expect("kill the primary");
    wait_for("B flushed", || b.0.stats().flushes >= 1).await;
    // Until the new primary is found, reads fail or find the session on it: never a hit of
    // the old channel.
    let mut moved = false;
    for _ in 0..300 {
        if deployment.primary_port() != old && b.0.serving() {
            moved = true;
            break;
        }
        let _ = b.load(&rec.id, at(11)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(moved, "the cache did not follow the new primary in 15 s");
    // A revokes on the new primary (retrying while its own connection moves over).
    let mut revoked = false;
    for _ in 0..100 {
        match a.delete(&rec.id, at(20), BY).await {
            Ok(_) => {
                revoked = true;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(revoked, "A could not revoke on the new primary");
    assert_eq!(b.load(&rec.id, at(21)).await.expect("load"), None);
}
