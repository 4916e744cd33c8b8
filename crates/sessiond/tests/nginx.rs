//! The gateway of `deploy/nginx/sessiond.conf`, in a real nginx, in front of a real sessiond
//! and an app that records what reaches it: docs/requirements.md S5, S9, S16, S21 and D8 end to end.
//!
//! Needs `nginx` (Debian's package of that name; `./scripts/test` installs it). Without it the
//! tests fail, they are never skipped. The deploy file is used as it is; only its three
//! addresses are replaced with free local ports.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test on any setup error"
)]

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "nginx-test-key-0123456789";
const DEPLOY_CONF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/nginx/sessiond.conf"
);

// ---------------------------------------------------------------------------------------------
// HTTP on raw sockets: the tests choose every byte of the header block (letter case,
// duplicates, underscores), which an HTTP client library would normalise.

/// A request as a server received it, or a response as the client received it.
#[derive(Clone, Debug, Default)]
struct Message {
    /// `GET`, `POST`, ... (requests only).
    method: String,
    /// The request target, query string included (requests only).
    target: String,
    /// The status (responses only).
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Message {
    /// Every value of the header `name` (case-insensitive), in order.
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the header `name`, which must appear at most once.
    fn one(&self, name: &str) -> Option<&str> {
        let values = self.all(name);
        assert!(
            values.len() <= 1,
            "{name} appears {} times: {self:?}",
            values.len()
        );
        values.first().copied()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a fresh connection (`Connection: close`), the whole response read.
fn request(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Message {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("{method} {target} at {addr}: {e}"));
    parse_response(&raw)
}

fn get(addr: &str, target: &str, headers: &[(&str, &str)]) -> Message {
    request(addr, "GET", target, headers, "")
}

fn parse_response(raw: &[u8]) -> Message {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = parse_headers(lines);
    let mut message = Message {
        status,
        headers,
        ..Message::default()
    };
    let body = &raw[end + 4..];
    message.body = if message
        .all("transfer-encoding")
        .iter()
        .any(|v| v.contains("chunked"))
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    message
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .map(|line| {
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header {line:?}"));
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_field = std::str::from_utf8(&body[..eol]).unwrap();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server (keep-alive, as nginx's upstream connections are) that records every
// request: the app behind the gateway, and in some tests a stand-in for sessiond.

/// What a recording server answers; `None` hangs the connection for 10 s without an answer.
type Responder = dyn Fn(&Message) -> Option<Message> + Send + Sync;

struct Recorder {
    addr: String,
    seen: Arc<Mutex<Vec<Message>>>,
}

impl Recorder {
    fn start(respond: impl Fn(&Message) -> Option<Message> + Send + Sync + 'static) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Arc<Responder> = Arc::new(respond);
        let seen_by_server = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let seen = Arc::clone(&seen_by_server);
                let respond = Arc::clone(&respond);
                std::thread::spawn(move || serve_connection(stream, &seen, &*respond));
            }
        });
        Recorder { addr, seen }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> Message {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request recorded")
    }
}

fn serve_connection(stream: TcpStream, seen: &Mutex<Vec<Message>>, respond: &Responder) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == b"\r\n" {
                break;
            }
            head.push(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        let mut request_line = head[0].split(' ');
        let mut message = Message {
            method: request_line.next().unwrap().to_owned(),
            target: request_line.next().unwrap().to_owned(),
            headers: parse_headers(head[1..].iter().map(String::as_str)),
            ..Message::default()
        };
        let length: usize = message
            .one("content-length")
            .map_or(0, |v| v.parse().unwrap());
        message.body = vec![0; length];
        if reader.read_exact(&mut message.body).is_err() {
            return;
        }
        seen.lock().unwrap().push(message.clone());
        let Some(reply) = respond(&message) else {
            std::thread::sleep(Duration::from_secs(10));
            return;
        };
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&reply.body);
        if writer.write_all(&bytes).is_err() {
            return;
        }
    }
}

/// The app: `200` echoing the identity headers it received; its own `500` on `/app-error`.
fn echo_identity(request: &Message) -> Option<Message> {
    let status = if request.target == "/app-error" {
        500
    } else {
        200
    };
    let body = format!(
        "X-User-Id: {:?}\nX-Session-Id: {:?}\n",
        request.all("x-user-id"),
        request.all("x-session-id")
    );
    Some(Message {
        status,
        body: body.into_bytes(),
        ..Message::default()
    })
}

// ---------------------------------------------------------------------------------------------
// sessiond and nginx as child processes.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `sessiond serve` child process on the embedded store, killed on drop.
struct Sessiond {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Sessiond {
    fn start(dir: &Path) -> Sessiond {
        let port = free_port();
        let data = dir.join("sessiond-data");
        let log = dir.join("sessiond.log");
        let out = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sessiond"))
            .arg("serve")
            .env_clear()
            .env("SESSIOND_DATA_DIR", &data)
            .env("SESSIOND_LISTEN", format!("127.0.0.1:{port}"))
            .env("SESSIOND_API_KEYS", KEY)
            // As deploy/nginx/README.md says: the client's address from nginx's subrequest.
            .env("SESSIOND_GUARD__CLIENT_IP_HEADER", "X-Real-IP")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start sessiond");
        let mut sessiond = Sessiond {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = sessiond.child.try_wait() {
                panic!(
                    "sessiond exited during start-up ({status}):\n{}",
                    sessiond.output()
                );
            }
            // The listener is bound before start-up finishes: wait for an answer.
            if TcpStream::connect(&sessiond.addr).is_ok()
                && get(&sessiond.addr, "/healthz", &[]).status == 200
            {
                return sessiond;
            }
            assert!(
                Instant::now() < deadline,
                "sessiond did not answer /healthz within 20 s"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    /// A new session for `user`: its token and public id.
    fn create(&self, user: &str) -> (String, String) {
        let body = format!(r#"{{"userId": "{user}"}}"#);
        let res = request(
            &self.addr,
            "POST",
            "/v1/sessions",
            &[("X-Api-Key", KEY), ("Content-Type", "application/json")],
            &body,
        );
        assert_eq!(res.status, 201, "{}", res.text());
        let doc: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        (
            doc["token"].as_str().unwrap().to_owned(),
            doc["session"]["sessionId"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for Sessiond {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- sessiond output:\n{}", self.output());
        }
    }
}

/// The nginx binary: on `PATH`, or where Debian's package puts it (`/usr/sbin` is not on a
/// normal user's `PATH`). Fails the test, loudly, when there is none.
fn nginx_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"].map(PathBuf::from));
    let found = dirs
        .into_iter()
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file());
    let Some(nginx) = found else {
        panic!(
            "nginx is not installed, and the gateway tests need a real one: run ./scripts/test, \
             which installs it, or `sudo apt-get install nginx` (Debian/Ubuntu)"
        );
    };
    let version = Command::new(&nginx).arg("-V").output().unwrap();
    let build = String::from_utf8_lossy(&version.stderr);
    assert!(
        build.contains("http_auth_request_module"),
        "{} has no auth_request module (nginx -V):\n{build}",
        nginx.display()
    );
    nginx
}

/// nginx running `deploy/nginx/sessiond.conf` from a temporary prefix; stopped on drop.
struct Nginx {
    child: Child,
    addr: String,
    dir: PathBuf,
}

impl Nginx {
    /// nginx on a free port, protecting the app at `app_port` with the sessiond (or stand-in)
    /// at `sessiond_port`.
    fn start(dir: &Path, sessiond_port: u16, app_port: u16) -> Nginx {
        let nginx = nginx_binary();
        let port = free_port();
        let dir = dir.join("nginx");
        std::fs::create_dir_all(&dir).unwrap();
        let conf = std::fs::read_to_string(DEPLOY_CONF).unwrap();
        let conf = replace_once(
            &conf,
            "server 127.0.0.1:7480;",
            &format!("server 127.0.0.1:{sessiond_port};"),
        );
        let conf = replace_once(
            &conf,
            "server 127.0.0.1:8080;",
            &format!("server 127.0.0.1:{app_port};"),
        );
        let conf = replace_once(&conf, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        std::fs::write(dir.join("sessiond.conf"), conf).unwrap();
        // Everything nginx writes stays in the temporary prefix: Debian's build points its
        // temp paths at /var/lib/nginx, which a non-root user cannot write.
        let d = dir.display();
        let main = format!(
            "worker_processes 1;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20   client_body_temp_path {d}/client_body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   access_log {d}/access.log;\n\
             \x20   include {d}/sessiond.conf;\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        // Run as root, nginx's workers switch to `nobody`: let them into the prefix.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = File::create(dir.join("nginx.out")).unwrap();
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group, so that drop stops the workers too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", nginx.display()));
        let mut gateway = Nginx {
            child,
            addr: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!(
                    "nginx exited during start-up ({status}):\n{}",
                    gateway.logs()
                );
            }
            if TcpStream::connect(&gateway.addr).is_ok() {
                return gateway;
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s:\n{}",
                gateway.logs()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("nginx.out"), read("error.log"))
    }

    fn get(&self, target: &str, headers: &[(&str, &str)]) -> Message {
        get(&self.addr, target, headers)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- nginx logs:\n{}", self.logs());
        }
    }
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx/sessiond.conf must contain `{from}` exactly once: the test puts its own \
         address there"
    );
    text.replacen(from, to, 1)
}

/// A stand-in for sessiond: `Authorization: Bearer status-NNN` answers NNN, `Bearer hang`
/// never answers, anything else is a live session of `user_standin`.
fn standin_sessiond(request: &Message) -> Option<Message> {
    let auth = request.one("authorization").unwrap_or_default();
    if auth == "Bearer hang" {
        return None;
    }
    if let Some(code) = auth.strip_prefix("Bearer status-") {
        return Some(Message {
            status: code.parse().unwrap(),
            ..Message::default()
        });
    }
    let identity = [
        ("X-User-Id", "user_standin"),
        ("X-Session-Id", "sess_standin"),
    ];
    Some(Message {
        status: 200,
        headers: identity.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec(),
        ..Message::default()
    })
}

/// The same token with one character of its secret changed: well-formed, not a session.
fn tampered(token: &str) -> String {
    let mut t = token.to_owned();
    let last = t.pop().unwrap();
    t.push(if last == 'A' { 'B' } else { 'A' });
    t
}

fn assert_unauthorized(res: &Message, what: &str) {
    assert_eq!(res.status, 401, "{what}: {res:?}");
    assert_eq!(
        res.one("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    assert!(res.one("x-user-id").is_none(), "{what}");
}

fn assert_unavailable(res: &Message, what: &str) {
    assert_eq!(res.status, 503, "{what}: {res:?}");
    assert_eq!(
        res.one("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(res.one("retry-after"), Some("1"), "{what}");
    assert!(
        res.text().contains(r#""status":503"#),
        "{what}: {}",
        res.text()
    );
}

// ---------------------------------------------------------------------------------------------

#[test]
fn s05_d08_gateway_passes_identity_and_strips_forged_headers() {
    let dir = tempfile::tempdir().unwrap();
    let sessiond = Sessiond::start(dir.path());
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), sessiond.port(), app.port());
    let (token, session_id) = sessiond.create("user_alice");
    let bearer = format!("Bearer {token}");

    // (a) Bearer: the app gets the identity sessiond answered, and the request as it was sent.
    let res = nginx.get("/orders?page=2", &[("Authorization", &bearer)]);
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(app.hits(), 1);
    let seen = app.last();
    assert_eq!(seen.target, "/orders?page=2");
    assert_eq!(seen.one("x-user-id"), Some("user_alice"));
    assert_eq!(seen.one("x-session-id"), Some(session_id.as_str()));
    assert!(
        res.text().contains(r#"X-User-Id: ["user_alice"]"#),
        "{}",
        res.text()
    );
    // The token is a credential the app does not need: it is not passed on.
    assert_eq!(seen.one("authorization"), None);

    // (a) The browser's way: the session cookie, among the app's own cookies, which pass on.
    let cookie = format!("theme=dark; __Host-sid={token}; lang=en");
    let res = nginx.get("/", &[("Cookie", &cookie)]);
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(app.hits(), 2);
    let seen = app.last();
    assert_eq!(seen.one("x-user-id"), Some("user_alice"));
    assert_eq!(seen.one("x-session-id"), Some(session_id.as_str()));
    assert_eq!(seen.one("cookie"), Some("theme=dark; lang=en"));
    // Both names at once: `__Host-sid` decides, and no session cookie reaches the app.
    let cookie = format!("__Host-sid={token}; sid={token}");
    let res = nginx.get("/", &[("Cookie", &cookie)]);
    assert_eq!(res.status, 200, "{cookie}: {res:?}");
    let seen = app.last();
    assert_eq!(seen.one("x-user-id"), Some("user_alice"));
    assert_eq!(seen.one("cookie"), None, "{cookie}");
    // The legacy `sid` cookie alone is no credential by default (any subdomain can plant it).
    let res = nginx.get("/", &[("Cookie", &format!("sid={token}"))]);
    assert_eq!(res.status, 401, "{res:?}");
    assert_eq!(app.hits(), 3);

    // (b) D8: forged identity headers, in every spelling, next to a valid token. The app sees
    // only sessiond's answer, once; none of the forged values reach it.
    let forged: &[(&str, &str)] = &[
        ("X-User-Id", "admin"),
        ("x-user-id", "root"),
        ("X-USER-ID", "admin"),
        ("X-Session-Id", "sess_forged"),
        ("X_User_Id", "admin"),
        ("X-Forwarded-User", "admin"),
        ("X-Remote-User", "admin"),
        ("Remote-User", "admin"),
        ("X-Auth-Request-User", "admin"),
        ("X-Authenticated-Userid", "admin"),
        ("X-Forwarded-For", "10.6.6.6"),
        ("Forwarded", "for=10.6.6.6"),
    ];
    let mut headers = forged.to_vec();
    headers.push(("Authorization", &bearer));
    let res = nginx.get("/admin", &headers);
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(app.hits(), 4);
    let seen = app.last();
    assert_eq!(seen.all("x-user-id"), ["user_alice"]);
    assert_eq!(seen.all("x-session-id"), [session_id.as_str()]);
    assert_eq!(seen.one("x-forwarded-for"), Some("127.0.0.1"));
    for (name, value) in &seen.headers {
        assert!(
            !["admin", "root", "sess_forged", "for=10.6.6.6", "10.6.6.6"].contains(&value.as_str()),
            "a forged header reached the app: {name}: {value}"
        );
        assert!(
            !name.contains('_'),
            "a header with an underscore reached the app: {name}"
        );
    }
    assert!(
        res.text().contains(r#"X-User-Id: ["user_alice"]"#),
        "{}",
        res.text()
    );

    // (b) The same forged headers without a token, or with a token that is not a session:
    // 401, and the app is never reached.
    let wrong = format!("Bearer {}", tampered(&token));
    let garbage = "Bearer not-a-token";
    for credential in [None, Some(wrong.as_str()), Some(garbage)] {
        let mut headers = forged.to_vec();
        if let Some(c) = credential {
            headers.push(("Authorization", c));
        }
        let res = nginx.get("/admin", &headers);
        assert_unauthorized(
            &res,
            &format!("forged headers with credential {credential:?}"),
        );
    }
    let res = nginx.get(
        "/",
        &[("Cookie", &format!("__Host-sid={}", tampered(&token)))],
    );
    assert_unauthorized(&res, "a tampered cookie");
    assert_eq!(
        app.hits(),
        4,
        "a request without a live session reached the app"
    );

    // The auth subrequest's location is internal: its answer (with the identity headers) is
    // never served to a client.
    let res = nginx.get("/_sessiond_auth", &[("Authorization", &bearer)]);
    assert_eq!(res.status, 404, "{res:?}");
    assert!(res.one("x-user-id").is_none());
    assert_eq!(app.hits(), 4);

    // The app's own errors pass through untouched: only auth failures become 503.
    let res = nginx.get("/app-error", &[("Authorization", &bearer)]);
    assert_eq!(res.status, 500, "{res:?}");
    assert_eq!(app.hits(), 5);
}

#[test]
fn s05_s09_gateway_refuses_revoked_and_rotated_away_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let sessiond = Sessiond::start(dir.path());
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), sessiond.port(), app.port());

    // (c) Logout: the next request through the gateway is refused, by bearer and by cookie.
    let (token, _) = sessiond.create("user_bob");
    let bearer = format!("Bearer {token}");
    assert_eq!(nginx.get("/", &[("Authorization", &bearer)]).status, 200);
    assert_eq!(app.hits(), 1);
    let res = request(
        &sessiond.addr,
        "DELETE",
        "/v1/session",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(res.status, 204, "{res:?}");
    assert_unauthorized(
        &nginx.get("/", &[("Authorization", &bearer)]),
        "a logged-out token",
    );
    let cookie = format!("__Host-sid={token}");
    assert_unauthorized(
        &nginx.get("/", &[("Cookie", &cookie)]),
        "a logged-out cookie",
    );
    assert_eq!(app.hits(), 1, "a logged-out token reached the app");

    // Rotation: the old token dies at once, the new one carries the same session.
    let (token, session_id) = sessiond.create("user_bob");
    let res = request(
        &sessiond.addr,
        "POST",
        "/v1/session/rotate",
        &[("Authorization", &format!("Bearer {token}"))],
        "",
    );
    assert_eq!(res.status, 200, "{res:?}");
    let doc: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    let rotated = doc["token"].as_str().unwrap();
    assert_unauthorized(
        &nginx.get("/", &[("Authorization", &format!("Bearer {token}"))]),
        "a rotated-away token",
    );
    assert_eq!(app.hits(), 1);
    assert_eq!(
        nginx
            .get("/", &[("Authorization", &format!("Bearer {rotated}"))])
            .status,
        200
    );
    assert_eq!(app.hits(), 2);
    assert_eq!(app.last().one("x-session-id"), Some(session_id.as_str()));

    // Revoke-all (password change, account lock): refused at once.
    let res = request(
        &sessiond.addr,
        "DELETE",
        "/v1/users/user_bob/sessions",
        &[("X-Api-Key", KEY)],
        "",
    );
    assert_eq!(res.status, 200, "{res:?}");
    assert_unauthorized(
        &nginx.get("/", &[("Authorization", &format!("Bearer {rotated}"))]),
        "a token of a user whose sessions were all revoked",
    );
    assert_eq!(app.hits(), 2);
}

#[test]
fn s16_gateway_never_takes_a_token_from_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let sessiond = Sessiond::start(dir.path());
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), sessiond.port(), app.port());
    let (token, _) = sessiond.create("user_carol");
    assert_eq!(
        nginx
            .get("/", &[("Authorization", &format!("Bearer {token}"))])
            .status,
        200
    );
    assert_eq!(app.hits(), 1);

    // (d) A valid token anywhere in the URL, and no header or cookie: 401, the app not reached.
    for target in [
        format!("/?token={token}"),
        format!("/?access_token={token}"),
        format!("/?sid={token}"),
        format!("/?__Host-sid={token}"),
        format!("/account;sid={token}"),
    ] {
        assert_unauthorized(&nginx.get(&target, &[]), &target);
    }
    // The subrequest's own location is internal, query string or not.
    let res = nginx.get(&format!("/_sessiond_auth?token={token}"), &[]);
    assert_eq!(res.status, 404, "{res:?}");
    assert!(res.one("x-user-id").is_none());
    assert_eq!(app.hits(), 1, "a token in the URL opened the gateway");
}

#[test]
fn s16_d08_gateway_sends_sessiond_only_the_credential() {
    // A stand-in for sessiond records exactly what nginx's subrequest carries.
    let dir = tempfile::tempdir().unwrap();
    let auth = Recorder::start(standin_sessiond);
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), auth.port(), app.port());

    let headers = [
        ("Authorization", "Bearer sess_x.y"),
        ("Cookie", "theme=dark; __Host-sid=sess_x.y"),
        ("X-User-Id", "admin"),
        ("X-Original-URI", "/forged"),
        ("X-Real-IP", "10.6.6.6"),
        ("Content-Type", "application/json"),
    ];
    let res = request(
        &nginx.addr,
        "POST",
        "/orders/7?token=abc&x=1",
        &headers,
        r#"{"qty": 2}"#,
    );
    assert_eq!(res.status, 200, "{res:?}");

    // Always `GET /v1/auth`: not the client's method, path or query string (S16), no body.
    assert_eq!(auth.hits(), 1);
    let check = auth.last();
    assert_eq!(
        (check.method.as_str(), check.target.as_str()),
        ("GET", "/v1/auth")
    );
    assert!(check.body.is_empty());
    assert!(
        matches!(check.one("content-length"), None | Some("0")),
        "{check:?}"
    );
    assert_eq!(check.one("authorization"), Some("Bearer sess_x.y"));
    assert_eq!(check.one("cookie"), Some("theme=dark; __Host-sid=sess_x.y"));
    // The client's address as nginx saw it (never the client's own claim), and its user
    // agent, for the guard and the binding check.
    assert_eq!(check.one("x-real-ip"), Some("127.0.0.1"));
    // Nothing else of the client's: its forged identity never even reaches sessiond.
    for (name, _) in &check.headers {
        assert!(
            [
                "host",
                "authorization",
                "cookie",
                "content-length",
                "x-real-ip",
                "user-agent"
            ]
            .contains(&name.to_ascii_lowercase().as_str()),
            "the auth subrequest carried {name}: {check:?}"
        );
    }

    // The app gets the request itself, with the identity of sessiond's answer.
    assert_eq!(app.hits(), 1);
    let seen = app.last();
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        ("POST", "/orders/7?token=abc&x=1")
    );
    assert_eq!(seen.body, br#"{"qty": 2}"#);
    assert_eq!(seen.all("x-user-id"), ["user_standin"]);
    assert_eq!(seen.all("x-session-id"), ["sess_standin"]);
}

#[test]
fn s21_gateway_fails_closed_when_sessiond_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut sessiond = Sessiond::start(dir.path());
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), sessiond.port(), app.port());
    let (token, _) = sessiond.create("user_dave");
    let bearer = format!("Bearer {token}");
    let cookie = format!("__Host-sid={token}");
    // Also leaves a kept-alive connection from nginx to sessiond.
    assert_eq!(nginx.get("/", &[("Authorization", &bearer)]).status, 200);
    assert_eq!(app.hits(), 1);

    // Hung (SIGSTOP: a frozen VM, a long pause): 503 once the 2 s read timeout passes.
    sessiond.signal("-STOP");
    let started = Instant::now();
    let res = nginx.get("/", &[("Authorization", &bearer)]);
    let waited = started.elapsed();
    sessiond.signal("-CONT");
    assert_unavailable(&res, "sessiond hung");
    assert!(
        waited < Duration::from_secs(4),
        "a hung sessiond held the client {waited:?}"
    );
    assert_eq!(app.hits(), 1, "the app was reached while sessiond hung");
    // Back: served again.
    assert_eq!(nginx.get("/", &[("Authorization", &bearer)]).status, 200);
    assert_eq!(app.hits(), 2);

    // (e) Down: every request gets 503 from nginx, at once, and the app is never reached.
    sessiond.child.kill().unwrap();
    sessiond.child.wait().unwrap();
    for headers in [
        vec![("Authorization", bearer.as_str())],
        vec![("Cookie", cookie.as_str())],
        vec![
            ("Authorization", bearer.as_str()),
            ("X-User-Id", "user_dave"),
        ],
        vec![],
    ] {
        let started = Instant::now();
        let res = nginx.get("/", &headers);
        assert_unavailable(&res, &format!("sessiond down, {headers:?}"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(app.hits(), 2, "the app was reached while sessiond was down");
}

#[test]
fn s21_gateway_answers_503_for_every_sessiond_answer_but_200_and_401() {
    let dir = tempfile::tempdir().unwrap();
    let auth = Recorder::start(standin_sessiond);
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), auth.port(), app.port());

    // sessiond's own fail-closed answer (store down) and everything it never sends.
    for status in [503, 500, 502, 504, 400, 404, 405, 302] {
        let res = nginx.get(
            "/",
            &[("Authorization", &format!("Bearer status-{status}"))],
        );
        assert_unavailable(&res, &format!("sessiond answered {status}"));
    }
    assert_unauthorized(
        &nginx.get("/", &[("Authorization", "Bearer status-401")]),
        "401",
    );

    // No answer at all: 503 after the 2 s read timeout, not nginx's default 60 s.
    let started = Instant::now();
    let res = nginx.get("/", &[("Authorization", "Bearer hang")]);
    assert_unavailable(&res, "sessiond never answered");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    assert_eq!(
        app.hits(),
        0,
        "the app was reached without a 200 from sessiond"
    );
}

/// A control byte in the credential (`Authorization: Bearer \x7f`, a cookie holding one) is
/// no token: through the gateway it is a 401 like any other, never the 503 that sessiond's
/// HTTP parser refusing the header (its own 400, which auth_request turns into an error)
/// would give. Also with a valid token beside it in the cookie: a header sessiond cannot read
/// carries nothing for it.
#[test]
fn s05_a_control_byte_in_a_credential_is_401_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let sessiond = Sessiond::start(dir.path());
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), sessiond.port(), app.port());
    let (token, _) = sessiond.create("user_dan");
    for (name, value) in [
        ("Authorization", "Bearer \u{7f}".to_owned()),
        ("Authorization", format!("Bearer {token}\u{1}")),
        ("Cookie", "lang=\u{7f}".to_owned()),
        ("Cookie", format!("lang=\u{1b}; __Host-sid={token}")),
    ] {
        let res = nginx.get("/", &[(name, &value)]);
        assert_unauthorized(&res, &format!("{name}: {value:?}"));
    }
    assert_eq!(app.hits(), 0, "the app is never reached");
    // The same token, readable, still passes.
    let res = nginx.get("/", &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(res.status, 200, "{res:?}");
}

/// Behind the gateway, a request with both `Content-Length` and `Transfer-Encoding` (D12) is
/// refused with `400` before it reaches sessiond or the app: nginx refuses it itself. (Sent
/// straight to sessiond, hyper reads it by `Transfer-Encoding` and closes the connection after
/// the answer, RFC 9112's other option:
/// `api/bad_input.rs::d12_ambiguous_message_framing_is_refused_or_ends_the_connection`.)
#[test]
fn d12_content_length_with_transfer_encoding_is_400_at_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let sessiond = Sessiond::start(dir.path());
    let app = Recorder::start(echo_identity);
    let nginx = Nginx::start(dir.path(), sessiond.port(), app.port());
    let (token, _) = sessiond.create("user_erin");
    let mut stream = TcpStream::connect(&nginx.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let chunked = format!("{:x}\r\n{smuggled}\r\n0\r\n\r\n", smuggled.len());
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: app.test\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(chunked.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let res = parse_response(&raw);
    assert_eq!(res.status, 400, "{res:?}");
    assert_eq!(app.hits(), 0, "neither request reached the app");
}
