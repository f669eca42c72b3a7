//! What a SERVER2 handler can fail with, and the one place where that becomes a page. (Refused
//! handoff tokens have their own pre-rendered pages: see `handoff::Refusals`.)

use handoff_web::{ErrorPage, StatusClass};
use maud::html;
use poem::error::ResponseError;
use poem::http::StatusCode;
use poem::Response;

use super::pages::{html_response, BRAND};

/// A handler failure. The page names what the person can do; details go to the log.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A status from routing, an extractor or the request guard (not found, too large, …),
    /// or a form that could not be understood (the page never echoes it).
    #[error("{0:?}")]
    Status(StatusClass),
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
    /// The portal session the grant came from ended (a back-channel logout).
    SessionEnded,
}

impl From<StatusClass> for AppError {
    fn from(class: StatusClass) -> Self {
        Self::Status(class)
    }
}

impl ResponseError for AppError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Status(StatusClass::NotFound) => StatusCode::NOT_FOUND,
            Self::Status(
                StatusClass::BadRequest(status)
                | StatusClass::TooLarge(status)
                | StatusClass::ServerError(status),
            ) => *status,
            Self::Denied { .. } | Self::FormExpired(_) | Self::NothingToSwitch { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        let event = match self {
            Self::Internal(_) | Self::Status(StatusClass::ServerError(_)) => {
                tracing::error!(error = %self, "request failed");
                return self.page();
            }
            Self::Denied { .. } => "operation.denied",
            _ => "request.refused",
        };
        // Anyone can cause these at will (a page without a grant, a form without its token):
        // the guard logs them within the refusal log budget.
        let mut resp = self.page();
        resp.extensions_mut().insert(handoff_web::RefusalNote { event, message: self.to_string() });
        resp
    }
}

impl ErrorPage for AppError {
    fn page(&self) -> Response {
        let status = self.status();
        let body = match self {
            Self::Status(StatusClass::NotFound) => {
                BRAND.message("Not found", "There is nothing here.", None)
            }
            Self::Status(StatusClass::BadRequest(_)) => {
                BRAND.message("Bad request", "The request could not be understood.", None)
            }
            Self::Status(StatusClass::TooLarge(_)) => {
                BRAND.message("Too large", "The request was too large.", None)
            }
            Self::Internal(_) | Self::Status(StatusClass::ServerError(_)) => BRAND.message(
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
                    Denied::SessionEnded => {
                        "You signed out of the portal, so your access here ended too."
                    }
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
