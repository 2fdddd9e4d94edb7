//! `sysext run`: try images without touching the host.

use std::ffi::OsString;
use std::path::PathBuf;
use sysext_core::cli::Exit;

use anyhow::{bail, Context, Result};
use sysext_core::merge::{self, MergeOptions, Mutable};

/// Run COMMAND with IMAGEs merged over /usr and /opt (confexts over /etc), without touching the host.
///
/// The images are merged in a private mount namespace exactly as systemd-sysext would; exits
/// with COMMAND's status (128+N when killed by signal N). The host's mounts stay untouched,
/// also when COMMAND or sysext is killed; loop devices go away with the namespace.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Merge over this OS tree instead of /, add the images in its extension directories, and
    /// run COMMAND inside it (with the host's /proc, /dev and /sys).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Merge incompatible images too (systemd-sysext --force).
    #[arg(long)]
    pub force: bool,
    /// Whether the merged hierarchies are writable (systemd v256's --mutable), with MUTABLE =
    /// ROOT/var/lib/extensions.mutable/HIERARCHY: no (read-only, the default); auto (writable
    /// when MUTABLE exists, writes go there); yes (writes go to MUTABLE, created if missing);
    /// import (read-only, MUTABLE merged above the images); ephemeral (writable, writes go to
    /// a private tmpfs and vanish when COMMAND ends); ephemeral-import (both).
    #[arg(long, value_name = "MODE", default_value = "no")]
    pub mutable: Mutable,
    /// Print the collision report (which file of which image shadows which) to stderr.
    #[arg(long)]
    pub report: bool,
    /// Images (directories or .raw files); a confext (its release file in
    /// etc/extension-release.d/, or a name ending in .confext.raw) is merged over /etc.
    #[arg(value_name = "IMAGE")]
    pub images: Vec<PathBuf>,
    /// Require every .raw image to carry a root hash signature by one of these PEM
    /// certificates (repeat for several); an unsigned image, or one signed with another key,
    /// is refused before anything is mounted.
    #[arg(long, value_name = "CERT.pem")]
    pub cert: Vec<PathBuf>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> Result<Exit> {
    if args.images.is_empty() && args.root.is_none() {
        bail!("nothing to merge: give at least one IMAGE, or --root DIR with images in its extension directories");
    }
    let mut opts = MergeOptions::default();
    if let Some(root) = &args.root {
        opts.root = root.clone();
        opts.discover = true;
    }
    opts.images = args.images;
    opts.force = args.force;
    opts.mutable = args.mutable;
    opts.certs = super::merge::load_certs(&args.cert)?;
    let report = args.report;
    let outcome = merge::run_with(&opts, &args.command, |r| {
        super::merge::print_messages(r);
        if report {
            for c in &r.collisions {
                eprintln!("{c}");
            }
        }
    })
    .with_context(|| format!("running {}", merge::display_command(&args.command)))?;
    Ok(Exit::code(outcome.status))
}
