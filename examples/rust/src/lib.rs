//! What the two example programs share: the partner's operations and small helpers. A real
//! partner's service would hold the same pieces: its catalog, the issuer's keys (refreshed when
//! a token names an unknown `kid`), and a replay store shared by its replicas.

use handoff::{ArgName, ArgRule, ArgSpec, Catalog, OperationSpec, OperationType};

/// The operations this partner performs: here only `report.view`, with one `report_id`.
pub fn catalog() -> Catalog {
    let report = OperationSpec::new(
        OperationType::parse("report.view").expect("a valid operation type"),
        vec![ArgSpec {
            name: ArgName::parse("report_id").expect("a valid argument name"),
            rule: ArgRule::Integer { min: 1, max: 999_999_999 },
        }],
    )
    .expect("a valid operation");
    Catalog::new([report]).expect("distinct operation types")
}

/// The value after `--name` in `args`, if given.
pub fn option(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Exits with status 2 and `message` (a usage or configuration error).
pub fn usage(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}
