//! `sysext bake MANIFEST --out DIR`: every extension of a manifest, for every architecture,
//! with SHA256SUMS, transfer files and Butane snippets.

use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{Context, Result};
use clap::Args;
use ocirootfs::cli::RegistryArgs;

use crate::bake::{self, BakeOptions, Status};

/// Build all extensions of a TOML manifest (in parallel, skipping unchanged ones) with the
/// systemd-sysupdate artifacts: NAME-VERSION-ARCH.raw, SHA256SUMS, NAME.conf, NAME-ARCH.bu.
#[derive(Debug, Args)]
pub struct BakeArgs {
    /// The manifest (see examples/bake.toml).
    pub manifest: PathBuf,
    /// Output folder (created if missing; re-used for incremental bakes).
    #[arg(long, short = 'o', visible_alias = "output", value_name = "DIR")]
    pub out: PathBuf,
    /// URL folder the images are served from (overrides base_url in the manifest).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Credentials, TLS and the blob cache shared by all image sources (each image is pulled
    /// for the architecture being built).
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Parallel builds (default: one per CPU, at most 4).
    #[arg(short, long, default_value_t = 0)]
    pub jobs: usize,
    /// Rebuild everything, even what is up to date.
    #[arg(long)]
    pub force: bool,
    /// Only this extension (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BakeArgs) -> Result<Exit> {
    let opts = BakeOptions {
        out: args.out.clone(),
        base_url: args.base_url.clone(),
        source: args.registry.options(false),
        jobs: args.jobs,
        force: args.force,
        only: args.only.clone(),
    };
    let report = bake::bake(&args.manifest, &opts)
        .with_context(|| format!("baking {}", args.manifest.display()))?;
    if args.json {
        super::print_json(&report)?;
    }
    for e in &report.entries {
        match e.status {
            Status::Built => eprintln!(
                "built       {} ({} bytes)",
                e.file,
                e.bytes.unwrap_or_default()
            ),
            Status::UpToDate => eprintln!("up to date  {}", e.file),
            Status::Failed => eprintln!(
                "FAILED      {}: {}",
                e.file,
                e.error.as_deref().unwrap_or("unknown error")
            ),
        }
        for w in &e.warnings {
            eprintln!("  note: {w}");
        }
    }
    let failed = report.failed();
    if failed > 0 {
        eprintln!(
            "sysext bake: {failed} of {} images failed (the others are in {})",
            report.entries.len(),
            report.out.display()
        );
        return Ok(Exit::FINDINGS);
    }
    Ok(Exit::OK)
}
