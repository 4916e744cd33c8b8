//! Property tests of what sessiond-core parses from clients (issue 5): the token and id
//! shape checks, and RFC 7396 JSON Merge Patch with the strict JSON it is applied with.
//!
//! Case counts keep the file well under five seconds in a debug build; `PROPTEST_CASES=N`
//! runs every property N times instead (docs/testing-security.md).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sessiond_core::json::{StrictValue, merge_patch};
use sessiond_core::token::TOKEN_LEN;
use sessiond_core::{SecretHash, SessionId, Token, UserId};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// Reference definitions, written from the documentation rather than from the code under test.

/// The base64url alphabet of RFC 4648 §5.
const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn is_b64url(c: char) -> bool {
    B64URL.contains(c)
}

/// The documented token shape: `sess_` + 16 base64url + `.` + 43 base64url, where the last
/// character carries two bits past the 256th, which must be zero (one spelling per secret).
fn reference_token_ok(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != 65 || s.len() != 65 || !s.starts_with("sess_") || chars[21] != '.' {
        return false;
    }
    let id_ok = chars[5..21].iter().all(|&c| is_b64url(c));
    let secret_ok = chars[22..].iter().all(|&c| is_b64url(c));
    let last = B64URL.find(chars[64]).unwrap_or(1);
    id_ok && secret_ok && last.is_multiple_of(4)
}

/// docs/api.md's user id: 1 to 256 bytes of printable ASCII without spaces; every printable
/// character allowed, except that `.` and `..` (which no URL path can carry) are not ids.
fn reference_user_id_ok(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
        && s != "."
        && s != ".."
}

/// RFC 7396 section 2, the pseudocode transcribed as it is written:
///
/// ```text
/// define MergePatch(Target, Patch):
///   if Patch is an Object:
///     if Target is not an Object:
///       Target = {} # Ignore the contents and set it to an empty Object
///     for each Name/Value pair in Patch:
///       if Value is null:
///         if Name exists in Target:
///           remove the Name/Value pair from Target
///       else:
///         Target[Name] = MergePatch(Target[Name], Value)
///     return Target
///   else:
///     return Patch
/// ```
///
/// `Target[Name]` of a missing name is undefined, which is "not an Object": `None` here.
fn rfc7396(target: Option<Value>, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut target = match target {
        Some(Value::Object(t)) => t,
        _ => Map::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            target.remove(name);
        } else {
            let current = target.remove(name);
            target.insert(name.clone(), rfc7396(current, value));
        }
    }
    Value::Object(target)
}

fn merged(target: &Value, patch: &Value) -> Value {
    let mut t = target.clone();
    merge_patch(&mut t, patch);
    t
}

/// The token text for a session id suffix and a secret, built with base64 directly.
fn token_text(id_suffix: &str, secret: &[u8; 32]) -> String {
    format!("sess_{id_suffix}.{}", URL_SAFE_NO_PAD.encode(secret))
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn b64url_string(len: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(B64URL.as_bytes().to_vec()), len)
        .prop_map(|b| String::from_utf8(b).unwrap_or_default())
}

/// A valid user id: the documented characters, 1 to 256 of them.
fn valid_user_id() -> impl Strategy<Value = String> {
    "[!#$&()+,\\-.0-9;=@A-Z^_a-z|~]{1,256}"
}

/// Strings near the token shape, so the reference and the parser are compared where it
/// matters (the length, the prefix, the dot, the alphabet, the trailing bits), not only on
/// noise that any check rejects.
fn near_token() -> impl Strategy<Value = String> {
    let chars = proptest::sample::select(vec![
        'A', 'B', 'Q', 'g', 'w', 'z', '0', '9', '-', '_', '.', 's', 'e', '=', '+', '/', ' ', '\0',
        'é', '€',
    ]);
    prop_oneof![
        // Well-formed except perhaps the trailing bits.
        (b64url_string(16), b64url_string(43)).prop_map(|(i, s)| format!("sess_{i}.{s}")),
        // The prefix and the dot, then anything from a small alphabet, around the right length.
        proptest::collection::vec(chars.clone(), 57..62).prop_map(|v| {
            let body: String = v.into_iter().collect();
            let split = body.char_indices().nth(16).map_or(body.len(), |(i, _)| i);
            format!("sess_{}.{}", &body[..split], &body[split..])
        }),
        // A small alphabet at any length around 65.
        proptest::collection::vec(chars, 61..69).prop_map(|v| v.into_iter().collect()),
        any::<String>(),
    ]
}

