//! `handoff-bench`: the pieces of `make bench` that are easier in Rust than in shell.
//!
//! - `prepare-server2`: a signing key, its JWKS file, and files of pre-minted tokens (valid and
//!   distinct, and each kind of invalid), so minting happens outside the timed window;
//! - `prepare-server1`: key, targets, database, a user and a live session, for the minting load;
//! - `ring`: ring's own Ed25519 verify and sign rates on one thread, the yardsticks;
//! - `load`: open-loop load at a constant rate, for latency;
//! - `steadiness` and `floor`: how steady this core is, and the latency a server with no
//!   overhead at all would see on it;
//! - `least-mint`: a server doing only what no mint can leave out (session look-up, sign, page),
//!   the ceiling SERVER1's mint is measured against;
//! - `replay-memory`: resident memory of the in-memory replay store over a million live entries,
//!   and after they expire.
//!
//! Output that `scripts/bench.py` reads is one JSON object on standard output.
#![forbid(unsafe_code)]
// A command-line tool whose output is its result: printing to stdout is the point here.
#![allow(clippy::print_stdout)]

mod least_mint;
mod load;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::{Parser, Subcommand};
use handoff::{
    Audience, Clock, Issuer, Jti, Jwks, MemoryReplayStore, MintRequest, Minter, Nonce, Operation,
    OperationType, ReplayStore, SigningKey, Subject, SystemClock, Ttl, UnixTime,
};
use ring::rand::SystemRandom;
use ring::signature::{UnparsedPublicKey, ED25519};

