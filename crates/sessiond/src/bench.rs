//! `sessiond bench`: a load generator for a running sessiond, the way `redis-benchmark` comes
//! with Redis.
//!
//! It creates sessions first, then drives a mix of validations (`GET /v1/auth`), creates
//! (`POST /v1/sessions`) and patches (`PATCH /v1/session`) over keep-alive HTTP/1.1
//! connections, either as fast as they go (closed loop) or at a fixed total rate (open loop).
//! In open loop every request has an intended send time. When the server's slowness held a
//! request back (the connection was still busy at that time), its latency is counted from the
//! intended time, so a stall is charged for every request it delayed (no coordinated
//! omission); otherwise from the actual send. Latencies go into an HDR histogram.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Options of `sessiond bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct Opts {
    /// Base URL of the sessiond to drive (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:7480", value_name = "URL")]
    url: String,
    /// Backend API key, to create sessions (also `SESSIOND_BENCH_API_KEY`).
    #[arg(
        long,
        env = "SESSIOND_BENCH_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: String,
    /// The workload: weights of `validate`, `create` and `patch`, e.g.
    /// `validate=90,create=5,patch=5`.
    #[arg(long, default_value = "validate=1", value_name = "WEIGHTS")]
    mix: Mix,
    /// Sessions created before the run; validations and patches use them in turn.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    sessions: usize,
    /// Concurrent connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 32, value_name = "C")]
    connections: usize,
    /// How long to run, in seconds.
    #[arg(long, short = 'd', default_value_t = 10.0, value_name = "SECONDS")]
    duration: f64,
    /// Stop after this many requests, if that comes before `--duration`.
    #[arg(long, short = 'n', value_name = "COUNT")]
    requests: Option<u64>,
    /// Open loop: this many requests per second in all, latency measured from each request's
    /// intended send time. Without it, closed loop: as fast as the connections go.
    #[arg(long, short = 'r', value_name = "PER_SECOND")]
    rate: Option<f64>,
    /// Per-request timeout, in seconds; a request past it counts as a `timeout` error.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    timeout: f64,
    /// Carry sessions in this cookie instead of `Authorization: Bearer`: the token is taken
    /// from the create answer's `Set-Cookie` and sent back as `Cookie: NAME=...`. For servers
    /// that speak cookies only, such as the peers `bench/compare` measures.
    #[arg(long, value_name = "NAME")]
    cookie: Option<String>,
    /// Reuse sessions across runs: read their tokens from this file (one per line) instead of
    /// creating them, or, when it does not exist, create them and write it (mode 0600: the
    /// tokens are live credentials). Lets a script create once, then measure validations
    /// alone, e.g. counting the store's commands without the creates in them.
    #[arg(long, value_name = "PATH")]
    tokens_file: Option<std::path::PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// An operation of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Validate,
    Create,
    Patch,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Validate => "validate",
            Op::Create => "create",
            Op::Patch => "patch",
        }
    }
}

/// Weights of the operations.
#[derive(Debug, Clone)]
pub(crate) struct Mix(Vec<(Op, u32)>);

impl FromStr for Mix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').unwrap_or((part, "1"));
            let op = match name.trim() {
                "validate" => Op::Validate,
                "create" => Op::Create,
                "patch" => Op::Patch,
                other => {
                    return Err(format!(
                        "unknown operation `{other}`: use validate, create, patch"
                    ));
                }
            };
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            if weight > 0 {
                weights.push((op, weight));
            }
        }
        if weights.is_empty() {
            return Err("the mix needs at least one operation with a weight above 0".into());
        }
        Ok(Mix(weights))
    }
}

impl Mix {
    fn pick(&self, roll: u64) -> Op {
        let total: u64 = self.0.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut at = roll % total.max(1);
        for (op, w) in &self.0 {
            if at < u64::from(*w) {
                return *op;
            }
            at -= u64::from(*w);
        }
        self.0[0].0
    }

    fn needs_sessions(&self) -> bool {
        self.0.iter().any(|(op, _)| *op != Op::Create)
    }
}

