//! The `sysext` command: a thin front over the workspace's libraries.
//!
//! Exit codes: 0 ok, 1 checked and found problems, 2 error.

mod cli;
mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sysext: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
