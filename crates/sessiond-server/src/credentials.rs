//! Who is calling: the extractors every handler takes its caller from.
//!
//! - [`ClientAddr`]: the client's address (the TCP peer, or what `guard.client_ip_header`
//!   says behind a gateway) and user agent, for the guard, the binding check and events.
//! - [`Backend`]: a trusted backend, by its `X-Api-Key`. Refused (`401`) before any other
//!   extractor runs, so a create's body is never read, let alone parsed, without a valid key.
//! - [`Holder`]: a token holder with a live session: the invalid-token guard, the token's
//!   shape check, the store read, the binding check, and the events of each, in one place.
//! - [`GatewayHolder`]: the same for `GET /v1/auth`, reading the session's identity only
//!   (no `userData` decoded).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use sessiond_core::{
    Client, EventKind, InvalidReason, KeyId, Origin, SessionError, SessionRecord, Token,
};

use crate::error::ApiError;
use crate::extract::{Transport, api_key, session_token};
use crate::state::AppState;

/// The client a request came from.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    /// Its address: the configured gateway header's, else the TCP peer's.
    pub ip: Option<IpAddr>,
    /// Its `User-Agent`, if it sent exactly one (a cheap reference-counted copy).
    user_agent: Option<HeaderValue>,
}

impl ClientAddr {
    fn from_parts(parts: &Parts, state: &AppState) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| *addr);
        let mut agents = parts.headers.get_all(header::USER_AGENT).iter();
        let user_agent = match (agents.next(), agents.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        };
        ClientAddr {
            ip: state.guard.source(&parts.headers, peer),
            user_agent,
        }
    }

    /// As events carry it.
    pub fn client(&self) -> Client<'_> {
        Client::new(
            self.ip,
            self.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        )
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::from_parts(parts, state))
    }
}

/// A trusted backend: the request carried exactly one `X-Api-Key`, and it is a configured
/// key.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Which key.
    pub key: KeyId,
    /// From where.
    pub client: ClientAddr,
}

impl Backend {
    /// Who asks, for the events of what it asks.
    pub fn origin(&self) -> Origin<'_> {
        Origin::backend(self.key, self.client.client())
    }
}

impl FromRequestParts<AppState> for Backend {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = api_key(&parts.headers)
            .and_then(|presented| state.api_keys.identify(presented))
            .ok_or(ApiError::NoApiKey)?;
        Ok(Backend {
            key,
            client: ClientAddr::from_parts(parts, state),
        })
    }
}

/// A token holder with a live session, activity recorded.
#[derive(Debug)]
pub struct Holder {
    /// The session.
    pub record: SessionRecord,
    /// The token it presented.
    pub token: Token,
    /// How it presented it.
    pub transport: Transport,
    /// From where.
    pub client: ClientAddr,
}

impl Holder {
    /// Who asks, for the events of what it asks.
    pub fn origin(&self) -> Origin<'_> {
        Origin::holder(self.client.client())
    }

    /// Checks the token's shape, reads its session (whole, or identity only), and checks the
    /// client against the login's. Every refusal is `401` (`429` for a client already over
    /// the invalid-token limit, when refusal is configured), counted against the client and
    /// reported; a valid token is served whatever its client guessed before.
    async fn authenticate(
        parts: &Parts,
        state: &AppState,
        documents: bool,
    ) -> Result<Self, ApiError> {
        let client = ClientAddr::from_parts(parts, state);
        let origin = Origin::holder(client.client());
        // A refusal: counted against the client, and `429` when the client was already over
        // the invalid-token limit (with `guard.reject_over_limit`).
        let refuse = |error: ApiError| {
            let rejected = state.guard.rejection(&state.metrics, client.ip);
            state
                .guard
                .refused(&state.metrics, &parts.headers, client.ip);
            rejected.unwrap_or(error)
        };
        let (token, transport) = match session_token(&parts.headers, state.cookie_names) {
            Ok(found) => found,
            Err(e) => {
                state.sessions.report(
                    EventKind::InvalidToken {
                        reason: InvalidReason::Malformed,
                    },
                    None,
                    origin,
                );
                return Err(refuse(e));
            }
        };
        let authenticated = if documents {
            state.sessions.authenticate(&token, origin).await
        } else {
            state.sessions.authenticate_identity(&token, origin).await
        };
        let record = match authenticated {
            Ok(record) => record,
            Err(SessionError::Unauthenticated) => return Err(refuse(ApiError::Unauthorized)),
            Err(e) => return Err(e.into()),
        };
        let (mismatches, refused) = state.binding.check(&record, &parts.headers, client.ip);
        for property in mismatches {
            state.sessions.report(
                EventKind::BindingMismatch { property, refused },
                Some(&record),
                origin,
            );
        }
        if refused {
            return Err(ApiError::Unauthorized);
        }
        Ok(Holder {
            record,
            token,
            transport,
            client,
        })
    }
}

impl FromRequestParts<AppState> for Holder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Holder::authenticate(parts, state, true).await
    }
}

/// [`Holder`] for the gateway's check: the session's `userData` may be left empty, since
/// `GET /v1/auth` answers only with the identity.
#[derive(Debug)]
pub struct GatewayHolder(pub Holder);

impl FromRequestParts<AppState> for GatewayHolder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Holder::authenticate(parts, state, false)
            .await
            .map(GatewayHolder)
    }
}
