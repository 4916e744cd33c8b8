//! Knowing when the database file has been let go.
//!
//! The store's handle is not the only owner of the open database: an operation already on the
//! blocking pool (a flush of the background task, a sweep batch, a write whose caller stopped
//! waiting) holds it until that operation finishes. If dropping the store returned before
//! then, a restart in place, or any second [`EmbeddedStore::open`](crate::EmbeddedStore::open)
//! of the same directory in the process, would find the file still open and fail with
//! `DatabaseAlreadyOpen`. So the database's owner carries a [`ReleaseSignal`], dropped right
//! after the database itself, and the store's handle carries the matching [`ReleaseWait`],
//! dropped last, which blocks until the signal has fired.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Longest a drop waits for in-flight work. Work in flight is one transaction (a sweep batch
/// at most), so this is never reached by a healthy disk; it only keeps a stuck disk from
/// hanging shutdown forever.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    released: Mutex<bool>,
    changed: Condvar,
}

/// Fires when dropped: the field declared after the database in the struct that owns it.
#[derive(Debug)]
pub(crate) struct ReleaseSignal(Arc<State>);

/// Waits, when dropped, until the matching [`ReleaseSignal`] has fired.
#[derive(Debug)]
pub(crate) struct ReleaseWait(Arc<State>);

/// A connected signal and wait.
pub(crate) fn pair() -> (ReleaseSignal, ReleaseWait) {
    let state = Arc::new(State::default());
    (ReleaseSignal(state.clone()), ReleaseWait(state))
}

impl Drop for ReleaseSignal {
    fn drop(&mut self) {
        // A poisoned lock still holds the flag; setting it is all that matters.
        let mut released = self
            .0
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *released = true;
        self.0.changed.notify_all();
    }
}

impl Drop for ReleaseWait {
    fn drop(&mut self) {
        let released = self
            .0
            .released
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (released, timeout) = self
            .0
            .changed
            .wait_timeout_while(released, WAIT_LIMIT, |released| !*released)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if timeout.timed_out() && !*released {
            tracing::warn!(
                waited_secs = WAIT_LIMIT.as_secs(),
                "the embedded store's database is still in use after it was dropped"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_returns_only_after_the_signal_is_dropped_on_another_thread() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let (signal, wait) = pair();
        let finished = Arc::new(AtomicBool::new(false));
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let finished = finished.clone();
            std::thread::spawn(move || {
                go_rx.recv().ok();
                // The in-flight work finishes, then lets go of the database.
                finished.store(true, Ordering::SeqCst);
                drop(signal);
            })
        };
        go_tx.send(()).ok();
        drop(wait);
        assert!(
            finished.load(Ordering::SeqCst),
            "the wait must not return before the owner of the database has finished"
        );
        assert!(holder.join().is_ok(), "the holder thread must not panic");
    }

    #[test]
    fn a_signal_dropped_first_lets_the_wait_return_at_once() {
        let (signal, wait) = pair();
        drop(signal);
        let state = wait.0.clone();
        drop(wait);
        assert!(
            *state
                .released
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            "the flag must be set by the signal"
        );
    }
}
