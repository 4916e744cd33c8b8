//! The replies of the Lua scripts (`scripts`), as types: each script's reply is parsed once,
//! here, into what it means, so the store's code matches on outcomes instead of on numbers in
//! arrays. A reply of any other shape is a parsing error (the store answers it as internal:
//! sessiond and its scripts disagree, which no retry fixes).

use redis::{FromRedisValue, ParsingError, Value};

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

fn items(v: Value, script: &str) -> Result<Vec<Value>, ParsingError> {
    match v {
        Value::Array(items) => Ok(items),
        _ => Err(unexpected(script)),
    }
}

fn unexpected(script: &str) -> ParsingError {
    ParsingError::from(format!("unexpected reply from the {script} script"))
}

/// Splits `{code, rest...}`.
fn coded(v: Value, script: &str) -> Result<(i64, std::vec::IntoIter<Value>), ParsingError> {
    let mut items = items(v, script)?.into_iter();
    let code = items
        .next()
        .as_ref()
        .and_then(int)
        .ok_or_else(|| unexpected(script))?;
    Ok((code, items))
}

/// `CREATE`: `{0}` id taken, `{2}` at capacity, `{3}` outbox full, `{1, replaced, evicted
/// members...}` created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CreateReply {
    /// A record with this id exists; nothing written.
    IdTaken,
    /// The user is at the cap and the cap rejects; nothing written.
    AtCapacity,
    /// The outbox is full; nothing written.
    OutboxFull,
    /// Written.
    Created {
        /// Whether the replaced session was ended with it.
        replaced: bool,
        /// The index members of the sessions evicted to make room.
        evicted: Vec<Vec<u8>>,
    },
}

impl FromRedisValue for CreateReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        match coded(v, "create")? {
            (0, _) => Ok(CreateReply::IdTaken),
            (2, _) => Ok(CreateReply::AtCapacity),
            (3, _) => Ok(CreateReply::OutboxFull),
            (1, mut rest) => {
                let replaced = match rest.next() {
                    Some(Value::Int(0)) => false,
                    Some(Value::Int(1)) => true,
                    _ => return Err(unexpected("create")),
                };
                let evicted = rest
                    .map(|m| bytes(m).ok_or_else(|| unexpected("create")))
                    .collect::<Result<_, _>>()?;
                Ok(CreateReply::Created { replaced, evicted })
            }
            _ => Err(unexpected("create")),
        }
    }
}

/// `UPDATE_DATA`: `{0}` not found, `{2, version}` mismatch, `{3}` outbox full, `{1, record}`
/// updated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum UpdateReply {
    /// No live session.
    NotFound,
    /// The stored version (its bytes) differs.
    Mismatch(Vec<u8>),
    /// The outbox is full; nothing written.
    OutboxFull,
    /// Written; the record's bytes as they now are.
    Updated(Vec<u8>),
}

impl FromRedisValue for UpdateReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (code, mut rest) = coded(v, "update")?;
        let mut payload = || {
            rest.next()
                .and_then(bytes)
                .ok_or_else(|| unexpected("update"))
        };
        match code {
            0 => Ok(UpdateReply::NotFound),
            2 => payload().map(UpdateReply::Mismatch),
            3 => Ok(UpdateReply::OutboxFull),
            1 => payload().map(UpdateReply::Updated),
            _ => Err(unexpected("update")),
        }
    }
}

/// `ROTATE`: `{0}` not found, `{2}` stale, `{1, record}` rotated.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RotateReply {
    /// No live session.
    NotFound,
    /// Another rotation won.
    Stale,
    /// Rotated; the record's bytes as they now are.
    Rotated(Vec<u8>),
}

impl FromRedisValue for RotateReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (code, mut rest) = coded(v, "rotate")?;
        match code {
            0 => Ok(RotateReply::NotFound),
            2 => Ok(RotateReply::Stale),
            1 => rest
                .next()
                .and_then(bytes)
                .map(RotateReply::Rotated)
                .ok_or_else(|| unexpected("rotate")),
            _ => Err(unexpected("rotate")),
        }
    }
}

/// `DELETE`: `{0, ''}` absent, `{1, ''}` removed but was expired, `{2, user}` removed live.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DeleteReply {
    /// Nothing live was removed.
    NothingLive,
    /// A live session of this user (the id's bytes) was removed.
    RemovedLive(Vec<u8>),
}

