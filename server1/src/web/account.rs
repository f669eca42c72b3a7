//! Sign-up, the pages behind the links in mail (verify an address, reset a password, confirm a
//! new address), "forgot your password?", and the account page with its forms.
//!
//! A link from a mail opens a page with a button; only the button's POST uses the link up, so a
//! mail scanner or a link preview that fetches it spends nothing. Every form carries an
//! anti-forgery token: the session's when signed in, the pre-session cookie's before.

use handoff_web::cookies::add_cookie;
use handoff_web::see_other;
use poem::http::{header, StatusCode};
use poem::web::{Data, Form};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::auth::{check_pre_session, client_info, pre_session_form};
use super::session::SESSION;
use super::{current_user, pages, AppError, AppState, State};
use crate::accounts::{AccountError, SessionHash};
use crate::db::User;

/// The `name` parameter of the request's query.
fn query_param(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// What an account error shows: the form again with its text (status 400), or a page of its
/// own.
fn form_error(e: AccountError) -> Result<(StatusCode, String), AppError> {
    let status = match &e {
        AccountError::Password(_)
        | AccountError::BadName
        | AccountError::BadEmail
        | AccountError::NameTaken
        | AccountError::WrongPassword
        | AccountError::SameEmail => StatusCode::BAD_REQUEST,
        _ => return Err(AppError::from_account(e)),
    };
    let mut text = e.to_string();
    if let Some(first) = text.get(..1) {
        text = first.to_uppercase() + &text[1..];
    }
    Ok((status, format!("{text}.")))
}

/// A page saying something worked, with the way on.
fn done_page(title: &str, text: &str, link: (&str, &str)) -> Response {
    pages::html_response(StatusCode::OK, pages::BRAND.message(title, text, Some(link)))
}

/// The page for a link that does not work (any more).
fn dead_link() -> Response {
    pages::html_response(
        StatusCode::BAD_REQUEST,
        pages::message_page(
            "This link does not work",
            "It was used already, replaced by a newer one, or it expired. Ask for a new one: sign in and use your account page, or use “Forgot your password?” on the sign-in page.",
        ),
    )
}

#[handler]
pub(super) async fn signup_page(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    if !state.accounts.settings().signup_open {
        return Err(AppError::NotFound);
    }
    if current_user(state, req).await?.is_some() {
        return Ok(see_other("/account"));
    }
    pre_session_form(state, StatusCode::OK, |csrf| {
        pages::signup_page(csrf, &pages::SignupValues::default(), None)
    })
}

#[derive(Deserialize)]
pub(super) struct SignupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

handoff_web::redacted_debug!(SignupForm: username);

#[handler]
pub(super) async fn signup(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<SignupForm>,
) -> Result<Response, AppError> {
    if !state.accounts.settings().signup_open {
        return Err(AppError::NotFound);
    }
    check_pre_session(state, req, &form.csrf)?;
    let client = client_info(state, req);
    match state.accounts.sign_up(&form.username, &form.email, form.password, &client).await {
        Ok(email) => Ok(pages::html_response(StatusCode::OK, pages::signup_done(email.as_str()))),
        Err(e) => {
            let (status, text) = form_error(e)?;
            let values = pages::SignupValues {
                username: form.username.get(..64).unwrap_or(&form.username),
                email: form.email.get(..254).unwrap_or(&form.email),
            };
            pre_session_form(state, status, |csrf| pages::signup_page(csrf, &values, Some(&text)))
        }
    }
}

/// The page behind a link: a button that posts the link's token to `action`.
fn link_page(
    state: &AppState,
    req: &Request,
    title: &str,
    text: &str,
    action: &str,
    button: &str,
) -> Result<Response, AppError> {
    let token = query_param(req, "token").unwrap_or_default();
    if !crate::links::is_well_formed(&token) {
        return Ok(dead_link());
    }
    pre_session_form(state, StatusCode::OK, |csrf| {
        pages::link_confirm_page(title, text, action, &token, csrf, button)
    })
}

#[handler]
pub(super) async fn verify_page(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    link_page(
        state,
        req,
        "Verify your e-mail address",
        "Confirm that this address is yours.",
        "/verify-email",
        "Verify my address",
    )
}

#[derive(Deserialize)]
pub(super) struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
}

handoff_web::redacted_debug!(TokenForm);

