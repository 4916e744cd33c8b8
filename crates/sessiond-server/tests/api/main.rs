//! HTTP integration tests of sessiond: every flow of docs/api.md, end to end over real HTTP against
//! a server started with `sessiond_server::run` on an ephemeral port and a fresh data
//! directory, plus the bad-input catalogue of docs/requirements.md (d).
//!
//! Every answer is checked for `Cache-Control: no-store` and `X-Content-Type-Options: nosniff`,
//! and every error for a well-formed `application/problem+json` body (see [`helpers`]).
//!
//! - [`holder`]: the token holder's flows (`/v1/auth`, `/v1/session`, rotate, logout, expiry).
//! - [`backend`]: the trusted backend's flows (create, read, patch, revoke, list, the cap).
//! - [`credentials`]: refused session tokens and API keys, all answered alike.
//! - [`events`]: every lifecycle path reports its session event once, with no token.
//! - [`bad_input`]: malformed bodies, identifiers, media types, methods and paths.
//! - [`operations`]: health, readiness, metrics, the OpenAPI document, shutdown.
//! - [`security`]: the session cookie (S15), per-client invalid-token counting (S19) and the
//!   store commands a malformed token costs (D7, counted by Redis).
//! - [`redis`]: what only Redis can show (always on Redis, whatever `SESSIOND_TEST_STORE`
//!   says): fail-closed while Redis is down and recovery after, and a keyspace with a TTL on
//!   every key and no token secret anywhere.
//!
//! The suite runs unchanged on each engine: `SESSIOND_TEST_STORE` picks `embedded` (default),
//! `redis`, `redis-sentinel` or `redis-cluster`, and `scripts/test` runs them all.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "the helpers outside the #[test] functions fail the test they serve by panicking"
)]

mod backend;
mod bad_input;
mod credentials;
mod events;
mod helpers;
mod holder;
mod operations;
mod redis;
mod security;
