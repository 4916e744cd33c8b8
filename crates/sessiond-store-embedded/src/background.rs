//! Work the embedded store does on its own: reclaiming expired sessions and flushing touches.
//!
//! Both loops belong to [`BackgroundTasks`]; dropping it (with the store) stops them, so a
//! store never outlives its owner through a stray task.

use std::sync::Arc;

use sessiond_core::{Clock, SystemClock};
use tokio::task::JoinHandle;

use crate::{EmbeddedOptions, Shared, ops};

/// The running sweeper and flusher. Dropping this stops both.
#[derive(Debug)]
pub(crate) struct BackgroundTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl BackgroundTasks {
    pub(crate) fn start(shared: Arc<Shared>, options: &EmbeddedOptions) -> Self {
        let sweeper = {
            let shared = shared.clone();
            let period = options.sweep_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let shared = shared.clone();
                    let now = SystemClock.now();
                    match tokio::task::spawn_blocking(move || ops::sweep(&shared, now)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::debug!(reclaimed = n, "swept expired sessions"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "expiry sweep failed"),
                        Err(e) => tracing::warn!(error = %e, "expiry sweep task failed"),
                    }
                }
            })
        };
        let flusher = {
            let period = options.flush_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let shared = shared.clone();
                    match tokio::task::spawn_blocking(move || ops::flush(&shared)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "flushing touches failed"),
                        Err(e) => tracing::warn!(error = %e, "flush task failed"),
                    }
                }
            })
        };
        BackgroundTasks {
            tasks: vec![sweeper, flusher],
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
