//! The router: every route of docs/api.md, and the layers every request passes.

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::{ApiError, PROBLEM_JSON, problem};
use crate::routes::{audit, backend, holder, operations};
use crate::state::AppState;

/// Every route template, as metric labels (static, so labelling a request allocates nothing).
const ROUTES: &[&str] = &[
    "/v1/auth",
    "/v1/session",
    "/v1/session/rotate",
    "/v1/sessions",
    "/v1/sessions/{sessionId}",
    "/v1/sessions/{sessionId}/events",
    "/v1/users/{userId}/sessions",
    "/v1/users/{userId}/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
];

/// The static label of a matched route template.
pub(crate) fn route_label(template: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == template)
        .copied()
        .unwrap_or("other")
}

/// The whole HTTP API over `state`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/auth", get(holder::forward_auth))
        .route(
            "/v1/session",
            get(holder::read)
                .patch(holder::patch)
                .delete(holder::logout),
        )
        .route("/v1/session/rotate", post(holder::rotate))
        .route(
            "/v1/sessions",
            post(backend::create).delete(backend::revoke_everyone),
        )
        .route(
            "/v1/sessions/{sessionId}",
            get(backend::read)
                .patch(backend::patch)
                .delete(backend::revoke),
        )
        .route(
            "/v1/sessions/{sessionId}/events",
            get(audit::session_events),
        )
        .route(
            "/v1/users/{userId}/sessions",
            get(backend::list_user).delete(backend::revoke_user),
        )
        .route("/v1/users/{userId}/events", get(audit::user_events))
        .route("/healthz", get(operations::healthz))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/openapi.json", get(operations::openapi))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track_http,
        ))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), outer))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The layer around everything (one layer, not two: each costs a boxed future per request):
/// the request timeout, then the headers every answer carries.
async fn outer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !one_host(&req) {
        let refused =
            ApiError::BadRequest("An HTTP/1.1 request needs exactly one Host header.".into());
        // The gateway's check answers only 200, 401 or 503 (a gateway turns anything else into
        // an error of its own): there the refusal is a 401.
        let refused = if req.uri().path() == "/v1/auth" {
            refused.for_forward_auth()
        } else {
            refused
        };
        return harden(refused.into_response());
    }
    harden(request_timeout(state.request_timeout, req, next).await)
}

/// RFC 9112 §3.2: a server answers 400 to an HTTP/1.1 request without a `Host` header or with
/// more than one (hyper serves them; two `Host`s are how some smuggling attempts start).
fn one_host(req: &Request) -> bool {
    req.version() != axum::http::Version::HTTP_11
        || req.headers().get_all(header::HOST).iter().count() == 1
}

/// Answers 503 when a request takes longer than the configured limit, so no request (and no
/// shutdown waiting for it) can hang on a store that stopped answering.
async fn request_timeout(limit: std::time::Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Headers every answer carries, and problem+json for every error, including those produced
/// outside our handlers (405 from routing, 413 from body limits).
fn harden(mut response: Response) -> Response {
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
        if !is_problem {
            let mut replacement = problem(status, generic_detail(status));
            for (name, value) in response.headers() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    replacement
                        .headers_mut()
                        .append(name.clone(), value.clone());
                }
            }
            response = replacement;
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn generic_detail(status: StatusCode) -> &'static str {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => "This method is not allowed here; see the Allow header.",
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than the limit.",
        StatusCode::NOT_FOUND => "No resource at this address.",
        StatusCode::BAD_REQUEST => "The request is malformed.",
        _ => "The request could not be processed.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metric labels are a hand-kept list (static, so labelling allocates nothing): check
    /// it against the routes `app` declares, so a new route cannot be labelled `other`.
    #[test]
    fn the_metric_route_table_is_the_routers() {
        let source = include_str!("app.rs");
        let body = &source[source.find("pub fn app(").unwrap_or(0)..];
        let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
        let mut routed: Vec<&str> = body
            .split(".route(")
            .skip(1)
            .filter_map(|rest| rest.trim_start().strip_prefix('"')?.split('"').next())
            .collect();
        routed.sort_unstable();
        let mut labelled: Vec<&str> = ROUTES.to_vec();
        labelled.sort_unstable();
        assert!(!routed.is_empty(), "found the router's routes");
        assert_eq!(
            routed, labelled,
            "ROUTES must list exactly the router's paths"
        );
        for route in ROUTES {
            assert_eq!(route_label(route), *route);
        }
        assert_eq!(route_label("/v1/other"), "other");
    }
}
