//! The store conformance suite: the behaviour of [`SessionStore`] that the service above it
//! relies on, checked against any engine.
//!
//! Every case is a `pub async fn` taking the store under test; [`crate::store_conformance_tests!`]
//! turns each into a test of its own. Cases assume only that the store they are given holds
//! nothing of theirs yet: users are fresh per case and counts are compared as differences, so
//! an engine whose factory shares a server between cases (one key prefix per store) still
//! passes.
//!
//! Time never passes by sleeping. Stores take `now` from their caller, so a case moves time by
//! passing a later `now`. All times sit after [`T0`], far in the future of any wall clock:
//! engines may also reclaim expired records by the wall clock (Redis key expiry), and a record
//! must not vanish under a case before the `now` it passes says so.
//!
//! Requirements of docs/requirements.md (a) these cases prove on every engine, under the same test
//! names in each engine's suite (SECURITY.md maps every id to its tests):
//!
//! - S4 (a rotated-away token is dead at once): [`rotate_with_old_hash_is_stale`],
//!   [`racing_rotations_have_exactly_one_winner`].
//! - S6 (an idle-expired session is never served, even before the engine reclaims it):
//!   [`idle_expiry_is_exact_to_the_millisecond`],
//!   [`idle_expired_session_is_gone_for_every_operation`],
//!   [`touch_of_unknown_or_expired_session_writes_nothing`].
//! - S7 (no activity extends a session past its absolute expiry):
//!   [`absolute_expiry_is_not_extended_by_touches`].
//! - S9 (logout deletes the session on the server): [`delete_removes_session_and_index_entry`].
//! - S10, S12 (end every session of a user): [`delete_user_removes_every_live_session`].
//! - S12 (the emergency path: every session of every user):
//!   [`delete_all_ends_every_session_of_every_user`].
//! - S11 (end all others): [`delete_user_keeps_the_excepted_session`].
//! - S13 (a user's list holds exactly the live sessions):
//!   [`list_user_returns_exactly_the_users_live_sessions`].
//! - S14, D13 (the per-user cap): [`cap_evicts_the_least_recently_active_session`],
//!   [`cap_with_reject_writes_nothing`], [`cap_ignores_expired_sessions`].
//! - S3 (a new login ends the session it replaces, in the same operation):
//!   [`create_with_replaces_ends_the_replaced_session_in_the_same_operation`],
//!   [`create_with_replaces_ends_only_a_live_session_of_the_same_user`],
//!   [`a_refused_create_ends_no_replaced_session`].

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a test case reports failure by panicking"
)]
#![allow(
    clippy::needless_pass_by_value,
    reason = "every case takes the store the same way so the macro can call them uniformly"
)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use sessiond_core::{
    AtCap, CreateOutcome, Origin, RotateOutcome, SecretHash, SessionId, SessionLimit,
    SessionRecord, SessionStore, StoreError, Timestamp, Token, UpdateOutcome, UserId,
};
use tokio::sync::Barrier;
use tokio::task::JoinSet;

/// The base of every time in the suite: 2100-01-01T00:00:00Z.
pub const T0: Timestamp = Timestamp::from_millis(4_102_444_800_000);

/// Idle timeout of records built by [`record`]: one hour.
pub const IDLE_MS: u64 = 3_600_000;

/// Absolute lifetime of records built by [`record`]: one day.
pub const ABSOLUTE_MS: u64 = 86_400_000;

/// No per-user cap, for cases that are not about the cap.
pub const NO_LIMIT: SessionLimit = SessionLimit {
    max_per_user: None,
    at_cap: AtCap::EvictOldest,
};

/// Who asks for every change the suite makes (an engine with an outbox records it).
pub const BY: Origin<'static> = Origin::CLI;

/// `ms` milliseconds after [`T0`].
pub fn at(ms: u64) -> Timestamp {
    T0.saturating_add(Duration::from_millis(ms))
}

/// A user id no other case uses, so cases cannot see each other's sessions even in a shared
/// store.
pub fn fresh_user(label: &str) -> UserId {
    let seed = UserId::parse(label).expect("labels are valid user ids");
    let unique = Token::generate(&seed).expect("the OS random number generator failed");
    UserId::parse(&format!("{label}-{}", unique.session_id()))
        .expect("a label plus a session id is a valid user id")
}

/// The hash of a new random secret.
pub fn fresh_hash() -> SecretHash {
    Token::generate(&UserId::parse("hash").expect("valid user id"))
        .expect("the OS random number generator failed")
        .secret_hash()
}

/// A new session for `user`, created and last active at `created_at`, with a fresh id and
/// secret, the default timeouts ([`IDLE_MS`], [`ABSOLUTE_MS`]), version 1, and non-trivial
/// `user_data` and `metadata` so a lossy encoding shows. Cases adjust the public fields.
pub fn record(user: &UserId, created_at: Timestamp) -> SessionRecord {
    let token = Token::generate(user).expect("the OS random number generator failed");
    SessionRecord {
        id: token.session_id().clone(),
        user_id: user.clone(),
        secret_hash: token.secret_hash(),
        created_at,
        last_activity: created_at,
        idle_timeout_ms: IDLE_MS,
        absolute_expires_at: created_at.saturating_add(Duration::from_millis(ABSOLUTE_MS)),
        version: 1,
        user_data: object(json!({
            "counter": 0,
            "cart": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            "prefs": {"theme": "dark", "lang": "fr-CA", "beta": true, "ratio": 0.25},
            "note": "caf\u{e9} \u{1f600} \"quoted\"",
            "none": null,
        })),
        metadata: object(json!({
            "ipAddress": "203.0.113.7",
            "userAgent": "conformance/1.0",
            "loginMethod": "password",
        })),
    }
}

/// A record like [`record`] with the given idle timeout.
pub fn record_with_idle(user: &UserId, created_at: Timestamp, idle_ms: u64) -> SessionRecord {
    SessionRecord {
        idle_timeout_ms: idle_ms,
        ..record(user, created_at)
    }
}

/// The JSON object in `value`.
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected a JSON object, got {other}"),
    }
}

/// Stores `record` with no cap at its creation time and checks that it was created.
async fn create(store: &dyn SessionStore, record: &SessionRecord) {
    let outcome = store
        .create(record, None, NO_LIMIT, record.created_at, BY)
        .await
        .expect("create failed");
    assert_eq!(
        outcome,
        CreateOutcome::Created {
            evicted: vec![],
            replaced: false,
        },
        "creating a fresh session with no cap must store it and evict nothing"
    );
}

async fn load(store: &dyn SessionStore, id: &SessionId, now: Timestamp) -> Option<SessionRecord> {
    store.load(id, now).await.expect("load failed")
}

async fn list(store: &dyn SessionStore, user: &UserId, now: Timestamp) -> Vec<SessionId> {
    let records = store.list_user(user, now).await.expect("list_user failed");
    assert!(
        records.iter().all(|r| &r.user_id == user),
        "list_user({user}) returned another user's session: {records:?}"
    );
    let mut ids: Vec<SessionId> = records.into_iter().map(|r| r.id).collect();
    ids.sort();
    ids
}

