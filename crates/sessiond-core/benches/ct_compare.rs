//! D15: the token comparison shows no timing signal.
//!
//! A dudect test (Reparaz, Balasch, Verbauwhede, "Dude, is my code constant time?", 2017)
//! through the `dudect-bencher` crate: each benchmark times one operation on inputs of two
//! classes, interleaved at random, and Welch's t-test compares the two timing distributions
//! (whole, and cropped at 100 percentiles). `max t` is the largest |t| of those tests; below
//! 4.5 there is no evidence of a leak, and a leak shows as a t that keeps growing with the
//! number of samples.
//!
//! - `ct_matches_equal_vs_first_byte`: `SecretHash::ct_matches` of the stored hash with an
//!   equal one (left) against one that differs in its first byte (right), the case an
//!   early-exit comparison answers fastest.
//! - `ct_matches_equal_vs_random`: the same against a random hash.
//! - `verify_right_token_vs_wrong_token`: `SecretHash::verify(&Token)`, exactly what
//!   `Sessions::authenticate` calls: the record's hash against the presented token, right
//!   secret (left) or another secret for the same session id (right).
//! - `x_control_leaky_eq_equal_vs_first_byte`: a deliberately leaky comparison, byte by byte
//!   with early exit, on the same inputs as the first one: it must show a large t on the
//!   machine, or the machine and the run are too noisy to say anything about the others.
//! - `y_plain_slice_eq_equal_vs_first_byte`: for information, plain `==` on the slices.
//!
//! Run with `cargo bench -p sessiond-core --bench ct_compare -- [--seconds N] [--filter NAME]
//! [--continuous NAME] [--out FILE]` (docs/testing-security.md). `--seconds` bounds each
//! benchmark (default 20); with `--continuous` one benchmark prints its running t after every
//! batch of 100,000 samples and stops after N seconds. Under `cargo test --all-targets` (no
//! `--bench` argument) it does one batch each only, so the workspace's tests stay quick.

use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dudect_bencher::ctbench::{BenchMetadata, BenchName, BenchOpts, run_benches_console};
use dudect_bencher::rand::{Rng, RngExt};
use dudect_bencher::{BenchRng, Class, CtRunner};
use sessiond_core::{SecretHash, Token};

/// Samples per batch (one call of a benchmark function in continuous mode).
const BATCH: usize = 100_000;
/// At most this many samples per benchmark in one run (8 bytes each).
const MAX_SAMPLES: usize = 40_000_000;
/// Distinct stored values per batch: a fixed secret per batch, as dudect's fix-vs-fix
/// classes, but several batches see several secrets.
const POOL: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Time budget of each benchmark.
    budget: Duration,
    /// Continuous mode: one batch per call, exit when the budget is spent.
    continuous: bool,
    /// Not run by `cargo bench`: a quick smoke run.
    smoke: bool,
    started: Instant,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> Settings {
    *SETTINGS.get_or_init(|| Settings {
        budget: Duration::from_secs(20),
        continuous: false,
        smoke: true,
        started: Instant::now(),
    })
}

fn random_hash(rng: &mut BenchRng) -> SecretHash {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    SecretHash::from_bytes(b)
}

/// A token for session `sess_AAAAAAAAAAAAAAAA` with a random secret.
fn random_token(rng: &mut BenchRng) -> Token {
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let text = format!("sess_AAAAAAAAAAAAAAAA.{}", URL_SAFE_NO_PAD.encode(secret));
    match Token::parse(&text) {
        Ok(t) => t,
        Err(_) => unreachable!("a well-formed token"),
    }
}

/// Runs batches of `BATCH` samples: for each sample a class at random, the input `make`
/// builds for that class out of a pool regenerated every batch, then `op` timed on it. In
/// continuous mode one batch per call; otherwise batches until the budget is spent.
fn measure<P, I>(
    runner: &mut CtRunner,
    rng: &mut BenchRng,
    pool: impl Fn(&mut BenchRng) -> P,
    make: impl Fn(&P, Class, &mut BenchRng) -> I,
    op: impl Fn(&P, &I) -> bool,
) {
    let s = settings();
    if s.continuous && s.started.elapsed() >= s.budget {
        println!("stopped after {:.0} s", s.started.elapsed().as_secs_f64());
        std::process::exit(0);
    }
    let start = Instant::now();
    // Continuous mode and the smoke run: one batch per call.
    let batches = if s.continuous || s.smoke {
        1
    } else {
        MAX_SAMPLES / BATCH
    };
    for _ in 0..batches {
        let pools: Vec<P> = (0..POOL).map(|_| pool(&mut *rng)).collect();
        let mut inputs = Vec::with_capacity(BATCH);
        for _ in 0..BATCH {
            let class = if rng.random::<bool>() {
                Class::Left
            } else {
                Class::Right
            };
            let which = rng.random_range(0..POOL);
            let input = make(&pools[which], class, &mut *rng);
            inputs.push((class, which, input));
        }
        for (class, which, input) in &inputs {
            let p = &pools[*which];
            runner.run_one(*class, || op(black_box(p), black_box(input)));
        }
        if !s.continuous && start.elapsed() >= s.budget {
            break;
        }
    }
}

