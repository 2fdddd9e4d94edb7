//! Logging setup shared by the toolchain's binaries: warnings and errors to stderr (level
//! `warn`, `RUST_LOG` overrides), colours only when stderr is a terminal so logs and CI output
//! stay plain text.

use std::io::IsTerminal as _;

/// Installs the global tracing subscriber. Call once, first thing in `main`.
pub fn init() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
}
