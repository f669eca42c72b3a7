//! What a handler can fail with, and the one place where that becomes an HTTP response.

use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::Response;

use super::pages;

/// A handler failure. The page shown names what the person can do; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such page, target or operation.
    #[error("not found")]
    NotFound,
    /// The user lacks the role the operation needs.
    #[error("missing role {0}")]
    MissingRole(String),
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
    /// Something that should not happen.
    #[error("internal: {0}")]
    Internal(String),
}

impl ResponseError for AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MissingRole(_) | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge(status) => *status,
            Self::Db(_) | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        if self.status().is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::warn!(error = %self, "request refused");
        }
        self.page()
    }
}

impl AppError {
    /// The page for this error, without logging it: for refusals the request guard already
    /// counts (routing, size limits), which anyone can cause at will.
    pub(crate) fn page(&self) -> Response {
        let status = self.status();
        let (title, message): (&str, String) = match self {
            Self::NotFound => ("Not found", "There is nothing here. Check the link, or go back to your dashboard.".into()),
            Self::MissingRole(role) => (
                "Not allowed",
                format!("Your account does not have the “{role}” role this operation needs. Ask an administrator to grant it."),
            ),
            Self::BadRequest(why) => ("That did not work", format!("{why}.")),
            Self::TooLarge(_) => ("That did not work", "The request was too large.".into()),
            Self::Csrf => (
                "This form has expired",
                "For your safety the form could not be accepted. Go back, reload the page and try again.".into(),
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
        pages::html_response(status, pages::message_page(title, &message, None))
    }
}
