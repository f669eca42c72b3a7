//! Tracing set-up shared by both servers and their tools.

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

/// Logging for a server process: standard error, colours when it is a terminal.
pub fn init_stderr(default: &str) {
    use std::io::IsTerminal;
    init(default, std::io::stderr, std::io::stderr().is_terminal());
}
