//! Real Redis servers for tests: a standalone server and a Cluster, each on free loopback
//! ports in its own temporary directory, killed and waited for on drop.
//!
//! The `redis-server` and `redis-cli` binaries come from `PATH` (or `SESSIOND_TEST_REDIS_SERVER`
//! and `SESSIOND_TEST_REDIS_CLI`). A missing binary fails the test loudly: `scripts/test`
//! installs them.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures fail the test on any set-up error"
)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::certs::TestCerts;
use crate::proxy::PausableProxy;

/// How long a server may take to answer `PING` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(15);

fn server_binary() -> String {
    std::env::var("SESSIOND_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn cli_binary() -> String {
    std::env::var("SESSIOND_TEST_REDIS_CLI").unwrap_or_else(|_| "redis-cli".into())
}

/// A free loopback port (and, with `bus`, the port 10000 above it, for Cluster's bus).
fn free_port(bus: bool) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local address").port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// One `redis-server` process (or a sentinel).
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
    /// For a sentinel: the monitored primary's port.
    monitors: Option<u16>,
}

impl RedisServer {
    /// A standalone server without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (e.g. `["--maxmemory", "2mb"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let bus = args.iter().any(|a| a == "--cluster-enabled");
        let mut server = RedisServer {
            child: None,
            port: free_port(bus),
            dir,
            args,
            monitors: None,
        };
        // The free-port check races with other processes; retry on a lost race.
        for _ in 0..5 {
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => server.port = free_port(bus),
                Err(log) => panic!("redis-server did not start:\n{log}"),
            }
        }
        panic!("redis-server did not find a free port in 5 tries");
    }

    /// A sentinel monitoring the primary on `primary_port` as `mymaster` (quorum 2), with
    /// timings faster than `deploy/redis`'s (down after 1 s, failover timeout 5 s), so that
    /// failover tests finish quickly.
    pub fn sentinel(primary_port: u16) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let mut server = RedisServer {
            child: None,
            port: free_port(false),
            dir,
            args: Vec::new(),
            monitors: Some(primary_port),
        };
        for _ in 0..5 {
            match server.spawn() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => {
                    server.port = free_port(false);
                }
                Err(log) => panic!("redis sentinel did not start:\n{log}"),
            }
        }
        panic!("redis sentinel did not find a free port in 5 tries");
    }

    fn command(&self) -> Command {
        let log = self.log_path();
        let mut cmd = Command::new(server_binary());
        if let Some(primary) = self.monitors {
            // Sentinel rewrites its configuration file, so it gets one of its own.
            let conf = self.dir.path().join("sentinel.conf");
            if !conf.exists() {
                let body = format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor mymaster 127.0.0.1 {primary} 2\n\
                     sentinel down-after-milliseconds mymaster 1000\n\
                     sentinel failover-timeout mymaster 5000\n\
                     sentinel parallel-syncs mymaster 1\n",
                    port = self.port,
                    dir = self.dir.path().display(),
                    log = log.display(),
                );
                std::fs::write(&conf, body).expect("write sentinel.conf");
            }
            cmd.arg(conf).arg("--sentinel");
            return cmd;
        }
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args);
        cmd
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {} ({e}); run scripts/test, which installs it",
                    server_binary()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(self.log());
            }
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("no PONG within {START_TIMEOUT:?}\n{}", self.log()))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A server that also speaks TLS on a second port, with a certificate for `127.0.0.1` and
    /// `localhost` issued by a fresh CA (made with the `openssl` command). Returns the server,
    /// its `rediss://` URL and the CA certificate in PEM.
    pub fn start_tls() -> (Self, String, Vec<u8>) {
        let certs = TestCerts::generate();
        let tls_port = free_port(false).to_string();
        let path = |p: &std::path::Path| p.display().to_string();
        let (cert, key, ca) = (path(&certs.cert), path(&certs.key), path(&certs.ca));
        let server = RedisServer::start_with(&[
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
        ]);
        let pem = certs.ca_pem();
        // The server read its files at start-up; the directory may go.
        drop(certs);
        (server, format!("rediss://127.0.0.1:{tls_port}"), pem)
    }

    /// Stops the process with SIGSTOP (it keeps its connections but answers nothing).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused process with SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .arg(sig)
                .arg(child.id().to_string())
                .status();
            assert!(ok.is_ok_and(|s| s.success()), "kill {sig} failed");
        }
    }

    /// Kills the server with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn() {
            panic!("redis-server did not restart:\n{log}");
        }
    }

    /// Runs `redis-cli -p <port> <args>` and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p <port> <args>`: its standard output, or a panic with its error.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(cli_binary())
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}); run scripts/test", cli_binary()));
    assert!(
        out.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a server on `port` answers `PING`.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    // A server that wants a password answers NOAUTH: it is up all the same.
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
}

