//! `sysext pack DIR OUTPUT`: a staged extension tree to NAME.raw (squashfs) or a folder.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use sysext_core::pack::{pack, Compression, PackOptions};

/// Pack an extension tree into NAME.raw (squashfs) or a folder, root-owned and reproducible.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The staged tree (holding usr/lib/extension-release.d/extension-release.NAME).
    pub dir: PathBuf,
    /// Output: a name ending in ".raw" gives a squashfs image, anything else a folder.
    pub output: PathBuf,
    /// Extension name (default: the output's file name without ".raw").
    #[arg(long)]
    pub name: Option<String>,
    /// Squashfs compressor: gzip (default, every kernel has it), zstd or xz.
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Compressor level (gzip 1-9, zstd 1-22, xz 0-9; default as mksquashfs: 9, 15, 6).
    #[arg(long)]
    pub level: Option<i32>,
    /// Compression threads (default: one per CPU; the output is the same for any count).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PackArgs) -> Result<ExitCode> {
    let mut opts = PackOptions::default();
    opts.compression = args.compression;
    opts.level = args.level;
    opts.force = args.force;
    opts.name = args.name;
    opts.threads = args.threads;
    let report = pack(&args.dir, &args.output, &opts).with_context(|| {
        format!(
            "packing {} into {}",
            args.dir.display(),
            args.output.display()
        )
    })?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        format!(
            "{}: {} ({} bytes{})",
            report.name,
            report.output.display(),
            report.bytes,
            report
                .compression
                .map(|c| format!(", {c}"))
                .unwrap_or_default()
        )
    };
    super::write_stdout(|out| writeln!(out, "{text}"))?;
    Ok(ExitCode::SUCCESS)
}
