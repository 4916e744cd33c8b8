//! The PostgreSQL tier against a real PostgreSQL server (the testkit starts one per test).
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    missing_docs,
    reason = "tests"
)]

use std::net::IpAddr;
use std::time::Duration;

use sessiond_core::tier::{
    AuditEvent, AuditKind, DurableChange, DurableSession, DurableTier, EventId, EventQuery,
    EventsOf, OutboxEntry, Position, Retention,
};
use sessiond_core::{Actor, InvalidReason, KeyId, SessionId, SessionRecord, Timestamp, UserId};
use sessiond_testkit::conformance::{at, fresh_user, record};
use sessiond_testkit::postgres::PostgresServer;
use sessiond_tier_postgres::{PgOptions, PgTier, TierError};

async fn tier(server: &PostgresServer) -> PgTier {
    PgTier::connect(&PgOptions::new(server.url()), at(0))
        .await
        .expect("connect to the test server")
}

fn event(kind: AuditKind, at: Timestamp, session: Option<&SessionId>, user: &UserId) -> AuditEvent {
    AuditEvent {
        id: EventId::generate().expect("random"),
        at,
        kind,
        session_id: session.cloned(),
        user_id: Some(user.clone()),
        actor: Actor::Backend(KeyId([1, 2, 3, 4])),
        client_addr: Some("203.0.113.9".parse().expect("address")),
        user_agent: Some("tests/1.0 (\"quoted\" é)".into()),
    }
}

fn entry(
    position: u64,
    kind: AuditKind,
    at: Timestamp,
    r: &SessionRecord,
    change: DurableChange,
) -> OutboxEntry {
    OutboxEntry {
        position: Position(position),
        event: Some(event(kind, at, Some(&r.id), &r.user_id)),
        change,
    }
}

fn created(position: u64, r: &SessionRecord) -> OutboxEntry {
    entry(
        position,
        AuditKind::Created,
        r.created_at,
        r,
        DurableChange::Live(r.clone()),
    )
}

fn ended(position: u64, at: Timestamp, r: &SessionRecord) -> OutboxEntry {
    entry(
        position,
        AuditKind::Revoked,
        at,
        r,
        DurableChange::Ended(r.id.clone()),
    )
}

fn count(server: &PostgresServer, sql: &str) -> u64 {
    server
        .psql("sessiond", sql)
        .trim()
        .parse()
        .expect("a count")
}

async fn state(tier: &PgTier, id: &SessionId) -> Option<DurableSession> {
    tier.load(id).await.expect("load")
}

