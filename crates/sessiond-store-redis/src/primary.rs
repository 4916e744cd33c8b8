//! The primary's connection: where it comes from (a fixed address, or Sentinel) and the one
//! cache both use.
//!
//! The connection is never reconnected in place: `WAIT` counts the writes of its own
//! connection (R11), so a write and the `WAIT` after it must travel on one connection. A
//! failed connection is dropped, the call fails (503), and the next call opens a new one (for
//! Sentinel, asking the sentinels again where the primary is).

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::ConnectionInfo;
use sessiond_core::StoreError;

use crate::connection::{Connection, TlsRoots, means_primary_moved, multiplexed, store_error};
use crate::sentinel::SentinelPrimary;

/// A connection opened on first use and kept until it fails. Opening happens one caller at a
/// time; callers that waited share the result.
#[derive(Debug, Default)]
pub(crate) struct CachedConnection {
    current: Mutex<Option<Connection>>,
    opening: tokio::sync::Mutex<()>,
    /// How many connections have been opened: the near cache compares it with the count its
    /// own channel was opened at, so a primary found again (perhaps another node) flushes it.
    opened: AtomicU64,
}

impl CachedConnection {
    fn cached(&self) -> Option<Connection> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The open connection, or the one `open` makes (and the cache keeps).
    pub(crate) async fn get_or_open<F, Fut>(&self, open: F) -> Result<Connection, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Connection, StoreError>>,
    {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let _turn = self.opening.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let conn = open().await?;
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn.clone());
        self.opened.fetch_add(1, Ordering::AcqRel);
        Ok(conn)
    }

    /// How many connections have been opened so far.
    pub(crate) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Acquire)
    }

    /// Drops the connection; the next call opens a new one.
    pub(crate) fn invalidate(&self) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// A primary at a fixed address (`redis://`).
#[derive(Debug)]
pub(crate) struct FixedPrimary {
    info: ConnectionInfo,
    roots: TlsRoots,
    timeout: Duration,
    connection: CachedConnection,
}

impl FixedPrimary {
    pub(crate) fn new(info: ConnectionInfo, roots: TlsRoots, timeout: Duration) -> Self {
        FixedPrimary {
            info,
            roots,
            timeout,
            connection: CachedConnection::default(),
        }
    }
}

/// Where the primary comes from.
#[derive(Debug)]
pub(crate) enum PrimarySource {
    /// A fixed address (`redis://`).
    Fixed(Box<FixedPrimary>),
    /// Resolved through Sentinel.
    Sentinel(Box<SentinelPrimary>),
}

impl PrimarySource {
    /// The primary's connection (resolving it through Sentinel if needed).
    pub(crate) async fn connection(&self) -> Result<Connection, StoreError> {
        match self {
            PrimarySource::Fixed(p) => {
                p.connection
                    .get_or_open(|| async {
                        multiplexed(p.info.clone(), &p.roots, p.timeout)
                            .await
                            .map_err(store_error)
                    })
                    .await
            }
            PrimarySource::Sentinel(s) => s.connection().await,
        }
    }

    /// Where the primary is (found first if need be), and the engine's connection count at
    /// that moment (see [`CachedConnection::opened`]).
    pub(crate) async fn address(&self) -> Result<(ConnectionInfo, u64), StoreError> {
        self.connection().await?;
        match self {
            PrimarySource::Fixed(p) => Ok((p.info.clone(), p.connection.opened())),
            PrimarySource::Sentinel(s) => s.address(),
        }
    }

    /// The engine's connection count now (see [`CachedConnection::opened`]).
    pub(crate) fn generation(&self) -> u64 {
        match self {
            PrimarySource::Fixed(p) => p.connection.opened(),
            PrimarySource::Sentinel(s) => s.generation(),
        }
    }

    /// Drops the primary's connection, so the next call finds the primary again (the near
    /// cache could not reach the node it names).
    pub(crate) fn forget(&self) {
        match self {
            PrimarySource::Fixed(p) => p.connection.invalidate(),
            PrimarySource::Sentinel(s) => s.invalidate(),
        }
    }

    /// Notes a failed call: a moved or failed primary is found again next time.
    pub(crate) fn failed(&self, e: &redis::RedisError) {
        if !means_primary_moved(e) {
            return;
        }
        match self {
            PrimarySource::Fixed(p) => p.connection.invalidate(),
            PrimarySource::Sentinel(s) => s.invalidate(),
        }
    }
}