#[handler]
pub(super) async fn verify(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<TokenForm>,
) -> Result<Response, AppError> {
    check_pre_session(state, req, &form.csrf)?;
    match state.accounts.verify_email(&form.token).await {
        Ok(user) => Ok(done_page(
            "Address verified",
            &format!(
                "Thank you: {} is verified. You can open partner links now.",
                user.email.as_ref().map_or("", |e| e.as_str())
            ),
            ("/", "Go to the portal"),
        )),
        Err(AccountError::LinkInvalid) => Ok(dead_link()),
        Err(e) => Err(AppError::from_account(e)),
    }
}

#[handler]
pub(super) async fn forgot_page(Data(state): Data<&State>) -> Result<Response, AppError> {
    pre_session_form(state, StatusCode::OK, |csrf| pages::forgot_page(csrf, None))
}

#[derive(Debug, Deserialize)]
pub(super) struct ForgotForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
}

#[handler]
pub(super) async fn forgot(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<ForgotForm>,
) -> Result<Response, AppError> {
    check_pre_session(state, req, &form.csrf)?;
    let client = client_info(state, req);
    match state.accounts.request_reset(&form.email, &client).await {
        Ok(()) => {
            let minutes = state.config.mail.reset_ttl_secs / 60;
            Ok(pages::html_response(StatusCode::OK, pages::forgot_done(minutes)))
        }
        Err(e) => {
            let (status, text) = form_error(e)?;
            pre_session_form(state, status, |csrf| pages::forgot_page(csrf, Some(&text)))
        }
    }
}

#[handler]
pub(super) async fn reset_page(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let token = query_param(req, "token").unwrap_or_default();
    match state.accounts.reset_link_user(&token).await {
        Ok(user) => pre_session_form(state, StatusCode::OK, |csrf| {
            pages::reset_page(csrf, &token, &user, None)
        }),
        Err(AccountError::LinkInvalid) => Ok(dead_link()),
        Err(e) => Err(AppError::from_account(e)),
    }
}

#[derive(Deserialize)]
pub(super) struct ResetForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

handoff_web::redacted_debug!(ResetForm);

#[handler]
pub(super) async fn reset(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<ResetForm>,
) -> Result<Response, AppError> {
    check_pre_session(state, req, &form.csrf)?;
    match state.accounts.reset_password(&form.token, form.password).await {
        Ok(_) => {
            let mut resp = done_page(
                "Password changed",
                "Your new password is set, and every session of your account was signed out. Sign in with the new password.",
                ("/login", "Sign in"),
            );
            add_cookie(&mut resp, state.cookies.set(SESSION, "", None))?;
            Ok(resp)
        }
        Err(AccountError::LinkInvalid) => Ok(dead_link()),
        Err(e) => {
            let (status, text) = form_error(e)?;
            let user = match state.accounts.reset_link_user(&form.token).await {
                Ok(user) => user,
                Err(_) => return Ok(dead_link()),
            };
            pre_session_form(state, status, |csrf| {
                pages::reset_page(csrf, &form.token, &user, Some(&text))
            })
        }
    }
}

#[handler]
pub(super) async fn confirm_email_page(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    link_page(
        state,
        req,
        "Confirm your new e-mail address",
        "Make this the address of your account. The old address will be told.",
        "/confirm-email",
        "Use this address",
    )
}

