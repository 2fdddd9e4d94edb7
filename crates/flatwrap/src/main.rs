//! `flatwrap SOURCE NAME PATH...`: see `flatwrap --help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    sysext_core::logging::init();
    if let Err(e) = safefs::cleanup::install("flatwrap") {
        eprintln!("flatwrap: error: cannot watch for SIGINT/SIGTERM: {e}");
        return ExitCode::from(2);
    }
    let args = flatwrap::cli::Args::parse();
    let json = args.json;
    match flatwrap::cli::run(args) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("flatwrap: error: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                flatwrap::cli::print_summary(&report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            safefs::cleanup::wait_if_stopping();
            eprintln!("flatwrap: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