/// The ids, sorted, for comparing with [`list`].
fn ids<'a>(records: impl IntoIterator<Item = &'a SessionRecord>) -> Vec<SessionId> {
    let mut ids: Vec<SessionId> = records.into_iter().map(|r| r.id.clone()).collect();
    ids.sort();
    ids
}

/// The store's count, `None` for engines that cannot count without scanning.
async fn count(store: &dyn SessionStore) -> Option<u64> {
    store.count().await.expect("count failed")
}

/// Waits for every task, re-raising the first panic with its own message so a failed
/// assertion inside a task reads as itself.
async fn join_all<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(value) => out.push(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("task did not finish: {e}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// create and load

/// A created session loads back equal, field for field, and is listed under its user.
pub async fn create_then_load_returns_equal_record(store: Arc<dyn SessionStore>) {
    let user = fresh_user("create");
    let rec = record(&user, at(0));
    create(&*store, &rec).await;

    let loaded = load(&*store, &rec.id, at(1)).await;
    assert_eq!(
        loaded.as_ref(),
        Some(&rec),
        "load must return the record exactly as created"
    );
    assert_eq!(
        list(&*store, &user, at(1)).await,
        vec![rec.id.clone()],
        "create must index the session under its user"
    );
}

/// Loading an id that was never created finds nothing.
pub async fn load_of_unknown_id_is_none(store: Arc<dyn SessionStore>) {
    let unknown = record(&fresh_user("unknown"), at(0));
    assert_eq!(
        load(&*store, &unknown.id, at(0)).await,
        None,
        "load of an id never created must be None"
    );
}

/// A create over an existing id is refused and neither the record nor any index changes: a
/// colliding login must never take over someone else's session.
pub async fn create_with_taken_id_changes_nothing(store: Arc<dyn SessionStore>) {
    let owner = fresh_user("owner");
    // Session ids carry their user's shard, so a real collision is between users of one shard.
    let intruder = std::iter::repeat_with(|| fresh_user("intruder"))
        .find(|u| u.shard() == owner.shard())
        .expect("an endless iterator finds one");
    let original = record(&owner, at(0));
    create(&*store, &original).await;
    let before = count(&*store).await;

    let mut collision = record(&intruder, at(10));
    collision.id = original.id.clone();
    collision.user_data = object(json!({"taken": "over"}));
    let outcome = store
        .create(&collision, None, NO_LIMIT, at(10), BY)
        .await
        .expect("create failed");
    assert_eq!(
        outcome,
        CreateOutcome::IdTaken,
        "create with an existing id must report IdTaken"
    );

    assert_eq!(
        load(&*store, &original.id, at(20)).await.as_ref(),
        Some(&original),
        "a refused create must leave the stored record unchanged"
    );
    assert_eq!(
        list(&*store, &intruder, at(20)).await,
        Vec::<SessionId>::new(),
        "a refused create must not index the session under the new user"
    );
    assert_eq!(
        list(&*store, &owner, at(20)).await,
        vec![original.id.clone()],
        "a refused create must leave the owner's index unchanged"
    );
    assert_eq!(
        count(&*store).await,
        before,
        "a refused create must not add a record"
    );
}

// ---------------------------------------------------------------------------------------------
// touch

/// Touch records later activity and changes nothing else: not the version (clients use it for
/// `If-Match`) and not the data.
pub async fn touch_moves_activity_forward_and_keeps_data(store: Arc<dyn SessionStore>) {
    let rec = record(&fresh_user("touch"), at(0));
    create(&*store, &rec).await;

    assert!(
        store
            .touch(&rec.id, at(5_000), BY)
            .await
            .expect("touch failed"),
        "touch of a live session must report true"
    );
    let loaded = load(&*store, &rec.id, at(5_000))
        .await
        .expect("a touched session must still load");
    assert_eq!(
        loaded.last_activity,
        at(5_000),
        "touch must record the new activity time"
    );
    let expected = SessionRecord {
        last_activity: at(5_000),
        ..rec.clone()
    };
    assert_eq!(
        loaded, expected,
        "touch must change nothing but last_activity (version, data, hash, expiry stay)"
    );
}

/// Touches may arrive out of order (two validations racing); an older one must not make a
/// session look idle for longer than it is.
pub async fn touch_never_moves_activity_backward(store: Arc<dyn SessionStore>) {
    let rec = record(&fresh_user("touch-back"), at(0));
    create(&*store, &rec).await;

    assert!(
        store
            .touch(&rec.id, at(5_000), BY)
            .await
            .expect("touch failed"),
        "touch of a live session must report true"
    );
    assert!(
        store
            .touch(&rec.id, at(2_000), BY)
            .await
            .expect("touch failed"),
        "an out-of-order touch of a live session must still report true"
    );
    let loaded = load(&*store, &rec.id, at(5_000))
        .await
        .expect("a touched session must still load");
    assert_eq!(
        loaded.last_activity,
        at(5_000),
        "a touch with an earlier time must keep the later activity"
    );
    assert_eq!(loaded.version, rec.version, "touch must not change version");
}

/// Activity slides the idle expiry: a session used within its idle timeout stays alive past
/// the time it would have idled out.
pub async fn touch_extends_idle_expiry(store: Arc<dyn SessionStore>) {
    let rec = record_with_idle(&fresh_user("touch-slide"), at(0), 1_000);
    create(&*store, &rec).await;

    assert!(
        store
            .touch(&rec.id, at(800), BY)
            .await
            .expect("touch failed"),
        "touch of a live session must report true"
    );
    assert!(
        load(&*store, &rec.id, at(1_500)).await.is_some(),
        "after a touch at +800 a 1 s idle session must live until +1800 (loaded at +1500)"
    );
    assert!(
        load(&*store, &rec.id, at(1_799)).await.is_some(),
        "after a touch at +800 a 1 s idle session must live at +1799"
    );
    assert_eq!(
        load(&*store, &rec.id, at(1_800)).await,
        None,
        "after a touch at +800 a 1 s idle session must end at +1800"
    );
}

/// Touch of a session that does not exist, or has expired, reports false and writes nothing:
/// a late validation must never bring an ended session back.
pub async fn touch_of_unknown_or_expired_session_writes_nothing(store: Arc<dyn SessionStore>) {
    let unknown = record(&fresh_user("touch-unknown"), at(0));
    let before = count(&*store).await;
    assert!(
        !store
            .touch(&unknown.id, at(0), BY)
            .await
            .expect("touch failed"),
        "touch of an unknown id must report false"
    );
    assert_eq!(
        load(&*store, &unknown.id, at(0)).await,
        None,
        "touch of an unknown id must not create a session"
    );
    assert_eq!(
        count(&*store).await,
        before,
        "touch of an unknown id must not store anything"
    );

    let rec = record_with_idle(&fresh_user("touch-expired"), at(0), 1_000);
    create(&*store, &rec).await;
    assert!(
        !store
            .touch(&rec.id, at(1_000), BY)
            .await
            .expect("touch failed"),
        "touch at the idle expiry must report false"
    );
    assert!(
        !store
            .touch(&rec.id, at(1_200), BY)
            .await
            .expect("touch failed"),
        "touch after the idle expiry must report false"
    );
    for now in [at(1_000), at(1_200), at(1_999), at(2_100)] {
        assert_eq!(
            load(&*store, &rec.id, now).await,
            None,
            "a touch of an expired session must not resurrect it (loaded at +{} ms)",
            now.as_millis() - T0.as_millis()
        );
    }
    // Whether an engine keeps the expired record until reclaimed is its business, but if it
    // still answers for a time when the session was live, the touch must not show in it.
    if let Some(kept) = load(&*store, &rec.id, at(500)).await {
        assert_eq!(
            kept.last_activity, rec.last_activity,
            "a touch of an expired session must not write activity"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// expiry

/// Idle expiry is exact: live up to the last millisecond before `last_activity + idle`, gone
/// at it.
pub async fn idle_expiry_is_exact_to_the_millisecond(store: Arc<dyn SessionStore>) {
    let user = fresh_user("idle");
    let rec = record_with_idle(&user, at(0), 1_000);
    create(&*store, &rec).await;

    assert_eq!(
        load(&*store, &rec.id, at(999)).await.as_ref(),
        Some(&rec),
        "a 1 s idle session must load at last_activity + 999 ms"
    );
    assert_eq!(
        list(&*store, &user, at(999)).await,
        vec![rec.id.clone()],
        "a 1 s idle session must be listed at last_activity + 999 ms"
    );
    assert_eq!(
        load(&*store, &rec.id, at(1_000)).await,
        None,
        "a 1 s idle session must not load at last_activity + 1000 ms"
    );
    assert_eq!(
        list(&*store, &user, at(1_000)).await,
        Vec::<SessionId>::new(),
        "a 1 s idle session must not be listed at last_activity + 1000 ms"
    );
}

/// Once idle-expired, a session is absent for every write too, and those writes change
/// nothing.
pub async fn idle_expired_session_is_gone_for_every_operation(store: Arc<dyn SessionStore>) {
    let rec = record_with_idle(&fresh_user("idle-writes"), at(0), 1_000);
    create(&*store, &rec).await;
    let expired = at(1_000);

    let updated = store
        .update_data(
            &rec.id,
            rec.version,
            &object(json!({"late": true})),
            expired,
            BY,
        )
        .await
        .expect("update_data failed");
    assert_eq!(
        updated,
        UpdateOutcome::NotFound,
        "update_data of an expired session must report NotFound"
    );
    let rotated = store
        .rotate(&rec.id, &rec.secret_hash, &fresh_hash(), expired, BY)
        .await
        .expect("rotate failed");
    assert_eq!(
        rotated,
        RotateOutcome::NotFound,
        "rotate of an expired session must report NotFound"
    );
    assert!(
        !store
            .touch(&rec.id, expired, BY)
            .await
            .expect("touch failed"),
        "touch of an expired session must report false"
    );

    assert_eq!(
        load(&*store, &rec.id, expired).await,
        None,
        "writes to an expired session must not bring it back"
    );
    if let Some(kept) = load(&*store, &rec.id, at(500)).await {
        assert_eq!(
            kept, rec,
            "writes to an expired session must not change the stored record"
        );
    }
}

/// The absolute expiry is a hard end: however often a session is used, it ends there.
pub async fn absolute_expiry_is_not_extended_by_touches(store: Arc<dyn SessionStore>) {
    let user = fresh_user("absolute");
    let rec = SessionRecord {
        idle_timeout_ms: 40_000,
        absolute_expires_at: at(100_000),
        ..record(&user, at(0))
    };
    create(&*store, &rec).await;

    // An engine with its own expiry (Redis key TTLs) keeps a touched record for
    // `absolute expiry - now` of real time: leave the last check before the absolute expiry
    // ten real seconds of room, so it never races the engine's own clock.
    for t in [30_000, 60_000, 90_000] {
        assert!(
            store.touch(&rec.id, at(t), BY).await.expect("touch failed"),
            "touch at +{t} ms, before the absolute expiry, must report true"
        );
    }
    assert!(
        load(&*store, &rec.id, at(99_999)).await.is_some(),
        "the session must live until just before its absolute expiry"
    );
    assert!(
        store
            .touch(&rec.id, at(99_999), BY)
            .await
            .expect("touch failed"),
        "touch just before the absolute expiry must report true"
    );
    assert_eq!(
        load(&*store, &rec.id, at(100_000)).await,
        None,
        "the session must end at its absolute expiry even though it was just touched"
    );
    assert_eq!(
        list(&*store, &user, at(100_000)).await,
        Vec::<SessionId>::new(),
        "a session past its absolute expiry must not be listed"
    );
    assert!(
        !store
            .touch(&rec.id, at(100_000), BY)
            .await
            .expect("touch failed"),
        "touch at the absolute expiry must report false"
    );
    assert_eq!(
        load(&*store, &rec.id, at(120_000)).await,
        None,
        "a session past its absolute expiry must stay gone"
    );
}

// ---------------------------------------------------------------------------------------------
// update_data

/// Compare-and-set with the current version replaces the data, bumps the version by one and
/// changes nothing else.
pub async fn update_data_with_current_version_replaces_data(store: Arc<dyn SessionStore>) {
    let rec = record(&fresh_user("update"), at(0));
    create(&*store, &rec).await;

    let data = object(json!({"cart": [], "step": "checkout"}));
    let outcome = store
        .update_data(&rec.id, rec.version, &data, at(10), BY)
        .await
        .expect("update_data failed");
    let expected = SessionRecord {
        version: rec.version + 1,
        user_data: data.clone(),
        ..rec.clone()
    };
    assert_eq!(
        outcome,
        UpdateOutcome::Updated(expected.clone()),
        "update_data with the current version must return the record with the new data and \
         version + 1"
    );
    assert_eq!(
        load(&*store, &rec.id, at(10)).await,
        Some(expected.clone()),
        "the update must be stored as returned"
    );

    // Replacing, not merging: keys absent from the new document are gone.
    let outcome = store
        .update_data(&rec.id, expected.version, &Map::new(), at(20), BY)
        .await
        .expect("update_data failed");
    let UpdateOutcome::Updated(emptied) = outcome else {
        panic!("update_data with the current version must succeed, got {outcome:?}");
    };
    assert_eq!(
        emptied.version,
        rec.version + 2,
        "each update bumps version"
    );
    assert!(
        emptied.user_data.is_empty(),
        "update_data must replace the whole document, got {:?}",
        emptied.user_data
    );
}

/// Compare-and-set with any other version writes nothing and reports the stored version, so
/// a client can refetch and retry.
pub async fn update_data_with_stale_version_is_refused(store: Arc<dyn SessionStore>) {
    let rec = record(&fresh_user("update-stale"), at(0));
    create(&*store, &rec).await;
    let first = object(json!({"winner": "first"}));
    let outcome = store
        .update_data(&rec.id, 1, &first, at(10), BY)
        .await
        .expect("update_data failed");
    assert!(
        matches!(outcome, UpdateOutcome::Updated(_)),
        "update_data with the current version must succeed, got {outcome:?}"
    );

    for stale in [1, 0, 3, 7] {
        let outcome = store
            .update_data(
                &rec.id,
                stale,
                &object(json!({"winner": "late"})),
                at(20),
                BY,
            )
            .await
            .expect("update_data failed");
        assert_eq!(
            outcome,
            UpdateOutcome::VersionMismatch { current: 2 },
            "update_data expecting version {stale} when 2 is stored must report the current one"
        );
    }
    let stored = load(&*store, &rec.id, at(20))
        .await
        .expect("the session must still load");
    assert_eq!(
        (stored.version, &stored.user_data),
        (2, &first),
        "a refused update must not change the data or the version"
    );
}

/// Compare-and-set on a session that does not exist reports NotFound and creates nothing.
pub async fn update_data_of_unknown_session_is_not_found(store: Arc<dyn SessionStore>) {
    let unknown = record(&fresh_user("update-unknown"), at(0));
    let outcome = store
        .update_data(&unknown.id, 1, &object(json!({"a": 1})), at(0), BY)
        .await
        .expect("update_data failed");
    assert_eq!(
        outcome,
        UpdateOutcome::NotFound,
        "update_data of an unknown id must report NotFound"
    );
    assert_eq!(
        load(&*store, &unknown.id, at(0)).await,
        None,
        "update_data of an unknown id must not create a session"
    );
}

/// Many clients doing read-modify-write through compare-and-set lose no update: the version
/// check makes every increment land exactly once.
pub async fn concurrent_updates_lose_nothing(store: Arc<dyn SessionStore>) {
    const TASKS: usize = 16;
    const INCREMENTS: u64 = 10;
    const TOTAL: u64 = TASKS as u64 * INCREMENTS;
    // Far more than contention can cost; reaching it means compare-and-set never succeeds.
    const MAX_ATTEMPTS: usize = 10_000;

    let rec = record(&fresh_user("counter"), at(0));
    create(&*store, &rec).await;
    // All tasks start together so their read-modify-write cycles overlap.
    let start = Arc::new(Barrier::new(TASKS));

    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let (store, id, start) = (store.clone(), rec.id.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            for _ in 0..INCREMENTS {
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(
                        attempts <= MAX_ATTEMPTS,
                        "an increment did not land in {MAX_ATTEMPTS} compare-and-set attempts"
                    );
                    let current = load(&*store, &id, at(1))
                        .await
                        .expect("the session must load throughout");
                    let n = current.user_data["counter"]
                        .as_u64()
                        .expect("counter must stay a number");
                    let mut data = current.user_data.clone();
                    data.insert("counter".into(), json!(n + 1));
                    match store
                        .update_data(&id, current.version, &data, at(1), BY)
                        .await
                        .expect("update_data failed")
                    {
                        UpdateOutcome::Updated(_) => break,
                        UpdateOutcome::VersionMismatch { .. } => continue,
                        UpdateOutcome::NotFound => {
                            panic!("update_data reported NotFound for a live session")
                        }
                    }
                }
            }
        });
    }
    join_all(tasks).await;

    let done = load(&*store, &rec.id, at(1))
        .await
        .expect("the session must load after the updates");
    assert_eq!(
        done.user_data["counter"],
        json!(TOTAL),
        "every compare-and-set increment must land exactly once"
    );
    assert_eq!(
        done.version,
        1 + TOTAL,
        "version must rise by exactly one per successful update"
    );
}

// ---------------------------------------------------------------------------------------------
// rotate

/// Rotation with the current hash installs the new one and changes nothing else.
pub async fn rotate_with_expected_hash_replaces_it(store: Arc<dyn SessionStore>) {
    let rec = record(&fresh_user("rotate"), at(0));
    create(&*store, &rec).await;

    let replacement = fresh_hash();
    let outcome = store
        .rotate(&rec.id, &rec.secret_hash, &replacement, at(10), BY)
        .await
        .expect("rotate failed");
    let expected = SessionRecord {
        secret_hash: replacement.clone(),
        ..rec.clone()
    };
    assert_eq!(
        outcome,
        RotateOutcome::Rotated(expected.clone()),
        "rotate with the stored hash must return the record with the new hash and nothing \
         else changed"
    );
    let stored = load(&*store, &rec.id, at(10))
        .await
        .expect("a rotated session must still load");
    assert!(
        stored.secret_hash.ct_matches(&replacement),
        "rotate must store the new hash"
    );
    assert_eq!(stored, expected, "the rotation must be stored as returned");
}

/// Once rotated, the old secret is dead: rotating from it again is refused and the new hash
/// stays.
pub async fn rotate_with_old_hash_is_stale(store: Arc<dyn SessionStore>) {
    let rec = record(&fresh_user("rotate-stale"), at(0));
    create(&*store, &rec).await;
    let first = fresh_hash();
    let outcome = store
        .rotate(&rec.id, &rec.secret_hash, &first, at(10), BY)
        .await
        .expect("rotate failed");
    assert!(
        matches!(outcome, RotateOutcome::Rotated(_)),
        "rotate with the stored hash must succeed, got {outcome:?}"
    );

    let outcome = store
        .rotate(&rec.id, &rec.secret_hash, &fresh_hash(), at(20), BY)
        .await
        .expect("rotate failed");
    assert_eq!(
        outcome,
        RotateOutcome::Stale,
        "rotate with the replaced hash must report Stale"
    );
    let stored = load(&*store, &rec.id, at(20))
        .await
        .expect("the session must still load");
    assert!(
        stored.secret_hash.ct_matches(&first),
        "a stale rotation must leave the current hash in place"
    );
}

/// Rotation of a session that does not exist reports NotFound and creates nothing.
pub async fn rotate_of_unknown_session_is_not_found(store: Arc<dyn SessionStore>) {
    let unknown = record(&fresh_user("rotate-unknown"), at(0));
    let outcome = store
        .rotate(&unknown.id, &unknown.secret_hash, &fresh_hash(), at(0), BY)
        .await
        .expect("rotate failed");
    assert_eq!(
        outcome,
        RotateOutcome::NotFound,
        "rotate of an unknown id must report NotFound"
    );
    assert_eq!(
        load(&*store, &unknown.id, at(0)).await,
        None,
        "rotate of an unknown id must not create a session"
    );
}

/// Two clients rotating the same token at once: exactly one gets a new token, the other is
/// told its token is stale, and the stored hash is the winner's. Otherwise a stolen token
/// could be rotated alongside the real one and both would stay valid.
pub async fn racing_rotations_have_exactly_one_winner(store: Arc<dyn SessionStore>) {
    const ROUNDS: usize = 20;
    let user = fresh_user("rotate-race");
    for round in 0..ROUNDS {
        let rec = record(&user, at(0));
        create(&*store, &rec).await;
        // Both rotations start together so they overlap as much as the runtime allows.
        let start = Arc::new(Barrier::new(2));
        let mut tasks = JoinSet::new();
        for _ in 0..2 {
            let (store, start) = (store.clone(), start.clone());
            let (id, expected, replacement) =
                (rec.id.clone(), rec.secret_hash.clone(), fresh_hash());
            tasks.spawn(async move {
                start.wait().await;
                let outcome = store
                    .rotate(&id, &expected, &replacement, at(10), BY)
                    .await
                    .expect("rotate failed");
                (outcome, replacement)
            });
        }
        let results = join_all(tasks).await;

        let winners: Vec<&SecretHash> = results
            .iter()
            .filter(|(outcome, _)| matches!(outcome, RotateOutcome::Rotated(_)))
            .map(|(_, replacement)| replacement)
            .collect();
        // Only the variants: the records would bury the message.
        let outcomes: Vec<&str> = results
            .iter()
            .map(|(outcome, _)| match outcome {
                RotateOutcome::Rotated(_) => "Rotated",
                RotateOutcome::Stale => "Stale",
                RotateOutcome::NotFound => "NotFound",
            })
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one of two racing rotations must win, got {outcomes:?}"
        );
        assert!(
            outcomes.contains(&"Stale"),
            "round {round}: the losing rotation must report Stale, got {outcomes:?}"
        );
        let stored = load(&*store, &rec.id, at(10))
            .await
            .expect("a rotated session must still load");
        assert!(
            stored.secret_hash.ct_matches(winners[0]),
            "round {round}: the stored hash must be the winning rotation's"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// delete

/// Delete ends a live session: reported once, gone from load, from the user's list and from
/// the count.
pub async fn delete_removes_session_and_index_entry(store: Arc<dyn SessionStore>) {
    let user = fresh_user("delete");
    let doomed = record(&user, at(0));
    let kept = record(&user, at(0));
    create(&*store, &doomed).await;
    create(&*store, &kept).await;
    let before = count(&*store).await;

    assert_eq!(
        store
            .delete(&doomed.id, at(10), BY)
            .await
            .expect("delete failed"),
        Some(user.clone()),
        "delete of a live session must report its user"
    );
    assert_eq!(
        store
            .delete(&doomed.id, at(10), BY)
            .await
            .expect("delete failed"),
        None,
        "a second delete of the same session must report nothing removed"
    );
    assert_eq!(
        load(&*store, &doomed.id, at(10)).await,
        None,
        "a deleted session must not load"
    );
    assert_eq!(
        list(&*store, &user, at(10)).await,
        vec![kept.id.clone()],
        "a deleted session must leave the user's list, and only it"
    );
    assert_eq!(
        count(&*store).await,
        before.map(|b| b - 1),
        "delete must remove the stored record"
    );
    assert!(
        !store
            .touch(&doomed.id, at(20), BY)
            .await
            .expect("touch failed"),
        "touch of a deleted session must report false"
    );
    assert_eq!(
        load(&*store, &doomed.id, at(20)).await,
        None,
        "nothing may bring a deleted session back"
    );
    let unknown = record(&user, at(0));
    assert_eq!(
        store
            .delete(&unknown.id, at(10), BY)
            .await
            .expect("delete failed"),
        None,
        "delete of an unknown id must report nothing removed"
    );
}

/// Deleting a session that has already expired reports false (it had already ended) and
/// still removes it.
pub async fn delete_of_expired_session_reports_false(store: Arc<dyn SessionStore>) {
    let user = fresh_user("delete-expired");
    let rec = record_with_idle(&user, at(0), 1_000);
    create(&*store, &rec).await;

    assert_eq!(
        store
            .delete(&rec.id, at(1_000), BY)
            .await
            .expect("delete failed"),
        None,
        "delete of an expired session must report nothing live removed"
    );
    assert_eq!(
        load(&*store, &rec.id, at(500)).await,
        None,
        "delete of an expired session must still remove the record"
    );
    assert_eq!(
        list(&*store, &user, at(500)).await,
        Vec::<SessionId>::new(),
        "delete of an expired session must still remove it from the user's list"
    );
}

// ---------------------------------------------------------------------------------------------
// list_user and delete_user

/// The device list shows exactly the user's live sessions: none of another user's, none
/// expired.
pub async fn list_user_returns_exactly_the_users_live_sessions(store: Arc<dyn SessionStore>) {
    let user = fresh_user("list");
    let other = fresh_user("list-other");
    let live_a = record(&user, at(0));
    let live_b = record(&user, at(100));
    let idle = record_with_idle(&user, at(0), 1_000);
    let others = record(&other, at(0));
    for rec in [&live_a, &live_b, &idle, &others] {
        create(&*store, rec).await;
    }

    let now = at(5_000);
    let listed = store.list_user(&user, now).await.expect("list_user failed");
    let mut listed_sorted = listed.clone();
    listed_sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected = vec![live_a.clone(), live_b.clone()];
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        listed_sorted, expected,
        "list_user must return exactly the user's live sessions, as stored"
    );
    assert_eq!(
        list(&*store, &other, now).await,
        vec![others.id.clone()],
        "list_user must not mix users"
    );
}

/// A user with no sessions has an empty list.
pub async fn list_of_unknown_user_is_empty(store: Arc<dyn SessionStore>) {
    assert_eq!(
        list(&*store, &fresh_user("nobody"), at(0)).await,
        Vec::<SessionId>::new(),
        "list_user of a user with no sessions must be empty"
    );
}

/// "Sign out everywhere": every session of the user ends, the count of live ones is
/// reported, other users are untouched.
pub async fn delete_user_removes_every_live_session(store: Arc<dyn SessionStore>) {
    let user = fresh_user("revoke-all");
    let other = fresh_user("revoke-all-other");
    let mine: Vec<SessionRecord> = (0..3).map(|i| record(&user, at(i * 10))).collect();
    let expired = record_with_idle(&user, at(0), 1_000);
    let theirs: Vec<SessionRecord> = (0..2).map(|_| record(&other, at(0))).collect();
    for rec in mine.iter().chain([&expired]).chain(&theirs) {
        create(&*store, rec).await;
    }

    let now = at(5_000);
    let removed = store
        .delete_user(&user, None, now, BY)
        .await
        .expect("delete_user failed");
    assert_eq!(
        removed, 3,
        "delete_user must report the live sessions it removed (3), not the expired one"
    );
    for rec in &mine {
        assert_eq!(
            load(&*store, &rec.id, now).await,
            None,
            "delete_user must end every session of the user"
        );
    }
    assert_eq!(
        list(&*store, &user, now).await,
        Vec::<SessionId>::new(),
        "after delete_user the user's list must be empty"
    );
    assert_eq!(
        list(&*store, &other, now).await,
        ids(&theirs),
        "delete_user must not touch another user's sessions"
    );
    assert_eq!(
        store
            .delete_user(&user, None, now, BY)
            .await
            .expect("delete_user failed"),
        0,
        "a second delete_user must find nothing to remove"
    );
}

/// The gateway's read: the same record as `load`, except that `user_data` may be empty, and
/// nothing for an unknown or expired id.
pub async fn load_identity_is_load_but_user_data_may_be_left_out(store: Arc<dyn SessionStore>) {
    let user = fresh_user("identity");
    let rec = record(&user, at(0));
    create(&*store, &rec).await;
    let full = load(&*store, &rec.id, at(10))
        .await
        .expect("a live session");
    let identity = store
        .load_identity(&rec.id, at(10))
        .await
        .expect("load_identity failed")
        .expect("a live session");
    assert!(
        identity.user_data.is_empty() || identity.user_data == full.user_data,
        "load_identity must return the user data or none of it"
    );
    assert_eq!(
        SessionRecord {
            user_data: full.user_data.clone(),
            ..identity
        },
        full,
        "load_identity must return everything else exactly as load does"
    );
    let expired = at(IDLE_MS + 1);
    assert_eq!(
        store
            .load_identity(&rec.id, expired)
            .await
            .expect("load_identity failed"),
        None,
        "an expired session is never returned"
    );
    let unknown = record(&user, at(0));
    assert_eq!(
        store
            .load_identity(&unknown.id, at(10))
            .await
            .expect("load_identity failed"),
        None
    );
}

/// A store over this store that overrides nothing but `load` (see
/// `sessiond_core::wrap`): the gateway's identity-only read must reach the engine's own
/// `load_identity`, not fall back to the wrapper's `load`.
#[derive(Debug)]
struct OverridesLoadOnly {
    inner: Arc<dyn SessionStore>,
    loads: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl sessiond_core::wrap::StoreWrapper for OverridesLoadOnly {
    fn inner(&self) -> &dyn SessionStore {
        &*self.inner
    }

    async fn load(
        &self,
        id: &SessionId,
        now: Timestamp,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.loads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.load(id, now).await
    }
}

/// A wrapper that does not override `load_identity` keeps the engine's identity-only read:
/// through it, `load_identity` answers exactly as the engine's does and never goes through
/// the wrapper's `load`; the rest of the stack's operations pass through unchanged.
pub async fn a_wrapper_keeps_the_identity_only_read(store: Arc<dyn SessionStore>) {
    let user = fresh_user("wrapped");
    let rec = record(&user, at(0));
    create(&*store, &rec).await;
    let wrapper = Arc::new(sessiond_core::wrap::Wrapped(OverridesLoadOnly {
        inner: store.clone(),
        loads: std::sync::atomic::AtomicU64::new(0),
    }));
    let direct = store
        .load_identity(&rec.id, at(10))
        .await
        .expect("load_identity failed");
    let through = wrapper
        .load_identity(&rec.id, at(10))
        .await
        .expect("load_identity through the wrapper failed");
    assert_eq!(
        through, direct,
        "load_identity through a wrapper must answer as the engine's own"
    );
    assert_eq!(
        wrapper.0.loads.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "load_identity through a wrapper must not fall back to the wrapper's load"
    );
    assert_eq!(
        wrapper.load(&rec.id, at(10)).await.expect("load failed"),
        load(&*store, &rec.id, at(10)).await,
        "an overridden load still answers as the engine's"
    );
    assert_eq!(
        wrapper.0.loads.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the overridden load is the wrapper's"
    );
    assert_eq!(
        wrapper
            .delete(&rec.id, at(20), BY)
            .await
            .expect("delete failed"),
        Some(user.clone()),
        "operations the wrapper does not override reach the engine"
    );
    assert_eq!(load(&*store, &rec.id, at(20)).await, None);
}

/// `reclaim_expired` removes only expired sessions, names each one it removed with its user,
/// and never more than asked for. Engines whose records expire by themselves return none,
/// which also satisfies every assertion here.
pub async fn reclaim_expired_removes_only_expired_sessions(store: Arc<dyn SessionStore>) {
    let user = fresh_user("reclaim");
    let live = record(&user, at(0));
    let idled: Vec<SessionRecord> = (0..3)
        .map(|_| record_with_idle(&user, at(0), 1_000))
        .collect();
    create(&*store, &live).await;
    for rec in &idled {
        create(&*store, rec).await;
    }
    let now = at(5_000);
    let first = store
        .reclaim_expired(now, 2)
        .await
        .expect("reclaim_expired failed");
    assert!(first.len() <= 2, "reclaim_expired must honour its maximum");
    let rest = store
        .reclaim_expired(now, 1_000)
        .await
        .expect("reclaim_expired failed");
    let mut reclaimed: Vec<sessiond_core::ExpiredSession> = first.into_iter().chain(rest).collect();
    // On a shared server other cases' expired sessions may be reclaimed too; keep this user's.
    reclaimed.retain(|e| e.user_id == user);
    reclaimed.sort_by(|a, b| a.id.cmp(&b.id));
    let mut expected: Vec<sessiond_core::ExpiredSession> = idled
        .iter()
        .map(|r| sessiond_core::ExpiredSession {
            id: r.id.clone(),
            user_id: user.clone(),
        })
        .collect();
    expected.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(
        reclaimed.is_empty() || reclaimed == expected,
        "reclaim_expired must name exactly the expired sessions, each once: {reclaimed:?}"
    );
    assert_eq!(
        list(&*store, &user, now).await,
        vec![live.id.clone()],
        "the live session must stay, alone in its user's list"
    );
    assert_eq!(
        load(&*store, &live.id, now).await.map(|r| r.id),
        Some(live.id.clone()),
        "reclaiming must leave a live session alone"
    );
}

/// User ids are data (D9): ids made of the characters that mean something to a store (globs,
/// hash tags, namespaces, path and escape characters, quotes) each create, list and revoke
/// only their own sessions, and never match another user's keys, including a user whose id
/// is a prefix of theirs or the same id without the special character.
pub async fn d09_user_ids_of_any_printable_character_stay_apart(store: Arc<dyn SessionStore>) {
    let base = fresh_user("ids");
    let specials = [
        "", "*", "?", "[a]", "{x}", "}{", ":", "/", "\\", "%", "\"", "'", "<>", "`", "|", "..",
        "*:*", "{}", "%2F",
    ];
    let users: Vec<UserId> = specials
        .iter()
        .map(|s| UserId::parse(&format!("{base}{s}")).expect("a printable id"))
        .chain(
            [
                "urn:acme:user:42",
                "tenants/acme/users/42",
                "o'brien@example.com",
                "google-oauth2|1234",
            ]
            .iter()
            .map(|s| UserId::parse(&format!("{s}-{base}")).expect("a printable id")),
        )
        .collect();
    let mut records = Vec::new();
    for user in &users {
        let rec = record(user, at(0));
        create(&*store, &rec).await;
        records.push(rec);
    }
    for (user, rec) in users.iter().zip(&records) {
        assert_eq!(
            list(&*store, user, at(10)).await,
            vec![rec.id.clone()],
            "user {user:?} must list exactly its own session"
        );
        assert_eq!(
            load(&*store, &rec.id, at(10)).await.map(|r| r.user_id),
            Some(user.clone()),
            "the record keeps its user id unchanged"
        );
    }
    // Revoke each in turn: exactly its own session ends; every other one stays.
    for (i, user) in users.iter().enumerate() {
        assert_eq!(
            store
                .delete_user(user, None, at(20), BY)
                .await
                .expect("delete_user failed"),
            1,
            "revoking {user:?} must end its one session"
        );
        for (j, rec) in records.iter().enumerate() {
            assert_eq!(
                load(&*store, &rec.id, at(20)).await.is_some(),
                j > i,
                "after revoking {user:?}, session of {:?} must {}",
                users[j],
                if j > i { "stay" } else { "be gone" }
            );
        }
    }
}

/// The emergency path: every session of every user ends, and the store keeps working.
pub async fn delete_all_ends_every_session_of_every_user(store: Arc<dyn SessionStore>) {
    // Enough users that, on Cluster, one node holds several of their slots.
    let users: Vec<UserId> = (0..12).map(|i| fresh_user(&format!("purge-{i}"))).collect();
    let records: Vec<SessionRecord> = users
        .iter()
        .flat_map(|u| (0..2).map(move |i| record(u, at(i * 10))))
        .collect();
    for rec in &records {
        create(&*store, rec).await;
    }
    let now = at(1_000);
    let removed = store
        .delete_all(at(0), BY)
        .await
        .expect("delete_all failed");
    assert_eq!(
        removed, 24,
        "delete_all must report every session it removed"
    );
    for rec in &records {
        assert_eq!(
            load(&*store, &rec.id, now).await,
            None,
            "delete_all must end every session"
        );
    }
    for user in &users {
        assert_eq!(
            list(&*store, user, now).await,
            Vec::<SessionId>::new(),
            "after delete_all no user lists a session"
        );
    }
    if let Some(n) = count(&*store).await {
        assert_eq!(n, 0, "after delete_all the store counts no session");
    }
    let again = record(&users[0], at(2_000));
    create(&*store, &again).await;
    assert_eq!(
        load(&*store, &again.id, at(2_000)).await.map(|r| r.id),
        Some(again.id.clone()),
        "the store takes new sessions after delete_all"
    );
}

/// "Sign out other devices": every session but the current one ends.
pub async fn delete_user_keeps_the_excepted_session(store: Arc<dyn SessionStore>) {
    let user = fresh_user("revoke-others");
    let other = fresh_user("revoke-others-other");
    let mine: Vec<SessionRecord> = (0..3).map(|i| record(&user, at(i * 10))).collect();
    let expired = record_with_idle(&user, at(0), 1_000);
    let theirs = record(&other, at(0));
    for rec in mine.iter().chain([&expired, &theirs]) {
        create(&*store, rec).await;
    }
    let current = &mine[1];

    let now = at(5_000);
    let removed = store
        .delete_user(&user, Some(&current.id), now, BY)
        .await
        .expect("delete_user failed");
    assert_eq!(
        removed, 2,
        "delete_user with except must report the other live sessions it removed (2)"
    );
    assert_eq!(
        load(&*store, &current.id, now).await.as_ref(),
        Some(current),
        "delete_user must keep the excepted session, unchanged"
    );
    for rec in [&mine[0], &mine[2]] {
        assert_eq!(
            load(&*store, &rec.id, now).await,
            None,
            "delete_user must end every session but the excepted one"
        );
    }
    assert_eq!(
        list(&*store, &user, now).await,
        vec![current.id.clone()],
        "after delete_user the user's list must be exactly the excepted session"
    );
    assert_eq!(
        list(&*store, &other, now).await,
        vec![theirs.id.clone()],
        "delete_user must not touch another user's sessions"
    );
}

// ---------------------------------------------------------------------------------------------
// per-user cap

fn cap(max: u32, at_cap: AtCap) -> SessionLimit {
    SessionLimit {
        max_per_user: Some(max),
        at_cap,
    }
}

/// At the cap with evict-oldest, a new login ends the session used longest ago (by activity,
/// not creation) and reports it.
pub async fn cap_evicts_the_least_recently_active_session(store: Arc<dyn SessionStore>) {
    let user = fresh_user("cap-evict");
    let limit = cap(3, AtCap::EvictOldest);
    let a = record(&user, at(0));
    let b = record(&user, at(100));
    let c = record(&user, at(200));
    for rec in [&a, &b, &c] {
        let outcome = store
            .create(rec, None, limit, rec.created_at, BY)
            .await
            .expect("create failed");
        assert_eq!(
            outcome,
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "creates under the cap must evict nothing"
        );
    }
    // `a` is the oldest by creation but the most recently used; `b` is now the idlest.
    assert!(
        store.touch(&a.id, at(300), BY).await.expect("touch failed"),
        "touch of a live session must report true"
    );
    let before = count(&*store).await;

    let d = record(&user, at(400));
    let outcome = store
        .create(&d, None, limit, at(400), BY)
        .await
        .expect("create failed");
    assert_eq!(
        outcome,
        CreateOutcome::Created {
            evicted: vec![b.id.clone()],
            replaced: false,
        },
        "the create over the cap must evict exactly the session with the oldest activity"
    );
    assert_eq!(
        load(&*store, &b.id, at(400)).await,
        None,
        "the evicted session must no longer load"
    );
    assert!(
        load(&*store, &d.id, at(400)).await.is_some(),
        "the new session must be stored"
    );
    assert_eq!(
        list(&*store, &user, at(400)).await,
        ids([&a, &c, &d]),
        "the user must hold exactly the cap: the survivors and the new session"
    );
    assert_eq!(
        count(&*store).await,
        before,
        "eviction must remove the evicted record as the new one is added"
    );
}

/// At the cap with reject, a new login is refused and nothing is written.
pub async fn cap_with_reject_writes_nothing(store: Arc<dyn SessionStore>) {
    let user = fresh_user("cap-reject");
    let limit = cap(3, AtCap::Reject);
    let existing: Vec<SessionRecord> = (0..3).map(|i| record(&user, at(i * 100))).collect();
    for rec in &existing {
        let outcome = store
            .create(rec, None, limit, rec.created_at, BY)
            .await
            .expect("create failed");
        assert_eq!(
            outcome,
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "creates under the cap must succeed"
        );
    }
    let before = count(&*store).await;

    let refused = record(&user, at(400));
    let outcome = store
        .create(&refused, None, limit, at(400), BY)
        .await
        .expect("create failed");
    assert_eq!(
        outcome,
        CreateOutcome::AtCapacity,
        "a create at the cap with AtCap::Reject must report AtCapacity"
    );
    assert_eq!(
        load(&*store, &refused.id, at(400)).await,
        None,
        "a refused create must not store the session"
    );
    assert_eq!(
        list(&*store, &user, at(400)).await,
        ids(&existing),
        "a refused create must leave the user's sessions as they were"
    );
    assert_eq!(
        count(&*store).await,
        before,
        "a refused create must not add a record"
    );
}

/// Expired sessions do not hold places under the cap: a user whose old sessions timed out
/// can log in without evicting a live one, under either policy.
pub async fn cap_ignores_expired_sessions(store: Arc<dyn SessionStore>) {
    for at_cap in [AtCap::Reject, AtCap::EvictOldest] {
        let user = fresh_user("cap-expired");
        let limit = cap(3, at_cap);
        let expired = record_with_idle(&user, at(0), 1_000);
        let live: Vec<SessionRecord> = (0..2).map(|i| record(&user, at(i * 100))).collect();
        for rec in live.iter().chain([&expired]) {
            let outcome = store
                .create(rec, None, limit, rec.created_at, BY)
                .await
                .expect("create failed");
            assert_eq!(
                outcome,
                CreateOutcome::Created {
                    evicted: vec![],
                    replaced: false,
                },
                "creates under the cap must succeed"
            );
        }

        let now = at(5_000);
        let new = record(&user, now);
        let outcome = store
            .create(&new, None, limit, now, BY)
            .await
            .expect("create failed");
        assert_eq!(
            outcome,
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "with {at_cap:?}, 2 live and 1 expired session are under a cap of 3: the create \
             must succeed and evict nothing"
        );
        assert_eq!(
            list(&*store, &user, now).await,
            ids(live.iter().chain([&new])),
            "with {at_cap:?}, the live sessions and the new one must all remain"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// count and ping

/// The count (exported as a metric) follows creates and deletes, on engines that count.
pub async fn count_tracks_creates_and_deletes(store: Arc<dyn SessionStore>) {
    let user = fresh_user("count");
    let before = count(&*store).await;
    let recs: Vec<SessionRecord> = (0..3).map(|_| record(&user, at(0))).collect();
    for rec in &recs {
        create(&*store, rec).await;
    }
    let plus = |n: u64| before.map(|b| b + n);
    assert_eq!(
        count(&*store).await,
        plus(3),
        "count must include created sessions"
    );

    assert!(
        store
            .delete(&recs[0].id, at(10), BY)
            .await
            .expect("delete failed")
            .is_some(),
        "delete of a live session must report its user"
    );
    assert_eq!(count(&*store).await, plus(2), "count must drop on delete");

    let removed = store
        .delete_user(&user, None, at(10), BY)
        .await
        .expect("delete_user failed");
    assert_eq!(
        removed, 2,
        "delete_user must report the 2 remaining sessions"
    );
    assert_eq!(
        count(&*store).await,
        before,
        "count must drop by every session delete_user removed"
    );
}

/// Readiness checks pass on a working store.
pub async fn ping_succeeds(store: Arc<dyn SessionStore>) {
    store
        .ping()
        .await
        .expect("ping of a working store must succeed");
}

// ---------------------------------------------------------------------------------------------
// a login that replaces a session

/// Another user whose sessions are in `user`'s shard: a store cannot tell the two apart by
/// key placement, only by the record.
fn neighbour_of(user: &UserId) -> UserId {
    loop {
        let other = fresh_user("neighbour");
        if other.shard() == user.shard() {
            return other;
        }
    }
}

/// A create naming the session it replaces stores the new session and ends the old one in
/// the same operation; the old one does not count against the cap, so replacing at the cap
/// evicts nothing and is not refused.
pub async fn create_with_replaces_ends_the_replaced_session_in_the_same_operation(
    store: Arc<dyn SessionStore>,
) {
    let user = fresh_user("replace");
    let old = record(&user, at(0));
    create(&*store, &old).await;
    let new = record(&user, at(100));
    let outcome = store
        .create(&new, Some(&old.id), NO_LIMIT, at(100), BY)
        .await
        .expect("create failed");
    assert_eq!(
        outcome,
        CreateOutcome::Created {
            evicted: vec![],
            replaced: true,
        },
        "the replaced session is reported ended"
    );
    assert_eq!(
        load(&*store, &old.id, at(100)).await,
        None,
        "the old session is gone"
    );
    assert_eq!(list(&*store, &user, at(100)).await, vec![new.id.clone()]);

    for at_cap in [AtCap::EvictOldest, AtCap::Reject] {
        let user = fresh_user("replace-cap");
        let limit = cap(2, at_cap);
        let (a, b) = (record(&user, at(0)), record(&user, at(10)));
        for rec in [&a, &b] {
            let outcome = store
                .create(rec, None, limit, rec.created_at, BY)
                .await
                .expect("create failed");
            assert!(matches!(outcome, CreateOutcome::Created { .. }));
        }
        let c = record(&user, at(20));
        let outcome = store
            .create(&c, Some(&a.id), limit, at(20), BY)
            .await
            .expect("create failed");
        assert_eq!(
            outcome,
            CreateOutcome::Created {
                evicted: vec![],
                replaced: true,
            },
            "at the cap ({at_cap:?}), replacing a session makes room: nothing else is evicted"
        );
        assert_eq!(list(&*store, &user, at(20)).await, ids([&b, &c]));
    }
}

/// Only a live session of the same user is ended: another user's session (even in the same
/// shard), an expired one and an unknown id are left as they are, and the create stands.
pub async fn create_with_replaces_ends_only_a_live_session_of_the_same_user(
    store: Arc<dyn SessionStore>,
) {
    let user = fresh_user("replace-own");
    let other = neighbour_of(&user);
    let theirs = record(&other, at(0));
    create(&*store, &theirs).await;
    let expired = record_with_idle(&user, at(0), 50);
    create(&*store, &expired).await;
    let unknown = record(&user, at(0));
    for (what, replaces) in [
        ("another user's session", &theirs.id),
        ("an expired session", &expired.id),
        ("an unknown id", &unknown.id),
    ] {
        let new = record(&user, at(100));
        let outcome = store
            .create(&new, Some(replaces), NO_LIMIT, at(100), BY)
            .await
            .expect("create failed");
        assert_eq!(
            outcome,
            CreateOutcome::Created {
                evicted: vec![],
                replaced: false,
            },
            "replacing {what}: created, nothing ended"
        );
    }
    assert!(
        load(&*store, &theirs.id, at(100)).await.is_some(),
        "another user's session survives"
    );
    assert_eq!(
        list(&*store, &other, at(100)).await,
        vec![theirs.id.clone()]
    );
    assert_eq!(list(&*store, &user, at(100)).await.len(), 3);
}

/// A create that is refused (its id taken, or the user at a cap that rejects) ends nothing,
/// not even the session it names as replaced: a login either stands and ends its predecessor,
/// or changes nothing.
pub async fn a_refused_create_ends_no_replaced_session(store: Arc<dyn SessionStore>) {
    let user = fresh_user("replace-refused");
    let old = record(&user, at(0));
    create(&*store, &old).await;
    let mut taken = record(&user, at(10));
    taken.id = old.id.clone();
    let outcome = store
        .create(&taken, Some(&old.id), NO_LIMIT, at(10), BY)
        .await
        .expect("create failed");
    assert_eq!(outcome, CreateOutcome::IdTaken);
    assert_eq!(load(&*store, &old.id, at(10)).await, Some(old.clone()));

    // At a rejecting cap of 1, whose one slot is held by another session of the user than
    // the one named: the create is refused, and the named one stays.
    let user = fresh_user("replace-refused-cap");
    let limit = cap(1, AtCap::Reject);
    let held = record(&user, at(0));
    create(&*store, &held).await;
    let neighbour = neighbour_of(&user);
    let named = record(&neighbour, at(0));
    create(&*store, &named).await;
    let refused = record(&user, at(10));
    let outcome = store
        .create(&refused, Some(&named.id), limit, at(10), BY)
        .await
        .expect("create failed");
    assert_eq!(outcome, CreateOutcome::AtCapacity);
    assert!(load(&*store, &named.id, at(10)).await.is_some());
    assert_eq!(load(&*store, &refused.id, at(10)).await, None);
    assert_eq!(list(&*store, &user, at(10)).await, vec![held.id.clone()]);
}
