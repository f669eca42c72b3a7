//! Signing in and out, and the dashboard.

use handoff_web::cookies::add_cookie;
use handoff_web::see_other;
use poem::http::{header, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::session::{LOGIN, SESSION};
use super::{current_session, current_user, pages, AppError, AppState, State};
use crate::accounts::{random_token, ClientInfo, SessionHash, SignInError};

/// A local path to return to after sign-in; anything else becomes `/`. A handoff's start URL
/// gets `ask`: whoever chose it, the person's click was on "Sign in", not on that handoff, so
/// SERVER1 asks before handing them over (security round two, finding 1).
pub(super) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && n.len() <= 2048
                && !n.chars().any(char::is_control) =>
        {
            if !n.starts_with(::handoff::protocol::START_PREFIX) {
                return n.to_owned();
            }
            let (path, query) = n.split_once('?').unwrap_or((n, ""));
            let ask = ::handoff::protocol::start_param::ASK;
            if url::form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == ask) {
                n.to_owned()
            } else if query.is_empty() {
                format!("{path}?{ask}=1")
            } else {
                format!("{path}?{query}&{ask}=1")
            }
        }
        _ => "/".to_owned(),
    }
}

#[handler]
pub(super) async fn dashboard(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let Some((user, hash)) = current_user(state, req).await? else {
        return Ok(see_other("/login"));
    };
    // A quick link only where its example would open: not to a value this user holds no
    // entitlement to.
    let mut offers = Vec::new();
    for (target, ops) in state.handoffs.offers(&user) {
        let mut shown = Vec::with_capacity(ops.len());
        for op in ops {
            shown.push((op, state.handoffs.example_opens(&state.db, &user, target, op).await?));
        }
        offers.push((target, shown));
    }
    let csrf = state.csrf.token("session", hash.as_bytes());
    Ok(pages::html_response(StatusCode::OK, pages::dashboard(&user, &csrf, &offers)))
}

#[handler]
pub(super) async fn login_page(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let query = req.uri().query().unwrap_or("");
    let next =
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "next").map(|(_, v)| v);
    let next = safe_next(next.as_deref());
    if current_user(state, req).await?.is_some() {
        return Ok(see_other(&next));
    }
    render_login(state, &next, None, StatusCode::OK)
}

/// A page with a form that works before sign-in (sign-in, sign-up, reset): `render` gets the
/// anti-forgery token, bound to a fresh random value in the pre-session cookie.
pub(super) fn pre_session_form(
    state: &AppState,
    status: StatusCode,
    render: impl FnOnce(&str) -> maud::Markup,
) -> Result<Response, AppError> {
    let nonce = random_token().ok_or_else(|| AppError::Internal("randomness failed".into()))?;
    let csrf = state.csrf.token("login", nonce.as_bytes());
    let mut resp = pages::html_response(status, render(&csrf));
    add_cookie(&mut resp, state.cookies.set(LOGIN, &nonce, Some(3600)))?;
    Ok(resp)
}

/// Checks a pre-session form's anti-forgery token against the pre-session cookie.
pub(super) fn check_pre_session(
    state: &AppState,
    req: &Request,
    csrf: &str,
) -> Result<(), AppError> {
    let cookie = state.cookies.read(req, LOGIN).unwrap_or_default();
    if cookie.is_empty() || !state.csrf.check("login", cookie.as_bytes(), csrf) {
        return Err(AppError::Csrf);
    }
    Ok(())
}

/// What the request says about its client.
pub(super) fn client_info(state: &AppState, req: &Request) -> ClientInfo {
    ClientInfo {
        ip: state.config.trusted_proxies.client_ip(req),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

/// The sign-in form with a fresh pre-session anti-forgery pair.
fn render_login(
    state: &AppState,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, AppError> {
    let open = state.accounts.settings().signup_open;
    pre_session_form(state, status, |csrf| pages::login_page(csrf, next, error, open))
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

handoff_web::redacted_debug!(LoginForm: username);

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
    check_pre_session(state, req, &form.csrf)?;
    let next = safe_next(Some(&form.next));
    let client = client_info(state, req);
    let previous = state.cookies.read(req, SESSION).map(|id| SessionHash::of(&id));
    let signed_in = match state
        .accounts
        .sign_in(&form.username, form.password, &client, previous)
        .await
    {
        Ok(signed_in) => signed_in,
        Err(SignInError::Throttled { wait }) => {
            state.metrics.signins.with_label_values(&["throttled"]).inc();
            let mut resp =
                render_login(state, &next, Some(&wait_text(wait)), StatusCode::TOO_MANY_REQUESTS)?;
            resp.headers_mut().insert(header::RETRY_AFTER, wait.into());
            return Ok(resp);
        }
        Err(SignInError::Disabled) => {
            state.metrics.signins.with_label_values(&["disabled"]).inc();
            return render_login(
                state,
                &next,
                Some("This account is disabled. Ask an administrator."),
                StatusCode::FORBIDDEN,
            );
        }
        Err(SignInError::WrongCredentials) => {
            state.metrics.signins.with_label_values(&["failed"]).inc();
            return render_login(
                state,
                &next,
                Some("Wrong user name or password."),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => {
            if matches!(e, SignInError::Busy) {
                state.metrics.signins.with_label_values(&["busy"]).inc();
            }
            return Err(AppError::from_sign_in(e));
        }
    };
    state.metrics.signins.with_label_values(&["ok"]).inc();
    let ttl = state.accounts.session_ttl_secs();
    let mut resp = see_other(&next);
    add_cookie(&mut resp, state.cookies.set(SESSION, &signed_in.session_id, Some(ttl)))?;
    add_cookie(&mut resp, state.cookies.set(LOGIN, "", None))?;
    Ok(resp)
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[handler]
pub(super) async fn logout(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let Some(session) = current_session(state, req).await? else {
        return Ok(see_other("/login"));
    };
    if !state.csrf.check("session", session.hash.as_bytes(), &form.csrf) {
        return Err(AppError::Csrf);
    }
    state.accounts.sign_out(&session).await?;
    let mut resp = see_other("/login");
    add_cookie(&mut resp, state.cookies.set(SESSION, "", None))?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_local() {
        assert_eq!(
            safe_next(Some("/handoff/partner/report.view?report_id=42")),
            "/handoff/partner/report.view?report_id=42&ask=1",
            "back to a handoff, SERVER1 asks first"
        );
        assert_eq!(safe_next(Some("/handoff/partner/x?ask=1")), "/handoff/partner/x?ask=1");
        assert_eq!(safe_next(Some("/handoff/partner/x")), "/handoff/partner/x?ask=1");
        assert_eq!(safe_next(Some("/account?tab=1")), "/account?tab=1");
        for bad in
            ["https://evil.example", "//evil.example", "/\\evil.example", "evil", "", "/a\nb"]
        {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
