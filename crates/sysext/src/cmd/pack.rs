//! `sysext pack DIR OUTPUT`: a staged extension tree to NAME.raw (squashfs) or a folder.

use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{bail, Context, Result};
use clap::Args;
use sysext_core::cli::OutputArgs;
use sysext_core::pack::{pack, Fs, PackOptions};
use sysext_core::release::ImageClass;

/// Pack an extension tree into NAME.raw (squashfs) or a folder, root-owned and reproducible.
#[derive(Debug, Args)]
pub struct PackArgs {
    /// The staged tree (holding usr/lib/extension-release.d/extension-release.NAME, or for
    /// --confext etc/extension-release.d/extension-release.NAME and nothing outside etc/).
    pub dir: PathBuf,
    /// Output: a name ending in ".raw" gives a squashfs image, anything else a folder (unless
    /// --format says otherwise); the same as --output.
    #[arg(value_name = "OUTPUT", conflicts_with = "output")]
    pub output_pos: Option<PathBuf>,
    /// Extension name (default: the output's file name without ".raw", or without
    /// ".sysext.raw" / ".confext.raw", the names systemd v255+ recommends).
    #[arg(long)]
    pub name: Option<String>,
    /// Pack a configuration extension for systemd-confext (merged over /etc): the release
    /// file is etc/extension-release.d/extension-release.NAME and the tree holds only etc/.
    #[arg(long)]
    pub confext: bool,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Compressor level (squashfs: gzip 1-12, zstd 1-22, xz 0-9, default 6, 15, 6: gzip is
    /// libdeflate's, whose 6 is no larger than mksquashfs' default zlib 9; erofs: lz4hc 1-12,
    /// zstd 1-22, default as mkfs.erofs: 9, 3); the same as --compression COMP:LEVEL.
    #[arg(long)]
    pub level: Option<i32>,
    /// Compression (squashfs) or copy (EROFS) threads (default: one per CPU; the output is the
    /// same for any count).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the report as JSON on stdout (else a summary on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn run(mut args: PackArgs) -> Result<Exit> {
    if let Some(o) = args.output_pos.take() {
        args.out.output = Some(o);
    }
    let output = match (&args.out.output, &args.name) {
        (Some(_), _) => args.out.path(""),
        (None, Some(name)) => args.out.path(name),
        (None, None) => bail!("no output: give OUTPUT (NAME.raw or a folder NAME) or --name NAME"),
    };
    let mut opts = PackOptions::default();
    args.out.apply(&mut opts)?;
    if args.level.is_some() {
        opts.level = args.level;
    }
    opts.name = args.name;
    opts.threads = args.threads;
    if args.confext {
        opts.class = ImageClass::Confext;
    }
    let report = pack(&args.dir, &output, &opts)
        .with_context(|| format!("packing {} into {}", args.dir.display(), output.display()))?;
    if args.json {
        super::print_json(&report)?;
    } else {
        eprintln!(
            "{}{}: {} ({} bytes{})",
            report.name,
            if report.class == ImageClass::Confext {
                " (confext)"
            } else {
                ""
            },
            report.output.display(),
            report.bytes,
            match (report.fs, report.compression) {
                (Some(Fs::Erofs), _) => match (report.erofs_compression, report.level) {
                    (Some(c), Some(l)) => format!(", erofs, {c} level {l}"),
                    (Some(c), None) if c != sysext_core::pack::ErofsCompression::None => {
                        format!(", erofs, {c}")
                    }
                    _ => ", erofs, uncompressed".to_string(),
                },
                (_, Some(c)) => format!(", {c}"),
                _ => String::new(),
            }
        );
        match (&report.verity, &report.ddi) {
            (Some(v), Some(d)) => eprintln!(
                "{}: GPT disk image ({}, {} partitions), root hash {}",
                report.name,
                d.architecture,
                d.partitions.len(),
                v.root_hash
            ),
            (Some(v), None) => eprintln!(
                "{}: root hash {} ({}, {})",
                report.name,
                v.root_hash,
                v.hash_file.display(),
                v.roothash_file.display()
            ),
            _ => {}
        }
    }
    Ok(Exit::OK)
}
