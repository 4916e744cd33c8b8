//! Deleting every session of every user: the operator's emergency path (S12).
//!
//! Redis has no "delete by prefix", and `FLUSHDB` would take whatever else shares the database.
//! So each primary is walked with `SCAN MATCH` on the shape of a record key (then of an index
//! key), each key found is checked against sessiond's exact key shapes (`Keys::is_record`,
//! `Keys::is_index`: another application's keys under the same prefix are never touched or
//! counted), and what each step keeps is unlinked at once (per slot on Cluster): `UNLINK` frees
//! values off the main thread, so Redis keeps answering validations while millions of keys go.
//! Every step has the store's timeout; the walk as a whole has none, since its length grows
//! with the keyspace.

use std::collections::HashMap;
use std::time::Duration;

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisResult, Value};

use crate::connection::Connection;
use crate::routing::timed;

/// Keys asked for per `SCAN` step (Redis may return more or fewer).
const STEP: usize = 1000;

/// Where a walk runs: the connection's own server, or one node of a cluster.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// The server the connection talks to.
    Own,
    /// A cluster primary.
    Address(String, u16),
}

/// `text` as a literal in a `SCAN MATCH` pattern (a key prefix may hold glob characters).
pub(crate) fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One `SCAN` step on `node`: the next cursor and the keys found.
async fn scan_step(
    conn: &mut Connection,
    node: &Node,
    cursor: u64,
    pattern: &str,
    timeout: Duration,
) -> RedisResult<(u64, Vec<Vec<u8>>)> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(STEP);
    match (node, conn) {
        (Node::Address(host, port), Connection::Cluster(c)) => {
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            });
            let value = timed(timeout, c.route_command(cmd, routing)).await?;
            redis::from_redis_value(value).map_err(Into::into)
        }
        (_, conn) => timed(timeout, cmd.query_async(conn)).await,
    }
}

/// Unlinks every key on `node` that matches `pattern` and that `ours` accepts; returns how
/// many were removed.
pub(crate) async fn unlink_matching(
    conn: &mut Connection,
    node: &Node,
    pattern: &str,
    ours: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> RedisResult<u64> {
    let mut removed = 0u64;
    let mut cursor = 0u64;
    loop {
        let (next, mut keys) = scan_step(conn, node, cursor, pattern, timeout).await?;
        keys.retain(|k| ours(k));
        if !keys.is_empty() {
            removed += unlink(conn, keys, timeout).await?;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

/// Unlinks `keys`: one command on a single server. On Cluster a command (and a pipeline) must
/// stay within one slot, so the keys are grouped by their hash tag (every sessiond key has
/// one, and one tag is one slot) and the groups are sent concurrently.
async fn unlink(conn: &mut Connection, keys: Vec<Vec<u8>>, timeout: Duration) -> RedisResult<u64> {
    if !matches!(conn, Connection::Cluster(_)) {
        return timed(timeout, redis::cmd("UNLINK").arg(keys).query_async(conn)).await;
    }
    let mut groups: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
    for key in keys {
        groups.entry(hash_tag(&key).to_vec()).or_default().push(key);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (_, group) in groups {
        let mut conn = conn.clone();
        tasks.spawn(async move {
            timed(
                timeout,
                redis::cmd("UNLINK")
                    .arg(group)
                    .query_async::<u64>(&mut conn),
            )
            .await
        });
    }
    let mut removed = 0;
    while let Some(done) = tasks.join_next().await {
        removed += done.map_err(|e| {
            redis::RedisError::from(std::io::Error::other(format!("an unlink task failed: {e}")))
        })??;
    }
    Ok(removed)
}

/// The part of `key` Redis Cluster hashes: what is inside the first `{...}`, if not empty, else
/// the whole key.
fn hash_tag(key: &[u8]) -> &[u8] {
    key.iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = key[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &key[open + 1..open + 1 + close])
        })
        .unwrap_or(key)
}

/// The addresses of a cluster's primaries, from `CLUSTER NODES`.
pub(crate) async fn cluster_primaries(
    conn: &mut Connection,
    timeout: Duration,
) -> RedisResult<Vec<Node>> {
    let Connection::Cluster(c) = conn else {
        return Ok(vec![Node::Own]);
    };
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("NODES");
    let value = timed(
        timeout,
        c.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)),
    )
    .await?;
    let text = match value {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::VerbatimString { text, .. } => text,
        other => redis::from_redis_value::<String>(other)?,
    };
    Ok(parse_primaries(&text))
}

/// Primaries in `CLUSTER NODES` output: `<id> <ip:port@cport[,hostname]> <flags> ...`, where
/// flags hold `master` and not `fail`.
fn parse_primaries(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let is_primary = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !is_primary {
                return None;
            }
            let hostport = addr.split(['@', ',']).next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some(Node::Address(host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_grouped_by_their_hash_tag() {
        assert_eq!(hash_tag(b"sd:s:{Ab}xyz"), b"Ab");
        assert_eq!(hash_tag(b"sd:u:{Ab}user"), b"Ab");
        assert_eq!(hash_tag(b"no-tag"), b"no-tag");
        assert_eq!(hash_tag(b"empty{}tag"), b"empty{}tag");
    }

    #[test]
    fn prefixes_are_matched_literally() {
        assert_eq!(glob_escape("sd:s:"), "sd:s:");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7003@17003 slave b2 0 0 2 connected
d4 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
";
        let nodes = parse_primaries(text);
        let ports: Vec<u16> = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Address(_, p) => Some(*p),
                Node::Own => None,
            })
            .collect();
        assert_eq!(ports, vec![7000, 7001]);
    }
}