/// What the run was asked to do, shared by every connection.
struct Plan {
    addr: SocketAddr,
    host: String,
    api_key: String,
    mix: Mix,
    tokens: Vec<String>,
    /// The cookie sessions travel in, if not a bearer token.
    cookie: Option<String>,
    start: Instant,
    end: Instant,
    /// Requests left to send, if counted.
    budget: Option<AtomicU64>,
    /// Users created so far: each create is a new user (`user_1`, `user_2`, ...), shaped like
    /// the seed's `user_12345`, so stored sizes are those of real one-session-per-user data.
    users: AtomicU64,
    /// Time between two requests of one connection, in open loop.
    interval: Option<Duration>,
    connections: usize,
    timeout: Duration,
}

/// What one connection measured.
struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    per_op: BTreeMap<Op, (u64, u64)>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            ok: 0,
            errors: BTreeMap::new(),
            per_op: BTreeMap::new(),
        })
    }

    fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, (n, e)) in other.per_op {
            let entry = self.per_op.entry(k).or_default();
            entry.0 += n;
            entry.1 += e;
        }
        Ok(())
    }
}

/// The report, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    url: String,
    mix: BTreeMap<&'static str, u32>,
    mode: &'static str,
    target_rate: Option<f64>,
    connections: usize,
    duration_s: f64,
    requests: u64,
    ok: u64,
    rps: f64,
    errors: BTreeMap<String, u64>,
    latency_ms: Latency,
    operations: BTreeMap<&'static str, OpReport>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    #[serde(rename = "p99.9")]
    p99_9: f64,
    max: f64,
    mean: f64,
}

#[derive(Debug, Serialize)]
struct OpReport {
    requests: u64,
    errors: u64,
}