#[derive(Parser)]
#[command(name = "handoff-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Key, JWKS and token files for loading SERVER2. The key in `dir` is reused if present, so
    /// SERVER2 can start on the JWKS first: it refuses tokens issued before it started.
    PrepareServer2 {
        #[arg(long)]
        dir: PathBuf,
        /// Only the key and the JWKS file, no tokens.
        #[arg(long)]
        keys_only: bool,
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        audience: String,
        #[arg(long, default_value_t = 200_000)]
        count: usize,
        /// Also this many tokens bound to a browser, in `bound.txt`: `TOKEN NONCE` a line, the
        /// nonce being what that browser's nonce cookie holds (the product's default path).
        #[arg(long, default_value_t = 0)]
        bound_count: usize,
    },
    /// Key, targets, database, user and session for loading SERVER1; prints the session cookie.
    PrepareServer1 {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        audience: String,
        /// SERVER1's database (default: a SQLite file in `dir`).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// ring's Ed25519 verify and sign rates on one thread.
    Ring {
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        #[arg(long, value_enum, default_value = "both")]
        only: RingOp,
        /// Over one message and signature, again and again, instead of 1,024 distinct ones.
        #[arg(long)]
        same_signature: bool,
    },
    /// SERVER2's signature check (`handoff::ed25519`) beside ring's verify on one thread: CPU
    /// time per signature alone and in batches of 2 to 64, over 1,024 distinct signatures.
    Ed25519 {
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
    },
    /// Open-loop load at a constant rate, each token once; prints latency percentiles.
    Load(LoadArgs),
    /// How steady this core's speed is: a fixed piece of work (one Ed25519 verify) counted in
    /// 10 ms windows; prints the windows' rates relative to the median.
    Steadiness {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// The latency floor of this core: `load`'s open-loop schedule with the server replaced by
    /// `work_us` of pure computation per request on one thread, no network; prints the same
    /// percentiles. No server doing that much work per request can beat it here.
    Floor {
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        work_us: f64,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Serves `GET /mint` for the SERVER1 prepared in `dir`: the session look-up, a minted token
    /// and its page, nothing else (see `least_mint.rs`).
    LeastMint {
        #[arg(long)]
        dir: PathBuf,
        /// SERVER1's database (default: the SQLite file in `dir`).
        #[arg(long)]
        database_url: Option<String>,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Resident memory of the replay store with `entries` live entries, and after expiry.
    ReplayMemory {
        #[arg(long, default_value_t = 1_000_000)]
        entries: usize,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The server, e.g. 127.0.0.1:18102.
    #[arg(long)]
    addr: std::net::SocketAddr,
    #[arg(long, default_value = "/handoff")]
    path: String,
    /// One token per line.
    #[arg(long)]
    tokens: PathBuf,
    /// First line to use (1-based).
    #[arg(long, default_value_t = 1)]
    first: usize,
    /// Form POST (`post`) or `GET ?token=` (`get`).
    #[arg(long, default_value = "post")]
    mode: String,
    /// Requests per second offered.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 16)]
    connections: usize,
}

fn main() -> anyhow::Result<()> {
    handoff::crypto::install()?;
    match Cli::parse().command {
        Command::PrepareServer2 { dir, keys_only, issuer, audience, count, bound_count } => {
            prepare_server2(&dir, keys_only, &issuer, &audience, count, bound_count)
        }
        Command::PrepareServer1 { dir, audience, database_url } => {
            prepare_server1(&dir, &audience, database_url.as_deref())
        }
        Command::Ring { seconds, only, same_signature } => {
            ring_rates(Duration::from_secs_f64(seconds), only, same_signature)
        }
        Command::Ed25519 { seconds } => ed25519_rates(Duration::from_secs_f64(seconds)),
        Command::Load(args) => offered_load(&args),
        Command::Steadiness { seconds } => steadiness(Duration::from_secs_f64(seconds)),
        Command::Floor { rate, work_us, seconds } => latency_floor(rate, work_us, seconds),
        Command::LeastMint { dir, database_url, listen } => {
            least_mint::serve(&dir, database_url.as_deref(), listen)
        }
        Command::ReplayMemory { entries } => replay_memory(entries),
    }
}

fn report_op(id: u64) -> anyhow::Result<Operation> {
    let kind = OperationType::parse("report.view")?;
    Ok(Operation::new(kind, [(handoff::ArgName::parse("report_id")?, id.to_string())])?)
}

fn write_lines(path: &Path, lines: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut out =
        BufWriter::new(std::fs::File::create(path).with_context(|| path.display().to_string())?);
    for line in lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

fn prepare_server2(
    dir: &Path,
    keys_only: bool,
    issuer: &str,
    audience: &str,
    count: usize,
    bound_count: usize,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let key_path = dir.join("signing.pk8");
    let key = if key_path.exists() {
        SigningKey::load(&key_path)?
    } else {
        let key = SigningKey::generate()?;
        key.save(&key_path)?;
        key
    };
    let key = Arc::new(key);
    let jwks = serde_json::to_string(&Jwks { keys: vec![key.public_jwk()] })?;
    std::fs::write(dir.join("jwks.json"), jwks)?;
    if keys_only {
        println!("{}", serde_json::json!({ "tokens": 0, "dir": dir }));
        return Ok(());
    }
    let issuer = Issuer::parse(issuer)?;
    let audience = Audience::parse(audience)?;
    let subject = Subject::parse("u_bench")?;
    // The longest lifetime allowed, so the tokens stay valid through the whole run.
    let minter = Minter::new(key.clone(), issuer.clone(), Ttl::from_secs(Ttl::MAX_SECS)?);
    let now = SystemClock.now();
    let mint_bound = |i: usize, at: UnixTime, nonce: Option<&Nonce>| -> anyhow::Result<String> {
        let op = report_op(1 + i as u64 % 999_999)?;
        let request = MintRequest {
            audience: &audience,
            subject: &subject,
            operation: &op,
            sid: None,
            nonce,
            profile: None,
            lifetime: None,
        };
        Ok(minter.mint(&request, at)?.into_string())
    };
    let mint = |i: usize, at: UnixTime| mint_bound(i, at, None);
    let valid: Vec<String> = (0..count).map(|i| mint(i, now)).collect::<anyhow::Result<_>>()?;
    write_lines(&dir.join("valid.txt"), valid.iter().cloned())?;
    let rng = SystemRandom::new();
    let bound = (0..bound_count).map(|i| {
        let nonce = Nonce::generate(&rng)?;
        Ok(format!("{} {}", mint_bound(i, now, Some(&nonce))?, nonce.as_str()))
    });
    write_lines(&dir.join("bound.txt"), bound.collect::<anyhow::Result<Vec<_>>>()?.into_iter())?;
    // A valid token with its signature changed: fails at the signature check.
    let bad_signature = valid.iter().map(|t| {
        let (input, sig) = t.rsplit_once('.').unwrap_or((t, ""));
        let mut raw = URL_SAFE_NO_PAD.decode(sig).unwrap_or_default();
        if let Some(b) = raw.get_mut(7) {
            *b ^= 1;
        }
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(raw))
    });
    write_lines(&dir.join("bad_signature.txt"), bad_signature)?;
    // Expired: minted 20 minutes ago; fails after the signature check, at `exp`.
    let expired = (0..count).map(|i| mint(i, now.minus(1200)));
    write_lines(
        &dir.join("expired.txt"),
        expired.collect::<anyhow::Result<Vec<_>>>()?.into_iter(),
    )?;
    // One valid token over and over: the first use is accepted, every later one is a replay.
    write_lines(&dir.join("replay.txt"), std::iter::once(mint(count, now)?))?;
    // Garbage that fails before the signature: bad shape, wrong typ, unknown kid, oversize.
    let header = |typ: &str, kid: &str| {
        URL_SAFE_NO_PAD.encode(format!(r#"{{"typ":"{typ}","alg":"EdDSA","kid":"{kid}"}}"#))
    };
    let payload = valid[0].split('.').nth(1).unwrap_or_default().to_owned();
    let sig = valid[0].rsplit('.').next().unwrap_or_default().to_owned();
    write_lines(&dir.join("malformed.txt"), std::iter::once("this-is-not-a-token".to_owned()))?;
    write_lines(
        &dir.join("wrong_typ.txt"),
        std::iter::once(format!("{}.{payload}.{sig}", header("JWT", key.kid().as_str()))),
    )?;
    let unknown_kid = URL_SAFE_NO_PAD.encode([7u8; 32]);
    write_lines(
        &dir.join("unknown_kid.txt"),
        std::iter::once(format!("{}.{payload}.{sig}", header("handoff+jwt", &unknown_kid))),
    )?;
    write_lines(&dir.join("oversize.txt"), std::iter::once("A".repeat(9 * 1024)))?;
    println!("{}", serde_json::json!({ "tokens": count, "dir": dir }));
    Ok(())
}

fn prepare_server1(dir: &Path, audience: &str, database_url: Option<&str>) -> anyhow::Result<()> {
    use server1::db::{DatabaseUrl, Db, OpenMode, PoolSettings};
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    SigningKey::generate()?.save(&keys.join("signing.pk8"))?;
    // The mint measured is the token page itself: the partner takes unbound tokens here, so
    // a click on the portal mints at once (the default binding adds a round trip through the
    // partner first, which `cargo bench -p handoff-tests --bench flow` measures).
    let targets = include_str!("../../server1/targets.example.toml")
        .replace("http://localhost:8002", audience)
        .replacen("id = \"partner\"\n", "id = \"partner\"\nbinding = \"none\"\n", 1);
    std::fs::write(dir.join("targets.toml"), targets)?;
    for secret in ["desk.secret", "desk-api.secret"] {
        if !dir.join(secret).exists() {
            handoff::SharedSecret::create(&dir.join(secret))?;
        }
    }
    let sqlite = format!("sqlite://{}", dir.join("server1.sqlite3").display());
    let url = DatabaseUrl::parse(database_url.unwrap_or(&sqlite)).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let session = runtime.block_on(async {
        let pool = PoolSettings { size: 1, timeout: std::time::Duration::from_secs(10) };
        let db = Db::open(&url, OpenMode::CreateIfMissing, pool).await?;
        let hash = server1::passwords::Passwords::new(1)?.hash("bench password, not secret")?;
        let now = SystemClock.now();
        let name = server1::names::UserName::parse("bench")?;
        let role = server1::names::Role::parse("reports")?;
        let new = server1::db::NewUser {
            name: &name,
            password_hash: &hash,
            roles: &[role],
            email: None,
            email_verified: true,
            display_name: None,
        };
        let user = db.add_user(&new, now).await?;
        let session = server1::accounts::random_token().context("randomness")?;
        let hash = server1::accounts::SessionHash::of(&session);
        let meta =
            server1::db::SessionMeta { public_id: "bench".into(), client: None, user_agent: None };
        db.create_session(hash.as_bytes(), &user.id, &meta, now, now.plus(3600)).await?;
        anyhow::Ok(session)
    })?;
    println!("{}", serde_json::json!({ "cookie": format!("__Host-handoff_session={session}") }));
    Ok(())
}

/// Which of ring's operations to time.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RingOp {
    Verify,
    Sign,
    Both,
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc/self/stat")?.parse::<f64>()?)
    };
    // utime and stime, fields 14 and 15 of the whole line; USER_HZ is 100 on Linux.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// The unit of work the yardstick and the steadiness probe count: one Ed25519 verify (or sign)
/// with ring, over a message as long as a handoff token's signing input.
///
/// The server never sees the same token twice, so the probe cycles through 1,024 distinct
/// messages and signatures. Verifying one signature over and over runs about 5% faster on this
/// machine: ring's verify branches on the signature's scalars, and a loop over one signature
/// teaches the branch predictor that one pattern (`ring --same-signature` shows it).
struct Probe {
    key: SigningKey,
    public: Vec<u8>,
    messages: Vec<[u8; 440]>,
    signatures: Vec<ring::signature::Signature>,
    next: std::cell::Cell<usize>,
}

impl Probe {
    const DISTINCT: usize = 1024;

    fn new(distinct: usize) -> anyhow::Result<Self> {
        let key = SigningKey::generate()?;
        let public = key.public_key_bytes().to_vec();
        let messages: Vec<[u8; 440]> = (0..distinct.max(1))
            .map(|i| {
                let mut message = [b'e'; 440];
                message[..8].copy_from_slice(&(i as u64).to_le_bytes());
                message
            })
            .collect();
        let signatures = messages.iter().map(|m| key.sign(m)).collect();
        Ok(Self { key, public, messages, signatures, next: std::cell::Cell::new(0) })
    }

    /// The next message and its signature, in turn.
    fn pick(&self) -> (&[u8; 440], &ring::signature::Signature) {
        let i = self.next.get();
        self.next.set((i + 1) % self.messages.len());
        (&self.messages[i], &self.signatures[i])
    }

    fn verify(&self) -> bool {
        let (message, signature) = self.pick();
        let key = UnparsedPublicKey::new(&ED25519, &self.public);
        key.verify(message, signature.as_ref()).is_ok()
    }

    fn sign(&self) -> bool {
        let (message, _) = self.pick();
        self.key.sign(message).as_ref().len() == 64
    }
}

/// ring's Ed25519 rates on one thread, over a message as long as a handoff token's signing
/// input. Each rate is given per second of wall time and per second of this process's CPU
/// time: run beside a server on the same core, the second is the yardstick that saw the same
/// machine as the server did.
fn ring_rates(window: Duration, op: RingOp, same_signature: bool) -> anyhow::Result<()> {
    let probe = Probe::new(if same_signature { 1 } else { Probe::DISTINCT })?;
    let rate = |f: &dyn Fn() -> bool| -> anyhow::Result<(f64, f64)> {
        let started = Instant::now();
        let cpu_before = cpu_seconds()?;
        let mut n = 0u64;
        while started.elapsed() < window {
            for _ in 0..64 {
                if !f() {
                    bail!("the yardstick itself failed");
                }
            }
            n += 64;
        }
        let cpu = cpu_seconds()? - cpu_before;
        let per_cpu = if cpu > 0.0 { n as f64 / cpu } else { 0.0 };
        Ok((n as f64 / started.elapsed().as_secs_f64(), per_cpu))
    };
    let mut out = serde_json::Map::new();
    if op != RingOp::Sign {
        let (wall, cpu) = rate(&|| probe.verify())?;
        out.insert("verify_per_sec".into(), wall.into());
        out.insert("verify_per_cpu_sec".into(), cpu.into());
    }
    if op != RingOp::Verify {
        let (wall, cpu) = rate(&|| probe.sign())?;
        out.insert("sign_per_sec".into(), wall.into());
        out.insert("sign_per_cpu_sec".into(), cpu.into());
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// Microseconds of CPU per signature: ring's verify, `handoff::ed25519` alone, and in batches.
fn ed25519_rates(window: Duration) -> anyhow::Result<()> {
    use handoff::ed25519::{check_batch, prepare, Check, Pending, PublicKey};
    let probe = Probe::new(Probe::DISTINCT)?;
    let key = PublicKey::new(probe.public.as_slice().try_into()?);
    // Runs `f` over and over for `window`; CPU microseconds per signature (`f` checks `per`).
    let cost = |per: usize, f: &dyn Fn(usize) -> bool| -> anyhow::Result<f64> {
        let cpu_before = cpu_seconds()?;
        let started = Instant::now();
        let (mut n, mut i) = (0usize, 0usize);
        while started.elapsed() < window {
            if !f(i) {
                bail!("a genuine signature failed");
            }
            i = (i + per) % (Probe::DISTINCT - per);
            n += per;
        }
        Ok((cpu_seconds()? - cpu_before) * 1e6 / n as f64)
    };
    let mut out = serde_json::Map::new();
    out.insert("ring_verify_us".into(), cost(1, &|_| probe.verify())?.into());
    let alone = cost(1, &|i| {
        let (m, sig) = (&probe.messages[i], &probe.signatures[i]);
        matches!(prepare(&key, m, sig.as_ref()), Check::Pending(p) if p.check())
    })?;
    out.insert("alone_us".into(), alone.into());
    for size in [2usize, 4, 8, 16, 32, 64] {
        // The hashing (`prepare`) is done per request, before a batch forms: counted here too.
        let per = cost(size, &|i| {
            let batch: Vec<Pending> = (i..i + size)
                .filter_map(|j| {
                    match prepare(&key, &probe.messages[j], probe.signatures[j].as_ref()) {
                        Check::Pending(p) => Some(p),
                        Check::Decided(_) => None,
                    }
                })
                .collect();
            batch.len() == size && check_batch(&batch).iter().all(|ok| *ok)
        })?;
        out.insert(format!("batch_{size}_us"), per.into());
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn offered_load(args: &LoadArgs) -> anyhow::Result<()> {
    let LoadArgs { addr, path, tokens, first, mode, rate, seconds, connections } = args;
    let (addr, first, rate, seconds, connections) = (*addr, *first, *rate, *seconds, *connections);
    let post = match mode.as_str() {
        "post" => true,
        "get" => false,
        other => bail!("unknown mode {other:?}: post or get"),
    };
    let count = (rate * seconds).ceil() as usize;
    let text = std::fs::read_to_string(tokens).with_context(|| tokens.display().to_string())?;
    let host = addr.to_string();
    let requests: Vec<Vec<u8>> = text
        .lines()
        .skip(first.saturating_sub(1))
        .take(count)
        .map(|t| load::request(&host, path, t, post))
        .collect();
    if requests.len() < count {
        bail!(
            "{count} requests need as many tokens; {} has {} from line {first}",
            tokens.display(),
            requests.len()
        );
    }
    let outcome = load::run(&load::Plan { addr, requests, rate, connections })?;
    let l = &outcome.latencies_us;
    let mut out = load::percentiles(l);
    out.insert("offered_per_sec".into(), rate.into());
    out.insert("achieved_per_sec".into(), (l.len() as f64 / outcome.elapsed.as_secs_f64()).into());
    for class in 2..=5 {
        out.insert(format!("status_{class}xx"), outcome.by_class[class].into());
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn steadiness(total: Duration) -> anyhow::Result<()> {
    const WINDOW: Duration = Duration::from_millis(10);
    let probe = Probe::new(Probe::DISTINCT)?;
    let started = Instant::now();
    let mut rates = Vec::new();
    while started.elapsed() < total {
        let window = Instant::now();
        let mut n = 0u32;
        while window.elapsed() < WINDOW {
            if !probe.verify() {
                bail!("the probe itself failed");
            }
            n += 1;
        }
        rates.push(f64::from(n) / window.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let at = |q: f64| load::quantile(&rates, q);
    let median = at(0.5).max(f64::MIN_POSITIVE);
    let below_half = rates.iter().filter(|r| **r < median / 2.0).count();
    println!(
        "{}",
        serde_json::json!({
            "windows": rates.len(),
            "median_per_sec": median,
            "p1_vs_median": at(0.01) / median,
            "p10_vs_median": at(0.10) / median,
            "min_vs_median": at(0.0) / median,
            "share_below_half_speed": below_half as f64 / rates.len().max(1) as f64,
        })
    );
    Ok(())
}

/// A fixed amount of pure computation: `rounds` steps of a multiply-xorshift mix.
fn spin(rounds: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..std::hint::black_box(rounds) {
        x = (x.wrapping_mul(0x5851_f42d_4c95_7f2d).wrapping_add(i)) ^ (x >> 29);
    }
    std::hint::black_box(x)
}

fn latency_floor(rate: f64, work_us: f64, seconds: f64) -> anyhow::Result<()> {
    if !(rate > 0.0 && work_us > 0.0 && seconds > 0.0) || work_us * rate >= 1e6 {
        bail!("the rate, the work and the time must be positive, and the work must fit the rate");
    }
    // Rounds per microsecond: the median of twenty 10 ms windows, so one slow window does not
    // set the size of the work.
    let window = 4096_u64;
    let mut speeds: Vec<f64> = (0..20)
        .map(|_| {
            let started = Instant::now();
            let mut rounds = 0_u64;
            while started.elapsed() < Duration::from_millis(10) {
                spin(window);
                rounds += window;
            }
            rounds as f64 / started.elapsed().as_secs_f64() / 1e6
        })
        .collect();
    speeds.sort_by(f64::total_cmp);
    let rounds = (load::quantile(&speeds, 0.5) * work_us).max(1.0) as u64;
    let count = (rate * seconds).ceil() as usize;
    let schedule = load::Schedule::new(rate);
    let mut latencies_us: Vec<u64> = (0..count)
        .map(|i| {
            let due = schedule.wait_for(i);
            spin(rounds);
            load::late_us(due)
        })
        .collect();
    latencies_us.sort_unstable();
    let mut out = load::percentiles(&latencies_us);
    out.insert("offered_per_sec".into(), rate.into());
    out.insert("work_us".into(), work_us.into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn replay_memory(entries: usize) -> anyhow::Result<()> {
    let store = MemoryReplayStore::new(entries + entries / 8, UnixTime::from_secs(0));
    let rng = SystemRandom::new();
    // Make the ids first, so only the store's growth is measured.
    let ids: Vec<Jti> = (0..entries).map(|_| Jti::generate(&rng)).collect::<Result<_, _>>()?;
    let now = UnixTime::from_secs(1_000_000);
    let before = rss_kib();
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    // Expiries spread over ten minutes, as tokens of every lifetime up to the longest arrive:
    // the store files ids by second, and many small files cost more than one.
    for (n, jti) in ids.iter().enumerate() {
        let until = now.plus(60 + (n % 600) as u64);
        let mut fut = store.check_and_set(*jti, until, now);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(handoff::Freshness::Fresh)) => {}
            other => bail!("unexpected {other:?}"),
        }
    }
    let full = rss_kib();
    store.purge_expired(now.plus(660));
    let after = rss_kib();
    drop(ids);
    println!(
        "{}",
        serde_json::json!({
            "entries": entries,
            "rss_before_kib": before,
            "rss_full_kib": full,
            "rss_after_expiry_kib": after,
            "bytes_per_entry": (full.saturating_sub(before) * 1024) as f64 / entries as f64,
        })
    );
    Ok(())
}
