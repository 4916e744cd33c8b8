//! Work the embedded store does on its own: making touches durable.
//!
//! Touches are committed without fsync (see the crate doc); the flusher makes them durable
//! within [`EmbeddedOptions::flush_interval`]. It belongs to [`BackgroundTasks`], which closing
//! or dropping the store stops. The loop holds only a weak reference to the database between
//! runs; a run in flight holds a strong one until it finishes, and dropping the store waits for
//! that (see `release`).
//!
//! Expired sessions are not reclaimed here but by the service's sweeper
//! (`Sessions::sweep`, through `reclaim_expired`), so each one is reported as an event.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::task::JoinHandle;

use crate::{EmbeddedOptions, Shared, ops};

/// The running flusher. Dropping this stops it.
#[derive(Debug)]
pub(crate) struct BackgroundTasks {
    tasks: Vec<JoinHandle<()>>,
}

impl BackgroundTasks {
    pub(crate) fn start(shared: &Arc<Shared>, options: &EmbeddedOptions) -> Self {
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
            tasks: vec![flusher],
        }
    }

    /// Stops the loops. A run already on the blocking pool finishes; the store's drop waits
    /// for it.
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The database, unless the store was dropped or closed.
fn live(weak: &Weak<Shared>) -> Option<Arc<Shared>> {
    weak.upgrade().filter(|s| !s.closed.load(Ordering::Acquire))
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        self.stop();
    }
}
