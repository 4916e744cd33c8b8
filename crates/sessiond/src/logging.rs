//! Log set-up: readable lines by default (coloured on a terminal), JSON lines by config.
//!
//! Log lines never carry a token: handlers log the public session id only. User ids are
//! validated printable ASCII; any other client-supplied string is logged with `Debug`
//! formatting, which escapes control characters, so a `\r\n` cannot forge a second line.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use sessiond_server::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

pub(crate) fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(directives).context("RUST_LOG is not a valid log filter")?
        }
        _ => EnvFilter::try_new(&config.level)
            .with_context(|| format!("log.level `{}` is not a valid log filter", config.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let result = match config.format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}