/// A Redis Cluster of `masters` primaries, each with `replicas` replicas.
#[derive(Debug)]
pub struct RedisCluster {
    /// Every node, primaries first as `redis-cli --cluster create` assigned them.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, forms the cluster and waits until every node reports it healthy.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let count = masters * (1 + replicas);
        let nodes: Vec<RedisServer> = (0..count)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--appendonly",
                    "no",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let replicas_arg = replicas.to_string();
        args.extend(["--cluster-replicas", &replicas_arg, "--cluster-yes"]);
        cli(nodes[0].port(), &args);
        let cluster = RedisCluster { nodes };
        cluster.wait_healthy();
        cluster
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = self.nodes.iter().all(|n| {
                let info = cli(n.port(), &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster did not become healthy within 30 s");
    }

    /// `redis-cluster://127.0.0.1:<p1>,127.0.0.1:<p2>,...`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis-cluster://{}", hosts.join(","))
    }
}

/// A primary with replicas.
#[derive(Debug)]
pub struct RedisReplicated {
    /// The primary.
    pub primary: RedisServer,
    /// Its replicas.
    pub replicas: Vec<RedisServer>,
}

impl RedisReplicated {
    /// A primary with `replicas` replicas, each with AOF on (`appendfsync everysec`), waited
    /// for until every replica's link is up.
    pub fn start(replicas: usize) -> Self {
        // Redis waits 5 s before a diskless full sync by default, to batch replicas; tests
        // have no replicas to batch.
        let primary =
            RedisServer::start_with(&["--appendonly", "yes", "--repl-diskless-sync-delay", "0"]);
        let port = primary.port().to_string();
        let replicas: Vec<RedisServer> = (0..replicas)
            .map(|_| {
                RedisServer::start_with(&["--appendonly", "yes", "--replicaof", "127.0.0.1", &port])
            })
            .collect();
        let this = RedisReplicated { primary, replicas };
        this.wait_linked();
        this
    }

    fn wait_linked(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let linked = self.replicas.iter().all(|r| {
                r.cli(&["INFO", "replication"])
                    .contains("master_link_status:up")
            });
            if linked {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("replicas did not link to the primary within 20 s");
    }

    /// `redis://127.0.0.1:<primary>`.
    pub fn url(&self) -> String {
        self.primary.url()
    }

    /// A primary with two replicas, the second replicating through a [`PausableProxy`]: pausing
    /// it makes that replica lag while it goes on answering reads.
    pub fn start_with_lagging_replica() -> (Self, PausableProxy) {
        // Redis waits 5 s before a diskless full sync by default, to batch replicas; tests
        // have no replicas to batch.
        let primary =
            RedisServer::start_with(&["--appendonly", "yes", "--repl-diskless-sync-delay", "0"]);
        let port = primary.port().to_string();
        let direct = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
        let proxy = PausableProxy::start(primary.port());
        let proxied = proxy.port().to_string();
        let lagging = RedisServer::start_with(&["--replicaof", "127.0.0.1", &proxied]);
        let this = RedisReplicated {
            primary,
            replicas: vec![direct, lagging],
        };
        this.wait_linked();
        (this, proxy)
    }
}

/// A primary, replicas and three sentinels (quorum 2) watching them as `mymaster`.
#[derive(Debug)]
pub struct RedisSentinel {
    /// The data nodes.
    pub data: RedisReplicated,
    /// The sentinels.
    pub sentinels: Vec<RedisServer>,
}

impl RedisSentinel {
    /// Starts everything and waits until every sentinel sees the primary and the replicas.
    /// Enough to serve; call [`Self::wait_for_quorum`] before a failover.
    pub fn start(replicas: usize) -> Self {
        let data = RedisReplicated::start(replicas);
        let port = data.primary.port();
        let sentinels: Vec<RedisServer> = (0..3).map(|_| RedisServer::sentinel(port)).collect();
        let this = RedisSentinel { data, sentinels };
        this.wait_until("the sentinels did not see the replicas", |s| {
            s.field("num-slaves") == replicas.to_string()
        });
        this
    }

    /// Waits until every sentinel knows the two others, so that they can agree on a failover.
    pub fn wait_for_quorum(&self) {
        self.wait_until("the sentinels did not discover each other", |s| {
            s.field("num-other-sentinels") == "2"
        });
    }

    fn wait_until(&self, what: &str, ready: impl Fn(&SentinelView) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .sentinels
                .iter()
                .all(|s| ready(&SentinelView(s.cli(&["SENTINEL", "MASTER", "mymaster"]))))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{what} within 30 s");
    }

    /// `redis-sentinel://127.0.0.1:<s1>,.../?service=mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port()))
            .collect();
        format!("redis-sentinel://{}/?service=mymaster", hosts.join(","))
    }

    /// The port of the node the sentinels currently call the primary.
    pub fn primary_port(&self) -> u16 {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .expect("a primary address")
    }
}

/// The reply of `SENTINEL MASTER`, as name/value lines.
struct SentinelView(String);

impl SentinelView {
    fn field(&self, name: &str) -> String {
        let mut lines = self.0.lines();
        while let Some(l) = lines.next() {
            if l == name {
                return lines.next().unwrap_or("").to_owned();
            }
        }
        String::new()
    }
}
