//! `ocirootfs IMAGE FOLDER` and `ocirootfs cache list|prune`: see `ocirootfs --help`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    sysext_core::cli::run_main("ocirootfs", || {
        ocirootfs::cli::run(ocirootfs::cli::Args::parse())
    })
}
