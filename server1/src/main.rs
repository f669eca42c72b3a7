//! The `server1` command: serve, manage keys and users, mint a token by hand.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use handoff_web::main_support;
use server1::accounts::Accounts;
use server1::config::EnvConfig;
use server1::db::OpenMode;
use server1::handoffs::{HandoffError, Handoffs};
use server1::names::{Email, Role, UserName};
use server1::signing::Keys;
use server1::targets::Targets;
use server1::{Config, Services};

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
    /// Which objects users may open: the values of operation arguments the targets file marks
    /// `entitled = true`.
    Entitlements {
        #[command(subcommand)]
        command: EntitlementsCommand,
    },
    /// Take API tokens back.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Make a shared secret for a partner (HS256 handoffs, or its API client secret).
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
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
        #[arg(long = "arg", value_name = "KEY=VALUE", allow_hyphen_values = true)]
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
enum SecretCommand {
    /// Write 32 random bytes to a new file with mode 0600 (never overwrites). Give the same
    /// file to the partner over a secure channel, and name it in the targets file.
    New {
        /// The file to create.
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum EntitlementsCommand {
    /// Let a user open an operation with one argument's value, e.g. `grant alice --target
    /// partner --op invoice.approve --arg invoice_id=INV-1`.
    Grant(EntitlementArgs),
    /// Take it back (tokens already minted stay valid until they expire, a minute at most).
    Revoke(EntitlementArgs),
    /// List them, of one user or of everyone.
    List {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(clap::Args)]
struct EntitlementArgs {
    /// User name.
    user: String,
    /// Target id from the targets file.
    #[arg(long)]
    target: String,
    /// Operation type.
    #[arg(long)]
    op: String,
    /// The argument and its value, KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", allow_hyphen_values = true)]
    arg: String,
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Revoke: one access token by its id (deny list, until it would expire anyway), or every
    /// refresh family of a user (and their access tokens issued until now), or of an app.
    Revoke {
        /// An access token's `jti` (it may begin with `-`).
        #[arg(long, group = "what", allow_hyphen_values = true)]
        jti: Option<String>,
        /// A user name.
        #[arg(long, group = "what")]
        user: Option<String>,
        /// An app's `client_id`.
        #[arg(long, group = "what")]
        client: Option<String>,
    },
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
        /// E-mail address, verified by you.
        #[arg(long)]
        email: Option<String>,
        /// How the user is shown, e.g. "Alice Example" (partners whose policy lists the
        /// `name` claim receive it).
        #[arg(long, allow_hyphen_values = true)]
        display_name: Option<String>,
    },
    /// List the users: name, address, roles, state.
    List,
    /// Disable a user: they cannot sign in, and their sessions end at once.
    Disable {
        /// User name.
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// User name.
        name: String,
    },
    /// Replace a user's roles (no --role: none).
    SetRoles {
        /// User name.
        name: String,
        /// Role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Remove a user with their sessions.
    Remove {
        /// User name.
        name: String,
    },
    /// Set a user's e-mail address, verified by you.
    SetEmail {
        /// User name.
        name: String,
        /// The address.
        address: String,
    },
    /// Set (or with an empty string, clear) a user's display name.
    SetDisplayName {
        /// User name.
        name: String,
        /// The display name, e.g. "Alice Example".
        display_name: String,
    },
}

fn main() -> ExitCode {
    main_support::exit_code("server1", run())
}

fn run() -> anyhow::Result<()> {
    let command = Cli::parse().command.unwrap_or(Command::Serve);
    if let Command::Secret { command: SecretCommand::New { file } } = &command {
        handoff::SharedSecret::create(file)?;
        eprintln!("wrote a new 32-byte secret to {} (mode 0600)", file.display());
        return Ok(());
    }
    // The server batches its log lines; the one-shot commands write theirs at once, in order
    // with what they print.
    let _flush_logs = if matches!(command, Command::Serve) {
        Some(handoff_web::telemetry::init_stderr_batched("info,poem=warn"))
    } else {
        handoff_web::telemetry::init_stderr("info,poem=warn");
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
        Command::Users {
            command: UsersCommand::Add { name, password_stdin, roles, email, display_name },
        } => block_on(add_user(
            &config,
            &name,
            password_stdin,
            &roles,
            email.as_deref(),
            display_name.as_deref(),
        )),
        Command::Secret { .. } => Ok(()),
        Command::Users { command } => block_on(manage_users(&config, command)),
        Command::Tokens { command: TokensCommand::Revoke { jti, user, client } } => {
            block_on(revoke(&config, jti, user, client))
        }
        Command::Entitlements { command } => block_on(entitlements(&config, command)),
        Command::Mint { target, user, op, args } => {
            block_on(mint(&config, &target, &user, &op, &args))
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    block_on(async {
        let listener = main_support::bind(config.listen, "SERVER1_LISTEN", config.cookies)?;
        let public_url = config.public_url.to_string();
        let app = server1::build_app(config, listener).await?;
        main_support::serve("SERVER1", app, &public_url).await.context("server failed")
    })
}

/// Runs `work` on a Tokio runtime (the database is async).
fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(work)
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

/// The accounts service for a one-shot command (one argon2 run at a time). When the keys and
/// targets load, the logouts of what a command ends (disabling or removing a user) are queued
/// for the running servers to deliver; without them (before `keys generate`), users are still
/// managed.
async fn accounts(config: &Config, mode: OpenMode) -> anyhow::Result<Accounts> {
    handoff::crypto::install()?;
    // Without targets and keys the user commands still work, but their sign-outs (disable,
    // remove) cannot reach partners: say so, rather than skip the logouts in silence.
    let handoffs = match (Targets::load(&config.targets_file), Keys::load(config)) {
        (Ok(targets), Ok(keys)) => Some(Arc::new(Handoffs::new(targets, keys))),
        (targets, keys) => {
            let why = targets.err().map(|e| e.to_string()).or(keys.err().map(|e| e.to_string()));
            eprintln!(
                "warning: partners will not hear of sign-outs from this command: {}",
                why.unwrap_or_default()
            );
            None
        }
    };
    let registry = prometheus::Registry::new();
    let services = Services::open(config, mode, 1, handoffs, &registry).await?;
    Ok(services.accounts)
}

fn user_name(name: &str) -> anyhow::Result<UserName> {
    UserName::normalize(name)
        .map_err(|_| anyhow!("a user name is 1 to 64 characters of a-z 0-9 . _ -"))
}

fn roles(roles: &[String]) -> anyhow::Result<Vec<Role>> {
    roles
        .iter()
        .map(|r| {
            Role::parse(r)
                .map_err(|_| anyhow!("role {r:?}: a role is 1 to 32 characters of a-z 0-9 - _"))
        })
        .collect()
}

fn display_name(name: &str) -> anyhow::Result<&str> {
    if handoff::token::is_display_name(name) {
        Ok(name)
    } else {
        Err(anyhow!("a display name is 1 to 80 characters, not blank, without control characters"))
    }
}

fn email(address: &str) -> anyhow::Result<Email> {
    Email::normalize(address).map_err(|_| anyhow!("{address:?} is not an e-mail address"))
}

async fn add_user(
    config: &Config,
    name: &str,
    password_stdin: bool,
    roles: &[String],
    address: Option<&str>,
    display_name: Option<&str>,
) -> anyhow::Result<()> {
    if !password_stdin {
        bail!("pass --password-stdin and write the password to standard input");
    }
    let name = user_name(name)?;
    let roles = self::roles(roles)?;
    let address = address.map(email).transpose()?;
    let display_name = display_name.map(self::display_name).transpose()?;
    let mut password = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut password)
        .context("cannot read the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']);
    let accounts = accounts(config, OpenMode::CreateIfMissing).await?;
    let user = accounts.add_user(&name, password, &roles, address.as_ref(), display_name).await?;
    let roles: Vec<&str> = user.roles.iter().map(Role::as_str).collect();
    eprintln!("added user {} ({}) with roles [{}]", user.name, user.id, roles.join(", "));
    Ok(())
}

/// The user commands besides `add`. Each says what it did, or fails naming the user it could
/// not find.
async fn manage_users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let accounts = accounts(config, OpenMode::Existing).await?;
    let found = |done: bool, name: &UserName| {
        if done {
            Ok(())
        } else {
            Err(anyhow!("no user {:?}", name.as_str()))
        }
    };
    match command {
        UsersCommand::Add { .. } => bail!("`users add` is handled by add_user"),
        UsersCommand::List => {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<24} {:<32} {:<9} {:<8} {:<24} roles",
                "name", "e-mail", "verified", "state", "display name"
            )?;
            for user in accounts.users().await? {
                let roles: Vec<&str> = user.roles.iter().map(Role::as_str).collect();
                writeln!(
                    out,
                    "{:<24} {:<32} {:<9} {:<8} {:<24} {}",
                    user.name,
                    user.email.as_ref().map_or("-", |e| e.as_str()),
                    if user.email_verified { "yes" } else { "no" },
                    if user.disabled { "disabled" } else { "active" },
                    user.display_name
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), |n| format!("{n:?}")),
                    roles.join(",")
                )?;
            }
        }
        UsersCommand::Disable { name } => {
            let name = user_name(&name)?;
            found(accounts.set_disabled(&name, true).await?, &name)?;
            eprintln!("disabled user {name}; their sessions ended");
        }
        UsersCommand::Enable { name } => {
            let name = user_name(&name)?;
            found(accounts.set_disabled(&name, false).await?, &name)?;
            eprintln!("enabled user {name}");
        }
        UsersCommand::SetRoles { name, roles } => {
            let name = user_name(&name)?;
            let roles = self::roles(&roles)?;
            found(accounts.set_roles(&name, &roles).await?, &name)?;
            let shown: Vec<&str> = roles.iter().map(Role::as_str).collect();
            eprintln!("user {name} now has roles [{}]", shown.join(", "));
        }
        UsersCommand::Remove { name } => {
            let name = user_name(&name)?;
            found(accounts.remove(&name).await?, &name)?;
            eprintln!("removed user {name} and their sessions");
        }
        UsersCommand::SetEmail { name, address } => {
            let name = user_name(&name)?;
            let address = email(&address)?;
            let done = accounts.set_email(&name, &address).await.map_err(|e| match e {
                server1::db::DbError::EmailTaken => anyhow!("another user has {address}"),
                other => other.into(),
            })?;
            found(done, &name)?;
            eprintln!("user {name} now has the verified address {address}");
        }
        UsersCommand::SetDisplayName { name, display_name } => {
            let name = user_name(&name)?;
            let shown = if display_name.is_empty() {
                None
            } else {
                Some(self::display_name(&display_name)?)
            };
            found(accounts.set_display_name(&name, shown).await?, &name)?;
            match shown {
                Some(shown) => eprintln!("user {name} is now shown as {shown:?}"),
                None => eprintln!("user {name} has no display name now"),
            }
        }
    }
    Ok(())
}

