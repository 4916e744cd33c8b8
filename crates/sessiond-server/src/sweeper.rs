//! The expiry sweeper: reclaims the records of expired sessions every
//! `embedded.sweep_interval`, through [`Sessions::sweep`], which reports each one as an
//! `expired` event. Owned by a guard that stops it on drop.
//!
//! An expired session is never served whether or not it has been reclaimed (every read
//! checks expiry); the sweep only frees space. Redis expires its own keys, so there the sweep
//! finds nothing and costs no round trip.

use std::time::Duration;

use sessiond_core::Sessions;
use tokio::task::JoinHandle;

/// The running sweeper; dropping it stops the loop (a sweep batch in flight finishes).
#[derive(Debug)]
pub struct Sweeper(JoinHandle<()>);

impl Sweeper {
    /// Sweeps `sessions` every `interval`, the first time at once (what expired while the
    /// service was down).
    pub fn start(sessions: Sessions, interval: Duration) -> Self {
        Sweeper(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = sessions.sweep().await {
                    tracing::warn!(error = %e, "expiry sweep failed");
                }
            }
        }))
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}
