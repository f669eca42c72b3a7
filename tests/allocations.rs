//! Heap allocations per accepted handoff, counted by a counting global allocator (its own test
//! binary: the allocator is process-wide), so they cannot creep back unnoticed.
//!
//! SERVER2 runs in-process as in production — audit logging at `info` (formatted, then thrown
//! away), the memory replay store, signature batches on — and one keep-alive connection posts
//! pre-minted tokens, one at a time, from a plain thread that allocates nothing per request.
//! The count covers everything in the process during the measured requests: hyper, poem, the
//! handler, the log line, and any background task that happens to run.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::TcpStream;

use handoff_tests::{minter, now, report_token, spawn_with};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations per accepted handoff, measured at 2026-12-06 (see docs/performance.md). Lower it
/// when a change saves some; raising it needs a reason in the commit.
const MOST_ALLOCATIONS_PER_ACCEPT: f64 = 62.0;

const WARM_UP: usize = 50;
const MEASURED: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn an_accepted_handoff_allocates_no_more_than_it_did() {
    handoff_web::telemetry::init(
        "info,poem=warn",
        handoff_web::telemetry::Batched::new(std::io::sink(), handoff_web::telemetry::FLUSH_EVERY),
        false,
    );
    // No key refresh from SERVER1 during the count.
    let s = spawn_with(|c| c.jwks_refresh_interval = std::time::Duration::from_secs(3600)).await;
    let minter = minter(&s, 60);
    let url = url::Url::parse(&s.server2).expect("url");
    let host = url.host_str().expect("host").to_owned();
    let port = url.port().expect("port");
    let requests: Vec<Vec<u8>> = (0..WARM_UP + MEASURED)
        .map(|n| {
            let token = report_token(&minter, &s.server2, "alice", &(n + 1).to_string(), now());
            let body = format!("token={}", token.as_str());
            format!(
                "POST /handoff HTTP/1.1\r\nHost: {host}:{port}\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        })
        .collect();
    let counts = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut buffer = vec![0u8; 16 * 1024];
        let mut send = |request: &[u8]| {
            stream.write_all(request).expect("send");
            // One response a request: read until its head and (empty) body are in.
            let mut read = 0;
            loop {
                let n = stream.read(&mut buffer[read..]).expect("receive");
                assert!(n > 0, "SERVER2 closed the connection");
                read += n;
                let text = &buffer[..read];
                if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = std::str::from_utf8(&text[..end]).expect("head");
                    assert!(head.starts_with("HTTP/1.1 303"), "not accepted: {head}");
                    let length: usize = head
                        .lines()
                        .filter(|l| {
                            l.get(..15).is_some_and(|h| h.eq_ignore_ascii_case("content-length:"))
                        })
                        .find_map(|l| l[15..].trim().parse().ok())
                        .unwrap_or(0);
                    if read >= end + 4 + length {
                        break;
                    }
                }
            }
        };
        for request in &requests[..WARM_UP] {
            send(request);
        }
        let region = Region::new(GLOBAL);
        for request in &requests[WARM_UP..] {
            send(request);
        }
        region.change()
    })
    .await
    .expect("client");
    let per_accept = counts.allocations as f64 / MEASURED as f64;
    // Shown with `--nocapture`: the figure docs/performance.md quotes.
    eprintln!(
        "{per_accept:.1} allocations, {:.0} bytes allocated per accepted handoff",
        counts.bytes_allocated as f64 / MEASURED as f64
    );
    assert!(
        per_accept <= MOST_ALLOCATIONS_PER_ACCEPT,
        "{per_accept:.1} allocations per accept, more than the {MOST_ALLOCATIONS_PER_ACCEPT} measured before"
    );
}