#[tokio::test]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    let server = PostgresServer::start();
    // Two processes starting together: the advisory lock lets one migrate, the other waits.
    let (a, b) = tokio::join!(tier(&server), tier(&server));
    drop((a, b));
    assert_eq!(
        count(&server, "SELECT count(*) FROM sessiond_schema_migrations"),
        u64::try_from(PgTier::schema_version()).unwrap()
    );
    server.psql(
        "sessiond",
        "INSERT INTO sessiond_schema_migrations (version) VALUES (9999)",
    );
    let err = PgTier::connect(&PgOptions::new(server.url()), at(0))
        .await
        .expect_err("a schema newer than this build is refused");
    assert!(
        matches!(err, TierError::SchemaTooNew { found: 9999, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_record_round_trips_exactly() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("round-trip");
    let r = record(&user, at(0));
    tier.ship(&[created(1, &r)]).await.expect("ship");
    assert_eq!(
        state(&tier, &r.id).await,
        Some(DurableSession::Live {
            record: r.clone(),
            position: Position(1)
        })
    );
    assert_eq!(
        state(&tier, &SessionId::parse("sess_AAAAAAAAAAAAAAAA").unwrap()).await,
        None
    );
}

#[tokio::test]
async fn a_batch_shipped_twice_is_recorded_once() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("twice");
    let r = record(&user, at(0));
    let mut rotated = r.clone();
    rotated.secret_hash = sessiond_testkit::conformance::fresh_hash();
    let batch = vec![
        created(1, &r),
        entry(
            2,
            AuditKind::Rotated,
            at(10),
            &r,
            DurableChange::Live(rotated),
        ),
        entry(
            3,
            AuditKind::LoggedOut,
            at(20),
            &r,
            DurableChange::Ended(r.id.clone()),
        ),
    ];
    tier.ship(&batch).await.expect("ship");
    tier.ship(&batch).await.expect("ship again");
    tier.ship(&batch[1..2])
        .await
        .expect("a replay of one entry");
    assert_eq!(count(&server, "SELECT count(*) FROM sessiond_events"), 3);
    assert_eq!(state(&tier, &r.id).await, Some(DurableSession::Ended));
    assert_eq!(
        count(
            &server,
            "SELECT count(*) FROM sessiond_sessions WHERE secret_hash IS NOT NULL"
        ),
        0,
        "an ended session keeps no secret hash"
    );
}

#[tokio::test]
async fn a_record_is_written_only_over_an_older_position() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("order");
    let r = record(&user, at(0));
    let mut newer = r.clone();
    newer.last_activity = at(5_000);
    newer.version = 2;
    tier.ship(&[
        created(10, &r),
        entry(
            20,
            AuditKind::Created,
            at(5),
            &r,
            DurableChange::Live(newer.clone()),
        ),
    ])
    .await
    .expect("ship");
    // A late or replayed older snapshot (position 15 < 20) changes nothing.
    tier.ship(&[entry(
        15,
        AuditKind::Created,
        at(1),
        &r,
        DurableChange::Live(r.clone()),
    )])
    .await
    .expect("ship a stale snapshot");
    assert_eq!(
        state(&tier, &r.id).await,
        Some(DurableSession::Live {
            record: newer,
            position: Position(20)
        })
    );
}

#[tokio::test]
async fn an_ended_session_stays_ended_whatever_arrives_later() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("final");
    let shipped = record(&user, at(0));
    let unseen = record(&user, at(0));
    tier.ship(&[created(1, &shipped)]).await.expect("ship");
    // The end of a session the tier has never seen arrives first (a revocation written
    // through before the outbox shipped the create).
    tier.ship(&[ended(5, at(50), &shipped), ended(6, at(50), &unseen)])
        .await
        .expect("ship the ends");
    tier.ship(&[created(2, &unseen), created(100, &shipped)])
        .await
        .expect("ship records after the ends");
    assert_eq!(state(&tier, &shipped.id).await, Some(DurableSession::Ended));
    assert_eq!(state(&tier, &unseen.id).await, Some(DurableSession::Ended));
    assert!(
        tier.list_user(&user, at(60))
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn revoke_all_ends_cold_sessions_and_those_not_yet_shipped_but_the_kept_one() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("revoke-all");
    let cold = record(&user, at(0));
    let kept = record(&user, at(0));
    let unshipped = record(&user, at(0));
    let later = record(&user, at(2_000));
    let other = record(&fresh_user("bystander"), at(0));
    tier.ship(&[created(1, &cold), created(2, &kept), created(3, &other)])
        .await
        .expect("ship");
    let revoke_all = OutboxEntry {
        position: Position(10),
        event: Some(event(
            AuditKind::RevokedAll {
                count: 2,
                kept: Some(kept.id.clone()),
            },
            at(1_000),
            None,
            &user,
        )),
        change: DurableChange::UserEnded {
            user_id: user.clone(),
            kept: Some(kept.id.clone()),
            ended: vec![unshipped.id.clone()],
        },
    };
    tier.ship(&[revoke_all]).await.expect("ship the revoke-all");
    tier.ship(&[created(4, &unshipped), created(11, &later)])
        .await
        .expect("ship late records");
    assert_eq!(state(&tier, &cold.id).await, Some(DurableSession::Ended));
    assert_eq!(
        state(&tier, &unshipped.id).await,
        Some(DurableSession::Ended)
    );
    let mut live: Vec<SessionId> = tier
        .list_user(&user, at(3_000))
        .await
        .expect("list")
        .into_iter()
        .map(|r| r.id)
        .collect();
    live.sort();
    let mut expected = vec![kept.id.clone(), later.id.clone()];
    expected.sort();
    assert_eq!(live, expected, "the kept session and one created after");
    assert!(matches!(
        state(&tier, &other.id).await,
        Some(DurableSession::Live { .. })
    ));
}

