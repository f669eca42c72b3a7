//! SERVER1, the issuer: signs users in, shows what they may open on partners, mints handoff
//! tokens for exactly one operation, and publishes its public keys.
//!
//! [`build_app`] turns a [`Config`] and a bound listener into an [`App`]; `main.rs` only parses
//! the command line, reads the configuration and runs it.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod clients;
pub mod config;
pub mod db;
pub mod handoffs;
pub mod keyring;
pub mod links;
pub mod mail;
pub mod names;
pub mod oauth;
pub mod passwords;
pub mod signing;
pub mod targets;
pub mod throttle;
pub mod web;

use std::sync::Arc;
use std::time::Duration;

use handoff::keys::KeyError;
use handoff_web::{Csrf, Hardening, Jar, Limits, Settings};
use prometheus::Registry;

use accounts::Accounts;
pub use config::Config;
use db::Db;
pub use handoff_web::App;
pub use handoffs::Handoffs;
use mail::outbox::{LinkSettings, MailMetrics};
use mail::{Mailer, Outbox};
use passwords::Passwords;
use signing::Keys;
use targets::Targets;
use web::session::Cookies;
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
    /// The listener or the metrics cannot be set up.
    #[error(transparent)]
    Build(#[from] handoff_web::BuildError),
    /// Crypto set-up failed.
    #[error("crypto set-up failed: {0}")]
    Crypto(String),
    /// Mail cannot be set up.
    #[error("{0}")]
    Mail(String),
    /// The clients file is invalid.
    #[error("SERVER1_CLIENTS_FILE: {0}")]
    Clients(String),
}

fn key_hint(e: &KeyError) -> &'static str {
    match e {
        KeyError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            " (run `server1 keys generate` to create one, or point SERVER1_KEYS_DIR at the keys directory)"
        }
        _ => "",
    }
}

/// SERVER1's services over its database: what the web layer and the command line share.
#[derive(Debug)]
pub struct Services {
    /// The database.
    pub db: Arc<Db>,
    /// Accounts, with mail and logouts going through the outbox.
    pub accounts: Accounts,
    /// The outbox (its worker runs in the server only).
    pub outbox: Arc<Outbox>,
    /// Targets and keys, when they could be loaded (the command line manages users without).
    pub handoffs: Option<Arc<Handoffs>>,
}

impl Services {
    /// Opens the database (`mode`) and builds the services, registering the outbox's metrics
    /// in `registry`. With `handoffs`, back-channel logouts reach its targets.
    ///
    /// # Errors
    ///
    /// When the database, the mail settings or the metrics cannot be set up.
    pub async fn open(
        config: &Config,
        mode: db::OpenMode,
        password_slots: usize,
        handoffs: Option<Arc<Handoffs>>,
        registry: &Registry,
    ) -> Result<Self, StartupError> {
        let db = Arc::new(Db::open(&config.database, mode, config.database_pool).await?);
        let passwords =
            Passwords::new(password_slots).map_err(|e| StartupError::Crypto(e.to_string()))?;
        let mail_metrics =
            MailMetrics::new(registry).map_err(|e| StartupError::Crypto(e.to_string()))?;
        let ca_file = config.mail.smtp_ca_file.as_deref();
        let mailer = Mailer::new(&config.mail.transport, &config.mail.from, ca_file)
            .map_err(StartupError::Mail)?;
        let links = LinkSettings {
            public_url: url::Url::parse(config.public_url.as_str())
                .map_err(|e| StartupError::Mail(format!("SERVER1_PUBLIC_URL: {e}")))?,
            verify_ttl_secs: config.mail.verify_ttl_secs,
            reset_ttl_secs: config.mail.reset_ttl_secs,
        };
        let mut outbox = Outbox::new(
            Arc::clone(&db),
            mailer,
            links,
            web::pages::BRAND.name,
            config.clock.clone(),
            mail_metrics,
        );
        if let Some(handoffs) = &handoffs {
            // Pairwise subjects come from a secret every replica reads from the database.
            handoffs.set_pairwise_secret(&db.secret("pairwise").await?);
            outbox = outbox.with_partners(Arc::clone(handoffs)).map_err(StartupError::Crypto)?;
        }
        let outbox = Arc::new(outbox);
        let accounts = Accounts::new(
            Arc::clone(&db),
            passwords,
            config.session_ttl_secs,
            config.clock.clone(),
        )
        .with_mail(Arc::clone(&outbox), config.accounts.clone());
        Ok(Self { db, accounts, outbox, handoffs })
    }
}

/// Loads keys, targets and the database and binds the app to `listener`. Must be called
/// inside a Tokio runtime.
///
/// # Errors
///
/// Any [`StartupError`]: nothing is served half-configured.
pub async fn build_app(
    config: Config,
    listener: std::net::TcpListener,
) -> Result<App, StartupError> {
    handoff::crypto::install().map_err(|e| StartupError::Crypto(e.to_string()))?;
    let keys = Keys::load(&config)?;
    let targets = Targets::load(&config.targets_file)?;
    let handoffs = Arc::new(Handoffs::new(targets, keys));
    let registry = Registry::new();
    let metrics = web::Metrics::new(&registry).map_err(|e| StartupError::Crypto(e.to_string()))?;
    let services = Services::open(
        &config,
        db::OpenMode::Existing,
        config.password_slots,
        Some(Arc::clone(&handoffs)),
        &registry,
    )
    .await?;
    let csrf = Csrf::new(&services.db.secret("csrf").await?);
    let clients = clients::Clients::load(&config.clients_file).map_err(StartupError::Clients)?;
    let oauth = oauth::OAuth::new(
        Arc::clone(&services.db),
        clients,
        Arc::clone(&handoffs),
        config.public_url.clone(),
        config.oauth,
        config.clock.clone(),
    )
    .map_err(StartupError::Clients)?;
    let hardening = Hardening {
        csp: web::pages::DEFAULT_CSP,
        hsts: config.public_url.as_str().starts_with("https://"),
    };
    let outbox = Arc::clone(&services.outbox);
    let state = Arc::new(AppState {
        cookies: Cookies::new(Jar::new(config.cookies)),
        config,
        db: services.db,
        accounts: services.accounts,
        oauth,
        handoffs,
        csrf,
        metrics,
    });
    let settings = Settings {
        registry,
        metrics_listen: (state.config.metrics_listen, "SERVER1_METRICS_LISTEN"),
        refusal_logs: Arc::new(handoff_web::telemetry::LogBudget::new(
            state.config.refusal_logs_per_sec,
        )),
        hardening,
        limits: Limits::FORMS,
    };
    let app = App::build(listener, Arc::clone(&state), web::routes(), settings)?;
    Ok(app.with_background(sweep_sessions(state)).with_background(outbox.run()))
}

/// Every ten minutes, forgets expired sessions and links, and idle throttle counts.
async fn sweep_sessions(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        if let Err(e) = state.accounts.purge().await {
            tracing::warn!(error = %e, "could not purge expired sessions");
        }
    }
}
