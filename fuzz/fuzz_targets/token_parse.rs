//! `Token::parse` and the id parsers on arbitrary bytes: no panic, and a token is accepted
//! exactly when it has the documented shape (`sess_` + 16 base64url + `.` + 43 base64url with
//! the two bits past the 256th zero), in which case printing it gives the same text back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sessiond_core::token::TOKEN_LEN;
use sessiond_core::{SecretHash, SessionId, Token, UserId};

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64(b: u8) -> Option<usize> {
    B64URL.iter().position(|&c| c == b)
}

/// The documented shape, checked independently of the parser.
fn shape_ok(s: &[u8]) -> bool {
    s.len() == 65
        && s.starts_with(b"sess_")
        && s[5..21].iter().all(|&b| b64(b).is_some())
        && s[21] == b'.'
        && s[22..].iter().all(|&b| b64(b).is_some())
        && b64(s[64]).is_some_and(|i| i % 4 == 0)
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Token::parse(s) {
        Ok(token) => {
            assert!(shape_ok(data), "accepted a malformed token: {s:?}");
            assert_eq!(s.len(), TOKEN_LEN);
            assert_eq!(token.expose(), s, "a token prints as it was parsed");
            assert_eq!(token.session_id().as_str(), &s[..21]);
            assert!(token.secret_hash().verify(&token));
            let again = Token::parse(&token.expose()).expect("a printed token parses");
            assert!(again.secret_hash().ct_matches(&token.secret_hash()));
        }
        Err(_) => assert!(!shape_ok(data), "refused a well-formed token: {s:?}"),
    }
    if let Ok(id) = SessionId::parse(s) {
        assert_eq!(id.as_str(), s);
        assert!(s.len() == 21 && s.starts_with("sess_"));
        let _ = id.shard();
    }
    match UserId::parse(s) {
        Ok(user) => {
            assert!((1..=256).contains(&s.len()));
            assert!(s.bytes().all(|b| b.is_ascii_graphic()));
            assert!(s != "." && s != "..", "the ids no URL path can carry");
            // Every id issued for this user is in its shard.
            let _ = user.shard();
        }
        Err(_) => assert!(
            s.is_empty()
                || s.len() > 256
                || s.bytes().any(|b| !b.is_ascii_graphic())
                || s == "."
                || s == "..",
            "refused a valid user id: {s:?}"
        ),
    }
    // A stored hash read back from a store (the same base64url, 32 bytes).
    if let Ok(h) = SecretHash::try_from(s.to_owned()) {
        assert_eq!(String::from(h), s);
    }
});
