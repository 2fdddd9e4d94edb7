//! `sysext deps`: the shared libraries programs need inside a root filesystem, found as their
//! own loader would find them, with the reason for each.

use std::io::Write;
use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{Context, Result};
use clap::Args;
use elf_closure::{self as elf, ClosureOptions};

/// Show which objects the program interpreter would load for FILE... inside a rootfs.
#[derive(Debug, Args)]
pub struct DepsArgs {
    /// The root filesystem the files belong to (used as `/` for every path and symlink).
    #[arg(long, value_name = "DIR")]
    pub root: PathBuf,
    /// Programs or libraries, as paths inside the root (e.g. /usr/bin/htop).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Print the closure as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also follow the libraries named by dlopen metadata notes (.note.dlopen): required,
    /// recommended (also required ones), suggested (all), or none (only what the loader loads
    /// at start-up).
    #[arg(long, value_name = "LEVEL", default_value = "none")]
    pub dlopen: elf::dlopen::DlopenFollow,
}

/// Runs `sysext deps`: exit 1 when a library is missing.
pub fn run(args: DepsArgs) -> Result<Exit> {
    let meta = std::fs::metadata(&args.root)
        .with_context(|| format!("reading rootfs {}", args.root.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "rootfs {} is not a directory",
        args.root.display()
    );
    let files: Vec<PathBuf> = args
        .files
        .iter()
        .map(|f| {
            if f.has_root() {
                f.clone()
            } else {
                PathBuf::from("/").join(f)
            }
        })
        .collect();
    let opts = ClosureOptions::default().following_dlopen(args.dlopen);
    let closure = elf::closure(&args.root, &files, &opts)
        .with_context(|| format!("computing the library closure in {}", args.root.display()))?;
    if args.json {
        super::print_json(&closure)?;
    } else {
        super::write_stdout(|out| print_text(out, &closure))?;
    }
    if closure.missing.is_empty() {
        Ok(Exit::OK)
    } else {
        eprintln!(
            "sysext: {} librar{} not found in {}: install the package that provides it in the \
             image, or pass it with --extra-lib",
            closure.missing.len(),
            if closure.missing.len() == 1 {
                "y"
            } else {
                "ies"
            },
            args.root.display()
        );
        Ok(Exit::FINDINGS)
    }
}

fn print_text(out: &mut impl Write, c: &elf::Closure) -> std::io::Result<()> {
    for o in &c.objects {
        let via = if o.real_path != o.path {
            format!(" -> {}", o.real_path.display())
        } else {
            String::new()
        };
        if o.name == o.path.to_string_lossy() {
            writeln!(out, "{}{via}  ({})", o.path.display(), o.reason)?;
        } else {
            writeln!(
                out,
                "{} => {}{via}  ({})",
                o.name,
                o.path.display(),
                o.reason
            )?;
        }
    }
    for m in &c.missing {
        writeln!(
            out,
            "{} => not found  (needed by {})",
            m.name,
            m.needed_by.display()
        )?;
    }
    for d in &c.dlopen_missing {
        writeln!(
            out,
            "{} => not found  (dlopen by {}, {})",
            d.sonames.join(" or "),
            d.needed_by.display(),
            d.priority
        )?;
    }
    Ok(())
}
