//! How a session record is laid out in its Redis value.
//!
//! The first 94 bytes are a fixed header that the Lua scripts read and write in place, so a
//! touch, a compare-and-set of `version` or of the secret hash never rewrites (or races with)
//! the rest of the record:
//!
//! | bytes | field | form |
//! |---|---|---|
//! | 0 | format | `S` |
//! | 1..16 | last activity, ms since the epoch | 15 decimal digits |
//! | 16..31 | idle timeout, ms | 15 decimal digits |
//! | 31..46 | absolute expiry, ms since the epoch | 15 decimal digits |
//! | 46..62 | version | 16 hex digits |
//! | 62..94 | SHA-256 of the token's secret | 32 bytes |
//!
//! Times are decimal so Lua can compare them with `tonumber` (exact below 2^53; 15 digits
//! reach the year 33658). Then: created-at (8 bytes, big-endian ms), the user id (u16
//! big-endian length, bytes), `userData` (u32 big-endian length, JSON) and `metadata` (JSON,
//! to the end). The session id is not stored: it is in the key.

use serde_json::{Map, Value};
use sessiond_core::{SecretHash, SessionId, SessionRecord, StoreError, Timestamp, UserId};

/// The format byte.
const FORMAT: u8 = b'S';
/// Length of the fixed header.
pub(crate) const HEADER_LEN: usize = 94;
/// Largest value a 15-digit field holds.
const MAX_DIGITS15: u64 = 999_999_999_999_999;

/// A time or duration in the header's 15-digit form (values past it mean "far future").
pub(crate) fn digits15(ms: u64) -> String {
    format!("{:015}", ms.min(MAX_DIGITS15))
}

/// A version in the header's 16-hex-digit form.
pub(crate) fn version_hex(v: u64) -> String {
    format!("{v:016x}")
}

pub(crate) fn encode(r: &SessionRecord) -> Result<Vec<u8>, StoreError> {
    let user = r.user_id.as_str().as_bytes();
    let data = serde_json::to_vec(&r.user_data).map_err(StoreError::internal)?;
    let meta = serde_json::to_vec(&r.metadata).map_err(StoreError::internal)?;
    let user_len = u16::try_from(user.len()).map_err(StoreError::internal)?;
    let data_len = u32::try_from(data.len()).map_err(StoreError::internal)?;
    let mut out = Vec::with_capacity(HEADER_LEN + 14 + user.len() + data.len() + meta.len());
    out.push(FORMAT);
    out.extend_from_slice(digits15(r.last_activity.as_millis()).as_bytes());
    out.extend_from_slice(digits15(r.idle_timeout_ms).as_bytes());
    out.extend_from_slice(digits15(r.absolute_expires_at.as_millis()).as_bytes());
    out.extend_from_slice(version_hex(r.version).as_bytes());
    out.extend_from_slice(r.secret_hash.as_bytes());
    out.extend_from_slice(&r.created_at.as_millis().to_be_bytes());
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

fn number(bytes: &[u8], radix: u32) -> Result<u64, StoreError> {
    let text = std::str::from_utf8(bytes).map_err(|_| corrupt("header is not ASCII"))?;
    u64::from_str_radix(text, radix).map_err(|_| corrupt("header number"))
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
    if bytes.len() < HEADER_LEN || bytes[0] != FORMAT {
        return Err(corrupt("unknown format"));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[62..94]);
    let mut pos = HEADER_LEN;
    let created = take(bytes, &mut pos, 8)?;
    let created = u64::from_be_bytes(created.try_into().map_err(|_| corrupt("created"))?);
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
        last_activity: Timestamp::from_millis(number(&bytes[1..16], 10)?),
        idle_timeout_ms: number(&bytes[16..31], 10)?,
        absolute_expires_at: Timestamp::from_millis(number(&bytes[31..46], 10)?),
        version: number(&bytes[46..62], 16)?,
        user_data: object(data)?,
        metadata: object(meta)?,
    })
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.into()))
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
        user_data.insert("cart".into(), serde_json::json!({"a": [1, 2]}));
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
            metadata: Map::new(),
        };
        let bytes = encode(&r).unwrap();
        assert_eq!(&bytes[1..16], b"001700000000123");
        assert_eq!(&bytes[46..62], b"000000000000002a");
        assert_eq!(decode(&r.id, &bytes).unwrap(), r);
        assert!(decode(&r.id, &bytes[..100]).is_err());
        assert!(decode(&r.id, b"garbage").is_err());
    }
}
