//! `sessiond tier`: the processes' leases in the durable tier, for an operator
//! (`docs/design.md` §10, "Other processes' journals").
//!
//! A process that stopped with revocations in its journal, or whose lease names an epoch of a
//! Redis that has since lost its data, holds read-through back in every process (misses answer
//! `503`) until it comes back on its data directory and ships its journal. When it never will
//! (its machine and data directory are gone), `sessiond tier forget-instance ID` lets the
//! others trust the tier again: what its journal held is lost, so do it knowingly.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use sessiond_core::SystemClock;
use sessiond_server::Config;

/// Options of `sessiond tier`.
#[derive(Debug, clap::Args)]
pub(crate) struct Opts {
    #[command(subcommand)]
    command: TierCommand,
    /// TOML configuration file, as for `sessiond serve` (also `SESSIOND_CONFIG`).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum TierCommand {
    /// List the processes' leases: instance, epoch, journal entries, last renewal.
    Instances {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drop a lease and its journal mark: the process is gone for good, and what its journal
    /// held with it.
    ForgetInstance {
        /// The instance id (`sessiond tier instances`, or `/readyz` of that process).
        instance: String,
        /// Confirm: the revocations only that process's journal held are given up.
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) fn run(opts: &Opts) -> anyhow::Result<()> {
    let config = Config::load(opts.config.as_deref(), &Default::default())?;
    crate::logging::init(&config.log, crate::logging::Stream::Stderr)?;
    crate::logging::warn_ignored_env(&config);
    if config.tier.postgres_url.is_none() {
        bail!("no durable tier: tier.postgres_url (SESSIOND_TIER__POSTGRES_URL) is not set");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let tier = sessiond_server::tier::connect(&config, &SystemClock)
            .await?
            .context("no durable tier configured")?;
        match &opts.command {
            TierCommand::Instances { json } => {
                let leases = tier.leases().await.context("reading the leases")?;
                if !json {
                    println!(
                        "{:<36}  {:<52}  {:>7}  RENEWED",
                        "INSTANCE", "EPOCH", "JOURNAL"
                    );
                }
                for l in &leases {
                    if *json {
                        let line = serde_json::json!({
                            "instance": l.instance,
                            "epoch": l.epoch,
                            "journalEntries": l.journal_entries,
                            "renewedAt": l.renewed_at.to_rfc3339(),
                        });
                        println!("{line}");
                    } else {
                        println!(
                            "{:<36}  {:<52}  {:>7}  {}",
                            l.instance,
                            l.epoch,
                            l.journal_entries,
                            l.renewed_at.to_rfc3339()
                        );
                    }
                }
                if !json && leases.is_empty() {
                    eprintln!("no leases");
                }
            }
            TierCommand::ForgetInstance { instance, yes } => {
                if !yes {
                    bail!(
                        "forgetting {instance} gives up the revocations only its journal holds: \
                         add --yes if its data directory is gone for good"
                    );
                }
                // Marks are kept only in a hot store several processes share (Redis).
                if config.redis_url.is_some() {
                    let (store, _) = sessiond_server::open_store(&config)
                        .await
                        .context("opening the store")?;
                    store
                        .journal_marks(Some((instance, false)))
                        .await
                        .context("removing its journal mark")?;
                    store.close().await.context("closing the store")?;
                }
                let had = tier
                    .release_lease(instance)
                    .await
                    .context("dropping the lease")?;
                println!(
                    "{}",
                    if had {
                        format!("forgot instance {instance}")
                    } else {
                        format!("no lease of {instance}; its journal mark, if any, is gone")
                    }
                );
            }
        }
        Ok(())
    })
}
