//! The operation pages. Each acts only with a grant for exactly its own operation and
//! arguments; anything else gets a 403 page that offers to start a handoff for it.

use ::handoff::grant::{Grant, GrantError};
use ::handoff::web::read_cookie;
use ::handoff::{Subject, UnixTime};
use maud::html;
use poem::http::StatusCode;
use poem::web::{Data, Form, Path};
use poem::{handler, Request, Response};
use serde::Deserialize;

use super::{pages, see_other, AppState, Jar, State};
use crate::operations::{INVOICE_APPROVE, REPORT_VIEW};

/// A recorded invoice approval (the demo's state-changing operation).
#[derive(Debug, Clone)]
pub struct Approval {
    by: Subject,
    at: UnixTime,
}

/// Why an operation page refused.
enum Denied {
    NoGrant,
    Expired,
    OtherOperation,
}

/// The grant in the request, if it is for exactly `kind` with `arg` = `value`.
fn grant_for(
    state: &AppState,
    req: &Request,
    kind: &str,
    arg: &str,
    value: &str,
) -> Result<Grant, Denied> {
    let now = state.config.clock.now();
    let sealed = read_cookie(req, state.cookie_name(Jar::Grant)).ok_or(Denied::NoGrant)?;
    match state.grants.open(&sealed, &state.config.public_url, now) {
        Ok(g) if g.op.kind().as_str() == kind && g.op.arg(arg) == Some(value) => Ok(g),
        Ok(_) => Err(Denied::OtherOperation),
        Err(GrantError::Expired) => Err(Denied::Expired),
        Err(_) => Err(Denied::NoGrant),
    }
}

/// The 403 page for an operation page opened without the right grant, with a way to get it.
fn denied(kind: &str, arg: &str, value: &str, why: Denied) -> Response {
    let text = match why {
        Denied::NoGrant => "You have not been signed in for this page.",
        Denied::Expired => "Your access to this page has ended.",
        Denied::OtherOperation => "You were signed in for something else.",
    };
    tracing::warn!(event = "operation.denied", operation = kind, "operation page refused");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("type", kind)
        .append_pair(arg, value)
        .finish();
    let start = format!("/handoff/start?{query}");
    pages::html_response(
        StatusCode::FORBIDDEN,
        pages::layout(
            "Not allowed",
            html! {
                div.card {
                    h1 { "Not allowed" }
                    p { (text) " The portal can sign you in for it if your account may open it." }
                    p { a.button href=(start) { "Get access from the portal" } }
                }
            },
        ),
    )
}

fn when(t: UnixTime) -> String {
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

#[handler]
pub(super) fn report(req: &Request, Path(id): Path<String>, Data(state): Data<&State>) -> Response {
    let grant = match grant_for(state, req, REPORT_VIEW, "report_id", &id) {
        Ok(g) => g,
        Err(why) => return denied(REPORT_VIEW, "report_id", &id, why),
    };
    // Demo content derived from the id, so each report looks different.
    let seed: u64 = id.bytes().fold(7, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    let rows = [
        ("North", seed % 900 + 100),
        ("South", seed / 7 % 900 + 100),
        ("East", seed / 13 % 900 + 100),
    ];
    pages::html_response(
        StatusCode::OK,
        pages::layout(
            &format!("Report {id}"),
            html! {
                div.card {
                    h1 { "Report " (id) }
                    table {
                        thead { tr { th { "Region" } th { "Orders" } } }
                        tbody { @for (region, orders) in rows { tr { td { (region) } td { (orders) } } } }
                    }
                }
                div.card { (grant_details(state, &grant)) }
            },
        ),
    )
}

#[handler]
pub(super) fn invoice(
    req: &Request,
    Path(id): Path<String>,
    Data(state): Data<&State>,
) -> Response {
    let grant = match grant_for(state, req, INVOICE_APPROVE, "invoice_id", &id) {
        Ok(g) => g,
        Err(why) => return denied(INVOICE_APPROVE, "invoice_id", &id, why),
    };
    let approved =
        state.approvals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned();
    let csrf = state.grants.csrf_token(&grant);
    // The grant is for exactly this invoice: its page is where the form posts.
    let action = crate::operations::landing_path(&grant.op).unwrap_or_default();
    pages::html_response(
        StatusCode::OK,
        pages::layout(
            &format!("Invoice {id}"),
            html! {
                div.card {
                    h1 { "Invoice " (id) }
                    @if let Some(a) = approved {
                        p.ok { "Approved by " code { (a.by) } " at " (when(a.at)) "." }
                    } @else {
                        p { "Approve invoice " strong { (id) } "? This cannot be undone." }
                        form method="post" action=(action) {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Approve invoice " (id) }
                        }
                    }
                }
                div.card { (grant_details(state, &grant)) }
            },
        ),
    )
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[handler]
pub(super) fn approve_invoice(
    req: &Request,
    Path(id): Path<String>,
    Data(state): Data<&State>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let grant = match grant_for(state, req, INVOICE_APPROVE, "invoice_id", &id) {
        Ok(g) => g,
        Err(why) => return denied(INVOICE_APPROVE, "invoice_id", &id, why),
    };
    if !state.grants.check_csrf(&grant, &form.csrf) {
        tracing::warn!(event = "operation.denied", reason = "csrf", "approval form refused");
        return pages::html_response(
            StatusCode::FORBIDDEN,
            pages::message("This form has expired", "Reload the page and try again.", None),
        );
    }
    let now = state.config.clock.now();
    let mut approvals = state.approvals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !approvals.contains_key(&id) {
        approvals.insert(id.clone(), Approval { by: grant.sub.clone(), at: now });
        tracing::info!(event = "invoice.approved", sub = %grant.sub, jti = %grant.jti, "invoice approved");
    }
    drop(approvals);
    see_other(&crate::operations::landing_path(&grant.op).unwrap_or_default())
}
