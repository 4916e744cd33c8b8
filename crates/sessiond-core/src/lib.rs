//! The sessiond contract: what a session is, how its token works, when it expires, and the
//! [`SessionStore`] trait every storage engine implements.
//!
//! This crate does no I/O of its own. The HTTP service (`sessiond-server`) and every engine
//! (`sessiond-store-embedded`, later Redis) depend on it; it depends on none of them.
//!
//! # Layout
//!
//! - [`time`]: millisecond timestamps, the [`Clock`] the service reads, RFC 3339 output.
//! - [`id`]: the public [`SessionId`] and the validated [`UserId`].
//! - [`token`]: the bearer credential: generation from the OS CSPRNG, the shape check that runs
//!   before any store access, and the one-way [`SecretHash`] that is all a store ever keeps.
//! - [`record`]: the stored [`SessionRecord`] and its expiry arithmetic.
//! - [`policy`]: timeouts, touch interval, the per-user cap and the size limits on stored JSON.
//! - [`json`]: bounded JSON (depth, size) and RFC 7396 merge patch.
//! - [`store`]: the [`SessionStore`] trait and the outcomes of its operations.
//! - [`error`]: [`StoreError`], with the predicates the HTTP layer branches on.
//! - [`event`]: [`SessionEvent`], what happened to a session, who did it and from where, and
//!   the [`EventSink`] trait the metrics, the log and the audit trail implement.
//! - [`tier`]: the durable tier's seam: [`OutboxEntry`](tier::OutboxEntry), the change and
//!   event it records, and the [`DurableTier`](tier::DurableTier) trait an engine implements.
//! - [`wrap`]: [`StoreWrapper`](wrap::StoreWrapper), how a store over a store (cache, tier,
//!   instrumentation) overrides only the operations it changes.
//! - [`service`]: [`Sessions`], the session logic over any store (validate, touch, patch,
//!   rotate, revoke, sweep), so every engine behaves the same above the storage line, and the
//!   one place events are emitted.

pub mod error;
pub mod event;
pub mod id;
pub mod json;
pub mod policy;
pub mod record;
pub mod service;
pub mod store;
pub mod tier;
pub mod time;
pub mod token;
pub mod wrap;

pub use error::StoreError;
pub use event::{
    Actor, BindingProperty, Client, EventKind, EventName, EventSink, Fanout, InvalidReason, KeyId,
    NoEvents, Origin, SessionEvent,
};
pub use id::{IdError, SessionId, Shard, UserId};
pub use policy::{AtCap, DataLimits, Policy, SessionLimit};
pub use record::SessionRecord;
pub use service::{Issued, NewSession, SessionError, Sessions};
pub use store::{
    CreateOutcome, Demoted, ExpiredSession, RotateOutcome, SessionStore, UpdateOutcome,
};
pub use time::{Clock, SystemClock, Timestamp};
pub use token::{MalformedToken, SecretHash, Token};