/// Strings around the user id rules: valid ones (up to and past the length limit), ones with
/// one outside character, and arbitrary text.
fn near_user_id() -> impl Strategy<Value = String> {
    let outside = proptest::sample::select(vec![
        ' ', '\t', '\r', '\n', '\0', '\u{7f}', 'é', '*', '?', '[', ']', '{', '}', ':', '/', '\\',
        '%', '"', '\'', '<', '>', '`',
    ]);
    prop_oneof![
        valid_user_id(),
        "[!#$&()+,\\-.0-9;=@A-Z^_a-z|~]{250,260}",
        (valid_user_id(), outside, any::<prop::sample::Index>()).prop_map(|(s, c, at)| {
            let mut s = s;
            let i = at.index(s.len() + 1);
            s.insert(i, c);
            s
        }),
        "[ -~]{0,40}",
        any::<String>(),
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    // Few names, so targets and patches share members and merges recurse.
    prop_oneof![
        proptest::sample::select(vec!["a", "b", "c", "d", ""]).prop_map(str::to_owned),
        "[a-z]{1,3}",
    ]
}

fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Dyadic fractions: printed and re-read exactly.
        (-1000i32..1000, 0u32..4).prop_map(|(m, e)| json!(f64::from(m) / f64::from(1u32 << e))),
        "[a-z\"\\\\ é\\x00-\\x1f]{0,6}".prop_map(Value::String),
    ]
}