#[tokio::test]
async fn revoke_everyone_ends_every_session_created_before_it() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("everyone");
    let shipped = record(&user, at(0));
    let late = record(&user, at(500));
    let after = record(&user, at(2_000));
    tier.ship(&[created(1, &shipped)]).await.expect("ship");
    let everyone = OutboxEntry {
        position: Position(10),
        event: Some(AuditEvent {
            session_id: None,
            user_id: None,
            actor: Actor::Cli,
            client_addr: None,
            user_agent: None,
            ..event(
                AuditKind::RevokedEveryone { count: 2 },
                at(1_000),
                None,
                &user,
            )
        }),
        change: DurableChange::AllEnded,
    };
    tier.ship(&[everyone]).await.expect("ship revoke-everyone");
    tier.ship(&[created(2, &late), created(3, &after)])
        .await
        .expect("ship records after it");
    assert_eq!(state(&tier, &shipped.id).await, Some(DurableSession::Ended));
    assert_eq!(
        state(&tier, &late.id).await,
        Some(DurableSession::Ended),
        "created before revoke-everyone, shipped after it"
    );
    assert!(matches!(
        state(&tier, &after.id).await,
        Some(DurableSession::Live { .. })
    ));
}

#[tokio::test]
async fn events_read_back_newest_first_in_pages_exactly_as_written() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("pages");
    let r = record(&user, at(0));
    let other = record(&fresh_user("other"), at(0));
    let mut batch = vec![created(1, &r), created(2, &other)];
    // 24 more events of the user, some sharing a millisecond, across a month boundary
    // (2100-02-01 is 31 days after T0).
    for i in 0..24u64 {
        let when = at(if i < 12 {
            i / 2 * 1_000
        } else {
            31 * 86_400_000 + i
        });
        let kind = match i % 3 {
            0 => AuditKind::InvalidToken {
                reason: InvalidReason::Unknown,
            },
            1 => AuditKind::Evicted {
                by: other.id.clone(),
            },
            _ => AuditKind::RevokedAll {
                count: i,
                kept: Some(r.id.clone()),
            },
        };
        let mut e = entry(10 + i, kind, when, &r, DurableChange::Nothing);
        if i % 4 == 0 {
            let ev = e.event.as_mut().unwrap();
            ev.actor = Actor::Holder;
            ev.client_addr = Some("2001:db8::7".parse::<IpAddr>().unwrap());
            ev.user_agent = None;
        }
        batch.push(e);
    }
    tier.ship(&batch).await.expect("ship");
    let mut expected: Vec<(AuditEvent, Position)> = batch
        .iter()
        .filter_map(|e| e.event.clone().map(|ev| (ev, e.position)))
        .filter(|(e, _)| e.user_id.as_ref() == Some(&user))
        .collect();
    expected.sort_by(|(a, pa), (b, pb)| b.at.cmp(&a.at).then(pb.cmp(pa)).then(b.id.cmp(&a.id)));
    let expected: Vec<AuditEvent> = expected.into_iter().map(|(e, _)| e).collect();
    let mut read = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = tier
            .events(&EventQuery {
                of: EventsOf::User(user.clone()),
                since: None,
                after,
                limit: 10,
            })
            .await
            .expect("read a page");
        pages += 1;
        assert!(page.events.len() <= 10);
        read.extend(page.events);
        match page.next {
            Some(cursor) => after = Some(cursor),
            None => break,
        }
    }
    assert_eq!(pages, 3, "25 events in pages of 10");
    assert_eq!(read, expected, "every event once, newest first, as written");

    let since = tier
        .events(&EventQuery {
            of: EventsOf::User(user.clone()),
            since: Some(at(31 * 86_400_000)),
            after: None,
            limit: 100,
        })
        .await
        .expect("read since");
    assert_eq!(since.events.len(), 12);
    assert!(since.next.is_none());
    let of_session = tier
        .events(&EventQuery {
            of: EventsOf::Session(other.id.clone()),
            since: None,
            after: None,
            limit: 100,
        })
        .await
        .expect("read a session's");
    assert_eq!(
        of_session.events.len(),
        1,
        "the other session's own event only"
    );
}

