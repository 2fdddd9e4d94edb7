//! `sysext pull REF -o OUTPUT`: an extension image from a registry, verified.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ocirootfs::cli::SourceArgs;
use sysext_core::cli::Exit;

use crate::publish;

/// Fetch an extension image pushed with `sysext push` (for this machine's platform, or
/// --platform's when the reference is an index) into OUTPUT. Every blob is checked against
/// its digest and size; OUTPUT is written under a temporary name and renamed only when the
/// image verified.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST].
    pub reference: String,
    /// The image file to write, e.g. /var/lib/extensions/NAME.raw.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Replace an existing OUTPUT (swapped in atomically).
    #[arg(short, long)]
    pub force: bool,
    /// --platform picks the image of an index; credentials, TLS and the blob cache as for
    /// every source.
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the report as JSON on stdout (else a summary on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PullArgs) -> Result<Exit> {
    let report = publish::pull(
        &args.reference,
        args.source.platform.as_deref(),
        &args.output,
        args.force,
        &args.source.registry.options(false),
    )
    .with_context(|| format!("pulling {}", args.reference))?;
    if args.json {
        super::print_json(&report)?;
    } else {
        eprintln!(
            "{}: {} ({} bytes, {})",
            report.reference,
            report.output.display(),
            report.size,
            report.digest
        );
    }
    Ok(Exit::OK)
}
