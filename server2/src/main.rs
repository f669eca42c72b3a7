//! The `server2` command: reads `SERVER2_*` configuration and serves.

use std::process::ExitCode;

use anyhow::Context;
use handoff_web::main_support;
use server2::config::{Config, EnvConfig};

fn main() -> ExitCode {
    main_support::exit_code("server2", run())
}

fn run() -> anyhow::Result<()> {
    if std::env::args().nth(1).is_some_and(|a| a == "--help" || a == "-h") {
        eprintln!("server2: Handoff relying party (SERVER2). Configuration comes from SERVER2_* environment variables; see the README.");
        return Ok(());
    }
    let _flush_logs = handoff_web::telemetry::init_stderr_batched("info,poem=warn");
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = main_support::bind(config.listen, "SERVER2_LISTEN", config.cookies)?;
        let audience = config.public_url.to_string();
        let app = server2::build_app(config, listener).await?;
        main_support::serve("SERVER2", app, &audience).await.context("server failed")
    })
}
