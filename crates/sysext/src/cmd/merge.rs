//! `sysext merge`, `sysext unmerge`, `sysext status`: systemd-sysext's verbs on a (scratch) root.

use std::io::Write;
use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{Context, Result};
use sysext_core::merge::{self, MergeOptions, MergeReport, Mutable};

/// Where and what to merge.
#[derive(Debug, clap::Args)]
pub struct RootArgs {
    /// Operate on this OS tree instead of the running system.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// Merge extension images over ROOT's /usr and /opt, and confexts over /etc, until `sysext unmerge`.
///
/// As systemd-sysext and systemd-confext do (compatibility check, discovery order, name
/// masking, layer order; a confext is an image holding
/// etc/extension-release.d/extension-release.NAME, or one found in ROOT's confext folders),
/// plus a report of which file of which extension shadows which other file, and warnings for
/// directories that hide a host symlink or change a directory's mode or owner.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Merge incompatible images too (systemd-sysext --force).
    #[arg(long)]
    pub force: bool,
    /// Whether the merged hierarchies are writable (systemd v256's --mutable), with MUTABLE =
    /// ROOT/var/lib/extensions.mutable/HIERARCHY: no (read-only, the default); auto (writable
    /// when MUTABLE exists, writes go there); yes (writes go to MUTABLE, created if missing);
    /// import (read-only, MUTABLE merged above the images); ephemeral (writable, writes go to
    /// a private tmpfs and vanish with the merge); ephemeral-import (both).
    #[arg(long, value_name = "MODE", default_value = "no")]
    pub mutable: Mutable,
    /// Only merge the IMAGEs given, not those in ROOT's extension directories.
    #[arg(long)]
    pub no_discover: bool,
    /// Print the report (merged and skipped images, collisions, warnings) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Require every .raw image to carry a root hash signature by one of these PEM
    /// certificates (repeat for several); an unsigned image, or one signed with another key,
    /// is refused before anything is mounted.
    #[arg(long, value_name = "CERT.pem")]
    pub cert: Vec<PathBuf>,
    /// Images (directories or .raw files) taken before those found in ROOT; a name found
    /// twice is taken from the first. NAME.sysext.raw and NAME.confext.raw are the image NAME.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
}

/// Unmerge the extensions from ROOT's /usr and /opt and the confexts from /etc.
#[derive(Debug, clap::Args)]
pub struct UnmergeArgs {
    #[command(flatten)]
    pub root: RootArgs,
}

/// Show which extensions are merged into ROOT's /usr and /opt, and confexts into /etc.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn hierarchies() -> Vec<String> {
    merge::ALL_HIERARCHIES
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Print systemd-sysext's messages and our warnings to stderr.
pub fn print_messages(report: &MergeReport) {
    for s in &report.skipped {
        eprintln!("{}", s.message);
    }
    if let Some(m) = report.nothing_message() {
        eprintln!("{m}");
    }
    if let Some(m) = report.using_message() {
        eprintln!("{m}");
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
}

/// The collision report as text.
pub fn print_collisions(report: &MergeReport, out: &mut impl Write) -> std::io::Result<()> {
    for c in &report.collisions {
        writeln!(out, "{c}")?;
    }
    Ok(())
}

pub fn merge(args: MergeArgs) -> Result<Exit> {
    let mut opts = MergeOptions::default();
    opts.root = args.root.root.clone();
    opts.images = args.images;
    opts.discover = !args.no_discover;
    opts.force = args.force;
    opts.mutable = args.mutable;
    opts.certs = load_certs(&args.cert)?;
    let report = merge::merge(&opts)
        .with_context(|| format!("merging extensions into {}", args.root.root.display()))?;
    print_messages(&report);
    for h in &report.hierarchies {
        let shown = args.root.root.join(h.trim_start_matches('/'));
        eprintln!("Merged extensions into '{}'.", shown.display());
    }
    if args.json {
        super::print_json(&report)?;
    } else {
        super::write_stdout(|out| print_collisions(&report, out))?;
    }
    Ok(Exit::OK)
}

pub fn unmerge(args: UnmergeArgs) -> Result<Exit> {
    let done = merge::unmerge(&args.root.root, &hierarchies())
        .with_context(|| format!("unmerging extensions from {}", args.root.root.display()))?;
    for p in done {
        eprintln!("Unmerged '{}'.", p.display());
    }
    Ok(Exit::OK)
}

pub fn status(args: StatusArgs) -> Result<Exit> {
    let st = merge::status(&args.root.root, &hierarchies())
        .with_context(|| format!("reading the merge status of {}", args.root.root.display()))?;
    if args.json {
        super::print_json(&st)?;
        return Ok(Exit::OK);
    }
    super::write_stdout(|out| print_status(&st, out))?;
    Ok(Exit::OK)
}

fn print_status(st: &[merge::HierarchyStatus], out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{:<10} {:<30} SINCE", "HIERARCHY", "EXTENSIONS")?;
    for h in st {
        let (ext, since) = match (&h.extensions, h.since) {
            (Some(e), since) => (
                e.join(" "),
                since.map(|s| format!("@{s}")).unwrap_or_else(|| "-".into()),
            ),
            (None, _) => ("none".to_string(), "-".to_string()),
        };
        writeln!(out, "{:<10} {:<30} {since}", h.hierarchy, ext)?;
    }
    Ok(())
}

/// The certificates of `--cert`, loaded before any work.
pub(crate) fn load_certs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, fsimage::signature::X509)>> {
    paths
        .iter()
        .map(|p| Ok((p.clone(), fsimage::signature::load_cert_file(p)?)))
        .collect()
}
