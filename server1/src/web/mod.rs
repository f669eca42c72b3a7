//! SERVER1's HTTP surface: routes and the middleware around them. Signing in and out lives in
//! [`auth`], minting in [`handoff`].

mod auth;
mod error;
mod handoff;
pub mod pages;
pub mod session;

use std::sync::Arc;

use ::handoff::web::{Hardening, Limits};
use ::handoff::Minter;
use poem::http::{header, HeaderValue, StatusCode};
use poem::web::Data;
use poem::{get, handler, post, Endpoint, EndpointExt, Request, Response, Route};

pub use error::AppError;

use crate::config::Config;
use crate::db::{Db, User};
use crate::passwords::Passwords;
use crate::targets::Targets;
use crate::throttle::Throttle;
use session::{read_cookie, session_hash, Cookies, Csrf};

/// Everything handlers share. Built once at start-up.
#[derive(Debug)]
pub struct AppState {
    pub(crate) config: Config,
    pub(crate) db: Db,
    pub(crate) targets: Targets,
    pub(crate) minter: Minter,
    pub(crate) jwks_json: String,
    pub(crate) passwords: Passwords,
    pub(crate) csrf: Csrf,
    pub(crate) cookies: Cookies,
    pub(crate) throttle: Throttle,
}

type State = Arc<AppState>;

/// The routes, with middleware.
pub fn routes(state: State) -> impl Endpoint<Output = Response> {
    let hardening = Hardening {
        csp: pages::DEFAULT_CSP,
        hsts: state.config.public_url.as_str().starts_with("https://"),
    };
    Route::new()
        .at("/", get(auth::dashboard))
        .at("/login", get(auth::login_page).post(auth::login))
        .at("/logout", post(auth::logout))
        .at("/handoff/:target/:operation", get(handoff::start))
        .at("/.well-known/jwks.json", get(jwks))
        .at("/healthz", get(healthz))
        .at("/static/style.css", get(style))
        .at("/static/handoff.js", get(script))
        .data(state)
        .catch_all_error(|err: poem::Error| async move {
            if let Some(app) = err.downcast_ref::<AppError>() {
                return poem::error::ResponseError::as_response(app);
            }
            // Extractor and routing errors: a fixed page, never poem's error text.
            error_page(err.status())
        })
        .around(move |ep, req| async move {
            Ok(::handoff::web::serve_one(&ep, req, &Limits::FORMS, &hardening, error_page).await)
        })
}

fn error_page(status: StatusCode) -> Response {
    let error = match status {
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => AppError::NotFound,
        StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::URI_TOO_LONG
        | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => AppError::TooLarge(status),
        s if s.is_server_error() => AppError::Internal(format!("status {s}")),
        _ => AppError::BadRequest("The request could not be understood".into()),
    };
    poem::error::ResponseError::as_response(&error)
}

fn redirect(location: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location).finish()
}

fn add_cookie(resp: &mut Response, value: Option<HeaderValue>) -> Result<(), AppError> {
    let value = value.ok_or_else(|| AppError::Internal("unrepresentable cookie".into()))?;
    resp.headers_mut().append(header::SET_COOKIE, value);
    Ok(())
}

/// The signed-in user and their session hash, if the request carries a live session.
fn current_user(state: &AppState, req: &Request) -> Result<Option<(User, [u8; 32])>, AppError> {
    let Some(id) = read_cookie(req, state.cookies.session_name()) else {
        return Ok(None);
    };
    let hash = session_hash(&id);
    let now = state.config.clock.now();
    Ok(state.db.session_user(&hash, now)?.map(|u| (u, hash)))
}

#[handler]
fn jwks(Data(state): Data<&State>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/jwk-set+json")
        .header(header::CACHE_CONTROL, "public, max-age=300")
        .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")
        .body(state.jwks_json.clone())
}

#[handler]
fn healthz() -> &'static str {
    "ok"
}

#[handler]
fn style() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/css; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(include_str!("../../static/style.css"))
}

#[handler]
fn script() -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/javascript; charset=utf-8")
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(include_str!("../../static/handoff.js"))
}
