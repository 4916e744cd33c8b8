//! The `sessiond` binary as a child process, shared by the binary's test files.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses the part it needs"
)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `sessiond serve` child process, killed on drop. Its stdout and stderr are drained as it
/// writes them, so a busy server never blocks on a full pipe.
pub struct Server {
    pub child: Child,
    pub base: String,
    drains: Vec<std::thread::JoinHandle<String>>,
}

/// Reads `from` to its end on a thread of its own.
fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = from.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

impl Server {
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessiond"));
        cmd.arg("serve")
            .env_clear()
            .env("SESSIOND_DATA_DIR", data_dir)
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start sessiond");
        let drains = vec![
            drain(child.stdout.take().expect("piped stdout")),
            drain(child.stderr.take().expect("piped stderr")),
        ];
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            drains,
        };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "sessiond exited during start-up ({status}):\n{}",
                    self.output()
                );
            }
            // The listener is bound before start-up finishes (the store opens, the API key is
            // generated), so wait for an answer, not for a connection.
            if healthz(self.base.trim_start_matches("http://")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("sessiond did not answer /healthz within 20 s");
    }

    /// Everything the process printed (after it exited or was killed).
    pub fn output(&mut self) -> String {
        self.drains
            .drain(..)
            .map(|d| d.join().unwrap_or_default())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `GET /healthz` at `addr` answers 200.
pub fn healthz(addr: &str) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
