//! How a session record is laid out in its Redis value.
//!
//! Memory is the cost that grows with every session, so the layout is binary and compact. The
//! first 57 bytes are a fixed header that the Lua scripts read and write in place, so a
//! touch, a compare-and-set of `version` or of the secret hash never rewrites (or races with)
//! the rest of the record:
//!
//! | bytes | field | form |
//! |---|---|---|
//! | 0 | format | `0x02` |
//! | 1..7 | last activity, ms since the epoch | 48-bit big-endian |
//! | 7..13 | idle timeout, ms | 48-bit big-endian |
//! | 13..19 | absolute expiry, ms since the epoch | 48-bit big-endian |
//! | 19..25 | version | 48-bit big-endian |
//! | 25..57 | SHA-256 of the token's secret | 32 bytes |
//!
//! 48 bits hold every time up to the year 10889 and stay exact in Lua's doubles (below 2^53);
//! times past that are stored as the maximum ("far future"). Then: created-at (48-bit
//! big-endian ms), the user id (u16 big-endian length, bytes), `userData` (u32 big-endian
//! length, MessagePack) and `metadata` (MessagePack, to the end). MessagePack rather than JSON
//! because it drops the quotes, colons and commas: for the usual document that is 25 bytes,
//! enough to put the value in a smaller allocator size class. The session id is not stored:
//! it is in the key.

use serde_json::{Map, Value};
use sessiond_core::{SecretHash, SessionId, SessionRecord, StoreError, Timestamp, UserId};

/// The format byte.
const FORMAT: u8 = 0x02;
/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 57;
/// Largest value a 48-bit field holds.
const MAX_U48: u64 = (1 << 48) - 1;

/// A time or duration in the header's 48-bit form (values past it mean "far future").
pub(crate) fn u48(v: u64) -> [u8; 6] {
    let b = v.min(MAX_U48).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// A version in the header's form; versions never come near 2^48 (one per patch).
pub(crate) fn version_bytes(v: u64) -> Result<[u8; 6], StoreError> {
    if v > MAX_U48 {
        return Err(StoreError::internal("version overflow"));
    }
    Ok(u48(v))
}

fn read_u48(b: &[u8]) -> u64 {
    b.iter().take(6).fold(0, |n, &x| (n << 8) | u64::from(x))
}

/// Reads a version the scripts returned in the header's form.
pub(crate) fn parse_version(b: &[u8]) -> Option<u64> {
    (b.len() == 6).then(|| read_u48(b))
}

/// The `userData` object in its stored form.
pub(crate) fn encode_object(m: &Map<String, Value>) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec(m).map_err(StoreError::internal)
}

pub(crate) fn encode(r: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    let user = r.user_id.as_str().as_bytes();
    let data = encode_object(&r.user_data)?;
    let meta = encode_object(&r.metadata)?;
    let user_len = u16::try_from(user.len()).map_err(StoreError::internal)?;
    let data_len = u32::try_from(data.len()).map_err(StoreError::internal)?;
    let mut out = Vec::with_capacity(HEADER_LEN + 12 + user.len() + data.len() + meta.len());
    out.push(FORMAT);
    out.extend_from_slice(&u48(r.last_activity.as_millis()));
    out.extend_from_slice(&u48(r.idle_timeout_ms));
    out.extend_from_slice(&u48(r.absolute_expires_at.as_millis()));
    out.extend_from_slice(&version_bytes(r.version)?);
    out.extend_from_slice(r.secret_hash.as_bytes());
    out.extend_from_slice(&u48(r.created_at.as_millis()));
    out.extend_from_slice(&user_len.to_be_bytes());
    out.extend_from_slice(user);
    out.extend_from_slice(&data_len.to_be_bytes());
    out.extend_from_slice(&data);
    out.extend_from_slice(&meta);
    Ok(out)
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt(format!("session record: {what}").into())
}

/// Reads `n` bytes at `*pos`, advancing it.
fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], StoreError> {
    let end = pos
        .checked_add(n)
        .ok_or_else(|| corrupt("length overflow"))?;
    let slice = bytes.get(*pos..end).ok_or_else(|| corrupt("truncated"))?;
    *pos = end;
    Ok(slice)
}

pub(crate) fn decode(id: &SessionId, bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    decode_with(id, bytes, true)
}

