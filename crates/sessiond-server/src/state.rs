//! Shared state of the HTTP service.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use sessiond_core::Sessions;

use crate::api_keys::ApiKeys;
use crate::guard::InvalidTokenGuard;
use crate::journal::Ended;
use crate::metrics::Metrics;

/// Everything a handler needs, shared by all requests.
#[derive(Debug)]
pub struct App {
    /// Session logic over the configured store.
    pub sessions: Sessions,
    /// Keys of trusted backends.
    pub api_keys: ApiKeys,
    /// The process's metrics.
    pub metrics: Arc<Metrics>,
    /// Which engine serves (`embedded`, `standalone`, `sentinel`, `cluster`), for logs and metrics.
    pub engine: &'static str,
    /// Longest time a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Longest a request body may take to arrive (408 beyond): `limits.body_timeout`, at
    /// most half of `request_timeout`.
    pub body_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Per-client counts of invalid tokens.
    pub guard: InvalidTokenGuard,
    /// Whether session cookies carry a `Max-Age`.
    pub persistent_cookies: bool,
    /// Which cookies carry a session token.
    pub cookie_names: crate::extract::CookieNames,
    /// What a request from another client than the login's gets.
    pub binding: crate::binding::BindingConfig,
    /// The durable tier, when `tier.postgres_url` is set (the audit trail's reads, `/readyz`).
    pub tier: Option<crate::tier::Tier>,
    /// Longest a revocation waits for the durable tier (`tier.revocation_timeout`).
    pub revocation_timeout: Duration,
}

impl App {
    /// The shared state of a service configured by `config`, over `sessions` (whose store
    /// stack, clock and event sinks the caller built), accepting `api_keys`, on the engine
    /// named `engine`. The one place `App` is assembled, so an embedding process (or the
    /// fuzz target) never assembles it field by field.
    pub fn new(
        config: &crate::Config,
        sessions: Sessions,
        api_keys: ApiKeys,
        metrics: Arc<Metrics>,
        engine: &'static str,
    ) -> Self {
        App {
            sessions,
            api_keys,
            metrics,
            engine,
            request_timeout: config.limits.request_timeout,
            body_timeout: config
                .limits
                .body_timeout
                .min(config.limits.request_timeout / 2),
            max_body_bytes: config.limits.max_body_bytes,
            guard: InvalidTokenGuard::new(&config.guard, config.cookie.names()),
            cookie_names: config.cookie.names(),
            persistent_cookies: config.cookie.persistent,
            binding: config.binding,
            tier: None,
            revocation_timeout: config.tier.revocation_timeout,
        }
    }

    /// Called once a request has ended sessions (logout, revoke, revoke-all, rotation, a
    /// create that replaced or evicted): with a durable tier, waits until PostgreSQL has the
    /// ends, at most `tier.revocation_timeout`, so no tier can bring them back later
    /// (`docs/design.md` §10). Past the timeout the request answers anyway, and the ends ship
    /// when PostgreSQL is back, from the outbox and from the local journal (`crate::journal`),
    /// which has them on disk before this returns.
    pub async fn sessions_ended(&self, ended: Ended<'_>) {
        let Some(tier) = &self.tier else { return };
        if tier.flush.ship_now(self.revocation_timeout).await {
            return;
        }
        self.metrics.tier_revocations_late.inc();
        tracing::debug!(
            event = "tier.revocation_late",
            "a revocation answered before the durable tier had it"
        );
        let at = self.sessions.clock().now();
        let (journal, changes) = (tier.journal.clone(), ended.changes());
        match tokio::task::spawn_blocking(move || journal.append(changes, at)).await {
            // Other processes must see it too, before this answers.
            Ok(Ok(())) => tier.trust.journaled().await,
            Ok(Err(e)) => tracing::error!(
                event = "tier.journal_failed",
                error = %e,
                "a late revocation could not be written to the journal"
            ),
            Err(e) => tracing::error!(error = %e, "the journal write did not run"),
        }
    }

    /// With the durable tier `tier`.
    #[must_use]
    pub fn with_tier(mut self, tier: Option<crate::tier::Tier>) -> Self {
        self.tier = tier;
        self
    }

    /// For a `Set-Cookie`: the time a persistent cookie's `Max-Age` counts from, or `None`
    /// when cookies end with the browser.
    pub fn persistent_cookie_start(&self) -> Option<sessiond_core::Timestamp> {
        self.persistent_cookies.then(|| self.sessions.clock().now())
    }
}

/// Handle to [`App`], cheap to clone into every request.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
