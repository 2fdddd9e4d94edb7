//! The `sysext` command: a thin front over the workspace's libraries.
//!
//! Exit codes: 0 ok, 1 checked and found problems, 2 error (`sysext_core::cli::run_main`).

mod bake;
mod cli;
mod cmd;
mod publish;

use clap::Parser;

fn main() -> std::process::ExitCode {
    sysext_core::cli::run_main("sysext", || cli::run(cli::Args::parse()))
}
