//! `sysext push IMAGE... REF`: extension images to a registry as an OCI artifact.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ocirootfs::cli::RegistryArgs;
use sysext_core::cli::Exit;

use crate::publish;

/// Push extension images to a registry as one OCI 1.1 artifact (artifactType
/// application/vnd.sysext.image.v1): one manifest per image, an image index when there are
/// several architectures. Name, version, architecture, the extension-release text and (for
/// an image from `sysext bake`) the rebuild key go into annotations.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Images (squashfs or EROFS .raw) of one extension, one per architecture, then the
    /// reference to push to: REGISTRY/REPOSITORY[:TAG].
    #[arg(required = true, num_args = 2.., value_name = "IMAGE... REF")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Print the report as JSON on stdout (else a summary on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PushArgs) -> Result<Exit> {
    let (reference, images) = args.args.split_last().context("no reference")?;
    let images: Vec<PathBuf> = images.iter().map(PathBuf::from).collect();
    let report = publish::push(&images, reference, &args.registry.options(false))
        .with_context(|| format!("pushing to {reference}"))?;
    if args.json {
        super::print_json(&report)?;
    } else {
        for i in &report.images {
            eprintln!(
                "{} {} ({} bytes{})",
                if i.uploaded { "pushed " } else { "present" },
                gentext::escape(&i.file),
                i.size,
                i.architecture
                    .as_deref()
                    .map(|a| format!(", {}", gentext::escape(a)))
                    .unwrap_or_default()
            );
        }
        eprintln!("{}@{}", report.reference, report.digest);
    }
    Ok(Exit::OK)
}
