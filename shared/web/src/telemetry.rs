//! Tracing set-up shared by both servers and their tools.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Installs a global subscriber writing to `writer`, filtered by `RUST_LOG` or else `default`,
/// with colours only when `ansi` (a terminal). Does nothing if one is installed already (tests
/// start several apps in one process).
pub fn init<W>(default: &str, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        .try_init();
}

/// Logging for a command-line tool: standard error, line by line, colours when it is a terminal.
pub fn init_stderr(default: &str) {
    use std::io::IsTerminal;
    init(default, io::stderr, io::stderr().is_terminal());
}

/// Logging for a server: standard error, colours when it is a terminal, written in batches (see
/// [`Batched`]). Keep the returned guard alive until the process ends: dropping it writes out
/// what is still buffered.
#[must_use = "dropping the guard flushes the log; hold it until the end of main"]
pub fn init_stderr_batched(default: &str) -> FlushOnDrop {
    use std::io::IsTerminal;
    let batched = Batched::new(io::stderr(), FLUSH_EVERY);
    let guard = FlushOnDrop(batched.clone());
    init(default, batched, io::stderr().is_terminal());
    guard
}

/// How long a log line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// Buffered bytes that make the writing thread flush at once.
const FLUSH_AT: usize = 64 * 1024;

/// A log sink that collects lines in memory and writes them out every [`FLUSH_EVERY`] from a
/// background thread, or at once when [`FLUSH_AT`] bytes are waiting.
///
/// Every audit event is a line; written one by one, each costs a `write` system call on the
/// request's thread, which under load is a measurable share of a whole handoff. Batched, a
/// request pays for a copy into the buffer. The price: after a crash that skips the flush (a
/// `SIGKILL`), up to [`FLUSH_EVERY`] of lines are lost. Lines are never reordered or split.
#[derive(Debug, Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

struct Shared {
    buffer: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
    /// Buffered bytes that make a writer flush at once: [`FLUSH_AT`], or 0 (every line at
    /// once) when there is no flushing thread.
    flush_at: usize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("flush_at", &self.flush_at).finish_non_exhaustive()
    }
}

impl Shared {
    /// Writes out everything buffered. Holding `out` while taking the buffer keeps batches in
    /// order when two threads flush at once.
    fn flush(&self) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let pending =
            std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner));
        if pending.is_empty() {
            return Ok(());
        }
        out.write_all(&pending)?;
        out.flush()
    }
}

impl Batched {
    /// A sink over `out`, flushed every `every` by a background thread. The thread holds only a
    /// weak reference and ends once every handle is gone.
    pub fn new(out: impl Write + Send + 'static, every: Duration) -> Self {
        // The thread starts on a channel so it can be told where the buffer is, or be dropped
        // unstarted; without a thread, every line is written at once.
        let (tx, rx) = std::sync::mpsc::channel::<std::sync::Weak<Shared>>();
        let spawned = std::thread::Builder::new().name("log-flush".into()).spawn(move || {
            let Ok(weak) = rx.recv() else { return };
            loop {
                std::thread::sleep(every);
                let Some(shared) = weak.upgrade() else { return };
                // A failing sink (a closed pipe) cannot be reported anywhere better than itself.
                let _ = shared.flush();
            }
        });
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(if spawned.is_ok() { FLUSH_AT } else { 0 })),
            out: Mutex::new(Box::new(out)),
            flush_at: if spawned.is_ok() { FLUSH_AT } else { 0 },
        });
        let _ = tx.send(Arc::downgrade(&shared));
        Self { shared }
    }

    /// Writes out everything buffered now.
    ///
    /// # Errors
    ///
    /// When the underlying sink fails.
    pub fn flush(&self) -> io::Result<()> {
        self.shared.flush()
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { shared: &self.shared }
    }
}

/// The writer tracing gets for one event: it appends to the shared buffer.
#[derive(Debug)]
pub struct LineWriter<'a> {
    shared: &'a Shared,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let full = {
            let mut buffer = self.shared.buffer.lock().unwrap_or_else(PoisonError::into_inner);
            buffer.extend_from_slice(bytes);
            buffer.len() >= self.shared.flush_at
        };
        if full {
            self.shared.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Flushes a [`Batched`] log when dropped.
#[derive(Debug)]
pub struct FlushOnDrop(Batched);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        let _ = self.0.flush();
    }
}

/// At most `per_sec` log lines a second for one kind of event; the rest are counted and reported
/// in one summary. For events anyone can cause at will — refusals of tokens whose signature never
/// held — so that a flood of garbage cannot flood the log (or the disk) with it. Lock-free; at the
/// turn of a second two threads may both start the new window, which at worst lets a few more
/// lines through.
#[derive(Debug)]
pub struct LogBudget {
    per_sec: u32,
    window: std::sync::atomic::AtomicU64,
    used: std::sync::atomic::AtomicU32,
    suppressed: std::sync::atomic::AtomicU64,
}