/// Left: a copy of the stored hash. Right: the stored hash with its first byte changed.
fn equal_or_first_byte(stored: &SecretHash, class: Class, rng: &mut BenchRng) -> SecretHash {
    let mut b = *stored.as_bytes();
    if let Class::Right = class {
        b[0] ^= rng.random_range(1..=255u8);
    }
    SecretHash::from_bytes(b)
}

fn ct_matches_equal_vs_first_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    measure(
        runner,
        rng,
        random_hash,
        equal_or_first_byte,
        |stored, presented| stored.ct_matches(presented),
    );
}

fn ct_matches_equal_vs_random(runner: &mut CtRunner, rng: &mut BenchRng) {
    measure(
        runner,
        rng,
        random_hash,
        |stored, class, rng| match class {
            Class::Left => stored.clone(),
            Class::Right => random_hash(rng),
        },
        |stored, presented| stored.ct_matches(presented),
    );
}

fn verify_right_token_vs_wrong_token(runner: &mut CtRunner, rng: &mut BenchRng) {
    measure(
        runner,
        rng,
        |rng| {
            let right = random_token(rng);
            let wrong = random_token(rng);
            (right.secret_hash(), right, wrong)
        },
        |(_, right, wrong), class, _| match class {
            Class::Left => right.clone(),
            Class::Right => wrong.clone(),
        },
        |(stored, _, _), presented| stored.verify(presented),
    );
}

/// What D15 rules out: a byte-by-byte comparison that stops at the first difference. Each
/// byte goes through `black_box`, so the optimiser cannot turn the loop into wide compares
/// and the early exit stays in the machine code.
fn leaky_eq(a: &SecretHash, b: &SecretHash) -> bool {
    for (x, y) in a.as_bytes().iter().zip(b.as_bytes()) {
        if black_box(*x) != black_box(*y) {
            return false;
        }
    }
    true
}

fn x_control_leaky_eq_equal_vs_first_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    measure(runner, rng, random_hash, equal_or_first_byte, leaky_eq);
}

/// Not a control, for information: plain `==` on the two 32-byte slices. Nothing promises
/// that this is constant time (it is a `memcmp`-like compare the optimiser may shape as it
/// likes), which is why the token comparison uses `subtle`.
fn y_plain_slice_eq_equal_vs_first_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    measure(runner, rng, random_hash, equal_or_first_byte, |a, b| {
        a.as_bytes()[..] == b.as_bytes()[..]
    });
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut opts = BenchOpts::default();
    let mut budget = Duration::from_secs(20);
    let mut smoke = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // What `cargo bench` passes; `cargo test --all-targets` does not.
            "--bench" => smoke = false,
            "--seconds" => {
                budget = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .map_or(budget, Duration::from_secs_f64);
            }
            "--filter" => opts.filter = args.next(),
            "--continuous" => {
                opts.continuous = true;
                opts.filter = args.next();
            }
            "--out" => opts.file_out = args.next().map(Into::into),
            other => {
                eprintln!(
                    "ct_compare: unknown argument {other:?}; use --seconds N, --filter NAME, \
                     --continuous NAME, --out FILE"
                );
                std::process::exit(2);
            }
        }
    }
    let _ = SETTINGS.set(Settings {
        budget,
        continuous: opts.continuous,
        smoke,
        started: Instant::now(),
    });
    if smoke {
        println!("ct_compare: smoke run (one batch each); `cargo bench` runs the real test");
    }
    let benches = vec![
        BenchMetadata {
            name: BenchName("ct_matches_equal_vs_first_byte"),
            seed: None,
            benchfn: ct_matches_equal_vs_first_byte,
        },
        BenchMetadata {
            name: BenchName("ct_matches_equal_vs_random"),
            seed: None,
            benchfn: ct_matches_equal_vs_random,
        },
        BenchMetadata {
            name: BenchName("verify_right_token_vs_wrong_token"),
            seed: None,
            benchfn: verify_right_token_vs_wrong_token,
        },
        BenchMetadata {
            name: BenchName("x_control_leaky_eq_equal_vs_first_byte"),
            seed: None,
            benchfn: x_control_leaky_eq_equal_vs_first_byte,
        },
        BenchMetadata {
            name: BenchName("y_plain_slice_eq_equal_vs_first_byte"),
            seed: None,
            benchfn: y_plain_slice_eq_equal_vs_first_byte,
        },
    ];
    if let Err(e) = run_benches_console(opts, benches) {
        eprintln!("ct_compare: {e}");
        std::process::exit(1);
    }
}
