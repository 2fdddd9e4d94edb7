//! `sysext inspect IMAGE`: what an image holds.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use sysext_core::inspect::{EntryKind, Image};

/// Show an image's name, release file, size and architectures (and its entries with --list).
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A NAME.raw squashfs image or an extension folder.
    pub image: PathBuf,
    /// Print the summary (with every entry) as JSON.
    #[arg(long)]
    pub json: bool,
    /// List every entry (mode, owner, size, path).
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: InspectArgs) -> Result<ExitCode> {
    let image =
        Image::open(&args.image).with_context(|| format!("inspecting {}", args.image.display()))?;
    let info = image.info();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("name:          {}", info.name);
    println!("format:        {:?}", info.format);
    if let Some(b) = info.image_bytes {
        println!("image size:    {b}");
    }
    println!("files:         {}", info.files);
    println!("total size:    {}", info.total_size);
    println!(
        "architectures: {}",
        if info.architectures.is_empty() {
            "(no ELF files)".to_string()
        } else {
            info.architectures.join(" ")
        }
    );
    match (&info.release_file, &info.release) {
        (Some(f), Some(text)) => {
            println!("release file:  {f}");
            for line in text.lines() {
                println!("  {line}");
            }
        }
        _ => println!(
            "release file:  missing (usr/lib/extension-release.d/extension-release.{})",
            info.name
        ),
    }
    if args.list {
        for e in &info.entries {
            let t = match e.kind {
                EntryKind::File => '-',
                EntryKind::Dir => 'd',
                EntryKind::Symlink => 'l',
                EntryKind::CharDevice => 'c',
                EntryKind::BlockDevice => 'b',
                EntryKind::Fifo => 'p',
                EntryKind::Socket => 's',
            };
            let target = e
                .target
                .as_deref()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            println!(
                "{t}{:04o} {}/{} {:>10} {}{}",
                e.mode, e.uid, e.gid, e.size, e.path, target
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
