//! Command-line parsing and dispatch. Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Build, check and try systemd-sysext extension images.
#[derive(Debug, Parser)]
#[command(name = "sysext", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the libraries programs need inside a rootfs, found as their loader would.
    Deps(crate::cmd::deps::DepsArgs),
}

pub fn run() -> Result<ExitCode> {
    let args = Args::parse();
    match args.command {
        Command::Deps(a) => crate::cmd::deps::run(a),
    }
}
