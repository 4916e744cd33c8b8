//! `sessiond revoke`: the operator's emergency path (S12), straight on the store.
//!
//! With a durable tier configured, the revocation also reaches PostgreSQL before the command
//! returns (the store's outbox is shipped), so no tier can bring the sessions back.
//!
//! It opens the store `sessiond serve` would open (same config file, environment and flags), so
//! it works with no API key and even while every sessiond process is down. The embedded store
//! can be opened by one process at a time: while a server runs on it, use the API instead
//! (`DELETE /v1/sessions?confirm=all-sessions`, or `DELETE /v1/users/{userId}/sessions`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use sessiond_core::{Clock as _, Origin, SessionId, Sessions, SystemClock, UserId};
use sessiond_server::Config;
use sessiond_server::config::Overrides;
use sessiond_server::events::LogSink;
use sessiond_server::journal::{Ended, Journal};
use sessiond_server::trust::instance_id;

/// Options of `sessiond revoke`.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("whom").required(true).args(["user", "all"]))]
pub(crate) struct Opts {
    /// End every session of this user (account lock, password change).
    #[arg(long, value_name = "USER_ID")]
    user: Option<String>,
    /// With `--user`: keep this one session (the one the user is using).
    #[arg(long, value_name = "SESSION_ID", requires = "user")]
    except: Option<String>,
    /// End every session of every user (a leaked database, a compromised backend).
    #[arg(long, requires = "yes")]
    all: bool,
    /// Confirm `--all`.
    #[arg(long)]
    yes: bool,
    /// TOML configuration file, as for `sessiond serve` (also `SESSIOND_CONFIG`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory of the embedded store (also `SESSIOND_DATA_DIR`).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub(crate) fn run(opts: &Opts) -> anyhow::Result<()> {
    let overrides = Overrides {
        data_dir: opts.data_dir.clone(),
        ..Overrides::default()
    };
    let config = Config::load(opts.config.as_deref(), &overrides)?;
    crate::logging::init(&config.log, crate::logging::Stream::Stderr)?;
    crate::logging::warn_ignored_env(&config);
    let user = opts
        .user
        .as_deref()
        .map(UserId::parse)
        .transpose()
        .context("--user")?;
    let except = opts
        .except
        .as_deref()
        .map(SessionId::parse)
        .transpose()
        .context("--except")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let (store, engine) = sessiond_server::open_store(&config)
            .await
            .with_context(|| {
                if config.redis_url.is_none() {
                    "opening the embedded store (if a sessiond is serving from it, use its API: \
                 DELETE /v1/sessions?confirm=all-sessions or DELETE /v1/users/{userId}/sessions)"
                        .to_owned()
                } else {
                    "opening the Redis store".to_owned()
                }
            })?;
        // The change is reported like any other: one `revoked_all` or `revoked_everyone`
        // event with actor `cli`, in the log.
        let sessions = Sessions::new(store.clone(), config.policy(), Arc::new(SystemClock))
            .with_events(Arc::new(LogSink::new()));
        let result = match (&user, opts.all) {
            (Some(user), _) => sessions
                .revoke_user(user, except.as_ref(), Origin::CLI)
                .await
                .map(|n| format!("revoked {n} live sessions of user {user} ({engine} store)")),
            (None, true) => sessions
                .revoke_everyone(Origin::CLI)
                .await
                .map(|n| format!("removed {n} sessions of every user ({engine} store)")),
            (None, false) => bail!("say --user USER_ID or --all --yes"),
        };
        let message = result.context("revoking")?;
        // With a durable tier, the ends reach PostgreSQL before this returns (a running
        // sessiond would write them through the same way); if PostgreSQL cannot be reached
        // they wait in the outbox, and in the journal of this data directory, for the next
        // `sessiond serve` (which reads nothing through from PostgreSQL until it has them).
        let shipped = match sessiond_server::tier::connect(&config, &SystemClock).await {
            Ok(Some(tier)) => Some(sessiond_server::tier::ship_all(&*store, &*tier).await),
            Ok(None) => None,
            Err(e) => Some(Err(sessiond_core::StoreError::unavailable(e.to_string()))),
        };
        println!("{message}");
        if let Some(Err(e)) = shipped {
            let ended = match &user {
                Some(user) => Ended::User {
                    user,
                    kept: except.as_ref(),
                },
                None => Ended::Everyone,
            };
            eprintln!(
                "the durable tier could not be reached ({e}); the revocation is in the outbox \
                 and reaches PostgreSQL when sessiond serve runs again"
            );
            match Journal::open(&config.data_dir)
                .and_then(|j| j.append(ended.changes(), SystemClock.now()))
                .and_then(|()| instance_id(&config.data_dir))
            {
                // Marked in the hot store, so no sessiond reads through from PostgreSQL until
                // a server on this data directory has shipped it.
                Ok(instance) => {
                    if let Err(e) = store.journal_marks(Some((&instance, true))).await {
                        eprintln!("and the journal could not be marked in the store: {e}");
                    }
                }
                Err(e) => eprintln!("and it could not be written to the tier journal: {e}"),
            }
        }
        store.close().await.context("closing the store")?;
        Ok(())
    })
}
