//! The `server2` command: reads `SERVER2_*` configuration and serves.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use handoff_web::main_support;
use server2::config::{Config, EnvConfig};

fn main() -> ExitCode {
    main_support::exit_code("server2", run())
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--help" | "-h") => {
            eprintln!("server2: Handoff relying party (SERVER2). Configuration comes from SERVER2_* environment variables; see the README.");
            eprintln!("server2 explain [TOKEN | -]: every check of a handoff token, in order, without using it up (exit 0: it would be accepted)");
            return Ok(());
        }
        Some("explain") => return explain(args.next()),
        Some(other) => anyhow::bail!("unknown argument {other:?}: `server2` serves, `server2 explain TOKEN` explains a token"),
        None => {}
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

/// `server2 explain`: the token from the argument, or from standard input (`-` or none: a
/// token on the command line stays in the shell's history).
fn explain(arg: Option<String>) -> anyhow::Result<()> {
    handoff_web::telemetry::init_stderr("warn");
    let config = Config::from_env()?;
    let token = match arg.as_deref() {
        Some(token) if token != "-" => token.to_owned(),
        _ => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the token from standard input")?;
            line
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime
        .block_on(server2::explain::explain(&config, token.trim()))
        .map_err(anyhow::Error::msg)?;
    let verdict = match report.refusal {
        None => "accepted: SERVER2 would take this token (if not used before)".to_owned(),
        Some(refusal) => format!("refused: {}", refusal.code()),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{verdict}", report.lines).context("cannot write the report")?;
    out.flush().context("cannot write the report")?;
    if report.refusal.is_some() {
        std::process::exit(1);
    }
    Ok(())
}
