//! `sessiond audit`: the audit trail at a terminal, straight from the durable tier.
//!
//! It reads the PostgreSQL tier `sessiond serve` writes to (same config file, environment and
//! flags), so it needs no API key and works while every sessiond process is down. The events
//! a running sessiond has not shipped yet (at most `tier.ship_interval` old while PostgreSQL is
//! up) are not shown.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use sessiond_core::tier::{EventQuery, EventsOf};
use sessiond_core::{Clock as _, SessionId, SystemClock, Timestamp, UserId};
use sessiond_server::Config;
use sessiond_wire::EventDocument;

/// Options of `sessiond audit`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("whose").required(true).args(["user", "session"]))]
pub(crate) struct Opts {
    /// The events of this user (every session of theirs, and their revoke-alls).
    #[arg(long, value_name = "USER_ID")]
    user: Option<String>,
    /// The events of this one session.
    #[arg(long, value_name = "SESSION_ID")]
    session: Option<String>,
    /// Only events since then: an RFC 3339 time (`2026-03-15T10:30:00Z`) or a span back from
    /// now (`2h`, `7days`).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Most events shown, newest first.
    #[arg(long, default_value_t = 100, value_name = "N")]
    limit: usize,
    /// One JSON object per line (the API's event document) instead of a table.
    #[arg(long)]
    json: bool,
    /// TOML configuration file, as for `sessiond serve` (also `SESSIOND_CONFIG`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `--since`: a time, or a span back from `now`.
fn since(raw: &str, now: Timestamp) -> anyhow::Result<Timestamp> {
    if let Some(t) = Timestamp::parse_rfc3339(raw) {
        return Ok(t);
    }
    let span: Duration = humantime::parse_duration(raw)
        .with_context(|| format!("--since {raw}: neither an RFC 3339 time nor a span like 2h"))?;
    let ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX);
    Ok(Timestamp::from_millis(now.as_millis().saturating_sub(ms)))
}

pub(crate) fn run(opts: &Opts) -> anyhow::Result<()> {
    let config = Config::load(opts.config.as_deref(), &Default::default())?;
    crate::logging::init(&config.log, crate::logging::Stream::Stderr)?;
    crate::logging::warn_ignored_env(&config);
    if config.tier.postgres_url.is_none() {
        bail!("no audit trail: tier.postgres_url (SESSIOND_TIER__POSTGRES_URL) is not set");
    }
    let of = match (&opts.user, &opts.session) {
        (Some(user), _) => EventsOf::User(UserId::parse(user).context("--user")?),
        (None, Some(id)) => EventsOf::Session(SessionId::parse(id).context("--session")?),
        (None, None) => bail!("say --user USER_ID or --session SESSION_ID"),
    };
    if opts.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let now = SystemClock.now();
    let since = opts.since.as_deref().map(|s| since(s, now)).transpose()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let tier = sessiond_server::tier::connect(&config, &SystemClock)
            .await?
            .context("no audit trail configured")?;
        let mut shown = 0usize;
        let mut after = None;
        if !opts.json {
            println!(
                "{:<24}  {:<16}  {:<21}  {:<8}  {:<8}  {:<15}  REASON",
                "TIME", "KIND", "SESSION", "ACTOR", "KEY", "ADDRESS"
            );
        }
        while shown < opts.limit {
            let page = tier
                .events(&EventQuery {
                    of: of.clone(),
                    since,
                    after,
                    limit: (opts.limit - shown).min(EventQuery::MAX_LIMIT),
                })
                .await
                .context("reading the audit trail")?;
            for event in &page.events {
                let doc = EventDocument::from(event);
                if opts.json {
                    println!("{}", serde_json::to_string(&doc)?);
                } else {
                    println!("{}", row(&doc));
                }
            }
            shown += page.events.len();
            match page.next {
                Some(cursor) if !page.events.is_empty() => after = Some(cursor),
                _ => break,
            }
        }
        if !opts.json && shown == 0 {
            eprintln!("no events");
        }
        Ok(())
    })
}

/// One table row: the fields a person scans, detail in brackets after the reason.
fn row(e: &EventDocument) -> String {
    let dash = || "-".to_owned();
    let detail = e
        .detail
        .as_ref()
        .map(|d| format!(" {d}"))
        .unwrap_or_default();
    format!(
        "{:<24}  {:<16}  {:<21}  {:<8}  {:<8}  {:<15}  {}{}",
        e.at,
        e.kind,
        e.session_id.clone().unwrap_or_else(dash),
        e.actor,
        e.key_id.clone().unwrap_or_else(dash),
        e.client_address.clone().unwrap_or_else(dash),
        e.reason,
        detail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_span_back_from_now() {
        let now = Timestamp::from_millis(10 * 86_400_000);
        assert_eq!(
            since("2h", now).ok(),
            Some(Timestamp::from_millis(10 * 86_400_000 - 7_200_000))
        );
        assert_eq!(
            since("1970-01-02T00:00:00Z", now).ok(),
            Some(Timestamp::from_millis(86_400_000))
        );
        assert!(since("soon", now).is_err());
    }
}
