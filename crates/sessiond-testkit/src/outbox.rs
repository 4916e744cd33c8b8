//! The outbox conformance suite: what every engine that keeps an outbox for the durable tier
//! must record (`docs/design.md` §10). Each change is one entry (a create that evicts or
//! replaces, one per session it ends), written with the change, in order, carrying who asked
//! and the session's new durable state; entries leave only when removed; a full outbox
//! refuses what adds data and never a revocation.
//!
//! Run it with [`outbox_conformance_tests!`](crate::outbox_conformance_tests), with a factory
//! taking the outbox's capacity.
#![allow(
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "test suite: every case documents itself by its name"
)]

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;
use sessiond_core::tier::{AuditKind, DurableChange, OutboxEntry};
use sessiond_core::{
    Actor, AtCap, Client, CreateOutcome, Demoted, KeyId, Origin, RotateOutcome, SessionLimit,
    SessionStore, UpdateOutcome,
};

use crate::conformance::{IDLE_MS, NO_LIMIT, at, fresh_hash, fresh_user, object, record};

/// A backend, from an address with a user agent.
fn backend() -> Origin<'static> {
    Origin::backend(
        KeyId([0xde, 0xad, 0xbe, 0xef]),
        Client::new(Some(IpAddr::from([192, 0, 2, 1])), Some("backend/2.0")),
    )
}

/// The token holder.
fn holder() -> Origin<'static> {
    Origin::holder(Client::new(
        Some(IpAddr::from([203, 0, 113, 5])),
        Some("Browser/1.0"),
    ))
}

async fn everything(store: &dyn SessionStore) -> Vec<OutboxEntry> {
    store.outbox_read(100_000).await.expect("read the outbox")
}

/// How many entries the store says wait.
async fn waiting(store: &dyn SessionStore) -> Option<u64> {
    store
        .outbox_backlog()
        .await
        .expect("the backlog")
        .map(|b| b.entries)
}

/// What an entry says, in short: its kind (or `touch`), and the change's shape.
fn shape(e: &OutboxEntry) -> (String, String) {
    let kind = e
        .event
        .as_ref()
        .map_or("touch".to_owned(), |ev| ev.kind.name().as_str().to_owned());
    let change = match &e.change {
        DurableChange::Live(r) => format!("live {}", r.id),
        DurableChange::Ended(id) => format!("ended {id}"),
        DurableChange::UserEnded { user_id, .. } => format!("user ended {user_id}"),
        DurableChange::AllEnded => "all ended".to_owned(),
        DurableChange::Nothing => "nothing".to_owned(),
    };
    (kind, change)
}

