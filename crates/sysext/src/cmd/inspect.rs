//! `sysext inspect IMAGE`: what an image holds.

use fsimage::dissect::{Layout, Protected};
use std::io::{self, Write};
use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{Context, Result};
use clap::Args;
use fsimage::EntryKind;
use gentext::escape;
use sysext_core::inspect::{Image, ImageFormat, ImageInfo};

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

pub fn run(args: InspectArgs) -> Result<Exit> {
    let image =
        Image::open(&args.image).with_context(|| format!("inspecting {}", args.image.display()))?;
    let info = image
        .info()
        .with_context(|| format!("inspecting {}", args.image.display()))?;
    super::write_stdout(|out| print(&info, &args, out))?;
    Ok(Exit::OK)
}

fn print(info: &ImageInfo, args: &InspectArgs, out: &mut impl Write) -> io::Result<()> {
    if args.json {
        serde_json::to_writer_pretty(&mut *out, info)?;
        return writeln!(out);
    }
    let format = match info.format {
        ImageFormat::Squashfs => "squashfs",
        ImageFormat::Erofs => "erofs",
        ImageFormat::Dir => "folder",
    };
    // Text from the image (names, release values) is escaped; JSON above needs no escaping.
    writeln!(out, "name:          {}", escape(&info.name))?;
    writeln!(out, "class:         {}", info.class)?;
    writeln!(out, "format:        {format}")?;
    if let Some(b) = info.image_bytes {
        writeln!(out, "image size:    {b}")?;
    }
    writeln!(out, "files:         {}", info.files)?;
    writeln!(out, "total size:    {}", info.total_size)?;
    let arch = if info.architectures.is_empty() {
        "(no ELF files)".to_string()
    } else {
        info.architectures.join(" ")
    };
    writeln!(out, "architectures: {arch}")?;
    if let Some(v) = &info.verity {
        let layout = match v.layout {
            Layout::Ddi => "GPT disk image",
            Layout::Naked => "hash tree beside the image",
        };
        writeln!(out, "dm-verity:     {layout}, root hash {}", v.root_hash)?;
        writeln!(
            out,
            "  root hash from {} (not checked here; `sysext check` checks it)",
            root_hash_source(v)
        )?;
        if let Some(a) = &v.architecture {
            writeln!(out, "  partitions for {a}:")?;
        }
        for p in &v.partitions {
            writeln!(
                out,
                "  {:<24} {} offset {} size {}{}",
                escape(&p.label),
                p.uuid,
                p.offset,
                p.bytes,
                if p.read_only { " read-only" } else { "" }
            )?;
        }
        if v.layout == Layout::Naked {
            writeln!(out, "  hash tree in {}", v.hash_file.display())?;
        }
    }
    match (&info.release_file, &info.release) {
        (Some(f), Some(text)) => {
            writeln!(out, "release file:  {}", escape(f))?;
            for line in text.lines() {
                writeln!(out, "  {}", escape(line))?;
            }
        }
        _ => writeln!(
            out,
            "release file:  missing ({}/extension-release.{})",
            info.class.release_dir(),
            escape(&info.name)
        )?,
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
                .map(|t| format!(" -> {}", escape(t)))
                .unwrap_or_default();
            writeln!(
                out,
                "{t}{:04o} {}/{} {:>10} {}{}",
                e.mode,
                e.uid,
                e.gid,
                e.size,
                escape(&e.path),
                target
            )?;
        }
    }
    Ok(())
}

/// Where a root hash came from, for messages.
pub fn root_hash_source(v: &Protected) -> String {
    v.root_hash_source.to_string()
}
