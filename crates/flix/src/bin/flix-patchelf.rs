//! `flix-patchelf`: patchelf's command line over `flix::rewrite`.

use clap::Parser;
use flix::patchelf::{run, Args};

fn main() {
    sysext_core::logging::init();
    if let Err(e) = safefs::cleanup::install("patchelf") {
        eprintln!("patchelf: cannot watch for SIGINT/SIGTERM: {e}");
        std::process::exit(1);
    }
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match run(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            safefs::cleanup::wait_if_stopping();
            eprintln!("patchelf: {e:#}");
            std::process::exit(1);
        }
    }
}
