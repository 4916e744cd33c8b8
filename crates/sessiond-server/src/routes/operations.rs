//! Endpoints for operators and orchestrators; no credential.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::routes::json;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is alive")))]
pub async fn healthz() -> Response {
    json(StatusCode::OK, &json!({"status": "ok"}))
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The store answers"),
        (status = 503, description = "The store cannot be reached", body = crate::document::ProblemDocument, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.sessions.store().ping().await?;
    let Some(tier) = &state.tier else {
        return Ok(json(StatusCode::OK, &json!({"status": "ready"})));
    };
    // The durable tier is reported, never a reason to be unready: sessions are served from
    // the hot store, and logout must keep working while PostgreSQL is down. The backlog is
    // read from the outbox now, not from the shipper's last look at it.
    let (waiting, lag_ms) =
        crate::tier::backlog(&**state.sessions.store(), &**state.sessions.clock()).await?;
    let up = tier.status.up.load(std::sync::atomic::Ordering::Relaxed);
    let leases = tier.trust.status();
    let trusted = tier.trust.check().await.is_ok();
    Ok(json(
        StatusCode::OK,
        &json!({
            "status": "ready",
            "tier": {
                "status": if up { "up" } else { "down" },
                "outboxEntries": waiting,
                "lagSeconds": lag_ms as f64 / 1000.0,
                "journalEntries": tier.journal.len(),
                "readThrough": if trusted { "trusted" } else { "refused" },
                "instance": tier.trust.instance(),
                "leases": leases.leases,
                "blockingLeases": leases.blocking,
            },
        }),
    ))
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics in OpenMetrics text format", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(Some(n)) = state.sessions.store().count().await {
        let labels = crate::metrics::EngineLabels {
            store: state.engine,
        };
        let gauge = state.metrics.live_sessions.get_or_create(&labels);
        gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let mut r = state.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// This API's OpenAPI 3.1 document, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    json(StatusCode::OK, &crate::openapi::document())
}
