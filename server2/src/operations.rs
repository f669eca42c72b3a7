//! The operations SERVER2 performs, each defined once, here: its type, its argument and the
//! argument's rule, its route (which is also where a handoff for it lands), its page, and what
//! its form does, if it has one. The catalog the verifier checks tokens against is made from
//! this list, so an operation exists only if it has a page. Adding one is an entry in
//! [`OPERATIONS`] (and an operation on the partner's target in SERVER1's targets file).

use crate::web::FormPurpose;
use std::sync::PoisonError;

use handoff::grant::Grant;
use handoff::{ArgName, ArgRule, ArgSpec, Catalog, Operation, OperationSpec, OperationType};
use handoff::{Subject, UnixTime};
use maud::{html, Markup};
use poem::Response;

use crate::web::AppState;

/// Viewing a report (read-only).
pub const REPORT_VIEW: &str = "report.view";
/// Approving an invoice (changes state, behind a confirm form).
pub const INVOICE_APPROVE: &str = "invoice.approve";

/// One operation SERVER2 performs.
pub struct OperationDef {
    /// Its type, as tokens name it.
    pub kind: &'static str,
    /// Its one argument's name.
    pub arg: &'static str,
    /// What the argument may be.
    pub rule: ArgRule,
    /// Its page, in poem's syntax with `:id` standing for the argument: where a handoff for it
    /// lands, and what it answers (only with a grant for exactly this operation and argument).
    pub route: &'static str,
    /// The page's title and content for argument `id`, shown to the grant's holder.
    pub(crate) page: fn(&AppState, &Grant, &str) -> (String, Markup),
    /// What a POST to the page does, once its anti-forgery token has been checked: `None` for
    /// an operation without a form.
    pub(crate) act: Option<fn(&AppState, &Grant, &str) -> Response>,
}

impl std::fmt::Debug for OperationDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationDef")
            .field("kind", &self.kind)
            .field("route", &self.route)
            .finish()
    }
}

impl OperationDef {
    /// The page for argument `value` (escaped for a path).
    pub fn path(&self, value: &str) -> String {
        let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
        self.route.replace(":id", &encoded)
    }
}

/// Every operation SERVER2 performs.
pub static OPERATIONS: [OperationDef; 2] = [
    OperationDef {
        kind: REPORT_VIEW,
        arg: "report_id",
        rule: ArgRule::Integer { min: 1, max: 999_999_999 },
        route: "/reports/:id",
        page: report_page,
        act: None,
    },
    OperationDef {
        kind: INVOICE_APPROVE,
        arg: "invoice_id",
        rule: ArgRule::Slug { max_len: 32 },
        route: "/invoices/:id/approve",
        page: invoice_page,
        act: Some(approve_invoice),
    },
];

/// The operation of type `kind`.
pub fn find(kind: &str) -> Option<&'static OperationDef> {
    OPERATIONS.iter().find(|def| def.kind == kind)
}

/// The catalog of operations this server implements.
pub fn catalog() -> Catalog {
    let spec = |def: &OperationDef| {
        let kind = OperationType::parse(def.kind).expect("operation types in code are valid");
        let name = ArgName::parse(def.arg).expect("argument names in code are valid");
        OperationSpec::new(kind, vec![ArgSpec { name, rule: def.rule.clone() }])
            .expect("specs in code are valid")
    };
    Catalog::new(OPERATIONS.iter().map(spec)).expect("operation types in code are distinct")
}

/// The page an accepted operation lands on.
pub fn landing_path(op: &Operation) -> Option<String> {
    let def = find(op.kind().as_str())?;
    op.arg(def.arg).map(|value| def.path(value))
}

fn report_page(_: &AppState, _: &Grant, id: &str) -> (String, Markup) {
    // Demo content derived from the id, so each report looks different.
    let seed: u64 = id.bytes().fold(7, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(b)));
    let rows = [
        ("North", seed % 900 + 100),
        ("South", seed / 7 % 900 + 100),
        ("East", seed / 13 % 900 + 100),
    ];
    let content = html! {
        div.card {
            h1 { "Report " (id) }
            table {
                thead { tr { th { "Region" } th { "Orders" } } }
                tbody { @for (region, orders) in rows { tr { td { (region) } td { (orders) } } } }
            }
        }
    };
    (format!("Report {id}"), content)
}

/// A recorded invoice approval (the demo's state-changing operation).
#[derive(Debug, Clone)]
pub struct Approval {
    by: Subject,
    at: UnixTime,
}

fn invoice_page(state: &AppState, grant: &Grant, id: &str) -> (String, Markup) {
    let approved = state.approvals.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned();
    let csrf = state.forms.token(FormPurpose::Operation(INVOICE_APPROVE), grant.jti);
    // The grant is for exactly this invoice: its page is where the form posts.
    let action = landing_path(&grant.op).unwrap_or_default();
    let content = html! {
        div.card {
            h1 { "Invoice " (id) }
            @if let Some(a) = approved {
                p.ok { "Approved by " code { (a.by) } " at " (crate::web::when(a.at)) "." }
            } @else {
                p { "Approve invoice " strong { (id) } "? This cannot be undone." }
                form method="post" action=(action) {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Approve invoice " (id) }
                }
            }
        }
    };
    (format!("Invoice {id}"), content)
}

fn approve_invoice(state: &AppState, grant: &Grant, id: &str) -> Response {
    let now = state.config.clock.now();
    let mut approvals = state.approvals.lock().unwrap_or_else(PoisonError::into_inner);
    if !approvals.contains_key(id) {
        approvals.insert(id.to_owned(), Approval { by: grant.sub.clone(), at: now });
        tracing::info!(event = "invoice.approved", sub = %grant.sub, jti = %grant.jti, "invoice approved");
    }
    drop(approvals);
    handoff_web::see_other(&landing_path(&grant.op).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalog_entry_has_a_page() {
        let catalog = catalog();
        for spec in catalog.specs() {
            let args = spec.args().iter().map(|a| {
                (
                    a.name.as_str(),
                    match &a.rule {
                        ArgRule::Integer { min, .. } => min.to_string(),
                        _ => "x1".to_owned(),
                    },
                )
            });
            let args: Vec<(&str, String)> = args.collect();
            let op = spec.build(args.iter().map(|(k, v)| (*k, v.as_str()))).expect("op");
            assert!(landing_path(&op).is_some(), "{}", spec.kind());
        }
    }

    #[test]
    fn routes_have_the_argument_and_paths_are_escaped() {
        for def in &OPERATIONS {
            assert_eq!(def.route.matches(":id").count(), 1, "{}", def.kind);
        }
        assert_eq!(OPERATIONS[1].path("a/b?"), "/invoices/a%2Fb%3F/approve");
    }
}
