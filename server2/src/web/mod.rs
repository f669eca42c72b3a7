//! SERVER2's HTTP surface: its state, routes, cookies and metrics. The handoff itself lives in
//! [`handoff`], the operation pages in [`operations`], the errors in [`error`]; the skeleton
//! around them (health, readiness, metrics, error pages, the request guard) is `handoff-web`'s.

mod error;
mod handoff;
mod logout;
mod operations;
pub mod pages;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ::handoff::grant::GrantKey;
use ::handoff::revocation::RevocationStore;
use ::handoff::Jti;
use ::handoff::ReplayStore;
use handoff_web::cookies::{CookieName, SameSite};
use handoff_web::{cookie_name, Csrf, Jar, Routes, Service};
use poem::http::{HeaderValue, StatusCode};
use poem::web::Data;
use poem::{get, handler, post, Request, Response};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::Config;
use crate::issuers::Issuers;
use crate::operations::Approval;
use crate::refusal::Refusal;
pub use error::AppError;
pub(crate) use handoff::{log_suppressed, Refusals};
pub(crate) use operations::when;

/// Everything handlers share.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    /// The issuers trusted, each with its verifiers and keys.
    pub(crate) issuers: Issuers,
    pub(crate) replay: Arc<dyn ReplayStore>,
    /// What the issuers' back-channel logouts ended.
    pub(crate) revocations: Arc<dyn RevocationStore>,
    pub(crate) grants: GrantKey,
    /// Anti-forgery tokens of the switch and operation forms, bound to a grant.
    pub(crate) forms: GrantForms,
    pub(crate) jar: Jar,
    pub(crate) approvals: Mutex<HashMap<String, Approval>>,
    pub(crate) metrics: Metrics,
    /// The refusal pages, rendered once.
    pub(crate) refusals: Refusals,
    /// Log lines for refusals of unsigned garbage.
    pub(crate) unsigned_refusal_logs: Arc<handoff_web::telemetry::LogBudget>,
    /// Signature checks of concurrent handoffs, done together.
    pub(crate) batcher: crate::batch::Batcher,
}

type State = Arc<AppState>;

/// SERVER2's own metrics (the request latency is the skeleton's).
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) accepted: IntCounter,
    /// `handoff_rejected_total`, one counter per refusal, in [`Refusal::index`] order.
    rejected_by_reason: Vec<IntCounter>,
    /// JWKS fetches by outcome (`ok`, `error`).
    pub jwks_fetches: IntCounterVec,
    replay_entries: IntGauge,
    jwks_keys: IntGauge,
    /// Seconds since the issuer last confirmed its keys (the longest over issuers).
    jwks_unconfirmed: IntGauge,
    /// How far ahead of this server's clock the issuer's was, seen on the last token refused as
    /// not yet valid.
    pub(crate) issuer_clock_ahead: IntGauge,
    /// Back-channel logouts received, by outcome (`recorded`, `refused`, `unavailable`).
    pub(crate) logouts: IntCounterVec,
    /// Operation requests refused because a logout ended their grant.
    pub(crate) grants_ended: IntCounter,
    /// Signatures checked in a batch of two or more (the rest were checked alone).
    pub(crate) signatures_batched: IntCounter,
}

impl Metrics {
    /// Counts one refusal for `reason`.
    pub(crate) fn rejected(&self, reason: Refusal) {
        if let Some(counter) = self.rejected_by_reason.get(reason.index()) {
            counter.inc();
        }
    }

