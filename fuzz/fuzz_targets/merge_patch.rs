//! RFC 7396 merge patch on arbitrary input: the bytes are parsed as a `PATCH` body's
//! `userData` is (strictly: duplicate keys refused, serde_json's recursion limit), then
//! applied to a fixed stored document and to itself. Checks: no panic, agreement with RFC 7396
//! section 2's pseudocode, idempotence, a depth no greater than the inputs', and that the
//! store's size and depth check accepts only what is within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sessiond_core::DataLimits;
use sessiond_core::json::{StrictValue, check_object, depth, merge_patch};

/// RFC 7396 section 2, as written (`None` is an undefined `Target[Name]`).
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

fn check(target: &Value, patch: &Value) {
    let mut out = target.clone();
    merge_patch(&mut out, patch);
    assert_eq!(
        out,
        rfc7396(Some(target.clone()), patch),
        "differs from RFC 7396"
    );
    let mut twice = out.clone();
    merge_patch(&mut twice, patch);
    assert_eq!(twice, out, "not idempotent");
    assert!(
        depth(&out) <= depth(target).max(depth(patch)),
        "result deeper than its inputs"
    );
    match (&out, patch) {
        (Value::Object(o), Value::Object(p)) => {
            for (name, value) in p {
                assert_eq!(o.contains_key(name), !value.is_null());
            }
        }
        (_, Value::Object(_)) => unreachable!("an object patch gives an object"),
        (o, p) => assert_eq!(o, p, "a non-object patch replaces"),
    }
    if let Value::Object(o) = &out {
        let limits = DataLimits::default();
        let max = limits.max_user_data_bytes;
        let bytes = serde_json::to_vec(o).map(|v| v.len()).unwrap_or(usize::MAX);
        match check_object("userData", o, max, &limits) {
            Ok(()) => {
                assert!(depth(&out) <= limits.max_depth);
                assert!(bytes <= max);
            }
            Err(e) if e.is_too_large() => assert!(bytes > max),
            Err(_) => assert!(depth(&out) > limits.max_depth),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The API's body limit.
    if data.len() > 64 * 1024 {
        return;
    }
    let Ok(StrictValue(patch)) = serde_json::from_slice::<StrictValue>(data) else {
        return;
    };
    let stored = json!({
        "cart": {"items": [{"sku": "a1", "qty": 2}], "coupon": null, "total": 12.5},
        "theme": "dark",
        "flags": {"beta": true, "nested": {"deeper": {"deepest": [1, 2, 3]}}},
        "": 0
    });
    check(&stored, &patch);
    check(&patch, &patch);
    check(&json!({}), &patch);
    check(&Value::Null, &patch);
});
