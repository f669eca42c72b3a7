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
use super::FormPurpose;
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

/// The grant in the request, if it is for exactly `def` with its argument equal to `value` and
/// no logout on the portal ended it.
async fn grant_for(
    state: &AppState,
    req: &Request,
    def: &OperationDef,
    value: &str,
) -> Result<Grant, AppError> {
    let grant = sealed_grant_for(state, req, def, value)?;
    let now = state.config.clock.now();
    // Compared on the issuer's clock (the token's `iat`, as the logout's); a grant from before
    // tokens were recorded in grants falls back to when it was made here.
    let issued = grant.token_iat.unwrap_or(grant.iat);
    // Logouts are kept per issuer; a grant from an issuer no longer trusted is ended.
    let Some((Some(sub), sid)) =
        state.issuers.scoped(&grant.handed_by, Some(&grant.sub), grant.sid.as_ref())
    else {
        return Err(denied_for(def, value, Denied::SessionEnded));
    };
    match state.revocations.is_ended(&sub, sid.as_ref(), issued, now).await {
        Ok(false) => Ok(grant),
        Ok(true) => {
            state.metrics.grants_ended.inc();
            Err(denied_for(def, value, Denied::SessionEnded))
        }
        // Cannot tell: refuse (fail closed), as a store that is down for now.
        Err(e) => {
            tracing::error!(error = %e, "revocation store cannot answer; refusing operations");
            Err(AppError::Status(StatusClass::ServerError(StatusCode::SERVICE_UNAVAILABLE)))
        }
    }
}

/// The refusal of `def` with `value`, with the way to get access.
fn denied_for(def: &OperationDef, value: &str, why: Denied) -> AppError {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("type", def.kind)
        .append_pair(def.arg, value)
        .finish();
    AppError::Denied { why, start: format!("/handoff/start?{query}") }
}

/// The grant cookie's content, if it is for exactly `def` with its argument equal to `value`.
fn sealed_grant_for(
    state: &AppState,
    req: &Request,
    def: &OperationDef,
    value: &str,
) -> Result<Grant, AppError> {
    let now = state.config.clock.now();
    let denied = |why| denied_for(def, value, why);
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
        let grant = grant_for(state, &req, self.0, &value).await?;
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
        let grant = grant_for(state, &req, self.0, &value).await?;
        let Form(form) = Form::<CsrfForm>::from_request(&req, &mut body).await?;
        if !state.forms.check(FormPurpose::Operation(self.0.kind), grant.jti, &form.csrf) {
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
            dt { "Signed in as" } dd {
                @if let Some(name) = &grant.name { (name) " " small.muted { "(" code { (grant.sub) } ")" } }
                @else { code { (grant.sub) } }
            }
            dt { "Handed over by" } dd { a href=(grant.handed_by.as_str()) { (grant.handed_by) } }
            dt { "For" } dd { (grant.op) }
            dt { "Until" } dd { (when(grant.exp)) " (UTC)" }
        }
        @if let Some(help) = &state.config.help_url {
            p.muted { "Questions? " a href=(help.as_str()) { "Partner Analytics help" } }
        }
    }
}
