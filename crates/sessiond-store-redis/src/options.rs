//! The engine's settings: where Redis is, and how the engine behaves there.

use std::time::Duration;

use crate::connection::{TlsRoots, Topology};

/// Where validations read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    /// Replicas, in turn (falling back to the primary on a miss or when none answers).
    #[default]
    Replica,
    /// The primary only.
    Primary,
}

/// The engine's defaults, the one place they are written (the server's configuration takes
/// its defaults from here).
pub mod defaults {
    use std::time::Duration;

    use super::ReadFrom;

    /// Prefix of every key.
    pub const KEY_PREFIX: &str = "sd:";
    /// Longest wait for any Redis call.
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    /// How long a write waits for every replica.
    pub const REPLICA_SYNC_TIMEOUT: Duration = Duration::from_millis(100);
    /// Replica acknowledgements a durable write needs.
    pub const MIN_REPLICA_ACKS: usize = 0;
    /// Where validations read from.
    pub const READ_FROM: ReadFrom = ReadFrom::Replica;
    /// How long a revocation's tombstone stays (with the durable tier): longer than any
    /// read-through takes.
    pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);
}

/// Settings of the Redis engine.
#[derive(Clone)]
pub struct RedisOptions {
    /// Where Redis is (see [`Topology::parse`]).
    pub topology: Topology,
    /// Prefix of every key sessiond writes, so it can share a Redis with other data.
    pub key_prefix: String,
    /// Longest wait for any Redis call; past it the call fails as unavailable (503).
    pub timeout: Duration,
    /// Where validations read from.
    pub read_from: ReadFrom,
    /// How long a write waits for every replica to acknowledge it before the replicas that
    /// did not are fenced off from reads.
    pub replica_sync_timeout: Duration,
    /// Replica acknowledgements that create, rotate and revoke need before they answer
    /// (`WAIT`); 0 answers once the primary has the write. Too few: the call fails with 503,
    /// and the write stays on the primary.
    pub min_replica_acks: usize,
    /// Certificate authorities for `rediss` URLs (PEM); `None` trusts the system's roots.
    pub tls_roots: TlsRoots,
    /// With the durable tier: keep an outbox, of at most this many entries per stream (the
    /// one stream on standalone and Sentinel, each shard's on Cluster; past it, creates and
    /// patches that would add to that stream are refused; revocations never are). `None`
    /// keeps none.
    pub outbox_per_stream: Option<u64>,
    /// With the outbox: how long a revocation's tombstone keeps a read-through from writing
    /// the session back.
    pub tombstone_ttl: Duration,
}

impl RedisOptions {
    /// Options for `topology` with the [`defaults`].
    pub fn new(topology: Topology) -> Self {
        RedisOptions {
            topology,
            key_prefix: defaults::KEY_PREFIX.into(),
            timeout: defaults::TIMEOUT,
            read_from: defaults::READ_FROM,
            replica_sync_timeout: defaults::REPLICA_SYNC_TIMEOUT,
            min_replica_acks: defaults::MIN_REPLICA_ACKS,
            tls_roots: TlsRoots::default(),
            outbox_per_stream: None,
            tombstone_ttl: defaults::TOMBSTONE_TTL,
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The topology holds URLs, which may hold passwords.
        f.debug_struct("RedisOptions")
            .field("topology", &self.topology.kind())
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("read_from", &self.read_from)
            .field("replica_sync_timeout", &self.replica_sync_timeout)
            .field("min_replica_acks", &self.min_replica_acks)
            .field("tls_roots", &self.tls_roots)
            .field("outbox_per_stream", &self.outbox_per_stream)
            .field("tombstone_ttl", &self.tombstone_ttl)
            .finish()
    }
}
