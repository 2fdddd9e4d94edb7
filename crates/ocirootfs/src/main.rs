use clap::Parser;

fn main() {
    sysext_core::logging::init();
    if let Err(e) = safefs::cleanup::install("ocirootfs") {
        eprintln!("ocirootfs: cannot watch for SIGINT/SIGTERM: {e}");
        std::process::exit(2);
    }
    let args = ocirootfs::cli::Args::parse();
    match ocirootfs::cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            safefs::cleanup::wait_if_stopping();
            eprintln!("ocirootfs: {e:#}");
            std::process::exit(2);
        }
    }
}