impl FromRedisValue for DeleteReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let (code, mut rest) = coded(v, "delete")?;
        match code {
            0 | 1 => Ok(DeleteReply::NothingLive),
            2 => rest
                .next()
                .and_then(bytes)
                .map(DeleteReply::RemovedLive)
                .ok_or_else(|| unexpected("delete")),
            _ => Err(unexpected("delete")),
        }
    }
}

/// `DELETE_USER`: `{removed, more}`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeleteUserReply {
    /// Live sessions removed by this batch.
    pub(crate) removed: u64,
    /// Whether more of the user's sessions remain.
    pub(crate) more: bool,
}

impl FromRedisValue for DeleteUserReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = items(v, "revoke-all")?;
        match items
            .iter()
            .map(int)
            .collect::<Option<Vec<i64>>>()
            .as_deref()
        {
            Some([removed, more]) => Ok(DeleteUserReply {
                removed: u64::try_from(*removed).map_err(|_| unexpected("revoke-all"))?,
                more: *more != 0,
            }),
            _ => Err(unexpected("revoke-all")),
        }
    }
}

/// `LIST_USER`: index members and record bytes, in pairs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListReply(pub(crate) Vec<(Vec<u8>, Vec<u8>)>);

impl FromRedisValue for ListReply {
    fn from_redis_value(v: Value) -> Result<Self, ParsingError> {
        let items = items(v, "list")?;
        if items.len() % 2 != 0 {
            return Err(unexpected("list"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(member), Some(record)) = (it.next(), it.next()) {
            match (bytes(member), bytes(record)) {
                (Some(m), Some(r)) => pairs.push((m, r)),
                _ => return Err(unexpected("list")),
            }
        }
        Ok(ListReply(pairs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn replies_parse_into_their_meaning_and_refuse_any_other_shape() {
        assert_eq!(
            CreateReply::from_redis_value(arr(vec![
                Value::Int(1),
                Value::Int(0),
                bulk("a"),
                bulk("b")
            ])),
            Ok(CreateReply::Created {
                replaced: false,
                evicted: vec![b"a".to_vec(), b"b".to_vec()]
            })
        );
        assert_eq!(
            CreateReply::from_redis_value(arr(vec![Value::Int(1), Value::Int(1)])),
            Ok(CreateReply::Created {
                replaced: true,
                evicted: vec![]
            })
        );
        assert!(CreateReply::from_redis_value(arr(vec![Value::Int(1)])).is_err());
        assert_eq!(
            CreateReply::from_redis_value(arr(vec![Value::Int(2)])),
            Ok(CreateReply::AtCapacity)
        );
        assert_eq!(
            CreateReply::from_redis_value(arr(vec![Value::Int(3)])),
            Ok(CreateReply::OutboxFull)
        );
        assert_eq!(
            UpdateReply::from_redis_value(arr(vec![Value::Int(3)])),
            Ok(UpdateReply::OutboxFull)
        );
        assert!(CreateReply::from_redis_value(arr(vec![Value::Int(7)])).is_err());
        assert!(CreateReply::from_redis_value(Value::Int(1)).is_err());
        assert_eq!(
            UpdateReply::from_redis_value(arr(vec![Value::Int(2), bulk("v")])),
            Ok(UpdateReply::Mismatch(b"v".to_vec()))
        );
        assert!(UpdateReply::from_redis_value(arr(vec![Value::Int(1)])).is_err());
        assert_eq!(
            RotateReply::from_redis_value(arr(vec![Value::Int(2)])),
            Ok(RotateReply::Stale)
        );
        assert_eq!(
            DeleteReply::from_redis_value(arr(vec![Value::Int(2), bulk("u:1")])),
            Ok(DeleteReply::RemovedLive(b"u:1".to_vec()))
        );
        assert_eq!(
            DeleteReply::from_redis_value(arr(vec![Value::Int(0), bulk("")])),
            Ok(DeleteReply::NothingLive)
        );
        assert_eq!(
            DeleteUserReply::from_redis_value(arr(vec![Value::Int(3), Value::Int(0)])),
            Ok(DeleteUserReply {
                removed: 3,
                more: false
            })
        );
        assert!(DeleteUserReply::from_redis_value(arr(vec![Value::Int(3)])).is_err());
        assert_eq!(
            ListReply::from_redis_value(arr(vec![bulk("m"), bulk("r")])),
            Ok(ListReply(vec![(b"m".to_vec(), b"r".to_vec())]))
        );
        assert!(ListReply::from_redis_value(arr(vec![bulk("m")])).is_err());
    }
}
