//! The session token: the bearer credential a browser or phone holds.
//!
//! A token is `<sessionId>.<secret>`: the public id locates the record, and the secret is 32
//! bytes (256 bits) from the OS CSPRNG in unpadded base64url. A store keeps only
//! [`SecretHash`], the SHA-256 of the secret bytes, so a copy of the store's contents holds no
//! usable credential. The secret is uniformly random and long, so a plain (unsalted, fast)
//! hash is enough: there is nothing to brute-force.
//!
//! [`Token::parse`] checks the exact shape before anything else happens, so a malformed token
//! costs no store access.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::id::{SessionId, UserId, is_base64url};

/// Bytes of randomness in a token's secret.
pub const SECRET_BYTES: usize = 32;
/// Length of the secret in base64url.
const SECRET_ENCODED_LEN: usize = 43;
/// Length of a whole token.
pub const TOKEN_LEN: usize = SessionId::LEN + 1 + SECRET_ENCODED_LEN;

/// A token that is not one sessiond could have issued. Deliberately carries no detail: every
/// malformed token gets the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed session token")]
pub struct MalformedToken;

/// The OS random number generator failed; no credential can be issued.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomnessUnavailable(getrandom::Error);

/// Fills `bytes` from the OS CSPRNG (ids of tokens, secrets, event ids).
pub(crate) fn fill_random(bytes: &mut [u8]) -> Result<(), RandomnessUnavailable> {
    getrandom::fill(bytes).map_err(RandomnessUnavailable)
}

/// A session token: the public id plus the secret.
///
/// `Debug` never shows the secret; the only way to the full text is [`Token::expose`], called
/// where the token is handed to its holder.
#[derive(Clone)]
pub struct Token {
    id: SessionId,
    secret: [u8; SECRET_BYTES],
}

impl Token {
    /// A fresh token for a new session of `user`: the session id placed in the user's shard,
    /// the rest of the id and the secret from the OS CSPRNG.
    pub fn generate(user: &UserId) -> Result<Self, RandomnessUnavailable> {
        let mut id = [0u8; SessionId::RANDOM_BYTES];
        getrandom::fill(&mut id).map_err(RandomnessUnavailable)?;
        Self::new_secret_for(SessionId::from_random(user.shard(), &id))
    }

