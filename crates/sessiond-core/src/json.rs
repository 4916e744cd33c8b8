//! JSON that is safe to store: no duplicate keys, bounded depth and size, and RFC 7396 merge
//! patch for `PATCH`.
//!
//! Parsing keeps serde_json's recursion limit (128) on; the stored depth limit is lower so that
//! anything walking stored data later (`Debug`, `Drop`, encoders) stays shallow.

use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::policy::DataLimits;

/// A JSON value that refuses duplicate object keys while it is parsed (RFC 8259 leaves their
/// meaning open; two parsers could read two different documents).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}`")));
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// A JSON object parsed strictly (see [`StrictValue`]); anything but an object is refused.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(transparent)]
pub struct StrictObject(pub Map<String, Value>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match StrictValue::deserialize(d)?.0 {
            Value::Object(m) => Ok(StrictObject(m)),
            _ => Err(de::Error::custom("expected a JSON object")),
        }
    }
}

/// Why a document may not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Nested deeper than the limit.
    #[error("{field} is nested deeper than {max} levels")]
    TooDeep {
        /// Which document.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// Larger than the limit.
    #[error("{field} is larger than {max} bytes")]
    TooLarge {
        /// Which document.
        field: &'static str,
        /// The limit.
        max: usize,
    },
    /// A value that must be an object is not.
    #[error("{field} must be a JSON object")]
    NotAnObject {
        /// Which document.
        field: &'static str,
    },
}

impl DataError {
    /// Whether the cause is size (answered with `413`) rather than shape (`400`).
    pub fn is_too_large(&self) -> bool {
        matches!(self, DataError::TooLarge { .. })
    }
}

/// Nesting depth of a value: scalars are 0, `{}` and `[]` are 1.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Checks an object against the limits for `field` (`userData` or `metadata`).
pub fn check_object(
    field: &'static str,
    obj: &Map<String, Value>,
    max_bytes: usize,
    limits: &DataLimits,
) -> Result<(), DataError> {
    let d = 1 + obj.values().map(depth).max().unwrap_or(0);
    if d > limits.max_depth {
        return Err(DataError::TooDeep {
            field,
            max: limits.max_depth,
        });
    }
    let mut counter = ByteCounter(0);
    // Serialising into a counter cannot fail for a `Map` of `Value`s.
    let _ = serde_json::to_writer(&mut counter, obj);
    if counter.0 > max_bytes {
        return Err(DataError::TooLarge {
            field,
            max: max_bytes,
        });
    }
    Ok(())
}

struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// RFC 7396 JSON Merge Patch: applies `patch` to `target` in place.
///
/// A `null` member deletes, an object merges recursively, anything else replaces. Recursion
/// follows the patch, whose depth the parser already bounded.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (key, value) in members {
            if value.is_null() {
                t.remove(key);
            } else {
                merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn d16_rfc7396_examples() {
        // The table in RFC 7396, Appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
        }
    }

    #[test]
    fn d04_duplicate_keys_are_refused_at_any_depth() {
        assert!(serde_json::from_str::<StrictValue>(r#"{"a":1,"a":2}"#).is_err());
        assert!(serde_json::from_str::<StrictValue>(r#"{"x":[{"a":1,"a":2}]}"#).is_err());
        assert!(serde_json::from_str::<StrictValue>(r#"{"a":1,"b":{"a":2}}"#).is_ok());
    }

    #[test]
    fn d01_d02_stored_documents_are_bounded_in_size_and_depth() {
        let limits = DataLimits {
            max_user_data_bytes: 10,
            max_metadata_bytes: 10,
            max_depth: 2,
        };
        let ok = json!({"a":{"b":1}});
        let deep = json!({"a":{"b":{}}});
        let big = json!({"a":"0123456789"});
        assert_eq!(
            check_object("userData", ok.as_object().unwrap(), 100, &limits),
            Ok(())
        );
        assert!(matches!(
            check_object("userData", deep.as_object().unwrap(), 100, &limits),
            Err(DataError::TooDeep { .. })
        ));
        assert!(
            check_object("userData", big.as_object().unwrap(), 10, &limits)
                .unwrap_err()
                .is_too_large()
        );
    }
}