async fn revoke(
    config: &Config,
    jti: Option<String>,
    user: Option<String>,
    client: Option<String>,
) -> anyhow::Result<()> {
    handoff::crypto::install()?;
    let handoffs =
        Arc::new(Handoffs::new(Targets::load(&config.targets_file)?, Keys::load(config)?));
    let registry = prometheus::Registry::new();
    let services = Services::open(config, OpenMode::Existing, 1, None, &registry).await?;
    let clients =
        server1::clients::Clients::load(&config.clients_file).map_err(anyhow::Error::msg)?;
    let oauth = server1::oauth::OAuth::new(
        Arc::clone(&services.db),
        clients,
        handoffs,
        config.public_url.clone(),
        config.oauth,
        config.clock.clone(),
    )
    .map_err(anyhow::Error::msg)?;
    match (jti, user, client) {
        (Some(jti), None, None) => {
            if handoff::Jti::parse(&jti).is_err() {
                bail!("{jti:?} is not a token id (22 base64url characters)");
            }
            oauth.deny(&jti).await?;
            eprintln!("access token {jti} is on the deny list until it would have expired");
        }
        (None, Some(name), None) => {
            let name = user_name(&name)?;
            let found = services
                .accounts
                .user(&name)
                .await?
                .ok_or_else(|| anyhow!("no user {:?}", name.as_str()))?;
            let n = oauth.revoke_user(&found.id).await?;
            eprintln!("revoked {n} refresh tokens of {name} and every access token issued to them until now");
        }
        (None, None, Some(client)) => {
            let n = oauth.revoke_client(&client).await?;
            eprintln!("revoked {n} refresh tokens of the app {client}");
        }
        _ => bail!("say what to revoke: --jti ID, --user NAME or --client ID"),
    }
    Ok(())
}

