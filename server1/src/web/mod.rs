//! SERVER1's HTTP surface: its state, routes and metrics. Signing in and out lives in [`auth`],
//! sign-up, one-time links and the account page in [`account`], the handoff in [`handoff`]; both call the domain services ([`crate::accounts`],
//! [`crate::handoffs`]). The skeleton around them (health, readiness, metrics, error pages, the
//! request guard) is `handoff-web`'s.

mod account;
mod api;
mod auth;
mod error;
mod handoff;
pub mod pages;
pub mod session;

use std::sync::Arc;

use ::handoff::protocol::JWKS_MAX_AGE_SECS;
use handoff_web::{Csrf, Routes, Service};
use poem::http::header;
use poem::web::Data;
use poem::{get, handler, post, Request, Response};
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

pub use error::AppError;

use crate::accounts::{Accounts, Session, SessionHash};
use crate::config::Config;
use crate::db::{Db, User};
use crate::handoffs::Handoffs;
use session::{Cookies, SESSION};

/// Everything handlers share. Built once at start-up.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) db: Arc<Db>,
    pub(crate) accounts: Accounts,
    pub(crate) handoffs: Arc<Handoffs>,
    pub(crate) oauth: crate::oauth::OAuth,
    pub(crate) csrf: Csrf,
    pub(crate) cookies: Cookies,
    pub(crate) metrics: Metrics,
}

type State = Arc<AppState>;

/// SERVER1's own metrics (the request latency is the skeleton's).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) minted: IntCounterVec,
    pub(crate) signins: IntCounterVec,
    pub(crate) partner_api: IntCounterVec,
    key_age: IntGauge,
}

impl Metrics {
    /// Registers every SERVER1 metric in `registry`.
    ///
    /// # Errors
    ///
    /// Only on a programming error (a metric registered twice).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let minted = IntCounterVec::new(
            Opts::new("handoff_minted_total", "Handoff tokens minted, by target and operation"),
            &["target", "operation"],
        )?;
        let signins = IntCounterVec::new(
            Opts::new("signin_total", "Sign-in attempts, by outcome"),
            &["outcome"],
        )?;
        for outcome in ["ok", "failed", "throttled", "busy", "disabled"] {
            signins.with_label_values(&[outcome]);
        }
        let partner_api = IntCounterVec::new(
            Opts::new(
                "partner_api_requests_total",
                "Partner API requests, by outcome: ok, not_found, unauthenticated (no token), refused (the token failed a check; the reason is its code), replayed, unavailable",
            ),
            &["outcome", "reason"],
        )?;
        let key_age = IntGauge::new("signing_key_age_seconds", "Age of the signing key file")?;
        registry.register(Box::new(minted.clone()))?;
        registry.register(Box::new(signins.clone()))?;
        registry.register(Box::new(partner_api.clone()))?;
        registry.register(Box::new(key_age.clone()))?;
        Ok(Self { minted, signins, partner_api, key_age })
    }
}

impl Service for AppState {
    type Error = AppError;

    /// Ready when the database answers (the keys were loaded at start-up and stay loaded).
    async fn readiness(&self) -> Result<(), &'static str> {
        self.db.ping().await.then_some(()).ok_or("database unavailable")
    }

    fn refresh_metrics(&self) {
        let now = self.config.clock.now();
        let keys = self.handoffs.keys().current(now);
        let active = keys.ring().active_entry(now);
        // Keys from before the manifest have no recorded birth: their file's age stands in.
        let age = if active.created > 0 {
            i64::try_from(now.as_secs().saturating_sub(active.created)).unwrap_or(i64::MAX)
        } else {
            std::fs::metadata(self.config.keys_dir.join(&active.file))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        };
        self.metrics.key_age.set(age);
    }
}

/// SERVER1's routes.
pub fn routes() -> Routes {
    Routes::new()
        .at("/", get(auth::dashboard))
        .at("/login", get(auth::login_page).post(auth::login))
        .at("/logout", post(auth::logout))
        .at("/signup", get(account::signup_page).post(account::signup))
        .at("/verify-email", get(account::verify_page).post(account::verify))
        .at("/forgot-password", get(account::forgot_page).post(account::forgot))
        .at("/reset-password", get(account::reset_page).post(account::reset))
        .at("/confirm-email", get(account::confirm_email_page).post(account::confirm_email))
        .at("/account", get(account::account))
        .at("/account/verify", post(account::resend_verification))
        .at("/account/email", post(account::change_email))
        .at("/account/name", post(account::change_display_name))
        .at("/account/password", post(account::change_password))
        .at("/account/sessions/end", post(account::end_session))
        .at("/account/sessions/end-all", post(account::end_all_sessions))
        .at("/oauth/device_authorization", post(api::device_authorization))
        .at("/oauth/token", post(api::token))
        .at("/device", get(api::device_page).post(api::device_code))
        .at("/device/decide", post(api::device_decide))
        .at("/api/v1/me", get(api::me))
        .at("/api/v1/users/:sub", get(api::partner_user))
        .at("/handoff/:target/:operation", get(handoff::start).post(handoff::approve))
        .at(::handoff::protocol::JWKS_PATH, get(jwks))
        .at("/static/style.css", get(style))
        .at("/static/handoff.js", get(script))
}

/// The live session the request carries, if any.
async fn current_session(state: &AppState, req: &Request) -> Result<Option<Session>, AppError> {
    let Some(id) = state.cookies.read(req, SESSION) else {
        return Ok(None);
    };
    Ok(state.accounts.session(&id).await?)
}

/// The signed-in user and their session hash, if the request carries a live session.
async fn current_user(
    state: &AppState,
    req: &Request,
) -> Result<Option<(User, SessionHash)>, AppError> {
    Ok(current_session(state, req).await?.map(|s| (s.user, s.hash)))
}

#[handler]
fn jwks(Data(state): Data<&State>) -> Result<Response, AppError> {
    let now = state.config.clock.now();
    let jwks = state.handoffs.keys().current(now).jwks(now);
    let body = serde_json::to_string(&jwks).map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/jwk-set+json")
        .header(header::CACHE_CONTROL, format!("public, max-age={JWKS_MAX_AGE_SECS}"))
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(body))
}

#[handler]
fn style() -> Response {
    handoff_web::respond::asset("text/css; charset=utf-8", include_str!("../../static/style.css"))
}

#[handler]
fn script() -> Response {
    handoff_web::respond::asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/handoff.js"),
    )
}
