//! `sessiond serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use sessiond_server::Config;
use sessiond_server::config::{LogFormat, LogOverride, Overrides};

/// Options of `sessiond serve`. Every setting can also come from the TOML file or from a
/// `SESSIOND_*` environment variable; flags win over both.
#[derive(Debug, clap::Args)]
pub(crate) struct Opts {
    /// TOML configuration file (also `SESSIOND_CONFIG`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve on (also `SESSIOND_LISTEN`; default 127.0.0.1:7480).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory of the embedded store (also `SESSIOND_DATA_DIR`; default ./sessiond-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format (also `SESSIOND_LOG__FORMAT`; default human).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<CliLogFormat>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliLogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

pub(crate) fn run(opts: Opts) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: opts.listen,
        data_dir: opts.data_dir,
        log: opts.log_format.map(|f| LogOverride {
            format: match f {
                CliLogFormat::Human => LogFormat::Human,
                CliLogFormat::Json => LogFormat::Json,
            },
        }),
    };
    let config = Config::load(opts.config.as_deref(), &overrides)?;
    crate::logging::init(&config.log, crate::logging::Stream::Stdout)?;
    crate::logging::warn_ignored_env(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        sessiond_server::run(config, listener, shutdown_signal()).await
    })
}

/// Completes on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
