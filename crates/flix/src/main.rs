//! `flix SOURCE NAME PATH...`: see `flix --help`.

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = flix::cli::Args::parse();
    if let Err(e) = flix::cli::run(args) {
        eprintln!("flix: {e:#}");
        std::process::exit(2);
    }
}
