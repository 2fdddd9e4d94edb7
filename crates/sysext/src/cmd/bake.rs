//! `sysext bake MANIFEST --out DIR`: every extension of a manifest, for every architecture,
//! with SHA256SUMS, transfer files and Butane snippets.

use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{Context, Result};
use clap::Args;
use ocirootfs::cli::RegistryArgs;

use crate::bake::artifacts::TransferSuffix;
use crate::bake::{self, BakeOptions, Status};

/// Build all extensions of a TOML manifest (in parallel, skipping unchanged ones) with the
/// systemd-sysupdate artifacts: NAME-VERSION-ARCH.raw, SHA256SUMS, NAME.transfer (or
/// NAME.conf), NAME-ARCH.bu; with --signing-key also SHA256SUMS.gpg and import-pubring.gpg.
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
    /// Transfer file names: `transfer` (NAME.transfer, systemd 257 and later) or `conf`
    /// (NAME.conf, for hosts with an older systemd-sysupdate).
    #[arg(long, value_enum, default_value_t = TransferSuffixArg::Transfer, value_name = "SUFFIX")]
    pub transfer_suffix: TransferSuffixArg,
    /// Sign SHA256SUMS with this OpenPGP secret key file (`gpg --export-secret-keys`):
    /// writes SHA256SUMS.gpg and the public keyring import-pubring.gpg, the transfer files say
    /// Verify=yes and the Butane snippets install the keyring as
    /// /etc/systemd/import-pubring.gpg. A passphrase comes from $SYSEXT_SIGNING_PASSPHRASE.
    #[arg(long, env = "SYSEXT_SIGNING_KEY", value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--transfer-suffix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TransferSuffixArg {
    Transfer,
    Conf,
}

impl From<TransferSuffixArg> for TransferSuffix {
    fn from(a: TransferSuffixArg) -> Self {
        match a {
            TransferSuffixArg::Transfer => TransferSuffix::Transfer,
            TransferSuffixArg::Conf => TransferSuffix::Conf,
        }
    }
}

pub fn run(args: BakeArgs) -> Result<Exit> {
    let opts = BakeOptions {
        out: args.out.clone(),
        base_url: args.base_url.clone(),
        source: args.registry.options(false),
        jobs: args.jobs,
        force: args.force,
        only: args.only.clone(),
        transfer_suffix: args.transfer_suffix.into(),
        signing_key: args.signing_key.clone(),
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
    match &report.signed_by {
        Some(fpr) => eprintln!("SHA256SUMS signed by {fpr} (transfer files: Verify=yes)"),
        None => eprintln!(
            "SHA256SUMS not signed (transfer files: Verify=false); --signing-key signs it"
        ),
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
