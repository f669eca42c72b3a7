//! The operations SERVER2 performs, and the catalog the verifier checks tokens against.
//!
//! Each operation has a page; a handoff for it lands there. The catalog is code, not
//! configuration: an operation exists here only if a handler implements it.

use handoff::{ArgName, ArgRule, ArgSpec, Catalog, Operation, OperationSpec, OperationType};

/// Viewing a report (read-only).
pub const REPORT_VIEW: &str = "report.view";
/// Approving an invoice (changes state, behind a confirm form).
pub const INVOICE_APPROVE: &str = "invoice.approve";

/// The catalog of operations this server implements.
pub fn catalog() -> Catalog {
    let spec = |kind: &str, arg: &str, rule: ArgRule| {
        let kind = OperationType::parse(kind).expect("operation types in code are valid");
        let name = ArgName::parse(arg).expect("argument names in code are valid");
        OperationSpec::new(kind, vec![ArgSpec { name, rule }]).expect("specs in code are valid")
    };
    Catalog::new([
        spec(REPORT_VIEW, "report_id", ArgRule::Integer { min: 1, max: 999_999_999 }),
        spec(INVOICE_APPROVE, "invoice_id", ArgRule::Slug { max_len: 32 }),
    ])
    .expect("operation types in code are distinct")
}

/// The page an accepted operation lands on.
pub fn landing_path(op: &Operation) -> Option<String> {
    let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    match op.kind().as_str() {
        REPORT_VIEW => op.arg("report_id").map(|id| format!("/reports/{}", encode(id))),
        INVOICE_APPROVE => {
            op.arg("invoice_id").map(|id| format!("/invoices/{}/approve", encode(id)))
        }
        _ => None,
    }
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
}
