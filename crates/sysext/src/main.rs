//! The `sysext` command: a thin front over the workspace's libraries.
//!
//! Exit codes: 0 ok, 1 checked and found problems, 2 error.

mod bake;
mod cli;
mod cmd;

use std::process::ExitCode;

fn main() -> ExitCode {
    sysext_core::logging::init();
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sysext: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