async fn entitlements(config: &Config, command: EntitlementsCommand) -> anyhow::Result<()> {
    let targets = Targets::load(&config.targets_file)?;
    let accounts = accounts(config, OpenMode::Existing).await?;
    let db = accounts.db();
    let entitlement = |a: &EntitlementArgs, user: &server1::db::User| {
        let target = targets
            .get(&a.target)
            .ok_or_else(|| anyhow!("no target {:?} in the targets file", a.target))?;
        let op = target
            .operation(&a.op)
            .ok_or_else(|| anyhow!("target {} has no operation {:?}", a.target, a.op))?;
        let (name, value) =
            a.arg.split_once('=').ok_or_else(|| anyhow!("--arg takes KEY=VALUE"))?;
        if !op.narrowed.iter().any(|n| n.name.as_str() == name && n.entitled) {
            bail!(
                "argument {name:?} of {} is not `entitled = true` in the targets file: an entitlement to it would change nothing",
                a.op
            );
        }
        // The value must be one the argument takes, or the grant could never be used.
        if !op.takes(name, value) {
            bail!("{value:?} is not a value argument {name:?} of {} takes", a.op);
        }
        Ok(server1::db::Entitlement {
            user: user.id.clone(),
            target: a.target.clone(),
            operation: a.op.clone(),
            arg: name.to_owned(),
            value: value.to_owned(),
        })
    };
    let find_user = |name: String| {
        let accounts = &accounts;
        async move {
            let name = user_name(&name)?;
            accounts.user(&name).await?.ok_or_else(|| anyhow!("no user {:?}", name.as_str()))
        }
    };
    let now = config.clock.now();
    let mut out = std::io::stdout().lock();
    match command {
        EntitlementsCommand::Grant(a) => {
            let user = find_user(a.user.clone()).await?;
            let e = entitlement(&a, &user)?;
            if db.grant_entitlement(&e, now).await? {
                eprintln!(
                    "{} may now open {} {}={} on {}",
                    user.name, e.operation, e.arg, e.value, e.target
                );
            } else {
                eprintln!(
                    "{} could already open {} {}={} on {}",
                    user.name, e.operation, e.arg, e.value, e.target
                );
            }
        }
        EntitlementsCommand::Revoke(a) => {
            let user = find_user(a.user.clone()).await?;
            let e = entitlement(&a, &user)?;
            if !db.revoke_entitlement(&e).await? {
                bail!("{} held no such entitlement", user.name);
            }
            eprintln!(
                "{} may no longer open {} {}={} on {}",
                user.name, e.operation, e.arg, e.value, e.target
            );
        }
        EntitlementsCommand::List { user } => {
            let user = match user {
                Some(name) => Some(find_user(name).await?.id),
                None => None,
            };
            writeln!(out, "{:<24} {:<16} {:<24} argument=value", "user", "target", "operation")?;
            for (name, e) in db.entitlements(user.as_ref()).await? {
                writeln!(
                    out,
                    "{name:<24} {:<16} {:<24} {}={}",
                    e.target, e.operation, e.arg, e.value
                )?;
            }
        }
    }
    Ok(())
}