#[handler]
pub(super) async fn confirm_email(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<TokenForm>,
) -> Result<Response, AppError> {
    check_pre_session(state, req, &form.csrf)?;
    match state.accounts.confirm_email_change(&form.token).await {
        Ok(user) => Ok(done_page(
            "Address changed",
            &format!(
                "Your account's address is now {}.",
                user.email.as_ref().map_or("", |e| e.as_str())
            ),
            ("/account", "Your account"),
        )),
        Err(AccountError::LinkInvalid) => Ok(dead_link()),
        Err(e @ AccountError::EmailUnavailable) => Ok(pages::html_response(
            StatusCode::CONFLICT,
            pages::message_page("That did not work", &format!("{}.", capitalized(&e.to_string()))),
        )),
        Err(e) => Err(AppError::from_account(e)),
    }
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// The signed-in user (without one, the error that leads to the sign-in page).
async fn signed_in(state: &AppState, req: &Request) -> Result<(User, SessionHash), AppError> {
    current_user(state, req).await?.ok_or(AppError::SignInFirst("/account"))
}

/// The account page, with `error` (status 400) or the notice its URL names.
async fn render_account(
    state: &AppState,
    req: &Request,
    user: &User,
    hash: SessionHash,
    error: Option<&str>,
) -> Result<Response, AppError> {
    let sessions = state.accounts.sessions(user).await?;
    let csrf = state.csrf.token("session", hash.as_bytes());
    let notice = query_param(req, "notice").and_then(|code| pages::account_notice(&code));
    let view = pages::AccountView {
        user,
        csrf: &csrf,
        sessions: &sessions,
        current: hash.as_bytes(),
        now: state.config.clock.now().as_secs(),
        notice: if error.is_some() { None } else { notice },
        error,
        verification_required: state.accounts.settings().require_verified_email,
    };
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    Ok(pages::html_response(status, pages::account_page(&view)))
}

#[handler]
pub(super) async fn account(
    req: &Request,
    Data(state): Data<&State>,
) -> Result<Response, AppError> {
    let (user, hash) = signed_in(state, req).await?;
    render_account(state, req, &user, hash, None).await
}

#[derive(Debug, Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// The signed-in user of a POST from the account page, its anti-forgery token checked.
async fn account_post(
    state: &AppState,
    req: &Request,
    csrf: &str,
) -> Result<(User, SessionHash), AppError> {
    let (user, hash) = signed_in(state, req).await?;
    if !state.csrf.check("session", hash.as_bytes(), csrf) {
        return Err(AppError::Csrf);
    }
    Ok((user, hash))
}

#[handler]
pub(super) async fn resend_verification(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let (user, _) = account_post(state, req, &form.csrf).await?;
    state
        .accounts
        .resend_verification(&user, &client_info(state, req))
        .await
        .map_err(AppError::from_account)?;
    Ok(see_other("/account?notice=verification-sent"))
}

/// After a change asked on the account page: back to it with the notice `done`, or the page
/// again with the error (a form error) or the error's own page.
async fn after_change(
    state: &AppState,
    req: &Request,
    user: &User,
    hash: SessionHash,
    outcome: Result<(), AccountError>,
    done: &str,
) -> Result<Response, AppError> {
    match outcome {
        Ok(()) => Ok(see_other(&format!("/account?notice={done}"))),
        Err(e) => {
            let (_, text) = form_error(e)?;
            render_account(state, req, user, hash, Some(&text)).await
        }
    }
}

#[derive(Deserialize)]
pub(super) struct EmailForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

handoff_web::redacted_debug!(EmailForm);

#[handler]
pub(super) async fn change_email(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<EmailForm>,
) -> Result<Response, AppError> {
    let (user, hash) = account_post(state, req, &form.csrf).await?;
    let client = client_info(state, req);
    let asked = state.accounts.request_email_change(&user, &form.email, form.password, &client);
    after_change(state, req, &user, hash, asked.await.map(drop), "email-sent").await
}

#[derive(Debug, Deserialize)]
pub(super) struct DisplayNameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    display_name: String,
}

#[handler]
pub(super) async fn change_display_name(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<DisplayNameForm>,
) -> Result<Response, AppError> {
    let (user, hash) = account_post(state, req, &form.csrf).await?;
    let name = form.display_name.trim();
    if !name.is_empty() && !::handoff::token::is_display_name(name) {
        let why = "A display name is at most 80 characters, without control characters.";
        return render_account(state, req, &user, hash, Some(why)).await;
    }
    state.db.set_display_name(&user.id, (!name.is_empty()).then_some(name)).await?;
    Ok(see_other("/account?notice=name-changed"))
}

#[derive(Deserialize)]
pub(super) struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
}

handoff_web::redacted_debug!(PasswordForm);

#[handler]
pub(super) async fn change_password(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let (user, hash) = account_post(state, req, &form.csrf).await?;
    let client = client_info(state, req);
    let changed = state.accounts.change_password(&user, hash, form.current, form.new, &client);
    after_change(state, req, &user, hash, changed.await, "password-changed").await
}

#[derive(Debug, Deserialize)]
pub(super) struct EndSessionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    session: String,
}

#[handler]
pub(super) async fn end_session(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<EndSessionForm>,
) -> Result<Response, AppError> {
    let (user, _) = account_post(state, req, &form.csrf).await?;
    if !state.accounts.end_session(&user, &form.session).await? {
        return Err(AppError::NotFound);
    }
    Ok(see_other("/account?notice=session-ended"))
}

#[handler]
pub(super) async fn end_all_sessions(
    req: &Request,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    let (user, _) = account_post(state, req, &form.csrf).await?;
    state.accounts.sign_out_everywhere(&user).await?;
    let mut resp = see_other("/login");
    add_cookie(&mut resp, state.cookies.set(SESSION, "", None))?;
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(resp)
}