    /// Registers every SERVER2 metric in `registry`, refusal reasons at zero.
    ///
    /// # Errors
    ///
    /// Only on a programming error (a metric registered twice).
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let accepted = IntCounter::new("handoff_accepted_total", "Handoff tokens accepted")?;
        let rejected = IntCounterVec::new(
            Opts::new("handoff_rejected_total", "Handoff tokens refused, by reason code"),
            &["reason"],
        )?;
        // One counter per reason, resolved once: a flood of refusals needs no label lookups.
        let rejected_by_reason =
            Refusal::all().map(|r| rejected.with_label_values(&[r.code()])).collect();
        let jwks_fetches = IntCounterVec::new(
            Opts::new("jwks_fetches_total", "Fetches of the issuer's JWKS, by outcome"),
            &["outcome"],
        )?;
        jwks_fetches.with_label_values(&["ok"]);
        jwks_fetches.with_label_values(&["error"]);
        let replay_entries =
            IntGauge::new("replay_store_entries", "Token ids held by the replay store")?;
        let jwks_keys = IntGauge::new("jwks_keys", "Issuer keys currently trusted")?;
        let jwks_unconfirmed = IntGauge::new(
            "jwks_unconfirmed_seconds",
            "Seconds since an issuer last confirmed its keys (the longest over issuers); past SERVER2_JWKS_MAX_STALE_SECS they are no longer trusted",
        )?;
        registry.register(Box::new(jwks_unconfirmed.clone()))?;
        let issuer_clock_ahead = IntGauge::new(
            "issuer_clock_ahead_seconds",
            "How far ahead the issuer's clock was on the last token refused as not yet valid",
        )?;
        let logouts = IntCounterVec::new(
            Opts::new(
                "backchannel_logout_received_total",
                "Back-channel logouts received, by outcome",
            ),
            &["outcome"],
        )?;
        for outcome in ["recorded", "refused", "unavailable"] {
            logouts.with_label_values(&[outcome]);
        }
        let grants_ended = IntCounter::new(
            "grants_ended_total",
            "Operation requests refused because a logout on the portal ended their grant",
        )?;
        let signatures_batched = IntCounter::new(
            "handoff_signatures_batched_total",
            "Handoff signatures checked in a batch of two or more (the rest were checked alone)",
        )?;
        registry.register(Box::new(signatures_batched.clone()))?;
        registry.register(Box::new(logouts.clone()))?;
        registry.register(Box::new(grants_ended.clone()))?;
        registry.register(Box::new(issuer_clock_ahead.clone()))?;
        registry.register(Box::new(accepted.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        registry.register(Box::new(replay_entries.clone()))?;
        registry.register(Box::new(jwks_keys.clone()))?;
        Ok(Self {
            accepted,
            rejected_by_reason,
            jwks_fetches,
            replay_entries,
            jwks_keys,
            jwks_unconfirmed,
            issuer_clock_ahead,
            logouts,
            grants_ended,
            signatures_batched,
        })
    }
}

/// SERVER2's cookies. All HttpOnly, `Path=/`; `Secure` with the `__Host-` prefix unless
/// development mode says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cookie {
    /// The operation grant (SameSite=Lax: set on the 303 after a cross-site POST, sent on the
    /// top-level navigation that follows).
    Grant,
    /// The browser-binding nonce of a handoff SERVER2 started (SameSite=None: it must come back
    /// with the cross-site form POST from SERVER1, which Lax cookies do not).
    Nonce,
    /// A grant for another user, waiting for the person to confirm the switch.
    Pending,
    /// A signed note of which user holds the grant (SameSite=None, no authority): SERVER1's
    /// cross-site form POST does not carry the Lax grant, but must learn that the browser is
    /// signed in as someone else, to ask before switching.
    Holder,
}

impl Cookie {
    const fn name(self) -> CookieName {
        match self {
            Self::Grant => cookie_name!("handoff_grant"),
            Self::Nonce => cookie_name!("handoff_nonce"),
            Self::Pending => cookie_name!("handoff_pending"),
            Self::Holder => cookie_name!("handoff_holder"),
        }
    }

    const fn same_site(self) -> SameSite {
        match self {
            Self::Nonce | Self::Holder => SameSite::None,
            Self::Grant | Self::Pending => SameSite::Lax,
        }
    }
}

impl AppState {
    /// The value of `cookie` in `req`.
    pub(crate) fn read_cookie(&self, req: &Request, cookie: Cookie) -> Option<String> {
        self.jar.read(req, cookie.name())
    }

    /// A `Set-Cookie` header for `cookie`; `max_age` None deletes it.
    pub(crate) fn set_cookie(
        &self,
        cookie: Cookie,
        value: &str,
        max_age: Option<u64>,
    ) -> Option<HeaderValue> {
        self.jar.set(cookie.name(), cookie.same_site(), value, max_age)
    }
}

/// Anti-forgery tokens of the forms that act under a grant (switch user, an operation's form),
/// each bound to that one handoff: its `jti`.
#[derive(Debug)]
pub struct GrantForms(Csrf);

