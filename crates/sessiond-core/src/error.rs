//! Errors of the storage layer.
//!
//! Error policy for the workspace: libraries return one `thiserror` enum per layer and keep
//! the cause as a source, never as a string; `anyhow` is used only at the edges (the binary,
//! start-up, configuration loading).

/// Boxed cause of a store failure, kept for logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store operation failed. The HTTP layer answers `503` for [`StoreError::is_unavailable`]
/// and [`StoreError::is_timeout`] and fails closed on everything else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or is shutting down; retrying later may succeed.
    #[error("session store unavailable")]
    Unavailable(#[source] BoxError),
    /// The store did not answer in time.
    #[error("session store timed out")]
    Timeout,
    /// A stored record could not be decoded.
    #[error("stored session record is corrupt")]
    Corrupt(#[source] BoxError),
    /// Any other failure inside the engine.
    #[error("session store failed")]
    Internal(#[source] BoxError),
}

impl StoreError {
    /// The store cannot be reached at the moment (answer `503`, retry later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Timeout)
    }

    /// The store did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StoreError::Timeout)
    }

    /// Wraps an engine failure.
    pub fn internal(e: impl Into<BoxError>) -> Self {
        StoreError::Internal(e.into())
    }

    /// Wraps an unreachable-store failure.
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        StoreError::Unavailable(e.into())
    }
}
