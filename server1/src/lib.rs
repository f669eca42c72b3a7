//! SERVER1, the issuer: signs users in, shows what they may open on partners, mints handoff
//! tokens for exactly one operation, and publishes its public keys.
//!
//! [`build_app`] turns a [`Config`] and a bound listener into an [`App`]; `main.rs` only parses
//! the command line, reads the configuration and runs it.
#![forbid(unsafe_code)]

pub mod config;
pub mod db;
pub mod keyring;
pub mod passwords;
pub mod targets;
pub mod throttle;
pub mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use handoff::keys::KeyError;
use poem::listener::TcpAcceptor;
use poem::Server;

pub use config::Config;
use db::Db;
use passwords::Passwords;
use targets::Targets;
use web::session::{Cookies, Csrf};
use web::AppState;

/// Why SERVER1 could not start. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// No usable signing key.
    #[error("{0}{hint}", hint = key_hint(.0))]
    Key(#[from] KeyError),
    /// The targets file is missing or invalid.
    #[error(transparent)]
    Targets(#[from] targets::TargetsError),
    /// The database cannot be used.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// The listener cannot be used.
    #[error("cannot listen: {0}")]
    Listen(std::io::Error),
    /// Crypto set-up failed.
    #[error("crypto set-up failed: {0}")]
    Crypto(String),
}

fn key_hint(e: &KeyError) -> &'static str {
    match e {
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            " (run `server1 keys generate` to create one, or point SERVER1_KEYS_DIR at the keys directory)"
        }
        _ => "",
    }
}

/// A built SERVER1, bound to its listener, ready to run.
pub struct App {
    acceptor: TcpAcceptor,
    local_addr: SocketAddr,
    state: Arc<AppState>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("local_addr", &self.local_addr).finish_non_exhaustive()
    }
}

/// Loads keys, targets and the database and binds the app to `listener`. Must be called
/// inside a Tokio runtime.
///
/// # Errors
///
/// Any [`StartupError`]: nothing is served half-configured.
pub fn build_app(config: Config, listener: std::net::TcpListener) -> Result<App, StartupError> {
    handoff::crypto::install().map_err(|e| StartupError::Crypto(e.to_string()))?;
    let keys = web::Keys::load(&config)?;
    let targets = Targets::load(&config.targets_file)?;
    let db = Db::open(&config.database, db::OpenMode::Existing)?;
    let csrf = Csrf::new(&db.secret("csrf")?);
    let passwords =
        Passwords::new(config.password_slots).map_err(|e| StartupError::Crypto(e.to_string()))?;
    let cookies = Cookies::new(config.cookies);
    let (acceptor, local_addr) = handoff::web::acceptor(listener).map_err(StartupError::Listen)?;
    let metrics = web::Metrics::new().map_err(|e| StartupError::Crypto(e.to_string()))?;
    let state = Arc::new(AppState {
        config,
        db,
        targets,
        keys,
        passwords,
        csrf,
        cookies,
        throttle: throttle::Throttle::new(100_000),
        metrics,
    });
    Ok(App { acceptor, local_addr, state })
}

impl App {
    /// The address the app listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests (up to 10 s).
    ///
    /// # Errors
    ///
    /// When the listener fails.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = Arc::clone(&self.state);
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let now = state.config.clock.now();
                if let Err(e) = state.db.purge_sessions(now) {
                    tracing::warn!(error = %e, "could not purge expired sessions");
                }
            }
        });
        let app = web::routes(self.state);
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(Duration::from_secs(10)))
            .await;
        sweeper.abort();
        served
    }
}

/// True for a valid sign-in name: 1 to 64 characters of a-z 0-9 . _ - (stored lower-case).
pub fn is_valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// True for a valid role name: 1 to 32 characters of a-z 0-9 - _, starting with a letter or digit.
pub fn is_valid_role(role: &str) -> bool {
    handoff::values::is_short_id(role, 32)
}
