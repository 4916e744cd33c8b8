//! `sessiond`: the session service of web and mobile apps.
//!
//! This binary stays thin: it parses the command line, sets up logging, binds the listener
//! and hands over to `sessiond_server::run`.
//!
//! # Layout
//!
//! - `serve`: `sessiond serve`, the service.
//! - `revoke`: `sessiond revoke`, the operator's emergency path straight on the store.
//! - `audit`: `sessiond audit`, the audit trail at a terminal, from the durable tier.
//! - `tier`: `sessiond tier`, the processes' leases in the durable tier.
//! - `bench`: `sessiond bench`, load against a running sessiond.
//! - `logging`: log set-up, and the warning about ignored environment variables.

mod audit;
mod bench;
mod logging;
mod revoke;
mod serve;
mod tier;

use clap::{Parser, Subcommand};

/// mimalloc instead of the system allocator: validations allocate many small, short-lived
/// buffers, which glibc's malloc served at about 15% of sessiond's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sessiond keeps the login sessions of web and mobile apps: it creates a session when a user
/// logs in, answers "is this token a live session, and whose?" for every request through the
/// gateway, and revokes sessions at logout, password change or account lock.
#[derive(Debug, Parser)]
#[command(name = "sessiond", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP API (on the embedded store unless Redis is configured).
    Serve(serve::Opts),
    /// Measure a running sessiond: requests per second and latency of validate, create and
    /// patch, closed loop or at a fixed rate.
    Bench(bench::Opts),
    /// End sessions now, straight on the store: every session of one user, or of every user
    /// (the emergency path).
    Revoke(revoke::Opts),
    /// Show a user's or a session's lifecycle events from the audit trail (needs
    /// tier.postgres_url).
    Audit(audit::Opts),
    /// The processes' leases in the durable tier: list them, or forget one whose data
    /// directory is gone for good.
    Tier(tier::Opts),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(opts) => serve::run(opts),
        Command::Bench(opts) => bench::run(&opts),
        Command::Revoke(opts) => revoke::run(&opts),
        Command::Audit(opts) => audit::run(&opts),
        Command::Tier(opts) => tier::run(&opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
