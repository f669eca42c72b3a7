//! The operation pages, one generic pair of endpoints for every operation in
//! [`crate::operations::OPERATIONS`]: each page answers only with a grant for exactly its own
//! operation and argument; anything else gets a 403 page that offers to start a handoff for it.

use ::handoff::grant::{Grant, GrantError};
use ::handoff::UnixTime;
use handoff_web::{Routes, StatusClass};
use maud::html;
use poem::http::StatusCode;
use poem::web::Form;
use poem::{get, Endpoint, FromRequest, Request, Response};
use serde::Deserialize;

use super::error::Denied;
use super::pages::{html_response, BRAND};
use super::{AppError, AppState, Cookie, State};
use crate::operations::{OperationDef, OPERATIONS};

/// Adds every operation's page (and its form's action, if it has one) to `routes`.
pub(super) fn routes(mut routes: Routes) -> Routes {
    for def in &OPERATIONS {
        let page = get(Show(def));
        routes = match def.act {
            Some(_) => routes.at(def.route, page.post(Act(def))),
            None => routes.at(def.route, page),
        };
    }
    routes
}

/// The grant in the request, if it is for exactly `def` with its argument equal to `value`.
fn grant_for(
    state: &AppState,
    req: &Request,
    def: &OperationDef,
    value: &str,
) -> Result<Grant, AppError> {
    let now = state.config.clock.now();
    let denied = |why| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("type", def.kind)
            .append_pair(def.arg, value)
            .finish();
        AppError::Denied { why, start: format!("/handoff/start?{query}") }
    };
    let sealed = state.read_cookie(req, Cookie::Grant).ok_or_else(|| denied(Denied::NoGrant))?;
    match state.grants.open(&sealed, &state.config.public_url, now) {
        Ok(g) if g.op.kind().as_str() == def.kind && g.op.arg(def.arg) == Some(value) => Ok(g),
        Ok(_) => Err(denied(Denied::OtherOperation)),
        Err(GrantError::Expired) => Err(denied(Denied::Expired)),
        Err(_) => Err(denied(Denied::NoGrant)),
    }
}

/// The state and the path's argument of an operation request.
fn state_and_value(req: &Request) -> Result<(&State, String), AppError> {
    let state = req.data::<State>().ok_or_else(|| AppError::Internal("no state".into()))?;
    let value = req.path_params::<String>().map_err(|_| AppError::Status(StatusClass::NotFound))?;
    Ok((state, value))
}

/// `GET` an operation's page.
struct Show(&'static OperationDef);

impl Endpoint for Show {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let (state, value) = state_and_value(&req)?;
        let grant = grant_for(state, &req, self.0, &value)?;
        let (title, content) = (self.0.page)(state, &grant, &value);
        let page = BRAND.layout(
            &title,
            None,
            html! {
                (content)
                div.card { (grant_details(state, &grant)) }
            },
        );
        Ok(html_response(StatusCode::OK, page))
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST` an operation's form.
struct Act(&'static OperationDef);

impl Endpoint for Act {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let (req, mut body) = req.split();
        let (state, value) = state_and_value(&req)?;
        let grant = grant_for(state, &req, self.0, &value)?;
        let Form(form) = Form::<CsrfForm>::from_request(&req, &mut body).await?;
        if !state.forms.check(grant.jti, &form.csrf) {
            tracing::warn!(event = "operation.denied", reason = "csrf", "operation form refused");
            return Err(AppError::FormExpired("Reload the page and try again.").into());
        }
        let act = self.0.act.ok_or(AppError::Status(StatusClass::NotFound))?;
        Ok(act(state, &grant, &value))
    }
}

/// A time as RFC 3339 (UTC).
pub(crate) fn when(t: UnixTime) -> String {
    let format = time::format_description::well_known::Rfc3339;
    i64::try_from(t.as_secs())
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|d| d.format(&format).ok())
        .unwrap_or_else(|| t.to_string())
}

fn grant_details(state: &AppState, grant: &Grant) -> maud::Markup {
    html! {
        h2 { "Your access" }
        dl {
            dt { "Signed in as" } dd { code { (grant.sub) } }
            dt { "Handed over by" } dd { a href=(grant.handed_by.as_str()) { (grant.handed_by) } }
            dt { "For" } dd { (grant.op) }
            dt { "Until" } dd { (when(grant.exp)) " (UTC)" }
        }
        @if let Some(help) = &state.config.help_url {
            p.muted { "Questions? " a href=(help.as_str()) { "Partner Analytics help" } }
        }
    }
}
