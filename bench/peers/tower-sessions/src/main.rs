//! A `bench/compare` peer: the login and forward-auth flow of sessiond, written the way an
//! axum application keeps sessions in Redis today, with tower-sessions and
//! tower-sessions-redis-store (fred underneath), configured as their documentation shows.
//!
//! - `POST /v1/sessions` (login): cycles the session id (session-fixation defence, as
//!   axum-login does at login), stores the session document under one key of the session,
//!   answers `201 {"userId": …}`; the layer sets the `sid` cookie.
//! - `GET /v1/auth`: reads the document; `200` with `X-User-Id` and `X-Session-Id` when the
//!   session is live, `401` otherwise, `503` when the store fails. Empty body. The document
//!   is not rewritten.
//! - `GET /healthz`: `200`.
//!
//! Configuration, from the environment: `PORT` (it listens on `127.0.0.1:$PORT`) and
//! `REDIS_URL` (`redis://host:port`); `ALWAYS_SAVE=1` turns on the layer's `with_always_save`,
//! which tower-sessions documents as the way to make `OnInactivity` a sliding expiry (by
//! default reading a session is not activity, so a validation never extends it). SIGTERM or
//! ctrl-c stops it.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use tower_sessions::session::Id;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_redis_store::fred::prelude::{ClientLike as _, Config, Pool};

/// The key of the session document in the session's data.
const SESSION_KEY: &str = "session";
/// Connections in the fred pool: the number in tower-sessions-redis-store's example.
const POOL_SIZE: usize = 6;

/// `X-User-Id`: whose session it is.
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// `X-Session-Id`: which session it is.
const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");

/// What a login sends.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Login {
    /// Who logs in.
    user_id: String,
    /// Application data kept in the session.
    #[serde(default)]
    user_data: Value,
    /// Where the login came from.
    #[serde(default)]
    metadata: Value,
}

/// The session document, the same fields as sessiond's.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionDoc {
    /// Whose session it is.
    user_id: String,
    /// A public id of the session, stable for its life. The tower-sessions id is the cookie
    /// value, a bearer secret, so it is not what goes to the upstream in `X-Session-Id`.
    session_id: String,
    /// RFC 3339.
    created_at: String,
    /// RFC 3339; set at login, not rewritten by validations.
    last_activity: String,
    /// Application data.
    user_data: Value,
    /// Login metadata.
    metadata: Value,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set")?
        .parse()
        .context("PORT is not a port number")?;
    let url = std::env::var("REDIS_URL").context("REDIS_URL is not set")?;
    let always_save = std::env::var("ALWAYS_SAVE").is_ok_and(|v| v == "1");

    let pool = Pool::new(
        Config::from_url(&url).context("REDIS_URL is not a Redis URL")?,
        None,
        None,
        None,
        POOL_SIZE,
    )
    .context("creating the Redis pool")?;
    let redis_conn = pool.connect();
    pool.wait_for_connect()
        .await
        .context("connecting to Redis")?;

    let session_layer = SessionManagerLayer::new(RedisStore::new(pool.clone()))
        .with_name("sid")
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(Duration::hours(24)))
        .with_always_save(always_save);
    let app = Router::new()
        .route("/v1/sessions", post(login))
        .route("/v1/auth", get(auth))
        .route("/healthz", get(healthz))
        .layer(session_layer);

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?
        // As axum's documentation shows: no Nagle delay on small responses.
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;

    // Best effort: Redis may be gone already, and nothing is left to flush.
    let _ = pool.quit().await;
    let _ = redis_conn.await;
    Ok(())
}

/// `POST /v1/sessions`: log in.
async fn login(session: Session, Json(body): Json<Login>) -> Result<Response, StatusCode> {
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let doc = SessionDoc {
        user_id: body.user_id,
        session_id: Id::default().to_string(),
        created_at: now.clone(),
        last_activity: now,
        user_data: body.user_data,
        metadata: body.metadata,
    };
    session
        .cycle_id()
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    session
        .insert(SESSION_KEY, &doc)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((StatusCode::CREATED, Json(json!({ "userId": doc.user_id }))).into_response())
}

/// `GET /v1/auth`: forward-auth.
async fn auth(session: Session) -> Result<Response, StatusCode> {
    let doc: SessionDoc = session
        .get(SESSION_KEY)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let user = HeaderValue::from_str(&doc.user_id).map_err(|_| StatusCode::UNAUTHORIZED)?;
    let id = HeaderValue::from_str(&doc.session_id).map_err(|_| StatusCode::UNAUTHORIZED)?;
    Ok((StatusCode::OK, [(X_USER_ID, user), (X_SESSION_ID, id)]).into_response())
}

/// `GET /healthz`: alive.
async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
