//! Command-line parsing and dispatch. Each subcommand lives in its own module under `cmd/`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use sysext_core::cli::Exit;

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
    Pack(cmd::pack::PackArgs),
    Inspect(cmd::inspect::InspectArgs),
    Merge(cmd::merge::MergeArgs),
    Unmerge(cmd::merge::UnmergeArgs),
    Status(cmd::merge::StatusArgs),
    Run(cmd::run::RunArgs),
    Check(cmd::check::CheckArgs),
    Sign(cmd::sign::SignArgs),
    /// Show the libraries programs need inside a rootfs, found as their loader would.
    Deps(crate::cmd::deps::DepsArgs),
    Bake(crate::cmd::bake::BakeArgs),
    ConvertTorcx(crate::cmd::convert_torcx::ConvertTorcxArgs),
    InstallImage(crate::cmd::install_image::InstallImageArgs),
    Push(cmd::push::PushArgs),
    Pull(cmd::pull::PullArgs),
}

pub fn run(args: Args) -> Result<Exit> {
    match args.command {
        Command::Pack(a) => cmd::pack::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Merge(a) => cmd::merge::merge(a),
        Command::Unmerge(a) => cmd::merge::unmerge(a),
        Command::Status(a) => cmd::merge::status(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Check(a) => cmd::check::run(a),
        Command::Sign(a) => cmd::sign::run(a),
        Command::Deps(a) => crate::cmd::deps::run(a),
        Command::Bake(a) => crate::cmd::bake::run(a),
        Command::ConvertTorcx(a) => crate::cmd::convert_torcx::run(a),
        Command::InstallImage(a) => crate::cmd::install_image::run(a),
        Command::Push(a) => cmd::push::run(a),
        Command::Pull(a) => cmd::pull::run(a),
    }
}
