//! An open-loop load generator for latency at a constant offered rate.
//!
//! wrk is closed-loop: each connection sends its next request only when the last one answered,
//! so a slow server is offered less load and its stalls hide from the percentiles ("coordinated
//! omission"). Here request `i` is due at `start + i / rate` whatever happened before, and its
//! latency runs from that due time, not from when it was finally sent: a stall shows up in every
//! request that had to wait for it. Connection `k` carries requests `k`, `k + C`, `k + 2C`, …,
//! one at a time, over HTTP/1.1 keep-alive; every request carries a distinct token.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What to send, how fast and for how long.
pub struct Plan {
    pub addr: SocketAddr,
    /// One complete request per entry, in order.
    pub requests: Vec<Vec<u8>>,
    pub rate: f64,
    pub connections: usize,
}

/// Longest wait for one response before the run is called failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Latency of each completed request from its due time, in microseconds.
    pub latencies_us: Vec<u64>,
    /// Completed requests by status class (index 1 for 1xx … 5 for 5xx).
    pub by_class: [u64; 6],
    /// Wall time from the first due time to the last response.
    pub elapsed: Duration,
}

/// Builds a form POST or `GET ?token=` request for `token`.
pub fn request(host: &str, path: &str, token: &str, post: bool) -> Vec<u8> {
    if post {
        let body = format!("token={token}");
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    } else {
        format!("GET {path}?token={token} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
    }
}

/// Runs the plan to the end and returns what was measured.
///
/// # Errors
///
/// When a connection fails, a response is malformed or takes longer than 5 s.
pub fn run(plan: &Plan) -> anyhow::Result<Outcome> {
    if plan.rate <= 0.0 || plan.connections == 0 {
        bail!("the rate and the number of connections must be positive");
    }
    let schedule = Schedule::new(plan.rate);
    let results = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..plan.connections)
            .map(|k| {
                scope.spawn(move || -> anyhow::Result<Outcome> {
                    let mut stream = TcpStream::connect(plan.addr).context("connect")?;
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
                    let mut out = Outcome::default();
                    let mut buf = Vec::with_capacity(16 * 1024);
                    for (i, req) in
                        plan.requests.iter().enumerate().skip(k).step_by(plan.connections)
                    {
                        let due = schedule.wait_for(i);
                        stream.write_all(req).context("send")?;
                        let status = read_response(&mut stream, &mut buf)?;
                        out.latencies_us.push(late_us(due));
                        if let Some(slot) = out.by_class.get_mut(usize::from(status / 100)) {
                            *slot += 1;
                        }
                    }
                    Ok(out)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a load thread panicked"))))
            .collect::<Vec<_>>()
    });
    let mut total = Outcome { elapsed: schedule.start.elapsed(), ..Outcome::default() };
    for result in results {
        let part = result?;
        total.latencies_us.extend(part.latencies_us);
        for (sum, n) in total.by_class.iter_mut().zip(part.by_class) {
            *sum += n;
        }
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}

/// An open-loop schedule: request `i` is due at `start + i / rate`, whatever happened before.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    interval: f64,
}

impl Schedule {
    /// `rate` requests a second, starting 50 ms from now so that every thread is ready.
    pub fn new(rate: f64) -> Self {
        Self { start: Instant::now() + Duration::from_millis(50), interval: 1.0 / rate }
    }

    /// Sleeps until request `i` is due (not at all when it is late) and returns its due time.
    pub fn wait_for(&self, i: usize) -> Instant {
        let due = self.start + Duration::from_secs_f64(i as f64 * self.interval);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        due
    }
}

/// Microseconds from `due` until now: a request's latency on an open-loop schedule.
pub fn late_us(due: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(due).as_micros()).unwrap_or(u64::MAX)
}

/// The latency fields both open-loop commands print, from sorted microseconds.
pub fn percentiles(sorted_us: &[u64]) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    out.insert("completed".into(), sorted_us.len().into());
    for (name, q) in [("p50_us", 0.50), ("p90_us", 0.90), ("p99_us", 0.99), ("p999_us", 0.999)] {
        out.insert(name.into(), quantile(sorted_us, q).into());
    }
    out.insert("max_us".into(), sorted_us.last().copied().unwrap_or(0).into());
    out
}

/// Reads one response (head and `Content-Length` body) and returns its status.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).context("receive")?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head) = response.parse(buf)? else { continue };
        let status = response.code.context("no status")?;
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let want = head + length;
        while buf.len() < want {
            let n = stream.read(&mut chunk).context("receive body")?;
            if n == 0 {
                bail!("the server closed the connection mid-body");
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        return Ok(status);
    }
}

/// The `q`-quantile (0 to 1) of sorted values, by nearest rank; the default for none.
pub fn quantile<T: Copy + Default>(sorted: &[T], q: f64) -> T {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_value_at_the_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile::<u64>(&[], 0.5), 0);
        assert_eq!(quantile(&[0.5, 1.5], 0.0), 0.5);
    }

    #[test]
    fn percentiles_name_every_field() {
        let v: Vec<u64> = (1..=1000).collect();
        let p = percentiles(&v);
        assert_eq!(p["completed"], 1000);
        assert_eq!((p["p50_us"].as_u64(), p["p99_us"].as_u64()), (Some(500), Some(990)));
        assert_eq!((p["p999_us"].as_u64(), p["max_us"].as_u64()), (Some(999), Some(1000)));
        assert_eq!(percentiles(&[])["max_us"], 0);
    }

    #[test]
    fn requests_are_well_formed() {
        let post = request("h:1", "/handoff", "a.b.c", true);
        assert!(post.ends_with(b"\r\n\r\ntoken=a.b.c"));
        assert!(std::str::from_utf8(&post).expect("utf8").contains("Content-Length: 11\r\n"));
        assert_eq!(
            request("h:1", "/handoff", "a.b.c", false),
            b"GET /handoff?token=a.b.c HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
    }
}
