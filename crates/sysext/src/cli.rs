//! Command-line parsing and dispatch. Each subcommand lives in its own module under `cmd/`.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd;

/// Build, check and try systemd-sysext extension images.
#[derive(Debug, Parser)]
#[command(name = "sysext", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
<<<<<<< HEAD
    Pack(cmd::pack::PackArgs),
    Inspect(cmd::inspect::InspectArgs),
=======
    /// Show the libraries programs need inside a rootfs, found as their loader would.
    Deps(crate::cmd::deps::DepsArgs),
>>>>>>> elf-closure
}

pub fn run() -> Result<ExitCode> {
    let args = Args::parse();
    match args.command {
<<<<<<< HEAD
        Command::Pack(a) => cmd::pack::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
=======
        Command::Deps(a) => crate::cmd::deps::run(a),
>>>>>>> elf-closure
    }
}
