//! Revocations of the last moments, so a read-through racing one cannot write the session
//! back (`docs/design.md` §10, "A promotion races a revocation"). Kept only with the durable
//! tier, in memory: the embedded store is one process, and every write (the revocation that
//! leaves a tombstone, the write-back that checks for one) runs inside redb's one write
//! transaction at a time, so check and write are atomic.

use std::collections::HashMap;

use sessiond_core::{SessionId, Timestamp, UserId};

/// How long a tombstone stays, in ms: longer than any read-through takes.
pub(crate) const TTL_MS: u64 = 60_000;

/// Past this many tombstones, expired ones are dropped before another is added.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Default)]
pub(crate) struct Tombstones {
    /// Ended sessions, with the time their tombstone goes.
    sessions: HashMap<SessionId, u64>,
    /// Users' revoke-alls: when, the session kept, and when the tombstone goes.
    users: HashMap<UserId, (Timestamp, Option<SessionId>, u64)>,
}

impl Tombstones {
    fn prune(&mut self, now: Timestamp) {
        let now = now.as_millis();
        if self.sessions.len() >= PRUNE_AT {
            self.sessions.retain(|_, until| *until > now);
        }
        if self.users.len() >= PRUNE_AT {
            self.users.retain(|_, (_, _, until)| *until > now);
        }
    }

    /// `id` ended at `now`.
    pub(crate) fn session_ended(&mut self, id: &SessionId, now: Timestamp) {
        self.prune(now);
        self.sessions
            .insert(id.clone(), now.as_millis().saturating_add(TTL_MS));
    }

    /// Every session of `user` created by `now` ended, but `kept`.
    pub(crate) fn user_ended(&mut self, user: &UserId, kept: Option<&SessionId>, now: Timestamp) {
        self.prune(now);
        self.users.insert(
            user.clone(),
            (now, kept.cloned(), now.as_millis().saturating_add(TTL_MS)),
        );
    }

    /// Whether a revocation of the last moments ended the session `id` of `user`, created
    /// at `created_at`.
    pub(crate) fn ended(
        &self,
        id: &SessionId,
        user: &UserId,
        created_at: Timestamp,
        now: Timestamp,
    ) -> bool {
        let now = now.as_millis();
        let session = self.sessions.get(id).is_some_and(|until| *until > now);
        let by_user = self.users.get(user).is_some_and(|(at, kept, until)| {
            *until > now && created_at <= *at && kept.as_ref() != Some(id)
        });
        session || by_user
    }
}
