//! What a handler can fail with, and the one place where that becomes an HTTP response.

use handoff_web::{ErrorPage, StatusClass};
use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::Response;

use super::pages;
use crate::accounts::{AccountError, SignInError};
use crate::handoffs::HandoffError;
use crate::names::Role;

/// A handler failure. The page shown names what the person can do; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such page, target or operation.
    #[error("not found")]
    NotFound,
    /// The page needs a signed-in user: the answer is the sign-in page, coming back to the
    /// path given.
    #[error("not signed in")]
    SignInFirst(&'static str),
    /// The user lacks the role the operation needs.
    #[error("missing role {0}")]
    MissingRole(Role),
    /// The user may not open this object (an `entitled` argument's value).
    #[error("not entitled to this {0}")]
    NotEntitled(String),
    /// A request field is invalid; the message is safe to show (it never echoes the input).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The anti-forgery token is missing or wrong.
    #[error("csrf check failed")]
    Csrf,
    /// The database is unavailable.
    #[error("database: {0}")]
    Db(#[from] crate::db::DbError),
    /// The request broke a size limit (body, URI or headers).
    #[error("too large: {0}")]
    TooLarge(StatusCode),
    /// Too much work at once (sign-in slots all busy).
    #[error("busy")]
    Busy,
    /// Handoffs wait until the user's address is verified.
    #[error("e-mail address not verified")]
    Unverified,
    /// This client asked for too much mail within the hour.
    #[error("mail limit reached")]
    Limited,
    /// Too many wrong passwords: wait this many seconds.
    #[error("throttled for {0} s")]
    Throttled(u64),
    /// Something that should not happen.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StatusClass> for AppError {
    fn from(class: StatusClass) -> Self {
        match class {
            StatusClass::NotFound => Self::NotFound,
            StatusClass::TooLarge(status) => Self::TooLarge(status),
            StatusClass::ServerError(status) => Self::Internal(format!("status {status}")),
            StatusClass::BadRequest(_) => {
                Self::BadRequest("The request could not be understood".into())
            }
        }
    }
}

impl From<HandoffError> for AppError {
    fn from(e: HandoffError) -> Self {
        match e {
            HandoffError::NoSuchTarget(_) | HandoffError::NoSuchOperation { .. } => Self::NotFound,
            HandoffError::MissingRole(role) => Self::MissingRole(role),
            HandoffError::BadArguments(why) => {
                Self::BadRequest(format!("This link is not valid: {why}"))
            }
            HandoffError::NotEntitled { arg } => Self::NotEntitled(arg),
            HandoffError::Db(e) => Self::Db(e),
            HandoffError::Mint(why) => Self::Internal(why),
            HandoffError::NoPairwiseSecret => Self::Internal(e.to_string()),
        }
    }
}

impl From<handoff_web::cookies::UnrepresentableCookie> for AppError {
    fn from(e: handoff_web::cookies::UnrepresentableCookie) -> Self {
        Self::Internal(e.to_string())
    }
}

impl ResponseError for AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::SignInFirst(_) => StatusCode::SEE_OTHER,
            Self::MissingRole(_) | Self::NotEntitled(_) | Self::Csrf | Self::Unverified => {
                StatusCode::FORBIDDEN
            }
            Self::Limited | Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(status) => *status,
            Self::Db(_) | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        if let Self::SignInFirst(_) = self {
            // Not an event: every signed-out visit to an account page lands here.
            return self.page();
        }
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
            return self.page();
        }
        // Anyone can cause these at will (a form without its token, a link to nothing): the
        // guard logs them within the refusal log budget.
        let event = if matches!(self, Self::Csrf) { "csrf.refused" } else { "request.refused" };
        let mut resp = self.page();
        resp.extensions_mut().insert(handoff_web::RefusalNote { event, message: self.to_string() });
        resp
    }
}

impl AppError {
    /// The error for a sign-in failure that is not a page of its own (throttled and wrong
    /// credentials show the sign-in form again).
    pub(crate) fn from_sign_in(e: SignInError) -> Self {
        match e {
            SignInError::Busy => Self::Busy,
            SignInError::Db(e) => Self::Db(e),
            other => Self::Internal(other.to_string()),
        }
    }

    /// The error for an account failure that is not shown in its form.
    pub(crate) fn from_account(e: AccountError) -> Self {
        match e {
            AccountError::Busy => Self::Busy,
            AccountError::Db(e) => Self::Db(e),
            AccountError::Limited => Self::Limited,
            AccountError::Throttled(wait) => Self::Throttled(wait),
            AccountError::SignupClosed => Self::NotFound,
            AccountError::LinkInvalid => {
                Self::BadRequest("This link does not work any more".into())
            }
            shown @ (AccountError::Password(_)
            | AccountError::BadName
            | AccountError::BadEmail
            | AccountError::NameTaken
            | AccountError::WrongPassword
            | AccountError::SameEmail
            | AccountError::EmailUnavailable) => Self::BadRequest(shown.to_string()),
            AccountError::Internal(why) => Self::Internal(why),
        }
    }
}

impl ErrorPage for AppError {
    fn page(&self) -> Response {
        if let Self::SignInFirst(back_to) = self {
            let next: String = url::form_urlencoded::byte_serialize(back_to.as_bytes()).collect();
            return handoff_web::see_other(&format!("/login?next={next}"));
        }
        let status = self.status();
        let (title, message): (&str, String) = match self {
            Self::SignInFirst(_) => ("Sign in", "Sign in first.".into()),
            Self::NotFound => ("Not found", "There is nothing here. Check the link, or go back to your dashboard.".into()),
            Self::MissingRole(role) => (
                "Not allowed",
                format!("Your account does not have the “{role}” role this operation needs. Ask an administrator to grant it."),
            ),
            Self::NotEntitled(arg) => (
                "Not allowed",
                format!("Your account may not open this {arg}. Ask an administrator to grant it to you."),
            ),
            Self::BadRequest(why) => ("That did not work", format!("{why}.")),
            Self::TooLarge(_) => ("That did not work", "The request was too large.".into()),
            Self::Csrf => (
                "This form has expired",
                "For your safety the form could not be accepted. Go back, reload the page and try again.".into(),
            ),
            Self::Unverified => (
                "Verify your e-mail address first",
                "Partner links open once your e-mail address is verified. Open the link we sent you, or send it again from your account page.".into(),
            ),
            Self::Throttled(wait) => (
                "Too many wrong passwords",
                format!("Wait {wait} seconds, then try again."),
            ),
            Self::Limited => (
                "Too many requests",
                "Your network asked for too much mail within the hour. Please try again later.".into(),
            ),
            Self::Busy => (
                "Busy",
                "Too many sign-ins are in progress right now. Please try again in a few seconds.".into(),
            ),
            Self::Db(_) | Self::Internal(_) => (
                "Temporarily unavailable",
                "Something went wrong on our side. Please try again in a moment.".into(),
            ),
        };
        pages::html_response(status, pages::message_page(title, &message))
    }
}