/// What a form under a grant does: its anti-forgery token says so, so the token of one form is
/// never the token of another for the same grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormPurpose {
    /// "Switch user?": replace the browser's grant with the pending one.
    Switch,
    /// An operation's own form (approving an invoice), by operation type.
    Operation(&'static str),
}

impl FormPurpose {
    fn label(self) -> String {
        match self {
            Self::Switch => "switch".to_owned(),
            Self::Operation(kind) => format!("operation:{kind}"),
        }
    }
}

impl GrantForms {
    /// Tokens keyed with `secret` (its own key: see [`::handoff::grant::Purpose::Forms`]).
    pub fn new(secret: &[u8]) -> Self {
        Self(Csrf::new(secret))
    }

    /// The token for the form of `purpose` acting under the grant of handoff `jti`.
    pub(crate) fn token(&self, purpose: FormPurpose, jti: Jti) -> String {
        self.0.token(&purpose.label(), jti.to_string().as_bytes())
    }

    /// Checks a form's token against its purpose and the grant of handoff `jti`, in constant
    /// time.
    pub(crate) fn check(&self, purpose: FormPurpose, jti: Jti, token: &str) -> bool {
        self.0.check(&purpose.label(), jti.to_string().as_bytes(), token)
    }
}

impl Service for AppState {
    type Error = AppError;

    async fn readiness(&self) -> Result<(), &'static str> {
        if !self.issuers.is_ready() {
            return Err("issuer keys not loaded, or not confirmed by the issuer for too long");
        }
        self.replay.is_available().then_some(()).ok_or("replay store unavailable")
    }

    fn refresh_metrics(&self) {
        let m = &self.metrics;
        m.replay_entries
            .set(self.replay.entries().map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX)));
        m.jwks_keys.set(i64::try_from(self.issuers.key_count()).unwrap_or(i64::MAX));
        m.jwks_unconfirmed.set(i64::try_from(self.issuers.unconfirmed_for()).unwrap_or(i64::MAX));
    }
}

/// SERVER2's routes: home, the handoff, each operation's page, the stylesheet.
pub fn routes() -> Routes {
    let routes = Routes::new()
        .at("/", get(home))
        .at("/handoff", get(handoff::by_get).post(handoff::by_post))
        .at("/handoff/start", get(handoff::start))
        .at("/handoff/switch", get(handoff::switch_prompt).post(handoff::switch))
        .at("/backchannel-logout", post(logout::backchannel_logout))
        .at("/static/style.css", get(style))
        .at(ERRORS_PATH, get(errors));
    operations::routes(routes)
}

#[handler]
fn home(Data(state): Data<&State>) -> Response {
    let portal = state.config.primary().issuer.as_str();
    pages::html_response(
        StatusCode::OK,
        pages::BRAND.message(
            "Partner Analytics",
            "Open reports and invoices from your portal: it signs you in here for exactly what you opened.",
            Some((portal, "Go to the portal")),
        ),
    )
}

#[handler]
fn style() -> Response {
    handoff_web::respond::asset("text/css; charset=utf-8", include_str!("../../static/style.css"))
}

/// Where SERVER2 serves docs/errors.md: every refusal's `type` (problem+json) and page link to
/// its class there.
pub(crate) const ERRORS_PATH: &str = "/errors";

#[handler]
fn errors() -> Response {
    handoff_web::respond::asset(
        "text/markdown; charset=utf-8",
        include_str!("../../../docs/errors.md"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::handoff::Jti;

    #[test]
    fn form_tokens_are_bound_to_the_grant() {
        let forms = GrantForms::new(&[7; 32]);
        let rng = ring::rand::SystemRandom::new();
        let (a, b) = (Jti::generate(&rng).expect("rng"), Jti::generate(&rng).expect("rng"));
        let approve = FormPurpose::Operation("invoice.approve");
        let token = forms.token(approve, a);
        assert!(forms.check(approve, a, &token));
        assert!(!forms.check(approve, b, &token));
        assert!(!forms.check(approve, a, ""));
        assert!(!forms.check(approve, a, "!!"));
        // One grant, two forms, two tokens: the switch form's is not the approval's.
        let switch = forms.token(FormPurpose::Switch, a);
        assert_ne!(switch, token);
        assert!(!forms.check(approve, a, &switch));
        assert!(!forms.check(FormPurpose::Switch, a, &token));
        assert!(!GrantForms::new(&[8; 32]).check(approve, a, &token), "another key");
    }
}