pub async fn every_change_is_one_outbox_entry_in_order(store: Arc<dyn SessionStore>) {
    let user = fresh_user("outbox");
    let capped = SessionLimit {
        max_per_user: Some(2),
        at_cap: AtCap::EvictOldest,
    };
    let first = record(&user, at(0));
    let second = record(&user, at(1));
    let third = record(&user, at(2)); // evicts `first`
    let fourth = record(&user, at(3)); // replaces `second`, evicts nothing
    for r in [&first, &second] {
        let _ = store
            .create(r, None, capped, r.created_at, backend())
            .await
            .expect("create");
    }
    let outcome = store
        .create(&third, None, capped, at(2), backend())
        .await
        .expect("create at the cap");
    assert!(
        matches!(outcome, CreateOutcome::Created { ref evicted, .. } if *evicted == vec![first.id.clone()])
    );
    let outcome = store
        .create(&fourth, Some(&second.id), capped, at(3), backend())
        .await
        .expect("create replacing");
    assert!(matches!(
        outcome,
        CreateOutcome::Created { replaced: true, .. }
    ));
    assert!(
        store
            .touch(&third.id, at(10_000), holder())
            .await
            .expect("touch")
    );
    let patched = store
        .update_data(
            &third.id,
            1,
            &object(json!({"cart": [1]})),
            at(11_000),
            holder(),
        )
        .await
        .expect("patch");
    let UpdateOutcome::Updated(patched) = patched else {
        panic!("patch: {patched:?}");
    };
    let new_hash = fresh_hash();
    let rotated = store
        .rotate(
            &third.id,
            &third.secret_hash,
            &new_hash,
            at(12_000),
            holder(),
        )
        .await
        .expect("rotate");
    let RotateOutcome::Rotated(rotated) = rotated else {
        panic!("rotate: {rotated:?}");
    };
    store
        .delete(&third.id, at(13_000), holder())
        .await
        .expect("logout");
    let fifth = record(&user, at(14_000));
    let sixth = record(&user, at(14_001));
    for r in [&fifth, &sixth] {
        let _ = store
            .create(r, None, NO_LIMIT, r.created_at, backend())
            .await
            .expect("create");
    }
    store
        .delete(&fifth.id, at(15_000), backend())
        .await
        .expect("revoke");
    let revoked = store
        .delete_user(&user, None, at(16_000), backend())
        .await
        .expect("revoke all");
    assert_eq!(revoked, 2, "the replacing session and the sixth");
    let removed = store
        .delete_all(at(17_000), Origin::CLI)
        .await
        .expect("revoke everyone");

    let entries = everything(&*store).await;
    let mine: Vec<&OutboxEntry> = entries
        .iter()
        .filter(|e| {
            e.event
                .as_ref()
                .is_none_or(|ev| ev.user_id.as_ref() == Some(&user))
                || matches!(e.change, DurableChange::AllEnded)
        })
        .collect();
    let shapes: Vec<(String, String)> = mine.iter().map(|e| shape(e)).collect();
    let s = |k: &str, c: String| (k.to_owned(), c);
    assert_eq!(
        shapes,
        vec![
            s("created", format!("live {}", first.id)),
            s("created", format!("live {}", second.id)),
            s("created", format!("live {}", third.id)),
            s("evicted", format!("ended {}", first.id)),
            s("created", format!("live {}", fourth.id)),
            s("replaced", format!("ended {}", second.id)),
            s("touch", format!("live {}", third.id)),
            s("updated", format!("live {}", third.id)),
            s("rotated", format!("live {}", third.id)),
            s("logged_out", format!("ended {}", third.id)),
            s("created", format!("live {}", fifth.id)),
            s("created", format!("live {}", sixth.id)),
            s("revoked", format!("ended {}", fifth.id)),
            s("revoked_all", format!("user ended {user}")),
            s("revoked_everyone", "all ended".to_owned()),
        ],
        "one entry per change, in the order made"
    );
    let positions: Vec<_> = mine.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions grow: {positions:?}"
    );

    // Each entry carries who asked, and the durable state after the change.
    let by = |i: usize| mine[i].event.as_ref().expect("an event");
    assert_eq!(by(0).actor, Actor::Backend(KeyId([0xde, 0xad, 0xbe, 0xef])));
    assert_eq!(by(0).client_addr, Some(IpAddr::from([192, 0, 2, 1])));
    assert_eq!(by(0).user_agent.as_deref(), Some("backend/2.0"));
    assert_eq!(
        by(3).kind,
        AuditKind::Evicted {
            by: third.id.clone()
        }
    );
    assert_eq!(
        by(5).kind,
        AuditKind::Replaced {
            by: fourth.id.clone()
        }
    );
    assert_eq!(by(9).actor, Actor::Holder);
    assert_eq!(by(9).user_agent.as_deref(), Some("Browser/1.0"));
    assert_eq!(by(14).actor, Actor::Cli);
    assert_eq!(by(14).kind, AuditKind::RevokedEveryone { count: removed });
    assert_eq!(
        by(13).kind,
        AuditKind::RevokedAll {
            count: 2,
            kept: None
        }
    );
    assert_eq!(mine[0].change, DurableChange::Live(first.clone()));
    match &mine[6].change {
        DurableChange::Live(r) => assert_eq!(r.last_activity, at(10_000), "the touch's time"),
        other => panic!("touch: {other:?}"),
    }
    assert_eq!(mine[7].change, DurableChange::Live(patched));
    assert_eq!(mine[8].change, DurableChange::Live(rotated));
    match &mine[13].change {
        DurableChange::UserEnded { ended, kept, .. } => {
            let mut ended = ended.clone();
            ended.sort();
            let mut expected = vec![fourth.id.clone(), sixth.id.clone()];
            expected.sort();
            assert_eq!(ended, expected, "the sessions revoke-all removed");
            assert_eq!(*kept, None);
        }
        other => panic!("revoke-all: {other:?}"),
    }
}

