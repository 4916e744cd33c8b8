//! Log set-up: readable lines by default (coloured on a terminal), JSON lines by config.
//!
//! Log lines never carry a token: events name the public session id only. User ids are
//! validated printable ASCII, and a user agent reaches an event only if it is visible ASCII;
//! any other client-supplied string is logged with `Debug` formatting, which escapes control
//! characters, so a `\r\n` cannot forge a second line.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use sessiond_server::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// The service's log.
    Stdout,
    /// A command whose answer is on stdout (`sessiond revoke`).
    Stderr,
}

pub(crate) fn init(config: &LogConfig, stream: Stream) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            EnvFilter::try_new(directives).context("RUST_LOG is not a valid log filter")?
        }
        _ => EnvFilter::try_new(&config.level)
            .with_context(|| format!("log.level `{}` is not a valid log filter", config.level))?,
    };
    let writer = match stream {
        Stream::Stdout => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
        Stream::Stderr => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let terminal = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match config.format {
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
        LogFormat::Human => builder.with_ansi(terminal).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("setting up logging: {e}"))
}

/// One warning naming the `SESSIOND_*` variables that name no setting (left out, see
/// `Config::load`), so a misspelt variable is visible without stopping a pod that has the
/// platform's own.
pub(crate) fn warn_ignored_env(config: &sessiond_server::Config) {
    if !config.ignored_env.is_empty() {
        tracing::warn!(
            variables = %config.ignored_env.join(", "),
            "ignoring SESSIOND_* environment variables that name no setting"
        );
    }
}