/// What [`LogBudget::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Whether this line may be written.
    pub log: bool,
    /// Lines suppressed in the previous window(s), to report now (0: nothing to report).
    pub suppressed_before: u64,
}

impl LogBudget {
    /// A budget of `per_sec` lines a second (0: none).
    pub const fn new(per_sec: u32) -> Self {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        Self {
            per_sec,
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Takes one line from the budget of second `now_secs`.
    pub fn take(&self, now_secs: u64) -> Allowance {
        use std::sync::atomic::Ordering::Relaxed;
        let mut suppressed_before = 0;
        // Read first: in a flood, only the first line of each second writes the window.
        if self.window.load(Relaxed) != now_secs && self.window.swap(now_secs, Relaxed) != now_secs
        {
            self.used.store(0, Relaxed);
            suppressed_before = self.suppressed.swap(0, Relaxed);
        }
        let log = self.used.fetch_add(1, Relaxed) < self.per_sec;
        if !log {
            self.suppressed.fetch_add(1, Relaxed);
        }
        Allowance { log, suppressed_before }
    }

    /// Lines suppressed in seconds before `now_secs` that no later [`LogBudget::take`] has
    /// reported yet — for a periodic task, so a flood that stops is still summed up.
    pub fn overdue(&self, now_secs: u64) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        if self.window.load(Relaxed) < now_secs {
            self.suppressed.swap(0, Relaxed)
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_budget_lets_through_its_rate_and_counts_the_rest() {
        let budget = LogBudget::new(3);
        let taken: Vec<bool> = (0..5).map(|_| budget.take(100).log).collect();
        assert_eq!(taken, [true, true, true, false, false]);
        // The next second starts afresh and reports the two suppressed lines once.
        assert_eq!(budget.take(101), Allowance { log: true, suppressed_before: 2 });
        assert_eq!(budget.take(101), Allowance { log: true, suppressed_before: 0 });
        let none = LogBudget::new(0);
        assert!(!none.take(5).log);
        assert_eq!(none.take(6), Allowance { log: false, suppressed_before: 1 });
        // A flood that stops: its last second is collected by the periodic check, once, and
        // not while that second is still running.
        assert_eq!(none.overdue(6), 0);
        assert_eq!(none.overdue(7), 1);
        assert_eq!(none.overdue(8), 0);
    }

    /// A sink the test can read back, counting the writes that reach it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            s.0.extend_from_slice(bytes);
            s.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(b: &Batched, text: &str) {
        b.make_writer().write_all(text.as_bytes()).expect("buffered write");
    }

    #[test]
    fn lines_wait_for_the_flush_and_arrive_in_order_in_one_write() {
        let sink = Sink::default();
        let b = Batched::new(sink.clone(), Duration::from_secs(3600));
        line(&b, "one\n");
        line(&b, "two\n");
        assert!(sink.0.lock().expect("sink").0.is_empty(), "nothing written before a flush");
        b.flush().expect("flush");
        let s = sink.0.lock().expect("sink");
        assert_eq!((s.0.as_slice(), s.1), (&b"one\ntwo\n"[..], 1));
    }

    #[test]
    fn the_background_thread_flushes_on_its_own() {
        let sink = Sink::default();
        let b = Batched::new(sink.clone(), Duration::from_millis(5));
        line(&b, "tick\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sink.0.lock().expect("sink").0.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the flush thread never wrote");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().expect("sink").0, b"tick\n");
    }

    #[test]
    fn a_full_buffer_is_written_by_the_writer_at_once() {
        let sink = Sink::default();
        let b = Batched::new(sink.clone(), Duration::from_secs(3600));
        let big = "x".repeat(FLUSH_AT);
        line(&b, &big);
        assert_eq!(sink.0.lock().expect("sink").0.len(), FLUSH_AT);
    }

    /// A sink that fails its first write, then works.
    struct FailsOnce(Sink, bool);

    impl Write for FailsOnce {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if std::mem::replace(&mut self.1, false) {
                return Err(io::Error::other("disk full"));
            }
            self.0.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_sink_is_reported_and_later_lines_still_arrive() {
        let sink = Sink::default();
        let b = Batched::new(FailsOnce(sink.clone(), true), Duration::from_secs(3600));
        line(&b, "lost\n");
        assert!(b.flush().is_err(), "the failure reaches the caller");
        line(&b, "kept\n");
        b.flush().expect("flush");
        assert_eq!(sink.0.lock().expect("sink").0, b"kept\n");
    }

    #[test]
    fn dropping_the_guard_flushes() {
        let sink = Sink::default();
        let b = Batched::new(sink.clone(), Duration::from_secs(3600));
        line(&b, "last words\n");
        drop(FlushOnDrop(b));
        assert_eq!(sink.0.lock().expect("sink").0, b"last words\n");
    }
}
