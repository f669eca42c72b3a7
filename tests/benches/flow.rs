//! What binding every browser handoff costs (security round two, finding 2): a handoff started
//! on the portal now passes through SERVER2's start URL before the token is minted, two more
//! redirects. Both servers run in this process on loopback; the same signed-in client opens
//! report handoffs from the portal, alternating between a target that binds (the default) and
//! one with `binding = "none"`, and the time from the click to SERVER2's answer is compared.
//!
//! `cargo bench -p handoff-tests --bench flow` (`make bench` runs it). Loopback hides the
//! network: in a deployment each extra redirect costs a round trip to the server it goes to.

// A benchmark's output is its report.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use handoff_tests::*;

const FLOWS: usize = 300;

/// One handoff from the click on the portal to SERVER2's 303 to the report; the time taken.
async fn one_flow(s: &Servers, c: &reqwest::Client, id: usize) -> Duration {
    let started = Instant::now();
    let path = format!("/handoff/partner/report.view?report_id={}", 1000 + id);
    let token = open_handoff(c, &s.server1, &path).await;
    let landed = submit(c, &s.server2, &token).await;
    let took = started.elapsed();
    assert_eq!(landed.status(), 303, "the handoff lands");
    took
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    handoff::crypto::install().expect("crypto provider");
    let bound = spawn_default().await;
    let unbound = spawn_with_targets(unbinding_partner).await;
    let (cb, cu) = (client(), client());
    sign_in(&cb, &bound.server1, "alice").await;
    sign_in(&cu, &unbound.server1, "alice").await;
    // Warm both up (connections, caches, the JWKS fetch).
    for i in 0..20 {
        one_flow(&bound, &cb, i).await;
        one_flow(&unbound, &cu, i).await;
    }
    let (mut with, mut without) = (Vec::with_capacity(FLOWS), Vec::with_capacity(FLOWS));
    for i in 0..FLOWS {
        with.push(one_flow(&bound, &cb, 100 + i).await);
        without.push(one_flow(&unbound, &cu, 100 + i).await);
    }
    with.sort();
    without.sort();
    println!(
        "Browser handoff started on the portal, click to SERVER2's answer, {FLOWS} each, loopback:"
    );
    println!("{:<34} {:>10} {:>10} {:>10}", "", "p50", "p90", "p99");
    for (name, v) in
        [("bound (4 requests, the default)", &with), ("unbound (2 requests)", &without)]
    {
        let row = [0.5, 0.9, 0.99].map(|p| ms(percentile(v, p)));
        println!("{name:<34} {:>10} {:>10} {:>10}", row[0], row[1], row[2]);
    }
    let extra = percentile(&with, 0.5).saturating_sub(percentile(&without, 0.5));
    println!(
        "binding adds {} at the median here, plus one network round trip to each server in a deployment",
        ms(extra)
    );
}