pub async fn shipped_entries_leave_and_the_rest_stay(store: Arc<dyn SessionStore>) {
    let user = fresh_user("outbox-remove");
    let records: Vec<_> = (0..5).map(|i| record(&user, at(i))).collect();
    for r in &records {
        let _ = store
            .create(r, None, NO_LIMIT, r.created_at, backend())
            .await
            .expect("create");
    }
    let before = waiting(&*store).await.expect("an outbox");
    let all = everything(&*store).await;
    let first_three = store.outbox_read(3).await.expect("read three");
    assert_eq!(first_three.as_slice(), &all[..3], "the oldest first");
    // A change made while those are shipped is not removed with them.
    let late = record(&user, at(5));
    let _ = store
        .create(&late, None, NO_LIMIT, late.created_at, backend())
        .await
        .expect("create while shipping");
    store
        .outbox_remove(&first_three)
        .await
        .expect("remove what was shipped");
    store
        .outbox_remove(&first_three)
        .await
        .expect("removing again is no error");
    assert_eq!(
        waiting(&*store).await,
        Some(before - 2),
        "three fewer, one more"
    );
    let rest = everything(&*store).await;
    let (newest, older) = rest.split_last().expect("entries left");
    assert_eq!(older, &all[3..], "the rest, unchanged, in order");
    assert!(
        matches!(&newest.change, DurableChange::Live(r) if r.id == late.id),
        "the change made while shipping is still there: {newest:?}"
    );
    let last = rest.last().map(|e| e.position);
    store.outbox_remove(&rest).await.expect("remove the rest");
    assert_eq!(waiting(&*store).await, Some(0));
    // An emptied outbox goes on after the last position it gave.
    let r = record(&user, at(0));
    let _ = store
        .create(&r, None, NO_LIMIT, at(0), backend())
        .await
        .expect("create");
    let next = everything(&*store).await;
    assert_eq!(next.len(), 1);
    assert!(Some(next[0].position) > last, "positions never go back");
}

/// The factory's capacity for this case: 3 entries.
pub async fn a_full_outbox_refuses_creates_and_patches_but_never_a_revocation(
    store: Arc<dyn SessionStore>,
) {
    let user = fresh_user("outbox-full");
    let a = record(&user, at(0));
    let b = record(&user, at(1));
    for r in [&a, &b] {
        let _ = store
            .create(r, None, NO_LIMIT, r.created_at, backend())
            .await
            .expect("create while there is room");
    }
    assert!(
        store
            .touch(&a.id, at(10_000), holder())
            .await
            .expect("a touch while there is room")
    );
    // Full (3 of 3).
    let c = record(&user, at(2));
    let refused = store
        .create(&c, None, NO_LIMIT, at(2), backend())
        .await
        .expect_err("a create into a full outbox is refused");
    assert!(refused.is_unavailable(), "{refused:?}");
    assert!(
        store.load(&c.id, at(3)).await.expect("load").is_none(),
        "and not stored"
    );
    let refused = store
        .update_data(&a.id, 1, &object(json!({"x": 1})), at(3), backend())
        .await
        .expect_err("a patch into a full outbox is refused");
    assert!(refused.is_unavailable(), "{refused:?}");
    assert_eq!(
        store
            .load(&a.id, at(4))
            .await
            .expect("load")
            .map(|r| r.version),
        Some(1),
        "the patch changed nothing"
    );
    // Logout and revocations always work, and are recorded.
    store.delete(&a.id, at(5), holder()).await.expect("logout");
    store
        .delete_user(&user, None, at(6), backend())
        .await
        .expect("revoke all");
    assert!(store.load(&b.id, at(7)).await.expect("load").is_none());
    assert_eq!(waiting(&*store).await, Some(5));
}