/// [`decode`], with `user_data` left empty, unread, unless asked for: the gateway's check
/// needs only the rest.
pub(crate) fn decode_with(
    id: &SessionId,
    bytes: &[u8],
    user_data: bool,
) -> Result<SessionRecord, StoreError> {
    if bytes.len() < HEADER_LEN || bytes[0] != FORMAT {
        return Err(corrupt("unknown format"));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[25..57]);
    let mut pos = HEADER_LEN;
    let created = read_u48(take(bytes, &mut pos, 6)?);
    let user_len = take(bytes, &mut pos, 2)?;
    let user_len = usize::from(u16::from_be_bytes([user_len[0], user_len[1]]));
    let user =
        std::str::from_utf8(take(bytes, &mut pos, user_len)?).map_err(|_| corrupt("user id"))?;
    let data_len = take(bytes, &mut pos, 4)?;
    let data_len = u32::from_be_bytes([data_len[0], data_len[1], data_len[2], data_len[3]]);
    let data = take(
        bytes,
        &mut pos,
        usize::try_from(data_len).map_err(StoreError::internal)?,
    )?;
    let meta = &bytes[pos..];
    Ok(SessionRecord {
        id: id.clone(),
        user_id: UserId::parse(user).map_err(|_| corrupt("user id"))?,
        secret_hash: SecretHash::from_bytes(hash),
        created_at: Timestamp::from_millis(created),
        last_activity: Timestamp::from_millis(read_u48(&bytes[1..7])),
        idle_timeout_ms: read_u48(&bytes[7..13]),
        absolute_expires_at: Timestamp::from_millis(read_u48(&bytes[13..19])),
        version: read_u48(&bytes[19..25]),
        user_data: if user_data { object(data)? } else { Map::new() },
        metadata: object(meta)?,
    })
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessiond_core::Token;

    #[test]
    fn round_trip_and_fixed_offsets() {
        let user = UserId::parse("user_12345").unwrap();
        let t = Token::generate(&user).unwrap();
        let mut user_data = Map::new();
        user_data.insert(
            "cart".into(),
            serde_json::json!({"a": [1, 2.5, -3, u64::MAX, null, true, "x"]}),
        );
        let mut metadata = Map::new();
        metadata.insert("ipAddress".into(), serde_json::json!("192.168.1.100"));
        let r = SessionRecord {
            id: t.session_id().clone(),
            user_id: user,
            secret_hash: t.secret_hash(),
            created_at: Timestamp::from_millis(1_700_000_000_000),
            last_activity: Timestamp::from_millis(1_700_000_000_123),
            idle_timeout_ms: 86_400_000,
            absolute_expires_at: Timestamp::from_millis(1_700_604_800_000),
            version: 42,
            user_data,
            metadata,
        };
        let bytes = encode(&r).unwrap();
        assert_eq!(bytes[1..7], u48(1_700_000_000_123));
        assert_eq!(read_u48(&bytes[1..7]), 1_700_000_000_123);
        assert_eq!(bytes[19..25], [0, 0, 0, 0, 0, 42]);
        assert_eq!(&bytes[25..57], t.secret_hash().as_bytes());
        assert_eq!(decode(&r.id, &bytes).unwrap(), r);
        let identity = decode_with(&r.id, &bytes, false).unwrap();
        assert!(identity.user_data.is_empty());
        assert_eq!(identity.metadata, r.metadata);
        assert_eq!(identity.secret_hash, r.secret_hash);
        assert!(decode(&r.id, &bytes[..60]).is_err());
        assert!(decode(&r.id, b"garbage").is_err());
    }

    #[test]
    fn times_past_48_bits_read_as_far_future() {
        assert_eq!(read_u48(&u48(u64::MAX)), MAX_U48);
        assert!(version_bytes(MAX_U48 + 1).is_err());
        assert_eq!(parse_version(&version_bytes(7).unwrap()), Some(7));
        assert_eq!(parse_version(b"12345"), None);
    }

    #[test]
    fn the_usual_document_fits_the_192_byte_size_class() {
        let user = UserId::parse("user_12345").unwrap();
        let t = Token::generate(&user).unwrap();
        let doc = serde_json::json!({
            "userData": {"preferences": {}, "cart": {}, "permissions": []},
            "metadata": {"ipAddress": "192.168.1.100", "userAgent": "Mozilla/5.0",
                "loginMethod": "email"},
        });
        let obj = |k: &str| doc[k].as_object().unwrap().clone();
        let r = SessionRecord {
            id: t.session_id().clone(),
            user_id: user,
            secret_hash: t.secret_hash(),
            created_at: Timestamp::from_millis(1_700_000_000_000),
            last_activity: Timestamp::from_millis(1_700_000_000_000),
            idle_timeout_ms: 86_400_000,
            absolute_expires_at: Timestamp::from_millis(1_700_604_800_000),
            version: 1,
            user_data: obj("userData"),
            metadata: obj("metadata"),
        };
        // Redis adds a 3-byte string header and a terminator; jemalloc rounds up to 192.
        assert!(encode(&r).unwrap().len() + 4 <= 192);
    }
}
