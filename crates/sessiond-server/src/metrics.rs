//! Every metric sessiond exports, declared in one place, and the middleware that records
//! HTTP requests.
//!
//! Labels are the matched route template (never the raw path, which holds session and user
//! ids), the method and the status, so the series count stays small and nothing identifying
//! or secret reaches `/metrics`.
//!
//! Latency buckets run from 50 µs to 10 s: validation is expected to take well under a
//! millisecond, so the low end is fine-grained; the high end catches store timeouts (the
//! request timeout defaults to 10 s).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sessiond_core::EventName;
use sessiond_store_redis::CacheProbe;

use crate::state::AppState;

const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// HTTP method.
    pub method: &'static str,
    /// Route template, e.g. `/v1/sessions/{sessionId}`.
    pub route: &'static str,
    /// Response status.
    pub status: u16,
}

/// Labels of a store operation.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    /// Operation (`load`, `touch`, `create`, ...).
    pub op: &'static str,
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// Labels of a per-engine figure.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    /// `embedded`, `standalone`, `sentinel` or `cluster`.
    pub store: &'static str,
}

/// Labels of a read-through to the durable tier.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadThroughLabels {
    /// `restored` (served and written back), `raced` (another request wrote it back first),
    /// `refused` (a revocation's tombstone), `ended`, `absent`, `unavailable`, `untrusted`
    /// (this process's journal holds revocations the tier does not have yet),
    /// `untrusted_elsewhere` (another process's may, `crate::trust`).
    pub outcome: &'static str,
}

/// Labels of a session lifecycle event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// An [`EventName`]'s label (`created`, `rotated`, `logged_out`, ...).
    pub event: &'static str,
}

/// Labels of what the invalid-token guard did.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardLabels {
    /// A [`GuardEvent`]'s label.
    pub event: &'static str,
}

/// What the invalid-token guard counts (not session events: they concern a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardEvent {
    /// A client passed `guard.invalid_token_limit` in its window (once per window).
    SourceOverLimit,
    /// A request was refused because its client is over the limit.
    Rejected,
}

impl GuardEvent {
    /// Every kind.
    pub const ALL: [GuardEvent; 2] = [GuardEvent::SourceOverLimit, GuardEvent::Rejected];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardEvent::SourceOverLimit => "invalid_token_source_over_limit",
            GuardEvent::Rejected => "invalid_token_rejected",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            GuardEvent::SourceOverLimit => "a client passed the invalid-token limit",
            GuardEvent::Rejected => "a request refused because its client is over the limit",
        }
    }
}

/// `Help text: label (what it counts), ...` for a metric labelled by an enum.
fn help_from<T: Copy>(
    intro: &str,
    all: &[T],
    label: impl Fn(T) -> &'static str,
    describe: impl Fn(T) -> &'static str,
) -> String {
    let kinds: Vec<String> = all
        .iter()
        .map(|&k| format!("{} ({})", label(k), describe(k)))
        .collect();
    format!("{intro}: {}", kinds.join(", "))
}