/// A read-through's write-back: a session only the durable tier holds comes back, once,
/// indexed; never over a record here, never one a revocation of the last moments ended (a
/// logout, a revocation even of a session not here, a revoke-all but the one it kept, an
/// eviction), never an expired one.
pub async fn restore_writes_back_unless_a_revocation_left_a_tombstone(
    store: Arc<dyn SessionStore>,
) {
    let user = fresh_user("restore");
    let cold = record(&user, at(0));
    assert!(
        store.restore(&cold, at(1)).await.expect("restore"),
        "a session not here comes back"
    );
    assert_eq!(
        store.load(&cold.id, at(2)).await.expect("load"),
        Some(cold.clone())
    );
    let listed = store.list_user(&user, at(2)).await.expect("list");
    assert!(listed.iter().any(|r| r.id == cold.id), "and is indexed");
    assert!(
        !store.restore(&cold, at(2)).await.expect("restore"),
        "never over a record here"
    );

    store
        .delete(&cold.id, at(3), backend())
        .await
        .expect("revoke");
    assert!(
        !store.restore(&cold, at(4)).await.expect("restore"),
        "not after its revocation"
    );
    assert_eq!(store.load(&cold.id, at(5)).await.expect("load"), None);

    let elsewhere = record(&user, at(0));
    assert_eq!(
        store
            .delete(&elsewhere.id, at(6), backend())
            .await
            .expect("revoke a session not here"),
        None
    );
    assert!(
        !store.restore(&elsewhere, at(7)).await.expect("restore"),
        "a revocation of a session not here leaves its tombstone too"
    );

    let kept = record(&user, at(8));
    let _ = store
        .create(&kept, None, NO_LIMIT, at(8), backend())
        .await
        .expect("create");
    let before = record(&user, at(9));
    store
        .delete_user(&user, Some(&kept.id), at(10), backend())
        .await
        .expect("revoke all but one");
    assert!(
        !store.restore(&before, at(11)).await.expect("restore"),
        "not a session the revoke-all ended"
    );
    let after = record(&user, at(12));
    assert!(
        store.restore(&after, at(13)).await.expect("restore"),
        "a session created after the revoke-all comes back"
    );

    let capped = SessionLimit {
        max_per_user: Some(1),
        at_cap: AtCap::EvictOldest,
    };
    let other = fresh_user("restore-evict");
    let first = record(&other, at(0));
    let second = record(&other, at(1));
    for r in [&first, &second] {
        let _ = store
            .create(r, None, capped, r.created_at, backend())
            .await
            .expect("create at the cap");
    }
    assert!(
        !store.restore(&first, at(2)).await.expect("restore"),
        "not a session the cap evicted"
    );

    let mut expired = record(&fresh_user("restore-expired"), at(0));
    expired.absolute_expires_at = at(1);
    assert!(
        !store.restore(&expired, at(2)).await.expect("restore"),
        "never an expired session"
    );
}

/// The demoter's removal: only the state the durable tier holds leaves the hot store, index
/// entry included; a touch, patch or rotation the tier does not have yet keeps it.
pub async fn demote_removes_only_the_state_the_tier_holds(store: Arc<dyn SessionStore>) {
    let user = fresh_user("demote");
    let idle = record(&user, at(0));
    let active = record(&user, at(0));
    let patched = record(&user, at(0));
    let rotated = record(&user, at(0));
    for r in [&idle, &active, &patched, &rotated] {
        let _ = store
            .create(r, None, NO_LIMIT, at(0), backend())
            .await
            .expect("create");
    }
    assert_eq!(store.demote(&idle).await.expect("demote"), Demoted::Removed);
    assert_eq!(store.load(&idle.id, at(1)).await.expect("load"), None);
    assert_eq!(
        store.demote(&idle).await.expect("demote"),
        Demoted::Absent,
        "already gone"
    );

    assert!(
        store
            .touch(&active.id, at(10_000), holder())
            .await
            .expect("touch")
    );
    let _ = store
        .update_data(&patched.id, 1, &object(json!({"x": 1})), at(1), holder())
        .await
        .expect("patch");
    let _ = store
        .rotate(
            &rotated.id,
            &rotated.secret_hash,
            &fresh_hash(),
            at(1),
            holder(),
        )
        .await
        .expect("rotate");
    for r in [&active, &patched, &rotated] {
        assert_eq!(
            store.demote(r).await.expect("demote"),
            Demoted::Changed,
            "a change the tier does not have keeps it hot"
        );
        assert!(store.load(&r.id, at(10_001)).await.expect("load").is_some());
    }
    let listed: Vec<_> = store
        .list_user(&user, at(10_001))
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(
        !listed.contains(&idle.id),
        "and the hot store no longer lists it (the tier does)"
    );
    assert_eq!(listed.len(), 3);
}

