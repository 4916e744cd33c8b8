//! Work the embedded store does on its own: reclaiming expired sessions and flushing touches.
//!
//! Both loops belong to [`BackgroundTasks`]; closing or dropping the store stops them. The
//! loops hold only a weak reference to the database between runs; a run in flight holds a
//! strong one until it finishes, and dropping the store waits for that (see `release`).
//!
//! The sweeper decides expiry with the wall clock, which is also what the service uses in
//! production; a session is never *served* by that decision, only reclaimed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use sessiond_core::{Clock, SystemClock};
use tokio::task::JoinHandle;

use crate::{EmbeddedOptions, Shared, ops};

/// The running sweeper and flusher. Dropping this stops both.
#[derive(Debug)]
pub(crate) struct BackgroundTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl BackgroundTasks {
    pub(crate) fn start(shared: &Arc<Shared>, options: &EmbeddedOptions) -> Self {
        let sweeper = {
            let weak = Arc::downgrade(shared);
            let period = options.sweep_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(shared) = live(&weak) else { return };
                    let now = SystemClock.now();
                    match tokio::task::spawn_blocking(move || ops::sweep(&shared, now)).await {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => tracing::info!(
                            event = "session.expired",
                            reclaimed = n,
                            "expired sessions reclaimed"
                        ),
                        Ok(Err(e)) => tracing::warn!(error = %e, "expiry sweep failed"),
                        Err(e) => tracing::warn!(error = %e, "expiry sweep task failed"),
                    }
                }
            })
        };
        let flusher = {
            let weak = Arc::downgrade(shared);
            let period = options.flush_interval;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                loop {
                    tick.tick().await;
                    let Some(shared) = live(&weak) else { return };
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

/// The database, unless the store was dropped or closed.
fn live(weak: &Weak<Shared>) -> Option<Arc<Shared>> {
    weak.upgrade().filter(|s| !s.closed.load(Ordering::Acquire))
}

impl BackgroundTasks {
    /// Stops both loops. A run already on the blocking pool finishes (a sweep at its next
    /// batch, since the store is closed by then); the store's drop waits for it.
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        self.stop();
    }
}
