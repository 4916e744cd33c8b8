//! What can go wrong talking to PostgreSQL, and how it maps to [`StoreError`].

use sessiond_core::StoreError;

/// A failure of the PostgreSQL tier.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The URL could not be parsed (its text is not repeated: it may hold a password).
    #[error("tier.postgres_url is not a PostgreSQL connection URL")]
    BadUrl(#[source] tokio_postgres::Error),
    /// No connection could be had from the pool in time.
    #[error("no PostgreSQL connection within the timeout")]
    PoolTimeout,
    /// The pool could not make a connection.
    #[error("cannot connect to PostgreSQL")]
    Connect(#[source] tokio_postgres::Error),
    /// A statement failed.
    #[error("PostgreSQL failed")]
    Postgres(#[from] tokio_postgres::Error),
    /// The schema was migrated by a newer sessiond.
    #[error(
        "the PostgreSQL schema is at version {found}, newer than this sessiond knows ({known}); \
         run the newer sessiond, or restore the older schema"
    )]
    SchemaTooNew {
        /// The version found.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// A stored row could not be read back.
    #[error("a stored row is not what sessiond wrote: {0}")]
    Corrupt(&'static str),
    /// TLS to PostgreSQL could not be set up.
    #[error("TLS to PostgreSQL: {0}")]
    Tls(&'static str),
    /// The pool is closed (shutdown).
    #[error("the PostgreSQL pool is closed")]
    Closed,
}

impl From<deadpool_postgres::PoolError> for TierError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Timeout(_) => TierError::PoolTimeout,
            PoolError::Backend(e) => TierError::Connect(e),
            PoolError::Closed => TierError::Closed,
            PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => TierError::Closed,
        }
    }
}

impl From<TierError> for StoreError {
    fn from(e: TierError) -> Self {
        match e {
            TierError::PoolTimeout => StoreError::Timeout,
            TierError::Connect(_) | TierError::Closed => StoreError::unavailable(e),
            TierError::Postgres(ref pg) if is_unavailable(pg) => StoreError::unavailable(e),
            TierError::Postgres(ref pg) if is_timeout(pg) => StoreError::Timeout,
            TierError::Corrupt(_) => StoreError::Corrupt(Box::new(e)),
            _ => StoreError::internal(e),
        }
    }
}

/// A connection that broke or could not be made, a server shutting down or starting up, or
/// too many clients: retrying later may succeed. A statement sessiond got wrong is not.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    if e.is_closed() {
        return true;
    }
    // A connection that could not be made or broke underneath carries an I/O error.
    if std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()) {
        return true;
    }
    e.code().is_some_and(|code| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
        ]
        .contains(code)
    })
}

/// `statement_timeout` or a lock timeout.
fn is_timeout(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code()
        .is_some_and(|c| *c == SqlState::QUERY_CANCELED || *c == SqlState::LOCK_NOT_AVAILABLE)
}