/// A finite number above zero (NaN and infinities are not).
fn positive(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

pub(crate) fn run(opts: &Opts) -> anyhow::Result<()> {
    if opts.connections == 0 || !positive(opts.duration) || !positive(opts.timeout) {
        bail!("--connections, --duration and --timeout must be greater than zero");
    }
    if opts.rate.is_some_and(|r| !positive(r)) {
        bail!("--rate must be greater than zero");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(bench(opts))?;
    if opts.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn bench(opts: &Opts) -> anyhow::Result<Report> {
    let uri: hyper::Uri = opts
        .url
        .parse()
        .with_context(|| format!("--url {}", opts.url))?;
    if uri.scheme_str() != Some("http") {
        bail!("--url must be an http:// URL");
    }
    let host = uri.host().context("--url needs a host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let host_header = format!("{host}:{port}");
    let timeout = Duration::from_secs_f64(opts.timeout);

    let saved = match &opts.tokens_file {
        Some(path) if path.exists() => Some(read_tokens(path)?),
        _ => None,
    };
    let tokens = match saved {
        Some(tokens) => tokens,
        None if opts.mix.needs_sessions() || opts.tokens_file.is_some() => {
            let tokens = precreate(
                addr,
                &host_header,
                &opts.api_key,
                opts.cookie.as_deref(),
                opts.sessions.max(1),
                opts.connections,
                timeout,
            )
            .await?;
            if let Some(path) = &opts.tokens_file {
                write_tokens(path, &tokens)?;
            }
            tokens
        }
        None => Vec::new(),
    };

    let start = Instant::now() + Duration::from_millis(50);
    let plan = Arc::new(Plan {
        addr,
        host: host_header,
        api_key: opts.api_key.clone(),
        mix: opts.mix.clone(),
        tokens,
        cookie: opts.cookie.clone(),
        start,
        end: start + Duration::from_secs_f64(opts.duration),
        budget: opts.requests.map(AtomicU64::new),
        users: AtomicU64::new(0),
        interval: opts
            .rate
            .map(|r| Duration::from_secs_f64(opts.connections as f64 / r)),
        connections: opts.connections,
        timeout,
    });
    let workers: Vec<_> = (0..opts.connections)
        .map(|i| tokio::spawn(worker(i, plan.clone())))
        .collect();
    let mut total = Tally::new()?;
    for w in workers {
        total.merge(w.await.context("a connection task failed")??)?;
    }
    let elapsed = Instant::now()
        .saturating_duration_since(plan.start)
        .as_secs_f64();
    let h = &total.latency_us;
    let ms = |v: u64| v as f64 / 1000.0;
    let requests = h.len()
        + total
            .errors
            .iter()
            .filter(|(k, _)| !k.starts_with("status"))
            .map(|(_, v)| v)
            .sum::<u64>();
    Ok(Report {
        url: opts.url.clone(),
        mix: opts.mix.0.iter().map(|(op, w)| (op.name(), *w)).collect(),
        mode: if opts.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        target_rate: opts.rate,
        connections: opts.connections,
        duration_s: elapsed,
        requests,
        ok: total.ok,
        rps: requests as f64 / elapsed.max(f64::EPSILON),
        errors: total.errors,
        latency_ms: Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        },
        operations: total
            .per_op
            .iter()
            .map(|(op, (n, e))| {
                (
                    op.name(),
                    OpReport {
                        requests: *n,
                        errors: *e,
                    },
                )
            })
            .collect(),
    })
}

/// Opens one keep-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The browser of the seed's session document, sent by validations and patches as a browser
/// would (sessiond compares it with the login's, S20).
const SEED_USER_AGENT: &str = "Mozilla/5.0";

const SEED_DOCUMENT: &str = r#""userData":{"preferences":{},"cart":{},"permissions":[]},"metadata":{"ipAddress":"192.168.1.100","userAgent":"Mozilla/5.0","loginMethod":"email"}"#;

fn create_request(host: &str, api_key: &str, user: &str) -> anyhow::Result<Request<Full<Bytes>>> {
    let body = format!(r#"{{"userId":"{user}",{SEED_DOCUMENT}}}"#);
    Ok(Request::builder()
        .method(Method::POST)
        .uri("/v1/sessions")
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .header(sessiond_wire::API_KEY_HEADER, api_key)
        .body(Full::new(Bytes::from(body)))?)
}

fn read_tokens(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading tokens from {}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.is_empty() {
        bail!("{} holds no tokens", path.display());
    }
    Ok(tokens)
}

fn write_tokens(path: &std::path::Path, tokens: &[String]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    for t in tokens {
        writeln!(file, "{t}")?;
    }
    Ok(())
}

/// The value of cookie `name` among a response's `Set-Cookie` headers.
fn cookie_value(headers: &hyper::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned())
}

/// Creates the sessions validations and patches will use, over `connections` connections.
async fn precreate(
    addr: SocketAddr,
    host: &str,
    api_key: &str,
    cookie: Option<&str>,
    count: usize,
    connections: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<String>> {
    let per = count.div_ceil(connections.min(count));
    let mut tasks = Vec::new();
    for c in 0..connections.min(count) {
        let (host, api_key) = (host.to_owned(), api_key.to_owned());
        let cookie = cookie.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut tokens = Vec::with_capacity(per);
            for i in 0..per {
                let req = create_request(&host, &api_key, &format!("bench_{c}_{i}"))?;
                sender.ready().await?;
                let res = tokio::time::timeout(timeout, sender.send_request(req))
                    .await
                    .context("creating a session timed out")??;
                let status = res.status();
                let from_cookie = cookie.as_deref().map(|n| cookie_value(res.headers(), n));
                let body = res.into_body().collect().await?.to_bytes();
                if status != hyper::StatusCode::CREATED {
                    bail!(
                        "creating a session answered {status}: check --api-key ({})",
                        String::from_utf8_lossy(&body)
                    );
                }
                let token = match from_cookie {
                    Some(value) => value.context("no such cookie in the create answer")?,
                    // Only the token: the servers measured beside sessiond (bench/compare)
                    // answer with their own shapes around it.
                    None => {
                        let doc: serde_json::Value = serde_json::from_slice(&body)?;
                        doc["token"]
                            .as_str()
                            .context("no token in the create answer")?
                            .to_owned()
                    }
                };
                tokens.push(token);
            }
            anyhow::Ok(tokens)
        }));
    }
    let mut tokens = Vec::with_capacity(count);
    for t in tasks {
        tokens.extend(t.await.context("a create task failed")??);
    }
    tokens.truncate(count);
    Ok(tokens)
}

/// A small, fast, seeded generator: the mix and the session picks need no cryptography.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn worker(index: usize, plan: Arc<Plan>) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut rng =
        XorShift(0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let mut sender = connect(plan.addr).await?;
    // Open loop: connection i sends at start + i/rate + k * interval.
    let offset = plan
        .interval
        .map(|iv| iv / plan.connections as u32 * index as u32);
    let mut k: u32 = 0;
    let mut last_done = plan.start;
    loop {
        let intended = match (plan.interval, offset) {
            (Some(iv), Some(off)) => plan.start + off + iv * k,
            _ => Instant::now().max(plan.start),
        };
        k = k.saturating_add(1);
        if intended >= plan.end {
            break;
        }
        if let Some(budget) = &plan.budget
            && budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break;
        }
        tokio::time::sleep_until(intended).await;
        // Where latency is counted from. If the previous response came after this request's
        // intended time, the server held this request up: count from the intended time (no
        // coordinated omission). If the connection was idle, count from the actual send, so
        // that the timer's own lateness (tokio's timer ticks in milliseconds) is not charged
        // to the server.
        let origin = if last_done > intended {
            intended
        } else {
            Instant::now()
        };
        let op = plan.mix.pick(rng.next());
        let req = build(op, &plan, &mut rng)?;
        let result = async {
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            anyhow::Ok(status)
        };
        let outcome = tokio::time::timeout(plan.timeout, result).await;
        last_done = Instant::now();
        let latency = last_done.saturating_duration_since(origin);
        let entry = tally.per_op.entry(op).or_default();
        entry.0 += 1;
        match outcome {
            Ok(Ok(status)) => {
                let us = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                tally.latency_us.saturating_record(us);
                if status.is_success() {
                    tally.ok += 1;
                } else {
                    entry.1 += 1;
                    *tally
                        .errors
                        .entry(format!("status {}", status.as_u16()))
                        .or_default() += 1;
                }
            }
            Ok(Err(_)) | Err(_) => {
                entry.1 += 1;
                let kind = if outcome.is_err() {
                    "timeout"
                } else {
                    "connection"
                };
                *tally.errors.entry(kind.to_owned()).or_default() += 1;
                // The connection's state is unknown after a failure: start a new one.
                match connect(plan.addr).await {
                    Ok(s) => sender = s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
    Ok(tally)
}

fn build(op: Op, plan: &Plan, rng: &mut XorShift) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut token = || {
        let n = plan.tokens.len().max(1);
        plan.tokens
            .get(usize::try_from(rng.next() % n as u64).unwrap_or(0))
            .cloned()
            .unwrap_or_default()
    };
    let mut credential = || match &plan.cookie {
        Some(name) => (header::COOKIE, format!("{name}={}", token())),
        None => (header::AUTHORIZATION, format!("Bearer {}", token())),
    };
    Ok(match op {
        Op::Validate => {
            let (name, value) = credential();
            Request::builder()
                .method(Method::GET)
                .uri("/v1/auth")
                .header(header::HOST, &plan.host)
                .header(header::USER_AGENT, SEED_USER_AGENT)
                .header(name, value)
                .body(Full::new(Bytes::new()))?
        }
        Op::Create => create_request(
            &plan.host,
            &plan.api_key,
            &format!("user_{}", plan.users.fetch_add(1, Ordering::Relaxed) + 1),
        )?,
        Op::Patch => {
            let (name, value) = credential();
            Request::builder()
                .method(Method::PATCH)
                .uri("/v1/session")
                .header(header::HOST, &plan.host)
                .header(header::USER_AGENT, SEED_USER_AGENT)
                .header(name, value)
                .header(header::CONTENT_TYPE, "application/json")
                // `preferences`: a key the holder may write (`session.holder_writable`).
                .body(Full::new(Bytes::from(format!(
                    r#"{{"userData":{{"preferences":{{"n":{}}}}}}}"#,
                    rng.next() % 1000
                ))))?
        }
    })
}

fn print_table(r: &Report) {
    let mix: Vec<String> = r.mix.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mode = match r.target_rate {
        Some(rate) => format!("open loop at {rate} req/s"),
        None => "closed loop".to_owned(),
    };
    println!(
        "sessiond bench: {} against {}, {} connections, {mode}, {:.1} s",
        mix.join(","),
        r.url,
        r.connections,
        r.duration_s
    );
    println!("requests      {:>10}   ({:.1} req/s)", r.requests, r.rps);
    println!("succeeded     {:>10}", r.ok);
    println!("errors        {:>10}", r.requests - r.ok);
    for (kind, n) in &r.errors {
        println!("  {kind:<18} {n:>8}");
    }
    let l = &r.latency_ms;
    println!(
        "latency (ms)  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
    );
    for (op, o) in &r.operations {
        println!(
            "  {op:<10} {:>10} requests, {} errors",
            o.requests, o.errors
        );
    }
}