/// All metrics of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The near cache, once the engine has one (its counters are read at each scrape).
    cache: Arc<OnceLock<CacheProbe>>,
    /// Requests by route, method and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Request latency by route, method and status.
    pub http_duration: HistogramFamily<HttpLabels>,
    /// Store operation latency.
    pub store_duration: HistogramFamily<StoreLabels>,
    /// Session lifecycle events, by [`EventName`].
    pub session_events: Family<EventLabels, Counter>,
    /// What the invalid-token guard did, by [`GuardEvent`].
    pub guard_events: Family<GuardLabels, Counter>,
    /// Sessions held by the store (refreshed on each scrape); absent for engines that cannot
    /// count without scanning (Redis).
    pub live_sessions: Family<EngineLabels, Gauge>,
    /// Outbox entries the durable tier has committed.
    pub tier_shipped: Counter,
    /// Shipping attempts that failed (the tier unreachable or refusing).
    pub tier_ship_failures: Counter,
    /// Entries waiting in the outbox.
    pub tier_outbox_entries: Gauge,
    /// Age of the oldest waiting entry.
    pub tier_lag_seconds: Gauge<f64, AtomicU64>,
    /// Refusals (`tier.audit_refusals`) the durable tier did not get: queue full or tier down.
    pub tier_refusals_dropped: Counter,
    /// Revocations answered before the durable tier had them (`tier.revocation_timeout`).
    pub tier_revocations_late: Counter,
    /// Misses of the hot store answered by the durable tier, by outcome.
    pub tier_read_throughs: Family<ReadThroughLabels, Counter>,
    /// Idle sessions the demoter removed from the hot store (`tier.demote_after`).
    pub tier_demoted: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sessiond");
        let cache = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(CacheCollector(cache.clone())));
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = HistogramFamily::<HttpLabels>::new_with_constructor(latency_histogram);
        let store_duration =
            HistogramFamily::<StoreLabels>::new_with_constructor(latency_histogram);
        let session_events = Family::<EventLabels, Counter>::default();
        let guard_events = Family::<GuardLabels, Counter>::default();
        let live_sessions = Family::<EngineLabels, Gauge>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by route template, method and status",
            http_duration.clone(),
        );
        registry.register(
            "store_operation_duration_seconds",
            "Time of session store operations, by operation and outcome",
            store_duration.clone(),
        );
        registry.register(
            "session_events",
            help_from(
                "Session lifecycle events, by kind",
                &EventName::ALL,
                EventName::as_str,
                EventName::describe,
            ),
            session_events.clone(),
        );
        registry.register(
            "guard_events",
            help_from(
                "What the invalid-token guard did",
                &GuardEvent::ALL,
                GuardEvent::as_str,
                GuardEvent::describe,
            ),
            guard_events.clone(),
        );
        // Every kind is exported from the start, at zero, so a rate or an alert over any of
        // them has a series before the first event.
        for name in EventName::ALL {
            drop(session_events.get_or_create(&EventLabels {
                event: name.as_str(),
            }));
        }
        for kind in GuardEvent::ALL {
            drop(guard_events.get_or_create(&GuardLabels {
                event: kind.as_str(),
            }));
        }
        registry.register(
            "live_sessions",
            "Sessions held by the store, including expired ones not yet reclaimed (embedded store only)",
            live_sessions.clone(),
        );
        let tier_shipped = Counter::default();
        let tier_ship_failures = Counter::default();
        let tier_outbox_entries = Gauge::default();
        let tier_lag_seconds = Gauge::<f64, AtomicU64>::default();
        let tier_refusals_dropped = Counter::default();
        let tier_revocations_late = Counter::default();
        let tier_read_throughs = Family::<ReadThroughLabels, Counter>::default();
        let tier_demoted = Counter::default();
        registry.register(
            "tier_demoted_sessions",
            "Idle sessions removed from the hot store, kept in the durable tier (tier.demote_after)",
            tier_demoted.clone(),
        );
        registry.register(
            "tier_read_throughs",
            "Hot-store misses asked of the durable tier, by outcome (restored: served and written back)",
            tier_read_throughs.clone(),
        );
        registry.register(
            "tier_revocations_late",
            "Logouts, revocations and rotations answered before the durable tier had them (tier.revocation_timeout passed; they ship when it is back)",
            tier_revocations_late.clone(),
        );
        registry.register(
            "tier_refusals_dropped",
            "Refused tokens and binding mismatches not recorded in the audit trail (tier.audit_refusals): queue full or tier down",
            tier_refusals_dropped.clone(),
        );
        registry.register(
            "tier_shipped_entries",
            "Outbox entries the durable tier has committed (with tier.postgres_url)",
            tier_shipped.clone(),
        );
        registry.register(
            "tier_ship_failures",
            "Attempts to ship the outbox to the durable tier that failed",
            tier_ship_failures.clone(),
        );
        registry.register(
            "tier_outbox_entries",
            "Entries waiting in the outbox for the durable tier",
            tier_outbox_entries.clone(),
        );
        registry.register(
            "tier_lag_seconds",
            "Age of the oldest entry waiting for the durable tier (0 when none waits)",
            tier_lag_seconds.clone(),
        );
        Metrics {
            registry,
            cache,
            tier_shipped,
            tier_ship_failures,
            tier_outbox_entries,
            tier_lag_seconds,
            tier_refusals_dropped,
            tier_revocations_late,
            tier_read_throughs,
            tier_demoted,
            http_requests,
            http_duration,
            store_duration,
            session_events,
            guard_events,
            live_sessions,
        }
    }

    /// Reports the near cache's counters from now on.
    pub fn watch_cache(&self, probe: CacheProbe) {
        let _ = self.cache.set(probe);
    }

    /// The counter of read-throughs that ended in `outcome`.
    pub fn tier_read_through(&self, outcome: &'static str) -> Counter {
        self.tier_read_throughs
            .get_or_create(&ReadThroughLabels { outcome })
            .clone()
    }

    /// Counts a lifecycle event.
    pub fn event(&self, name: EventName) {
        self.session_events
            .get_or_create(&EventLabels {
                event: name.as_str(),
            })
            .inc();
    }

    /// Counts what the invalid-token guard did.
    pub fn guard(&self, event: GuardEvent) {
        self.guard_events
            .get_or_create(&GuardLabels {
                event: event.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The near cache's counters and sizes, read from the cache at each scrape (absent without a
/// cache).
#[derive(Debug)]
struct CacheCollector(Arc<OnceLock<CacheProbe>>);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(probe) = self.0.get() else {
            return Ok(());
        };
        let s = probe.stats();
        let counters = [
            (
                "cache_hits",
                "Validations and reads answered from the near cache",
                s.hits,
            ),
            (
                "cache_misses",
                "Reads the near cache sent to Redis",
                s.misses,
            ),
            (
                "cache_invalidations",
                "Cached sessions dropped by an invalidation from Redis",
                s.invalidations,
            ),
            (
                "cache_flushes",
                "Times the whole near cache was dropped because its invalidation channel was in doubt",
                s.flushes,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            ("cache_entries", "Sessions in the near cache", s.entries),
            ("cache_bytes", "Bytes the near cache holds", s.bytes),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Records count and latency of every routed request.
pub async fn track_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| crate::app::route_label(p.as_str()))
        .unwrap_or("unmatched");
    let response = next.run(req).await;
    let labels = HttpLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    state.metrics.http_requests.get_or_create(&labels).inc();
    state
        .metrics
        .http_duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
