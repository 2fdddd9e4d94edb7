use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let args = ocirootfs::cli::Args::parse();
    match ocirootfs::cli::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ocirootfs: {e:#}");
            std::process::exit(2);
        }
    }
}
