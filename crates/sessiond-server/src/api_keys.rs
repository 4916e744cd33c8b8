//! API keys of trusted backends (`X-Api-Key`).
//!
//! Keys are held only as SHA-256 digests. A presented key is hashed and compared against every
//! configured digest in constant time, without stopping at the first match, so neither the
//! position of a match nor a shared prefix shows in the timing. Keys are never logged.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sessiond_core::KeyId;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Shortest plain key accepted: shorter ones are guessable.
pub const MIN_KEY_LEN: usize = 16;
/// File in the data directory that holds the generated key.
pub const GENERATED_KEY_FILE: &str = "api-key";

/// The accepted keys, as digests.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys(<{} keys>)", self.digests.len())
    }
}

impl ApiKeys {
    /// Parses one configured key: `sha256:<64 hex digits>` is a digest, anything else a plain
    /// key of at least [`MIN_KEY_LEN`] printable characters.
    pub fn parse_one(key: &str) -> Result<[u8; 32], String> {
        if let Some(hex) = key.strip_prefix("sha256:") {
            return decode_hex(hex).ok_or_else(|| "a sha256: key needs 64 hex digits".to_string());
        }
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "each key must be at least {MIN_KEY_LEN} characters"
            ));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("keys must be printable ASCII without spaces".into());
        }
        Ok(Sha256::digest(key.as_bytes()).into())
    }

    /// Keys from configuration (already validated by `Config`).
    pub fn from_config(keys: &[String]) -> Result<Self, String> {
        let digests = keys
            .iter()
            .map(|k| Self::parse_one(k))
            .collect::<Result<_, _>>()?;
        Ok(ApiKeys { digests })
    }

    /// Which key `presented` is, if it is one of them: its [`KeyId`], the first four bytes
    /// of its digest (what events and logs name it by). Every configured digest is compared,
    /// and the id picked, in constant time.
    pub fn identify(&self, presented: &[u8]) -> Option<KeyId> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut any = Choice::from(0);
        let mut id = 0u32;
        for d in &self.digests {
            let hit = d.ct_eq(&digest);
            any |= hit;
            id = u32::conditional_select(&id, &key_id_bits(d), hit);
        }
        bool::from(any).then(|| KeyId(id.to_be_bytes()))
    }

    /// The key in `<data_dir>/api-key`, generated (256 random bits, file mode 0600) if the
    /// file does not exist. Returns the keys and the file's path, for the start-up message.
    pub fn load_or_generate(data_dir: &Path) -> std::io::Result<(Self, PathBuf)> {
        let path = data_dir.join(GENERATED_KEY_FILE);
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(data_dir)?;
        let key = match std::fs::read_to_string(&path) {
            Ok(k) => k.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = generate_key()?;
                write_private(&path, &key)?;
                key
            }
            Err(e) => return Err(e),
        };
        let digest = Self::parse_one(&key).map_err(|reason| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {reason}", path.display()),
            )
        })?;
        Ok((
            ApiKeys {
                digests: vec![digest],
            },
            path,
        ))
    }
}

fn generate_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(format!("sdk_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Creates `path` readable by the owner only, failing if it already exists.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{contents}")?;
    file.sync_all()
}

/// The [`KeyId`] of a digest, as a number for constant-time selection.
fn key_id_bits(digest: &[u8; 32]) -> u32 {
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn decode_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_hashed_keys() {
        let plain = "backend-key-0123456789";
        let hashed = format!("sha256:{:x}", Sha256::digest(b"other-key-0123456789"));
        let keys = ApiKeys::from_config(&[plain.into(), hashed.clone()]).unwrap();
        let plain_id = keys
            .identify(plain.as_bytes())
            .expect("the plain key is accepted");
        let hashed_id = keys
            .identify(b"other-key-0123456789")
            .expect("the hashed key is accepted");
        assert_ne!(plain_id, hashed_id, "each key has its own id");
        assert!(
            hashed.starts_with(&format!("sha256:{hashed_id}")),
            "a key's id is the start of its sha256: form"
        );
        assert_eq!(keys.identify(b"backend-key-012345678"), None);
        assert_eq!(keys.identify(b""), None);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(ApiKeys::parse_one("short").is_err());
        assert!(ApiKeys::parse_one("sha256:abc").is_err());
    }

    #[test]
    fn generated_key_is_private_and_stable() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let (a, path) = ApiKeys::load_or_generate(dir.path()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = std::fs::read_to_string(&path).unwrap();
        assert!(a.identify(key.trim().as_bytes()).is_some());
        let (b, _) = ApiKeys::load_or_generate(dir.path()).unwrap();
        assert!(b.identify(key.trim().as_bytes()).is_some());
    }
}