    /// A fresh secret for an existing session (rotation).
    pub fn new_secret_for(id: SessionId) -> Result<Self, RandomnessUnavailable> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).map_err(RandomnessUnavailable)?;
        Ok(Token { id, secret })
    }

    /// Checks the shape of a presented token. Nothing else is consulted.
    pub fn parse(s: &str) -> Result<Self, MalformedToken> {
        if s.len() != TOKEN_LEN || s.as_bytes()[SessionId::LEN] != b'.' {
            return Err(MalformedToken);
        }
        let (id, secret) = s.split_at(SessionId::LEN);
        let id = SessionId::parse(id).map_err(|_| MalformedToken)?;
        let secret = &secret[1..];
        if !secret.bytes().all(is_base64url) {
            return Err(MalformedToken);
        }
        let mut bytes = [0u8; SECRET_BYTES];
        // 43 base64url characters carry 258 bits; the decoder rejects non-zero trailing bits,
        // so exactly one spelling of each secret is accepted.
        match URL_SAFE_NO_PAD.decode_slice(secret, &mut bytes) {
            Ok(SECRET_BYTES) => Ok(Token { id, secret: bytes }),
            _ => Err(MalformedToken),
        }
    }

    /// The session this token belongs to.
    pub fn session_id(&self) -> &SessionId {
        &self.id
    }

    /// The one-way hash a store keeps in place of the secret.
    pub fn secret_hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.secret).into())
    }

    /// The full token text, for handing to its holder exactly once.
    pub fn expose(&self) -> String {
        let mut s = String::with_capacity(TOKEN_LEN);
        s.push_str(self.id.as_str());
        s.push('.');
        URL_SAFE_NO_PAD.encode_string(self.secret, &mut s);
        s
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// SHA-256 of a token's secret: all a store knows about the credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Whether `token`'s secret hashes to this value, compared in constant time.
    pub fn verify(&self, token: &Token) -> bool {
        self.ct_matches(&token.secret_hash())
    }

    /// Constant-time equality with another hash.
    pub fn ct_matches(&self, other: &SecretHash) -> bool {
        bool::from(self.0.ct_eq(&other.0))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A hash from its raw digest (as read back from a store).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretHash(bytes)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

impl From<SecretHash> for String {
    fn from(h: SecretHash) -> String {
        URL_SAFE_NO_PAD.encode(h.0)
    }
}

impl TryFrom<String> for SecretHash {
    type Error = MalformedToken;
    fn try_from(s: String) -> Result<Self, MalformedToken> {
        let mut bytes = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut bytes) {
            Ok(32) => Ok(SecretHash(bytes)),
            _ => Err(MalformedToken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// S1 (and T1 of docs/requirements.md at 10^5 instead of 10^6, to stay fast in debug builds):
    /// tokens decoded from their text carry at least 128 bits of secret, no two are alike, and
    /// the secret bits are unbiased, overall and at every bit position. The secret comes from
    /// `getrandom` (the OS CSPRNG), see [`Token::generate`] and [`Token::new_secret_for`].
    #[test]
    fn s01_secrets_are_long_unique_and_unbiased() {
        const N: usize = 100_000;
        const BITS: usize = SECRET_BYTES * 8;
        const { assert!(SECRET_BYTES >= 16, "a secret of at least 128 bits") };
        let user = UserId::parse("u").unwrap();
        let mut secrets = std::collections::HashSet::with_capacity(N);
        let mut ids = std::collections::HashSet::with_capacity(N);
        let mut ones = [0u32; BITS];
        for _ in 0..N {
            let text = Token::generate(&user).unwrap().expose();
            // 43 base64url characters: 256 bits (22 would carry the 128 that S1 asks for).
            assert_eq!(text.len() - SessionId::LEN - 1, SECRET_ENCODED_LEN);
            let token = Token::parse(&text).unwrap();
            for (i, byte) in token.secret.iter().enumerate() {
                for bit in 0..8 {
                    ones[i * 8 + bit] += u32::from((byte >> bit) & 1);
                }
            }
            assert!(secrets.insert(token.secret), "a duplicate secret");
            assert!(ids.insert(token.id), "a duplicate session id");
        }
        let total: u64 = ones.iter().map(|&n| u64::from(n)).sum();
        #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
        let overall = total as f64 / (N * BITS) as f64;
        assert!(
            (overall - 0.5).abs() < 0.005,
            "frequency of 1 bits over all secret bits: {overall}"
        );
        // Per position the standard deviation is 0.5 / sqrt(N) ≈ 0.0016; 0.01 is over six of
        // them, so only a stuck or strongly biased bit fails.
        for (position, &n) in ones.iter().enumerate() {
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let f = f64::from(n) / N as f64;
            assert!(
                (f - 0.5).abs() < 0.01,
                "bit {position} is 1 with frequency {f}"
            );
        }
    }

    #[test]
    fn s17_debug_output_never_shows_the_secret() {
        let t = Token::generate(&UserId::parse("u").unwrap()).unwrap();
        let text = t.expose();
        let secret = &text[SessionId::LEN + 1..];
        for shown in [
            format!("{t:?}"),
            format!("{t:#?}"),
            format!("{:?}", t.secret_hash()),
        ] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains(&text), "{shown}");
        }
        assert!(format!("{t:?}").contains(t.session_id().as_str()));
    }

    #[test]
    fn round_trip() {
        let t = Token::generate(&UserId::parse("u").unwrap()).unwrap();
        let text = t.expose();
        assert_eq!(text.len(), TOKEN_LEN);
        let back = Token::parse(&text).unwrap();
        assert_eq!(back.session_id(), t.session_id());
        assert!(t.secret_hash().verify(&back));
        assert!(!format!("{t:?}").contains(&text[SessionId::LEN + 1..]));
    }

    #[test]
    fn s24_d07_the_shape_check_rejects_every_other_shape() {
        let text = Token::generate(&UserId::parse("u").unwrap())
            .unwrap()
            .expose();
        let cases = [
            String::new(),
            " ".into(),
            text[..text.len() - 1].to_string(),
            format!("{text}A"),
            text.replace('.', "_"),
            format!(" {}", &text[1..]),
            format!("{}\0", &text[..text.len() - 1]),
            format!("{}=", &text[..text.len() - 1]),
            format!("{}+", &text[..text.len() - 1]),
            "x".repeat(8192),
        ];
        for case in &cases {
            assert!(Token::parse(case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn one_spelling_per_secret() {
        let zero = Token {
            id: SessionId::from_random(UserId::parse("u").unwrap().shard(), &[0; 12]),
            secret: [0; SECRET_BYTES],
        };
        let text = zero.expose();
        assert!(text.ends_with('A'));
        assert!(Token::parse(&text).is_ok());
        // 'B' sets one of the two bits past the 256th: the same secret spelled differently.
        let other = format!("{}B", &text[..text.len() - 1]);
        assert!(Token::parse(&other).is_err());
    }

    #[test]
    fn different_secret_does_not_verify() {
        let a = Token::generate(&UserId::parse("u").unwrap()).unwrap();
        let b = Token::new_secret_for(a.session_id().clone()).unwrap();
        assert!(!a.secret_hash().verify(&b));
    }
}