/// A cold session (the demoter took its record out) is still its user's: the per-user cap
/// counts it and evicts it first (the idlest), a login can replace it, revoke-all ends and
/// counts it, a write-back takes its place instead of counting it twice, and once expired it
/// counts no more.
pub async fn cold_sessions_are_still_their_users(store: Arc<dyn SessionStore>) {
    let cap = |at_cap| SessionLimit {
        max_per_user: Some(2),
        at_cap,
    };
    let evict = cap(AtCap::EvictOldest);
    let created = |store: Arc<dyn SessionStore>, limit: SessionLimit| async move {
        let user = fresh_user("cold");
        let (cold, warm) = (record(&user, at(0)), record(&user, at(1)));
        for r in [&cold, &warm] {
            let _ = store
                .create(r, None, limit, r.created_at, backend())
                .await
                .expect("create");
        }
        assert_eq!(store.demote(&cold).await.expect("demote"), Demoted::Removed);
        (user, cold, warm)
    };

    let (user, cold, _) = created(store.clone(), evict).await;
    let new = record(&user, at(2));
    assert_eq!(
        store
            .create(&new, None, evict, at(2), backend())
            .await
            .expect("create at the cap"),
        CreateOutcome::Created {
            evicted: vec![cold.id.clone()],
            replaced: false,
        },
        "the cap counts the cold session and evicts it first"
    );
    let ended = everything(&*store)
        .await
        .into_iter()
        .filter(|e| matches!(&e.change, DurableChange::Ended(id) if *id == cold.id))
        .map(|e| e.event.map(|ev| ev.kind.name().as_str().to_owned()))
        .collect::<Vec<_>>();
    assert_eq!(ended, vec![Some("evicted".to_owned())]);
    assert!(
        !store.restore(&cold, at(3)).await.expect("restore"),
        "an evicted cold session never comes back"
    );

    let (user, _, _) = created(store.clone(), cap(AtCap::Reject)).await;
    assert_eq!(
        store
            .create(
                &record(&user, at(2)),
                None,
                cap(AtCap::Reject),
                at(2),
                backend()
            )
            .await
            .expect("create at the cap"),
        CreateOutcome::AtCapacity,
        "a cold session fills a place"
    );
    let later = at(IDLE_MS + 1);
    assert!(
        matches!(
            store
                .create(
                    &record(&user, later),
                    None,
                    cap(AtCap::Reject),
                    later,
                    backend()
                )
                .await
                .expect("create"),
            CreateOutcome::Created { .. }
        ),
        "an expired cold session counts no more (nor the warm one, expired too)"
    );

    let (user, cold, _) = created(store.clone(), evict).await;
    assert!(store.restore(&cold, at(2)).await.expect("restore"));
    assert_eq!(
        store
            .create(&record(&user, at(3)), None, evict, at(3), backend())
            .await
            .expect("create at the cap"),
        CreateOutcome::Created {
            evicted: vec![cold.id.clone()],
            replaced: false,
        },
        "written back, it is counted once"
    );

    let (user, cold, warm) = created(store.clone(), NO_LIMIT).await;
    assert_eq!(
        store
            .create(
                &record(&user, at(2)),
                Some(&cold.id),
                NO_LIMIT,
                at(2),
                backend()
            )
            .await
            .expect("create replacing"),
        CreateOutcome::Created {
            evicted: vec![],
            replaced: true,
        },
        "a login replaces a cold session"
    );
    assert!(!store.restore(&cold, at(3)).await.expect("restore"));

    let count = store
        .delete_user(&user, None, at(4), backend())
        .await
        .expect("revoke all");
    assert_eq!(
        count, 2,
        "the warm session and the login; the replaced one was gone"
    );
    let (user, cold, warm2) = created(store.clone(), NO_LIMIT).await;
    assert_eq!(
        store
            .delete_user(&user, None, at(2), backend())
            .await
            .expect("revoke all"),
        2,
        "revoke-all counts the cold session"
    );
    let user_ended = everything(&*store)
        .await
        .into_iter()
        .find_map(|e| match e.change {
            DurableChange::UserEnded { user_id, ended, .. } if user_id == user => Some(ended),
            _ => None,
        });
    let mut user_ended = user_ended.expect("the revoke-all's entry");
    user_ended.sort();
    let mut expected = vec![cold.id.clone(), warm2.id.clone()];
    expected.sort();
    assert_eq!(user_ended, expected, "and names it as ended");
    assert!(!store.restore(&cold, at(3)).await.expect("restore"));
    let _ = warm;
}