/// Arbitrary JSON up to depth 4 (an object of objects of objects of scalars).
fn json_value() -> impl Strategy<Value = Value> {
    json_scalar().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(json_key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(json_key(), json_value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

// ---------------------------------------------------------------------------------------------
// Tokens and ids.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A generated token's text is the documented shape and parses back to the same session id
    /// and secret hash; the session id is in the user's shard.
    #[test]
    fn generated_tokens_round_trip(user in valid_user_id()) {
        let user = UserId::parse(&user).expect("a valid user id");
        let token = Token::generate(&user).expect("randomness");
        let text = token.expose();
        prop_assert_eq!(text.len(), TOKEN_LEN);
        prop_assert!(reference_token_ok(&text), "{}", text);
        let back = Token::parse(&text).expect("a generated token parses");
        prop_assert_eq!(back.session_id(), token.session_id());
        prop_assert!(back.secret_hash().ct_matches(&token.secret_hash()));
        prop_assert!(token.secret_hash().verify(&back));
        prop_assert_eq!(back.expose(), text);
        prop_assert_eq!(token.session_id().shard(), user.shard());
        let id = SessionId::parse(token.session_id().as_str());
        prop_assert_eq!(id.as_ref(), Ok(token.session_id()));
    }

    /// Any 32-byte secret under any id: the text parses, the hash is SHA-256 of the secret
    /// bytes, and printing gives the same text back.
    #[test]
    fn any_secret_round_trips(id in b64url_string(16), secret in any::<[u8; 32]>()) {
        let text = token_text(&id, &secret);
        let token = Token::parse(&text).expect("a well-formed token parses");
        prop_assert_eq!(token.session_id().as_str(), format!("sess_{id}"));
        let want = SecretHash::from_bytes(Sha256::digest(secret).into());
        prop_assert!(token.secret_hash().ct_matches(&want));
        prop_assert_eq!(token.expose(), text);
    }

    /// `Token::parse` never panics and accepts exactly the documented shape.
    #[test]
    fn token_parse_accepts_exactly_the_shape(s in near_token()) {
        prop_assert_eq!(Token::parse(&s).is_ok(), reference_token_ok(&s), "{:?}", s);
        if let Ok(token) = Token::parse(&s) {
            prop_assert_eq!(token.expose(), s);
        }
    }

    /// Changing any one character of a valid token to one outside the base64url alphabet
    /// (multi-byte characters included) makes it fail, and so does truncating or extending it.
    #[test]
    fn one_bad_character_fails(
        secret in any::<[u8; 32]>(),
        at in 0..TOKEN_LEN,
        c in any::<char>().prop_filter("outside the alphabet", |&c| !is_b64url(c)),
        cut in 0..TOKEN_LEN,
    ) {
        let user = UserId::parse("u").expect("a valid user id");
        let id = Token::generate(&user).expect("randomness").session_id().clone();
        let text = token_text(&id.as_str()[5..], &secret);
        prop_assert!(Token::parse(&text).is_ok());
        let mut bad = text.clone();
        bad.replace_range(at..=at, c.encode_utf8(&mut [0; 4]));
        if bad != text {
            prop_assert!(Token::parse(&bad).is_err(), "{:?}", bad);
        }
        prop_assert!(Token::parse(&text[..cut]).is_err());
        let longer = format!("{text}{c}");
        prop_assert!(Token::parse(&longer).is_err());
        let longer = format!("{text}A");
        prop_assert!(Token::parse(&longer).is_err());
    }

    /// `SessionId::parse` accepts exactly `sess_` + 16 base64url characters.
    #[test]
    fn session_id_accepts_exactly_the_shape(s in prop_oneof![
        b64url_string(16).prop_map(|i| format!("sess_{i}")),
        near_token().prop_map(|t| t.chars().take(21).collect::<String>()),
        any::<String>(),
    ]) {
        let chars: Vec<char> = s.chars().collect();
        let want = s.len() == 21
            && s.starts_with("sess_")
            && chars.len() == 21
            && chars[5..].iter().all(|&c| is_b64url(c));
        prop_assert_eq!(SessionId::parse(&s).is_ok(), want, "{:?}", s);
    }

    /// `UserId::parse` accepts exactly the documented characters and lengths.
    #[test]
    fn user_id_accepts_exactly_the_documented_charset(s in near_user_id()) {
        let parsed = UserId::parse(&s);
        prop_assert_eq!(parsed.is_ok(), reference_user_id_ok(&s), "{:?}", s);
        if let Ok(id) = parsed {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 7396 merge patch, and the strict JSON it is applied with.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The implementation agrees with RFC 7396's pseudocode on arbitrary values.
    #[test]
    fn merge_patch_is_rfc7396(target in json_value(), patch in json_value()) {
        prop_assert_eq!(merged(&target, &patch), rfc7396(Some(target.clone()), &patch));
    }

    /// The same, with object patches over object targets (the shape `PATCH` bodies have).
    #[test]
    fn object_merge_patch_is_rfc7396(target in json_object(), patch in json_object()) {
        prop_assert_eq!(merged(&target, &patch), rfc7396(Some(target.clone()), &patch));
    }

    /// A patch that is not an object replaces the target whole.
    #[test]
    fn non_object_patch_replaces(target in json_value(), patch in json_value()) {
        prop_assume!(!patch.is_object());
        prop_assert_eq!(merged(&target, &patch), patch);
    }

    /// `null` members delete; other members are present afterwards, and members the patch
    /// does not name are kept as they were.
    #[test]
    fn null_members_delete(target in json_object(), patch in json_object()) {
        let out = merged(&target, &patch);
        let (Some(out), Some(t), Some(p)) = (out.as_object(), target.as_object(), patch.as_object())
        else {
            return Err(TestCaseError::fail("objects in, object out"));
        };
        for (name, value) in p {
            prop_assert_eq!(out.contains_key(name), !value.is_null(), "member {:?}", name);
        }
        for (name, value) in t {
            if !p.contains_key(name) {
                prop_assert_eq!(out.get(name), Some(value));
            }
        }
        for name in out.keys() {
            prop_assert!(t.contains_key(name) || p.contains_key(name));
        }
    }

    /// Applying the same patch twice gives what applying it once gives.
    #[test]
    fn merge_patch_is_idempotent(target in json_value(), patch in json_value()) {
        let once = merged(&target, &patch);
        prop_assert_eq!(merged(&once, &patch), once);
    }

    /// `{}` leaves an object as it is, and turns anything else into `{}`.
    #[test]
    fn empty_patch_is_identity_on_objects(target in json_value()) {
        let out = merged(&target, &json!({}));
        if target.is_object() {
            prop_assert_eq!(out, target);
        } else {
            prop_assert_eq!(out, json!({}));
        }
    }

    /// A patch never makes the result deeper than the deeper of target and patch, so the
    /// parser's bound on the patch and the store's bound on the target bound the result.
    #[test]
    fn merge_patch_depth_is_bounded(target in json_value(), patch in json_value()) {
        use sessiond_core::json::depth;
        let out = merged(&target, &patch);
        prop_assert!(depth(&out) <= depth(&target).max(depth(&patch)));
    }

    /// Strict parsing reads back what serde_json writes (no duplicate keys can be written).
    #[test]
    fn strict_value_round_trips(v in json_value()) {
        let text = serde_json::to_string(&v).expect("serialisable");
        let back: StrictValue = serde_json::from_str(&text).expect("strict parse");
        prop_assert_eq!(back.0, v);
    }

    /// A duplicate member is refused wherever it is nested.
    #[test]
    fn strict_value_refuses_duplicates_at_any_depth(
        key in json_key(),
        first in json_value(),
        second in json_value(),
        others in json_object(),
        wrappers in proptest::collection::vec(any::<bool>(), 0..6),
    ) {
        let ser = |v: &Value| serde_json::to_string(v).expect("serialisable");
        let name = ser(&Value::String(key.clone()));
        let mut rest = String::new();
        for (k, v) in others.as_object().into_iter().flatten() {
            if *k != key {
                rest.push_str(&format!(",{}:{}", ser(&Value::String(k.clone())), ser(v)));
            }
        }
        let mut text = format!("{{{name}:{}{rest},{name}:{}}}", ser(&first), ser(&second));
        for in_array in wrappers {
            text = if in_array { format!("[1,{text}]") } else { format!("{{\"w\":{text}}}") };
        }
        prop_assert!(serde_json::from_str::<StrictValue>(&text).is_err(), "{}", text);
        // The same text is fine for a parser that does not check (so the refusal is the
        // duplicate, not a typo in the test).
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
    }
}
