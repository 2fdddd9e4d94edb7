//! `flix SOURCE NAME PATH...`: see `flix --help`.

use clap::Parser;

fn main() {
    sysext_core::logging::init();
    let args = flix::cli::Args::parse();
    if let Err(e) = flix::cli::run(args) {
        eprintln!("flix: {e:#}");
        std::process::exit(2);
    }
}
