//! The `sysext` command: a thin front over the workspace's libraries.
//!
//! Exit codes: 0 ok, 1 checked and found problems, 2 error.

mod bake;
mod cli;
mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    sysext_core::logging::init();
    // Temp outputs are removed and the exit status is 128+N on SIGINT/SIGTERM/SIGHUP.
    if let Err(e) = safefs::cleanup::install("sysext") {
        eprintln!("sysext: error: cannot watch for SIGINT/SIGTERM: {e}");
        return ExitCode::from(2);
    }
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            safefs::cleanup::wait_if_stopping();
            eprintln!("sysext: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
