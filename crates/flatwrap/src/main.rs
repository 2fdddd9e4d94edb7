//! `flatwrap SOURCE NAME PATH...`: see `flatwrap --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    sysext_core::cli::run_main("flatwrap", || {
        flatwrap::cli::run(flatwrap::cli::Args::parse())
    })
}
