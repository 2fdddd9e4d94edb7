//! `flix SOURCE NAME PATH...`: see `flix --help`.

use clap::Parser;

fn main() {
    sysext_core::logging::init();
    if let Err(e) = safefs::cleanup::install("flix") {
        eprintln!("flix: error: cannot watch for SIGINT/SIGTERM: {e}");
        std::process::exit(2);
    }
    let args = flix::cli::Args::parse();
    if let Err(e) = flix::cli::run(args) {
        safefs::cleanup::wait_if_stopping();
        eprintln!("flix: {e:#}");
        std::process::exit(2);
    }
}
