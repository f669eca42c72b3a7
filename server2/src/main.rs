//! The `server2` command: reads `SERVER2_*` configuration and serves.

use std::process::ExitCode;

use anyhow::Context;
use server2::Config;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server2: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    if std::env::args().nth(1).is_some_and(|a| a == "--help" || a == "-h") {
        eprintln!("server2: Handoff relying party (SERVER2). Configuration comes from SERVER2_* environment variables; see the README.");
        return Ok(());
    }
    let _flush_logs = handoff::telemetry::init_stderr_batched("info,poem=warn");
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listen = config.listen;
        if config.cookies == server2::config::CookieSecurity::InsecureDevelopment {
            tracing::warn!("SERVER2_INSECURE_COOKIES is set: cookies lack Secure; for local development only");
        }
        let listener = std::net::TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen} (SERVER2_LISTEN)"))?;
        let audience = config.public_url.clone();
        let app = server2::build_app(config, listener).await?;
        tracing::info!(addr = %app.local_addr(), %audience, ready = app.is_ready(), "SERVER2 listening");
        app.run(handoff::web::shutdown_signal()).await.context("server failed")?;
        tracing::info!("SERVER2 stopped");
        Ok(())
    })
}
