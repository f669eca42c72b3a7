//! The `server1` command: serve, manage keys and users, mint a token by hand.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use handoff::{MintRequest, Minter};
use server1::db::{Db, OpenMode};
use server1::passwords::Passwords;
use server1::targets::Targets;
use server1::Config;

#[derive(Parser)]
#[command(
    name = "server1",
    version,
    about = "Handoff issuer (SERVER1). Configuration comes from SERVER1_* environment variables; see the README."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve,
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Mint a handoff token and print only the token.
    Mint {
        /// Target id from the targets file.
        #[arg(long)]
        target: String,
        /// User name.
        #[arg(long)]
        user: String,
        /// Operation type, e.g. report.view.
        #[arg(long)]
        op: String,
        /// Operation argument, KEY=VALUE (repeatable).
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create the first signing key, active at once (refuses when keys exist).
    Generate,
    /// Add a new key: published at once, signing after the delay; the old one retires.
    Rotate {
        /// Seconds between publishing the new key and signing with it: at least as long as
        /// verifiers cache the JWKS (SERVER1 tells them 300 s).
        #[arg(long, default_value_t = server1::keyring::DEFAULT_ROTATION_DELAY_SECS)]
        delay_secs: u64,
    },
    /// List the keys: id, created, state, and until when.
    List,
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Add a user; the password is read from the first line of standard input.
    Add {
        /// Sign-in name (a-z 0-9 . _ -).
        name: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long)]
        password_stdin: bool,
        /// Role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server1: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    // The server batches its log lines; the one-shot commands write theirs at once, in order
    // with what they print.
    let _flush_logs = if matches!(command, Command::Serve) {
        Some(handoff::telemetry::init_stderr_batched("info,poem=warn"))
    } else {
        handoff::telemetry::init_stderr("info,poem=warn");
        None
    };
    let config = Config::from_env()?;
    match command {
        Command::Serve => serve(config),
        Command::Keys { command: KeysCommand::Generate } => {
            let entry = server1::keyring::generate(&config.keys_dir, config.clock.now())?;
            eprintln!("generated signing key {} in {}", entry.kid, config.keys_dir.display());
            Ok(())
        }
        Command::Keys { command: KeysCommand::Rotate { delay_secs } } => {
            let entry = server1::keyring::rotate(&config.keys_dir, delay_secs, config.clock.now())?;
            eprintln!(
                "added signing key {}: published now, signing from {} ({} s from now)",
                entry.kid, entry.activates_at, delay_secs
            );
            Ok(())
        }
        Command::Keys { command: KeysCommand::List } => list_keys(&config),
        Command::Users { command: UsersCommand::Add { name, password_stdin, roles } } => {
            add_user(&config, &name, password_stdin, &roles)
        }
        Command::Mint { target, user, op, args } => mint(&config, &target, &user, &op, &args),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.listen;
        if config.cookies == server1::config::CookieSecurity::InsecureDevelopment {
            tracing::warn!(
                "SERVER1_INSECURE_COOKIES is set: cookies lack Secure; for local development only"
            );
        }
        let listener = std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen} (SERVER1_LISTEN)"))?;
        let public_url = config.public_url.clone();
        let app = server1::build_app(config, listener)?;
        tracing::info!(addr = %app.local_addr(), %public_url, "SERVER1 listening");
        app.run(handoff::web::shutdown_signal()).await.context("server failed")?;
        tracing::info!("SERVER1 stopped");
        Ok(())
    })
}

fn list_keys(config: &Config) -> anyhow::Result<()> {
    use server1::keyring::{KeyRing, KeyState};
    let ring = KeyRing::load(&config.keys_dir)?;
    let now = config.clock.now();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<44} {:>12} {:<9} until", "kid", "created", "state")?;
    for (entry, state) in ring.states(now) {
        let until = match state {
            KeyState::Pending { until } | KeyState::Retiring { until } => until.to_string(),
            KeyState::Active | KeyState::Retired => "-".into(),
        };
        writeln!(out, "{:<44} {:>12} {:<9} {until}", entry.kid, entry.created, state.name())?;
    }
    Ok(())
}

fn add_user(
    config: &Config,
    name: &str,
    password_stdin: bool,
    roles: &[String],
) -> anyhow::Result<()> {
    if !password_stdin {
        bail!("pass --password-stdin and write the password to standard input");
    }
    let name = name.to_ascii_lowercase();
    if !server1::is_valid_user_name(&name) {
        bail!("a user name is 1 to 64 characters of a-z 0-9 . _ -");
    }
    if let Some(bad) = roles.iter().find(|r| !server1::is_valid_role(r)) {
        bail!("role {bad:?}: a role is 1 to 32 characters of a-z 0-9 - _");
    }
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    let hash = Passwords::new(1)?.hash(password)?;
    let db = Db::open(&config.database, OpenMode::CreateIfMissing)?;
    let user = db.add_user(&name, &hash, roles, config.clock.now())?;
    eprintln!("added user {} ({}) with roles [{}]", user.name, user.id, user.roles.join(", "));
    Ok(())
}

fn mint(
    config: &Config,
    target: &str,
    user: &str,
    op: &str,
    args: &[String],
) -> anyhow::Result<()> {
    handoff::crypto::install()?;
    let targets = Targets::load(&config.targets_file)?;
    let target = targets
        .get(target)
        .ok_or_else(|| anyhow!("no target {target:?} in {}", config.targets_file.display()))?;
    let offered = target
        .operation(op)
        .ok_or_else(|| anyhow!("target {:?} has no operation {op:?}", target.id))?;
    let db = Db::open(&config.database, OpenMode::Existing)?;
    let (user, _) =
        db.user_by_name(&user.to_ascii_lowercase())?.ok_or_else(|| anyhow!("no user {user:?}"))?;
    if !user.has_role(&offered.role) {
        bail!("user {} lacks the role {:?} that {op} needs", user.name, offered.role);
    }
    let mut pairs = Vec::new();
    for arg in args {
        let (k, v) = arg.split_once('=').ok_or_else(|| anyhow!("--arg takes KEY=VALUE"))?;
        pairs.push((k, v));
    }
    let operation = offered.spec.build(pairs).map_err(|e| anyhow!("{e}"))?;
    let ring = server1::keyring::KeyRing::load(&config.keys_dir)?;
    let now = config.clock.now();
    let minter = Minter::new(ring.active(now).clone(), config.public_url.clone(), config.token_ttl);
    let request = MintRequest {
        audience: &target.audience,
        subject: &user.id,
        operation: &operation,
        sid: None,
        nonce: None,
    };
    let minted = minter.mint(&request, now)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", minted.as_str())?;
    Ok(())
}
