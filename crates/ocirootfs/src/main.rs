use clap::Parser;

fn main() {
    sysext_core::logging::init();
    let args = ocirootfs::cli::Args::parse();
    match ocirootfs::cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ocirootfs: {e:#}");
            std::process::exit(2);
        }
    }
}
