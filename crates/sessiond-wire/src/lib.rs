//! What crosses the wire between sessiond and its callers, for the server and for clients
//! alike: the JSON documents of the API, the problem document of every error, the header and
//! cookie names, and reading a session token off a request's headers.
//!
//! It depends on nothing of the server (no HTTP framework, no store), so a typed client, a
//! tower layer inside a Rust app, and `sessiond bench` speak exactly what the server speaks.
//! The `openapi` feature adds the OpenAPI schemas the server publishes.
//!
//! # Layout
//!
//! - [`document`]: the session document and the bodies of requests and answers.
//! - [`audit`]: the audit trail's event document and its pages.
//! - [`problem`]: the RFC 9457 problem document.
//! - [`credential`]: header and cookie names, and the token (bearer or cookie) and API key of
//!   a request, shape-checked.
//! - [`cookie`]: the `Cookie` header parser and the `Set-Cookie` values sessiond sends.

pub mod audit;
pub mod cookie;
pub mod credential;
pub mod document;
pub mod problem;

pub use audit::{EventDocument, EventPage};
pub use credential::{
    API_KEY_HEADER, CookieNames, LEGACY_SESSION_COOKIE, SESSION_COOKIE, Transport,
};
pub use document::{
    CreateSession, IssuedSession, PatchSession, PatchValue, Revoked, SessionDocument, SessionList,
};
pub use problem::ProblemDocument;