async fn mint(
    config: &Config,
    target: &str,
    user: &str,
    op: &str,
    args: &[String],
) -> anyhow::Result<()> {
    handoff::crypto::install()?;
    let handoffs =
        Arc::new(Handoffs::new(Targets::load(&config.targets_file)?, Keys::load(config)?));
    let registry = prometheus::Registry::new();
    let services =
        Services::open(config, OpenMode::Existing, 1, Some(Arc::clone(&handoffs)), &registry)
            .await?;
    let name = UserName::normalize(user).map_err(|_| anyhow!("no user {user:?}"))?;
    let user = services.accounts.user(&name).await?.ok_or_else(|| anyhow!("no user {user:?}"))?;
    let mut pairs = Vec::new();
    for arg in args {
        let (k, v) = arg.split_once('=').ok_or_else(|| anyhow!("--arg takes KEY=VALUE"))?;
        pairs.push((k, v));
    }
    let authorized = handoffs.authorize(&user, target, op, pairs).map_err(|e| match e {
        HandoffError::NoSuchTarget(_) => {
            anyhow!("no target {target:?} in {}", config.targets_file.display())
        }
        HandoffError::MissingRole(role) => {
            anyhow!("user {} lacks the role {:?} that {op} needs", user.name, role.as_str())
        }
        other => anyhow!("{other}"),
    })?;
    handoffs.check_entitlements(&services.db, &user, &authorized).await.map_err(|e| match e {
        HandoffError::NotEntitled { arg } => anyhow!(
            "user {} holds no entitlement to this {arg} (`server1 entitlements grant`)",
            user.name
        ),
        other => anyhow!("{other}"),
    })?;
    let now = config.clock.now();
    let minted = handoffs.mint(&user, &authorized, None, None, now)?;
    if authorized.target.client.is_some() {
        let target = authorized.target.id.as_str();
        services.db.record_partner_subject(target, &minted.subject, &user.id, now).await?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", minted.token.as_str())?;
    Ok(())
}
