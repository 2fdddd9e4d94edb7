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
    /// The manifest (see examples/bake.toml); not needed with --collect.
    #[arg(required_unless_present = "collect")]
    pub manifest: Option<PathBuf>,
    /// Output folder (created if missing; re-used for incremental bakes).
    #[arg(
        long,
        short = 'o',
        visible_alias = "output",
        value_name = "DIR",
        required_unless_present_any = ["plan", "collect"]
    )]
    pub out: Option<PathBuf>,
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
    /// Only this job: NAME (every architecture of the extension) or NAME@ARCH (repeatable).
    /// A CI shard builds the jobs --plan lists with one --only each.
    #[arg(long, value_name = "NAME[@ARCH]")]
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
    /// Sign the root hash of `verity = true` entries with this PEM private key or `pkcs11:`
    /// URI (and --verity-cert); without it their DDIs are left unsigned, for `sysext sign`.
    #[arg(long, value_name = "KEY.pem|URI", requires = "verity_cert")]
    pub verity_key: Option<PathBuf>,
    /// The PEM certificate of --verity-key.
    #[arg(long, value_name = "CERT.pem", requires = "verity_key")]
    pub verity_cert: Option<PathBuf>,
    /// List the jobs (extension, version, architecture, file, rebuild key, the --only that
    /// builds it) without building anything, e.g. for a CI matrix; with --json as a JSON array.
    #[arg(long, conflicts_with_all = ["collect", "out"])]
    pub plan: bool,
    /// Assemble the output folders of `--only` bakes (shards) into one release in OUT:
    /// images, transfer files and Butane snippets copied, SHA256SUMS written over all images
    /// and transfer files, reports merged. Two shards with different bytes under one file name are refused.
    #[arg(long, num_args = 2.., value_names = ["OUT", "SHARD"], conflicts_with = "out")]
    pub collect: Vec<PathBuf>,
    /// Use a registry as the build cache shared by runners: push every image built (or up to
    /// date) to REF-PREFIX/NAME:<rebuild key> (and :VERSION-ARCH), and before building a job,
    /// fetch the image pushed under its key instead (reported as "reused").
    #[arg(long, value_name = "REF-PREFIX", conflicts_with_all = ["plan", "collect"])]
    pub push: Option<String>,
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
    if let Some((out, shards)) = args.collect.split_first() {
        let report = bake::collect(out, shards, args.signing_key.as_deref())
            .with_context(|| format!("collecting the shards into {}", out.display()))?;
        if args.json {
            super::print_json(&report)?;
        }
        eprintln!(
            "collected {} images from {} shards into {}",
            report.entries.len(),
            shards.len(),
            out.display()
        );
        signing_summary(&report);
        let failed = report.failed();
        if failed > 0 {
            eprintln!("sysext bake: the shards report {failed} failed jobs; their images are not in the release");
            return Ok(Exit::FINDINGS);
        }
        return Ok(Exit::OK);
    }
    let manifest = args.manifest.clone().context("no manifest")?;
    let opts = BakeOptions {
        out: args.out.clone().unwrap_or_default(),
        base_url: args.base_url.clone(),
        source: args.registry.options(false),
        jobs: args.jobs,
        force: args.force,
        only: args.only.clone(),
        transfer_suffix: args.transfer_suffix.into(),
        signing_key: args.signing_key.clone(),
        push: args.push.clone(),
        verity_signer: match (&args.verity_key, &args.verity_cert) {
            (Some(k), Some(c)) => {
                let s = fsimage::signature::Signer::load(k, c)?;
                let fpr = fsimage::signature::fingerprint(s.cert())?;
                Some((s, fpr))
            }
            _ => None,
        },
    };
    if args.plan {
        let jobs = bake::plan(&manifest, &opts)
            .with_context(|| format!("planning {}", manifest.display()))?;
        if args.json {
            super::print_json(&jobs)?;
        } else {
            for j in &jobs {
                println!("{}\t{}\t{}", j.only, j.file, j.key);
            }
        }
        return Ok(Exit::OK);
    }
    let report =
        bake::bake(&manifest, &opts).with_context(|| format!("baking {}", manifest.display()))?;
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
            Status::Reused => eprintln!(
                "reused      {} (from {})",
                e.file,
                e.registry.as_deref().unwrap_or("the registry")
            ),
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
    signing_summary(&report);
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

/// The line saying whether SHA256SUMS is signed.
fn signing_summary(report: &bake::Report) {
    match &report.signed_by {
        Some(fpr) => eprintln!("SHA256SUMS signed by {fpr} (transfer files: Verify=yes)"),
        None => eprintln!(
            "SHA256SUMS not signed (transfer files: Verify=false); --signing-key signs it"
        ),
    }
}
