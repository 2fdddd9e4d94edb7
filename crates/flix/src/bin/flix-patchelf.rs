//! `flix-patchelf`: patchelf's command line over `flix::rewrite`, with patchelf's conventions
//! (`patchelf: MESSAGE`, status 1 on errors) and the toolchain's pipe handling
//! (`sysext_core::cli`).

use clap::Parser;
use flix::patchelf::{run, Args};
use sysext_core::cli::{run_main_as, Convention, Exit};

fn main() -> std::process::ExitCode {
    run_main_as("patchelf", Convention::PATCHELF, || {
        let args = match Args::try_parse() {
            Ok(a) => a,
            Err(e) => {
                let _ = e.print();
                // patchelf's status for a usage error is 1; --help and --version are 0.
                return Ok(Exit::code(if e.use_stderr() { 1 } else { 0 }));
            }
        };
        run(&args).map(Exit::code)
    })
}
