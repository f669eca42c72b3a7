//! What a SERVER2 handler can fail with, and the one place where that becomes a page. (Refused
//! handoff tokens have their own pre-rendered pages: see `handoff::Refusals`.)

use handoff_web::StatusClass;
use maud::html;
use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::Response;

use super::pages::{html_response, BRAND};

/// A handler failure. The page names what the person can do; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No such page.
    #[error("not found")]
    NotFound,
    /// The request could not be understood (the page never echoes it).
    #[error("bad request")]
    BadRequest,
    /// The request broke a size limit (body, URI or headers).
    #[error("too large: {0}")]
    TooLarge(StatusCode),
    /// An operation page opened without a grant for exactly that operation.
    #[error("operation denied: {why:?}")]
    Denied {
        /// Why.
        why: Denied,
        /// `/handoff/start?…` for that operation: where the person can get access.
        start: String,
    },
    /// A form's anti-forgery token is missing or wrong; the text says what to do.
    #[error("form expired")]
    FormExpired(&'static str),
    /// The switch-user question is gone (expired, or never asked).
    #[error("nothing to switch")]
    NothingToSwitch {
        /// The portal, to start again from.
        portal: String,
    },
    /// Something that should not happen, or a status from a layer below.
    #[error("internal: {0}")]
    Internal(String),
}

/// Why an operation page refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No grant in the request.
    NoGrant,
    /// The grant ended.
    Expired,
    /// A grant for another operation or other arguments.
    OtherOperation,
}

impl From<StatusClass> for AppError {
    fn from(class: StatusClass) -> Self {
        match class {
            StatusClass::NotFound => Self::NotFound,
            StatusClass::TooLarge(status) => Self::TooLarge(status),
            StatusClass::ServerError(status) => Self::Internal(format!("status {status}")),
            StatusClass::BadRequest => Self::BadRequest,
        }
    }
}

impl ResponseError for AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::TooLarge(status) => *status,
            Self::Denied { .. } | Self::FormExpired(_) | Self::NothingToSwitch { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        match self {
            Self::Internal(_) => tracing::error!(error = %self, "request failed"),
            Self::Denied { .. } => {
                tracing::warn!(event = "operation.denied", error = %self, "operation page refused");
            }
            _ => tracing::warn!(error = %self, "request refused"),
        }
        self.page()
    }
}

impl AppError {
    /// The page for this error, without logging it: for refusals the request guard already
    /// counts (routing, size limits), which anyone can cause at will.
    pub(crate) fn page(&self) -> Response {
        let status = self.status();
        let body = match self {
            Self::NotFound => BRAND.message("Not found", "There is nothing here.", None),
            Self::BadRequest => {
                BRAND.message("Bad request", "The request could not be understood.", None)
            }
            Self::TooLarge(_) => BRAND.message("Too large", "The request was too large.", None),
            Self::Internal(_) => BRAND.message(
                "Unavailable",
                "Something went wrong on our side. Please try again.",
                None,
            ),
            Self::FormExpired(what_to_do) => {
                BRAND.message("This form has expired", what_to_do, None)
            }
            Self::NothingToSwitch { portal } => BRAND.message(
                "Nothing to switch",
                "This question has expired. Open the link again from the portal.",
                Some((portal, "Back to the portal")),
            ),
            Self::Denied { why, start } => {
                let text = match why {
                    Denied::NoGrant => "You have not been signed in for this page.",
                    Denied::Expired => "Your access to this page has ended.",
                    Denied::OtherOperation => "You were signed in for something else.",
                };
                BRAND.layout(
                    "Not allowed",
                    None,
                    html! {
                        div.card {
                            h1 { "Not allowed" }
                            p { (text) " The portal can sign you in for it if your account may open it." }
                            p { a.button href=(start) { "Get access from the portal" } }
                        }
                    },
                )
            }
        };
        html_response(status, body)
    }
}
