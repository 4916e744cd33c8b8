//! A real PostgreSQL server for tests: a fresh cluster (`initdb`) in its own temporary
//! directory, on a free loopback port, stopped and waited for on drop.
//!
//! The binaries come from `SESSIOND_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`
//! (Debian's layout), else `PATH`. A missing binary fails the test loudly: `scripts/test`
//! installs PostgreSQL. PostgreSQL refuses to run as root, so when the tests run as root the
//! server runs as the `postgres` user, on a directory that user owns.
//!
//! The server runs with `fsync=off`: a test's "crash" kills the process, never the machine,
//! and the operating system's page cache survives a killed process, so every committed
//! transaction still survives a kill and a restart, which is what the tests rely on.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures fail the test on any set-up error"
)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The superuser `initdb` creates, and the user every URL names.
const USER: &str = "sessiond";

/// The directory of the PostgreSQL binaries.
fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("SESSIOND_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn binary(name: &str) -> PathBuf {
    bin_dir().map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

/// The uid and gid to run the server as: the `postgres` user when this process is root.
fn run_as() -> Option<(u32, u32)> {
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if me != 0 {
        return None;
    }
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "running as root, but there is no postgres user to run PostgreSQL as; \
             run scripts/test, which installs PostgreSQL"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric id")
    };
    Some((id("-u"), id("-g")))
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// One PostgreSQL cluster and its server process.
#[derive(Debug)]
pub struct PostgresServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    owner: Option<(u32, u32)>,
    /// Extra `-c name=value` settings of the server.
    settings: Vec<String>,
}

impl PostgresServer {
    /// A fresh cluster with a database named `sessiond`, its server accepting connections.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that also speaks TLS, with a certificate for `127.0.0.1` and `localhost`
    /// issued by a fresh CA (made with `openssl`). Returns the server and the CA certificate
    /// in PEM.
    pub fn start_tls() -> (Self, Vec<u8>) {
        let certs = crate::certs::TestCerts::generate();
        let pem = certs.ca_pem();
        let read = |p: &Path| std::fs::read(p).expect("read a test certificate");
        let server = Self::start_with(Some((read(&certs.cert), read(&certs.key))));
        (server, pem)
    }

    /// A fresh cluster; with `tls` (a certificate and its key, PEM), TLS on.
    fn start_with(tls: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let owner = run_as();
        let mut settings = Vec::new();
        if let Some((cert, key)) = tls {
            // The server reads them as its own user, and refuses a key others can read.
            let (cert_path, key_path) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::write(&cert_path, cert).expect("write the certificate");
            std::fs::write(&key_path, key).expect("write the key");
            std::fs::set_permissions(
                &key_path,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("make the key private");
            if let Some((uid, gid)) = owner {
                for path in [&cert_path, &key_path] {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid))
                        .expect("give the certificates to the postgres user");
                }
            }
            settings = vec![
                "ssl=on".to_owned(),
                format!("ssl_cert_file={}", cert_path.display()),
                format!("ssl_key_file={}", key_path.display()),
            ];
        }
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("give the directory to the postgres user");
        }
        let mut server = PostgresServer {
            child: None,
            port: free_port(),
            dir,
            owner,
            settings,
        };
        server.initdb();
        // The free-port check races with other processes; retry on a lost race.
        for _ in 0..5 {
            match server.spawn() {
                Ok(()) => {
                    server.psql("postgres", "CREATE DATABASE sessiond");
                    return server;
                }
                Err(log) if log.contains("already in use") => server.port = free_port(),
                Err(log) => panic!("postgres did not start:\n{log}"),
            }
        }
        panic!("postgres did not find a free port in 5 tries");
    }

    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(binary(name));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn initdb(&self) {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"])
            .args(["--no-instructions", "--locale", "C"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run scripts/test, which installs PostgreSQL",
                    binary("initdb").display()
                )
            });
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).expect("create the log file");
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(self.log_path(), Some(uid), Some(gid))
                .expect("give the log to the postgres user");
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run scripts/test, which installs PostgreSQL",
                    binary("postgres").display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(self.log());
            }
            if self.is_ready() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "not ready within {START_TIMEOUT:?}\n{}",
            self.log()
        ))
    }

    fn is_ready(&self) -> bool {
        self.command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", USER, "-d", "postgres"])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory (the cluster is in `data/` below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgres://sessiond@127.0.0.1:<port>/sessiond`.
    pub fn url(&self) -> String {
        self.url_of("sessiond")
    }

    /// The URL of another database of this server (see [`create_database`](Self::create_database)).
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database, for tests that share one server.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
        self.url_of(name)
    }

    /// Runs one SQL command with `psql` in `database` and returns its unaligned, tuples-only
    /// output (one row a line, columns separated by `|`).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args(["-d", database, "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql ({e}); run scripts/test"));
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server: `fast` waits for nothing but rolls back open transactions (a clean
    /// shutdown); otherwise `immediate`, a crash the next start recovers from.
    pub fn stop(&mut self, fast: bool) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", if fast { "fast" } else { "immediate" }, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// Starts the server again on the same port and cluster (after [`stop`](Self::stop)).
    pub fn start_again(&mut self) {
        if let Err(log) = self.spawn() {
            panic!("postgres did not restart:\n{log}");
        }
    }

    /// Stops the server and starts it again: every connection to it is broken.
    pub fn restart(&mut self) {
        self.stop(true);
        self.start_again();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.stop(false);
    }
}
