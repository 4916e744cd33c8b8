//! Certificates for TLS tests: a fresh CA and a server certificate for `127.0.0.1` and
//! `localhost`, made with the `openssl` command (installed by `scripts/test`).
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "a fixture that cannot be set up fails the test"
)]

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

/// A CA and a server certificate with its key, as PEM files in a temporary directory that
/// lives as long as this value.
#[derive(Debug)]
pub struct TestCerts {
    _dir: TempDir,
    /// The CA's certificate.
    pub ca: PathBuf,
    /// The server's certificate, issued by the CA.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl TestCerts {
    /// Makes a new CA and server certificate (valid two days).
    pub fn generate() -> Self {
        let certs = tempfile::tempdir().expect("create a temporary directory");
        let dir = certs.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("cannot run openssl ({e}); run scripts/test"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=sessiond-test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write the extension file");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        TestCerts {
            ca: dir.join("ca.crt"),
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            _dir: certs,
        }
    }

    /// The CA certificate in PEM, for a client's trust roots.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).expect("read the CA certificate")
    }
}
