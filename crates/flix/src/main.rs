//! `flix SOURCE NAME PATH...`: see `flix --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    sysext_core::cli::run_main("flix", || flix::cli::run(flix::cli::Args::parse()))
}