#[tokio::test]
async fn purge_drops_old_months_and_finished_sessions_only() {
    let server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("purge");
    let old = record(&user, at(0));
    let revoked = record(&user, at(0));
    let current = record(&user, at(100 * 86_400_000));
    tier.ship(&[
        created(1, &old),
        created(2, &revoked),
        ended(3, at(1_000), &revoked),
    ])
    .await
    .expect("ship");
    tier.ship(&[created(4, &current)]).await.expect("ship");
    let purged = tier
        .purge(
            at(101 * 86_400_000),
            Retention {
                events: Duration::from_secs(40 * 86_400),
                sessions: Duration::from_secs(2 * 86_400),
            },
        )
        .await
        .expect("purge");
    assert_eq!(
        purged.events, 3,
        "January 2100's partition, with its 3 events"
    );
    assert_eq!(purged.sessions, 2, "the expired and the ended session");
    assert_eq!(count(&server, "SELECT count(*) FROM sessiond_events"), 1);
    assert!(matches!(
        state(&tier, &current.id).await,
        Some(DurableSession::Live { .. })
    ));
    assert_eq!(state(&tier, &old.id).await, None);
    // Shipping into a dropped month makes its partition again.
    tier.ship(&[ended(5, at(2_000), &old)])
        .await
        .expect("ship into a dropped month");
}

#[tokio::test]
async fn postgres_down_is_unavailable_and_it_recovers_without_a_new_tier() {
    let mut server = PostgresServer::start();
    let tier = tier(&server).await;
    let user = fresh_user("restart");
    let r = record(&user, at(0));
    tier.ping().await.expect("ping");
    server.stop(true);
    let err = tier
        .ship(&[created(1, &r)])
        .await
        .expect_err("PostgreSQL is down");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(tier.ping().await.is_err());
    server.start_again();
    tier.ship(&[created(1, &r)])
        .await
        .expect("ship once it is back");
    tier.ping().await.expect("ping once it is back");
    assert!(matches!(
        state(&tier, &r.id).await,
        Some(DurableSession::Live { .. })
    ));
}

#[tokio::test]
async fn tls_when_the_url_asks_for_it_with_the_certificate_checked() {
    let (server, ca) = PostgresServer::start_tls();
    let url = format!("{}?sslmode=require", server.url());
    let options = PgOptions {
        tls_ca: Some(ca),
        ..PgOptions::new(url.clone())
    };
    let tier = PgTier::connect(&options, at(0))
        .await
        .expect("TLS with the right CA");
    tier.ping().await.expect("ping over TLS");
    let encrypted: u32 = server
        .psql(
            "sessiond",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE s.ssl AND a.application_name = 'sessiond'",
        )
        .trim()
        .parse()
        .expect("a count");
    assert!(encrypted > 0, "sessiond's connections are encrypted");
    // Another CA: the server's certificate is refused, so is the connection.
    let (_other, other_ca) = PostgresServer::start_tls();
    let wrong = PgOptions {
        tls_ca: Some(other_ca),
        ..PgOptions::new(url)
    };
    assert!(
        PgTier::connect(&wrong, at(0)).await.is_err(),
        "a certificate from an unknown CA is refused"
    );
}
