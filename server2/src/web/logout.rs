//! `POST /backchannel-logout`: the issuer says a session (or every session of a user up to
//! now) ended. The logout token is verified as strictly as a handoff — its own `typ`, the
//! pinned algorithm, the issuer's keys, issuer and audience, a short life, the event, no
//! `nonce` — and used once; then the revocation store remembers what ended, for as long as a
//! grant or a handoff token it covers could still be honoured. Answers 200 (empty) when
//! recorded, 400 `invalid_request` for a token that does not pass, and 503 when the stores
//! cannot take it (the issuer retries).

use ::handoff::logout::VerifiedLogout;
use ::handoff::{Freshness, Rejection};
use handoff_web::respond::json;
use poem::http::{header, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, Response};
use serde::Deserialize;

use super::State;

#[derive(Deserialize)]
pub(super) struct LogoutForm {
    #[serde(default)]
    logout_token: String,
}

handoff_web::redacted_debug!(LogoutForm);

/// Why a logout was not recorded.
enum Failure {
    /// The token does not pass (400).
    Refused(&'static str),
    /// A store cannot take it now (503).
    Unavailable(String),
}

#[handler]
pub(super) async fn backchannel_logout(
    Data(state): Data<&State>,
    Form(form): Form<LogoutForm>,
) -> Response {
    match record(state, &form.logout_token).await {
        Ok(logout) => {
            state.metrics.logouts.with_label_values(&["recorded"]).inc();
            tracing::info!(
                event = "logout.received",
                jti = %logout.jti,
                sub = ?logout.ended.sub.as_ref().map(::handoff::Subject::as_str),
                session = logout.ended.sid.is_some(),
                "back-channel logout recorded"
            );
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CACHE_CONTROL, "no-store")
                .finish()
        }
        Err(Failure::Refused(reason)) => {
            state.metrics.logouts.with_label_values(&["refused"]).inc();
            let mut resp = json(StatusCode::BAD_REQUEST, r#"{"error":"invalid_request"}"#);
            resp.extensions_mut().insert(handoff_web::RefusalNote {
                event: "logout.refused",
                message: format!("back-channel logout refused: {reason}"),
            });
            resp
        }
        Err(Failure::Unavailable(why)) => {
            state.metrics.logouts.with_label_values(&["unavailable"]).inc();
            tracing::error!(event = "logout.unavailable", error = %why, "cannot record a back-channel logout");
            json(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"temporarily_unavailable"}"#)
        }
    }
}

async fn record(state: &State, token: &str) -> Result<VerifiedLogout, Failure> {
    // What may pass later — keys not fetched yet (a rotation), a clock ahead — is "try again"
    // (503, and the issuer retries), not a refusal that would lose the logout.
    let refused = |r: Rejection| {
        if r.may_pass_later() {
            Failure::Unavailable(format!("logout token not checkable yet: {}", r.code()))
        } else {
            Failure::Refused(r.code())
        }
    };
    let issuer = state.issuers.for_token(token).map_err(refused)?;
    let inspected = issuer.logout.inspect(token).map_err(refused)?;
    let set = issuer.keys.for_kid(inspected.kid().as_str()).await.map_err(refused)?;
    let key = set.get(inspected.kid().as_str()).ok_or_else(|| refused(Rejection::UnknownKid))?;
    let now = state.config.clock.now();
    let logout = issuer.logout.verify(inspected, key, now).map_err(refused)?;
    if logout.ended.sub.is_none() {
        // Every logout this party acts on names the user (the stores are kept by user).
        return Err(Failure::Refused("no_subject"));
    }
    match state.replay.check_and_set(logout.jti, logout.replay_until, now).await {
        Ok(Freshness::Fresh) => {}
        Ok(_) => return Err(Failure::Refused("replayed")),
        Err(e) => return Err(Failure::Unavailable(e.to_string())),
    }
    // Everything the user had up to the logout: tokens, and grants by their token's `iat`, on
    // the issuer's clock like the logout's own `iat`. Kept as long as a grant or a token issued
    // before could still be honoured.
    let leeway = state.config.leeway.as_secs();
    let before = logout.issued_at;
    let until = now
        .plus(state.config.grant_ttl.as_secs())
        .plus(state.config.max_token_lifetime.as_secs())
        .plus(2 * leeway);
    // Kept under this issuer's scope: it can end only what it handed over.
    let (sub, sid) = state
        .issuers
        .scoped(&issuer.config.issuer, logout.ended.sub.as_ref(), logout.ended.sid.as_ref())
        .ok_or_else(|| Failure::Unavailable("the logout's issuer is not trusted".into()))?;
    let scoped = handoff::logout::Ended { sub, sid };
    state
        .revocations
        .record(&scoped, before, until)
        .await
        .map_err(|e| Failure::Unavailable(e.to_string()))?;
    Ok(logout)
}
