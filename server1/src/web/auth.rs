//! Signing in and out, and the dashboard.

use std::net::IpAddr;
use std::sync::Arc;

use poem::http::{header, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::session::{random_token, read_cookie, session_hash};
use super::{add_cookie, current_user, pages, AppError, AppState, State};
use crate::throttle::Key;
use ::handoff::web::see_other;

/// A local path to return to after sign-in; anything else becomes `/`.
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[handler]
pub(super) fn dashboard(req: &Request, Data(state): Data<&State>) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req)? else {
        return Ok(see_other("/login"));
    };
    let offers: Vec<_> = state
        .targets
        .iter()
        .map(|t| (t, t.operations.iter().filter(|op| user.has_role(&op.role)).collect::<Vec<_>>()))
        .collect();
    let csrf = state.csrf.token("session", &hash);
    Ok(pages::html_response(StatusCode::OK, pages::dashboard(&user, &csrf, &offers)))
}

#[handler]
pub(super) fn login_page(req: &Request, Data(state): Data<&State>) -> Result<Response, AppError> {
    let query = req.uri().query().unwrap_or("");
    let next =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v);
    let next = safe_next(next.as_deref());
    if current_user(state, req)?.is_some() {
        return Ok(see_other(&next));
    }
    render_login(state, &next, None, StatusCode::OK)
}

/// The sign-in form with a fresh pre-session anti-forgery pair.
fn render_login(
    state: &AppState,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let nonce = random_token().ok_or_else(|| AppError::Internal("randomness failed".into()))?;
    let csrf = state.csrf.token("login", nonce.as_bytes());
    let mut resp = pages::html_response(status, pages::login_page(&csrf, next, error));
    add_cookie(&mut resp, state.cookies.set(state.cookies.login_name(), &nonce, Some(3600)))?;
    Ok(resp)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

impl std::fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginForm").field("username", &self.username).finish_non_exhaustive()
    }
}

fn client_ip(req: &Request) -> Option<IpAddr> {
    req.remote_addr().as_socket_addr().map(|a| a.ip())
}

fn wait_text(secs: u64) -> String {
    if secs < 60 {
        format!("Too many failed sign-ins. Wait {secs} seconds, then try again.")
    } else {
        format!("Too many failed sign-ins. Wait {} minutes, then try again.", secs.div_ceil(60))
    }
}

#[handler]
pub(super) async fn login(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let login_cookie = read_cookie(req, state.cookies.login_name()).unwrap_or_default();
    if login_cookie.is_empty() || !state.csrf.check("login", login_cookie.as_bytes(), &form.csrf) {
        return Err(AppError::Csrf);
    }
    let next = safe_next(Some(&form.next));
    let name = form.username.trim().to_ascii_lowercase();
    let now = state.config.clock.now();
    // Throttled by the submitted name whether or not it exists, and by the client address.
    let mut keys = vec![Key::Account(name.chars().take(64).collect())];
    keys.extend(client_ip(req).map(Key::client));
    if let Err(wait) = state.throttle.check(&keys, now) {
        state.metrics.signins.with_label_values(&["throttled"]).inc();
        tracing::warn!(event = "signin.throttled", wait, "sign-in throttled");
        let mut resp =
            render_login(state, &next, Some(&wait_text(wait)), StatusCode::TOO_MANY_REQUESTS)?;
        resp.headers_mut().insert(header::RETRY_AFTER, wait.into());
        return Ok(resp);
    }
    let found = if crate::is_valid_user_name(&name) { state.db.user_by_name(&name)? } else { None };
    // argon2 runs off the async threads, a bounded number at a time; an unknown name costs the
    // same as a wrong password.
    let ok = {
        let _slot = state.passwords.slot().map_err(|_| {
            state.metrics.signins.with_label_values(&["busy"]).inc();
            AppError::Busy
        })?;
        let state2 = Arc::clone(state);
        let stored = found.as_ref().map(|(_, h)| h.clone());
        let password = form.password;
        tokio::task::spawn_blocking(move || state2.passwords.verify(&password, stored.as_deref()))
            .await
            .map_err(|e| AppError::Internal(e.to_string()))?
    };
    let user = match (ok, found) {
        (true, Some((user, _))) => user,
        _ => {
            state.throttle.failure(&keys, now);
            state.metrics.signins.with_label_values(&["failed"]).inc();
            tracing::warn!(event = "signin.failed", "sign-in failed");
            return render_login(
                state,
                &next,
                Some("Wrong user name or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
    };
    state.throttle.success(&keys[0]);
    state.metrics.signins.with_label_values(&["ok"]).inc();
    // A new session id at every sign-in (no fixation); the old session, if any, ends.
    if let Some(old) = read_cookie(req, state.cookies.session_name()) {
        state.db.delete_session(&session_hash(&old))?;
    }
    let id = random_token().ok_or_else(|| AppError::Internal("randomness failed".into()))?;
    let ttl = state.config.session_ttl_secs;
    state.db.create_session(&session_hash(&id), &user.id, now, now.plus(ttl))?;
    tracing::info!(event = "signin", sub = %user.id, "signed in");
    let mut resp = see_other(&next);
    add_cookie(&mut resp, state.cookies.set(state.cookies.session_name(), &id, Some(ttl)))?;
    add_cookie(&mut resp, state.cookies.set(state.cookies.login_name(), "", None))?;
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[handler]
pub(super) fn logout(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req)? else {
        return Ok(see_other("/login"));
    };
    if !state.csrf.check("session", &hash, &form.csrf) {
        return Err(AppError::Csrf);
    }
    state.db.delete_session(&hash)?;
    tracing::info!(event = "signout", sub = %user.id, "signed out");
    let mut resp = see_other("/login");
    add_cookie(&mut resp, state.cookies.set(state.cookies.session_name(), "", None))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_local() {
        assert_eq!(
            safe_next(Some("/handoff/partner/report.view?report_id=42")),
            "/handoff/partner/report.view?report_id=42"
        );
        for bad in
            ["https://evil.example", "//evil.example", "/\\evil.example", "evil", "", "/a\nb"]
        {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
