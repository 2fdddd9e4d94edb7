//! `sysext install-image DISK EXT... -o OUTPUT`: extensions baked into a Flatcar OS disk
//! image (see [`sysext_core::osimage`]).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use sysext_core::cli::Exit;
use sysext_core::osimage::{self, ExtensionSpec, InstallOptions, Target};

/// Put extensions into a Flatcar OS disk image (flatcar_production_image.bin, raw or
/// .bz2/.xz/.zst/.gz compressed), as the bakery's bake_flatcar_image.sh does: each image
/// into /opt/extensions/ on ROOT (or a folder on OEM, seen as /oem/... when booted), the link
/// /etc/extensions/NAME.raw, and NAME.transfer / NAME.conf / NAME.feature from beside the
/// image into /etc/sysupdate.NAME.d/. Each image is first checked against the OS image's
/// os-release and /usr; one with errors is refused and nothing is written. The input is only
/// read; OUTPUT is a new disk image. Runs as root (loop devices, mounts in a private mount
/// namespace; nothing stays mounted or attached, also when killed). Vendor images (the
/// Flatcar SDK's image_to_vm.sh) are out of scope: convert the output with the SDK.
#[derive(Debug, Args)]
pub struct InstallImageArgs {
    /// The OS disk image (GPT with Flatcar's USR-A, ROOT and OEM partitions).
    pub disk: PathBuf,
    /// Extensions: NAME:FILE, or FILE (named by its extension-release file).
    #[arg(required = true, value_name = "EXT")]
    pub extensions: Vec<String>,
    /// The new disk image.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Replace an existing output (atomically).
    #[arg(short, long)]
    pub force: bool,
    /// Where extensions go: root:/DIR or oem:/DIR (default root:/opt/extensions/);
    /// NAME=oem:/DIR for one extension. Repeatable.
    #[arg(long, value_name = "[NAME=]PART:/DIR")]
    pub to: Vec<String>,
    /// The OS image's architecture (systemd's name; default: from the programs in its /usr).
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InstallImageArgs) -> Result<Exit> {
    let mut default_target = Target::default();
    let mut per_name: Vec<(String, Target)> = Vec::new();
    for t in &args.to {
        match t.split_once('=') {
            Some((name, spec)) => per_name.push((name.to_string(), Target::parse(spec)?)),
            None => default_target = Target::parse(t)?,
        }
    }
    let mut extensions: Vec<ExtensionSpec> = args
        .extensions
        .iter()
        .map(|e| ExtensionSpec::parse(e))
        .collect();
    for (name, target) in per_name {
        // Matched against NAME: or, for a plain FILE, its file name without .raw.
        let hit = extensions.iter_mut().find(|e| match &e.name {
            Some(n) => *n == name,
            None => e
                .file
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.strip_suffix(".raw").unwrap_or(f) == name),
        });
        match hit {
            Some(e) => e.target = Some(target),
            None => bail!("--to {name}=...: no extension named {name:?} is given (use NAME:FILE)"),
        }
    }
    let opts = InstallOptions {
        disk: args.disk.clone(),
        output: args.output.clone(),
        force: args.force,
        extensions,
        default_target,
        arch: args.arch.clone(),
    };
    let report = osimage::install(&opts)
        .with_context(|| format!("installing extensions into {}", args.disk.display()))?;
    if args.json {
        super::print_json(&report)?;
    }
    if let Some(c) = report.decompressed {
        eprintln!("read {} through {c}", args.disk.display());
    }
    for i in &report.installed {
        eprintln!(
            "installed   {} as {} -> {}{}",
            i.name,
            i.link.display(),
            i.path.display(),
            if i.sysupdate.is_empty() {
                String::new()
            } else {
                format!(
                    " (+ {})",
                    i.sysupdate
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        for w in &i.warnings {
            eprintln!("  warning: {w}");
        }
    }
    eprintln!(
        "wrote {} ({} {})",
        report.output.display(),
        report.os,
        report.architecture
    );
    Ok(Exit::OK)
}
