//! The ceiling of `bench/compare`: the least a forward-auth server can do, on sessiond's own
//! HTTP stack and Redis client, so that the comparison shows how close sessiond comes to what
//! the machine allows.
//!
//! The stack is sessiond's: hyper's HTTP/1.1 connection serving an axum `Router`, with the
//! accept loop and the connection settings of `sessiond-server`'s `serve.rs` (TCP_NODELAY,
//! header-read timeout, header limits, keep-alive), and redis-rs with one
//! `MultiplexedConnection`, as sessiond holds to a standalone primary, with sessiond's default
//! 1 s connect and response timeouts. Same crate versions, same release profile, same allocator
//! (mimalloc).
//!
//! It is not a session service. A login is one `SET <token> <userId> EX 86400` and a
//! validation one `GET <token>`: no session document, no token hashing, no user index, no
//! sliding expiry, no input limits or validation beyond finding `userId`, no request timeout,
//! no connection cap, no metrics, no logs. Whatever sessiond spends beyond this server is the
//! price of what it does that this server does not; what this server spends is the HTTP stack,
//! one Redis round trip and the machine.
//!
//! - `POST /v1/sessions` reads the JSON body, takes `userId` from it and answers `201` with
//!   `{"token":"<token>"}`, the token being 32 random bytes in base64url without padding.
//! - `GET /v1/auth` reads `Authorization: Bearer <token>` and answers `200` with `X-User-Id`
//!   and `X-Session-Id` (the token's first 8 characters), `401` for a missing or unknown
//!   token, `503` when Redis fails. Empty body.
//! - `GET /healthz` answers `200`.
//!
//! Configuration, from the environment: `PORT` (it listens on `127.0.0.1:$PORT`) and
//! `REDIS_URL` (`redis://host:port`). SIGTERM or ctrl-c stops it.
//!
//! ```sh
//! CARGO_BUILD_JOBS=1 cargo build --release -p sessiond-bench-ceiling
//! PORT=7590 REDIS_URL=redis://127.0.0.1:6399 target/release/ceiling
//! ```

use std::borrow::Cow;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde::Deserialize;
use tokio::net::TcpListener;

/// sessiond's allocator, so the two binaries differ only in what they do per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Lifetime of a token in Redis: 24 hours.
const TTL_SECONDS: u64 = 86_400;
/// Redis connect and response timeout: sessiond's default `redis.timeout`.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);
/// sessiond's default `limits.header_read_timeout`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// sessiond's default `limits.max_header_bytes`.
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// sessiond's default `limits.max_headers`.
const MAX_HEADERS: usize = 100;

/// `X-User-Id`: whose session it is.
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// `X-Session-Id`: which session it is.
const X_SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");

/// The one field taken from a login's body; the rest of the document is skipped.
#[derive(Deserialize)]
struct Login<'a> {
    /// Who logs in; stored as the token's value.
    #[serde(rename = "userId", borrow)]
    user_id: Cow<'a, str>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT")
        .context("PORT is not set")?
        .parse()
        .context("PORT is not a port number")?;
    let url = std::env::var("REDIS_URL").context("REDIS_URL is not set")?;
    let client = redis::Client::open(url.as_str()).context("REDIS_URL is not a Redis URL")?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let redis = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("connecting to Redis")?;

    let router = Router::new()
        .route("/v1/sessions", post(create))
        .route("/v1/auth", get(validate))
        .route("/healthz", get(healthz))
        .with_state(redis);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    serve(listener, router, shutdown_signal()).await;
    Ok(())
}

/// `POST /v1/sessions`: one `SET <token> <userId> EX 86400`, then `201 {"token":"…"}`.
async fn create(
    State(mut redis): State<MultiplexedConnection>,
    body: Bytes,
) -> Result<Response, StatusCode> {
    let login: Login<'_> = serde_json::from_slice(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let token = URL_SAFE_NO_PAD.encode(raw);
    redis::cmd("SET")
        .arg(&token)
        .arg(login.user_id.as_ref())
        .arg("EX")
        .arg(TTL_SECONDS)
        .exec_async(&mut redis)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"token":"{token}"}}"#),
    )
        .into_response())
}

/// `GET /v1/auth`: one `GET <token>`, then `200` with `X-User-Id` and `X-Session-Id`, or
/// `401`.
async fn validate(
    State(mut redis): State<MultiplexedConnection>,
    req: Request,
) -> Result<Response, StatusCode> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let user: Option<Vec<u8>> = redis::cmd("GET")
        .arg(token)
        .query_async(&mut redis)
        .await
        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    let user = user.ok_or(StatusCode::UNAUTHORIZED)?;
    let user = HeaderValue::from_maybe_shared(Bytes::from(user))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let session = HeaderValue::from_str(token.get(..8).unwrap_or(token))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    Ok((StatusCode::OK, [(X_USER_ID, user), (X_SESSION_ID, session)]).into_response())
}

/// `GET /healthz`: alive.
async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Serves `router` on `listener` until `shutdown` completes, with the connection settings of
/// sessiond's `serve.rs` (its per-connection cap and graceful drain left out).
async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES.max(8192) * 2)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
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
