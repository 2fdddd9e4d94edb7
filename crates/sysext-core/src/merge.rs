//! Merging extension images over `/usr` and `/opt` the way systemd-sysext 252 does, either
//! persistently onto a (scratch) root (`merge`, `unmerge`, `status`) or in a private mount
//! namespace around one command (`run`), which leaves the host's mounts untouched.
//!
//! The rules mirrored from systemd 252 (systemd-sysext and its image discovery):
//! - Discovery: `/etc/extensions`, `/run/extensions`, `/var/lib/extensions`,
//!   `/usr/local/lib/extensions`, `/usr/lib/extensions` inside the root, in that order; the first
//!   image found under a name wins (an empty directory masks a lower image). Directories and
//!   regular `*.raw` files count; with a root other than `/`, symlinks are ignored, as systemd's
//!   `--root` does (`fstatat(AT_SYMLINK_NOFOLLOW)`).
//! - Metadata: `usr/lib/extension-release.d/extension-release.NAME`, or the single other
//!   release file whose `user.extension-release.strict` xattr is false. A `.raw` without one
//!   aborts the merge; a directory without one is skipped. `usr/lib/os-release` in an image aborts.
//! - Compatibility: [`release::check_compatibility`] against the root's os-release
//!   (`etc/os-release`, else `usr/lib/os-release`); `force` skips it.
//! - Layers: names in [`strverscmp_improved`] order, the last sorting one on top:
//!   `lowerdir=META:LAST:...:FIRST:HOST`, read-only overlayfs, with
//!   `.systemd-sysext/extensions` (merged names) and `.systemd-sysext/dev` in META. A hierarchy
//!   no image provides is not mounted; an empty host hierarchy is left out of the stack.
//!
//! Confexts (systemd-confext, 254+, as 257 does it): images whose release file is
//! `etc/extension-release.d/extension-release.NAME` are merged over `/etc` in the same run,
//! judged by `CONFEXT_LEVEL`/`CONFEXT_SCOPE`, discovered in `/run/confexts`,
//! `/var/lib/confexts`, `/usr/local/lib/confexts`, `/usr/lib/confexts`, with
//! `.systemd-confext/confexts` and `.systemd-confext/dev` in META, the overlay mounted `nosuid,nodev,noexec`. An image named on the
//! command line is a confext when its file name ends in `.confext.raw` or when it holds only a
//! confext release file ([`ImageClass::detect`]'s rule); `NAME.sysext.raw` and
//! `NAME.confext.raw` name the image `NAME` (systemd v255+).
//!
//! Mutability (systemd v256's `--mutable=`, as 257 lays it out, see [`Mutable`]): a writable
//! merge gets `upperdir=ROOT/var/lib/extensions.mutable/H` and
//! `workdir=ROOT/var/lib/extensions.mutable/.systemd-H-workdir` (ephemeral: both on the
//! workspace tmpfs), mounted `nodev,noatime` instead of read-only; an import puts
//! `extensions.mutable/H` right below META.
//!
//! Beyond systemd: a [collision report](Collision) and [warnings](MergeWarning).
//!
//! How: a dedicated thread leaves the mount namespace (`unshare(CLONE_NEWNS)` affects only that
//! thread), makes `/` recursively private, mounts a tmpfs workspace, the images (directories
//! bound read-only; `.raw` through autoclear loop devices, squashfs, erofs or ext4) and the
//! overlays. `run` moves the overlays over the hierarchies there and spawns the command from that
//! thread; `merge` clones them into detached mounts that the calling thread attaches in its
//! own namespace. When the thread and the command are gone, the namespace and everything in it
//! vanish, loop devices included.

mod collide;
mod discover;
mod mount;
mod prepare;
pub(crate) mod sys;
pub mod version;

pub use collide::{Collision, Kind, MergeWarning, Provider};
pub use discover::{candidate_from_path, candidates, discover};
pub use mount::{detect_format, overlay_options};
pub use version::strverscmp_improved;

use discover::*;
use mount::*;
use prepare::*;

use std::ffi::{CString, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags, CWD};
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};
use serde::Serialize;

use crate::release::{self, ImageClass, OsRelease, ReleaseError, Verdict};

/// The hierarchies systemd-sysext merges by default.
pub const DEFAULT_HIERARCHIES: [&str; 2] = ["/usr", "/opt"];

/// The hierarchies of both classes: `/usr`, `/opt` (sysexts) and `/etc` (confexts), what
/// `unmerge` and `status` look at.
pub const ALL_HIERARCHIES: [&str; 3] = ["/usr", "/opt", "/etc"];

/// Where systemd 252 looks for extension images, first wins.
pub const SEARCH_PATH: [&str; 5] = [
    "/etc/extensions",
    "/run/extensions",
    "/var/lib/extensions",
    "/usr/local/lib/extensions",
    "/usr/lib/extensions",
];

/// Errors of merging; each names the image or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is not an extension image: expected a directory or a regular file named NAME.raw"
    )]
    NotAnImage { path: PathBuf },
    #[error("image {path}")]
    InvalidName {
        path: PathBuf,
        #[source]
        source: ReleaseError,
    },
    #[error("image {path}: unsupported format ({found}); expected squashfs, erofs or ext4 (pack it with `sysext pack`)")]
    UnsupportedFormat { path: PathBuf, found: &'static str },
    #[error("failed to read metadata for image {name} ({path}): no {} in it; add one (see `sysext check`)", class.release_file(name).display())]
    NoMetadata {
        name: String,
        path: PathBuf,
        class: ImageClass,
    },
    #[error("extension image {name} contains /usr/lib/os-release, which is not allowed (it may carry /etc/os-release); remove it from the image")]
    ContainsOsRelease { name: String },
    #[error("no os-release in OS tree {root} (looked for etc/os-release and usr/lib/os-release)")]
    NoHostRelease { root: PathBuf },
    #[error("'ID' field not found or empty in 'os-release' data of OS tree {root}")]
    NoHostId { root: PathBuf },
    #[error(
        "cannot tell the host's architecture for the compatibility check; pass --force to skip it"
    )]
    UnknownArchitecture,
    #[error("hierarchy '{hierarchy}' is already merged; run `sysext unmerge` first")]
    AlreadyMerged { hierarchy: String },
    #[error("image {}", path.display())]
    Dissect {
        path: PathBuf,
        #[source]
        source: fsimage::dissect::DissectError,
    },
    #[error("image {}: the dm-verity check failed, refusing it (nothing was mounted from it)", path.display())]
    Verity {
        path: PathBuf,
        #[source]
        source: fsimage::verity::VerifyError,
    },
    #[error("image {}: {reason}", path.display())]
    Signature { path: PathBuf, reason: String },
    #[error("setting up a loop device for {path}")]
    Loop {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting {what} on {target}")]
    Mount {
        what: String,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unmounting {target}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("leaving the host's mount namespace (needs root or CAP_SYS_ADMIN)")]
    Unshare(#[source] io::Error),
    #[error("running {command}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot merge {hierarchy}: a folder image lies inside the hierarchy it is merged over (overlayfs refuses overlapping layers); store it outside {hierarchy} or pack it as a .raw")]
    Overlapping { hierarchy: String },
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error("no command to run")]
    NoCommand,
}

fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> MergeError {
    let path = path.into();
    move |source| MergeError::Io { what, path, source }
}

/// What an image is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Directory,
    Squashfs,
    Erofs,
    Ext4,
}

/// An image found on the command line or in an extension directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The file name without `.raw` (or `.sysext.raw`, `.confext.raw`), or the directory's (or
    /// symlink's) name.
    pub name: String,
    pub path: PathBuf,
    pub directory: bool,
    /// The class when known before the image is opened (found in a sysext or confext folder,
    /// or named `.sysext.raw` / `.confext.raw`); `None`: told by the release file inside.
    pub class: Option<ImageClass>,
}

/// A merged extension.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub name: String,
    /// `sysext` (merged over `/usr`, `/opt`) or `confext` (over `/etc`).
    pub class: ImageClass,
    pub path: PathBuf,
    pub format: ImageFormat,
}

/// An image that was not merged, with systemd-sysext's message for it.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub name: String,
    pub path: PathBuf,
    pub message: String,
}

/// What a merge did.
#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub root: PathBuf,
    /// Merged extensions in layer order: the first is the lowest, the last wins on collisions.
    pub extensions: Vec<Layer>,
    pub skipped: Vec<Skipped>,
    /// The hierarchies that got an overlay (paths inside the root, e.g. `/usr`).
    pub hierarchies: Vec<String>,
    pub collisions: Vec<Collision>,
    pub warnings: Vec<MergeWarning>,
}

impl MergeReport {
    /// systemd-sysext's summary when nothing was merged, else `None`.
    pub fn nothing_message(&self) -> Option<String> {
        if !self.extensions.is_empty() {
            return None;
        }
        Some(if self.skipped.is_empty() {
            "No extensions found.".to_string()
        } else {
            format!(
                "No suitable extensions found ({} ignored due to incompatible version).",
                self.skipped.len()
            )
        })
    }

    /// systemd-sysext's "Using extensions 'a', 'b'." line (and systemd-confext's after it,
    /// on a line of its own, when confexts were merged too).
    pub fn using_message(&self) -> Option<String> {
        let lines: Vec<String> = [ImageClass::Sysext, ImageClass::Confext]
            .into_iter()
            .filter_map(|class| {
                let names: Vec<&str> = self
                    .extensions
                    .iter()
                    .filter(|l| l.class == class)
                    .map(|l| l.name.as_str())
                    .collect();
                (!names.is_empty()).then(|| format!("Using extensions '{}'.", names.join("', '")))
            })
            .collect();
        (!lines.is_empty()).then(|| lines.join("\n"))
    }
}

/// What becomes of writes to a merged hierarchy (systemd v256's `--mutable=`), with
/// `MUTABLE` = `ROOT/var/lib/extensions.mutable/HIERARCHY` (e.g. `.../extensions.mutable/usr`):
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mutable {
    /// Read-only (the default).
    #[default]
    No,
    /// Writable when `MUTABLE` exists (writes go there), else read-only.
    Auto,
    /// Writable; writes go to `MUTABLE`, created when missing.
    Yes,
    /// Read-only, with `MUTABLE` (when it exists) merged above the images.
    Import,
    /// Writable; writes go to a private tmpfs and are gone with the merge (`run`: when the
    /// command ends; `merge`: at `unmerge`).
    Ephemeral,
    /// [`Mutable::Ephemeral`], with `MUTABLE` (when it exists) merged above the images.
    EphemeralImport,
}

impl Mutable {
    /// The words of `--mutable=`.
    pub const NAMES: [&'static str; 6] = [
        "no",
        "auto",
        "yes",
        "import",
        "ephemeral",
        "ephemeral-import",
    ];

    /// Whether `MUTABLE` is merged read-only above the images.
    pub fn imports(self) -> bool {
        matches!(self, Mutable::Import | Mutable::EphemeralImport)
    }
}

impl std::str::FromStr for Mutable {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "no" | "false" => Mutable::No,
            "auto" => Mutable::Auto,
            "yes" | "true" => Mutable::Yes,
            "import" => Mutable::Import,
            "ephemeral" => Mutable::Ephemeral,
            "ephemeral-import" => Mutable::EphemeralImport,
            other => {
                return Err(format!(
                    "unknown mutability {other:?}; use one of {}",
                    Mutable::NAMES.join(", ")
                ))
            }
        })
    }
}

/// The folder writable merges of the root's hierarchies keep their changes in (systemd v256).
pub const MUTABLE_DIR: &str = "/var/lib/extensions.mutable";

/// Options of [`merge`] and [`run`]. Images are taken in this order: `images` as given, then
/// (with `discover`) the root's extension directories; the first image of a name wins.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The OS tree whose hierarchies are merged and whose os-release is the host's. Default `/`.
    pub root: PathBuf,
    /// Images given explicitly (directories or `.raw` files).
    pub images: Vec<PathBuf>,
    /// Also take the images found in the root's extension directories.
    pub discover: bool,
    /// Skip the compatibility check (systemd's `--force`).
    pub force: bool,
    /// Hierarchies sysexts are merged over; default `/usr` and `/opt`.
    pub hierarchies: Vec<String>,
    /// Hierarchies confexts are merged over; default `/etc`.
    pub confext_hierarchies: Vec<String>,
    /// Whether the merged hierarchies are writable, and where writes go ([`Mutable`]).
    pub mutable: Mutable,
    /// When not empty, every `.raw` image must carry a root hash signature by one of these
    /// certificates (path, certificate); an unsigned image or another signer is refused.
    pub certs: Vec<(PathBuf, fsimage::signature::X509)>,
}

impl Default for MergeOptions {
    fn default() -> Self {
        MergeOptions {
            root: PathBuf::from("/"),
            images: Vec::new(),
            discover: false,
            force: false,
            hierarchies: DEFAULT_HIERARCHIES.iter().map(|s| s.to_string()).collect(),
            confext_hierarchies: ImageClass::Confext
                .hierarchies()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            mutable: Mutable::No,
            certs: Vec::new(),
        }
    }
}

/// The merge state of one hierarchy, as `systemd-sysext status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HierarchyStatus {
    pub hierarchy: String,
    /// `None`: not merged.
    pub extensions: Option<Vec<String>>,
    /// When it was merged (seconds since the epoch), if merged.
    pub since: Option<i64>,
}

/// What [`run`] did: the merge and the command's exit status (128+N for signal N).
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub report: MergeReport,
    pub status: i32,
}

static WORKSPACE_SEQ: AtomicU32 = AtomicU32::new(0);

/// A private workspace directory on the host; removed (it is empty there) on drop, and on
/// SIGINT/SIGTERM by [`safefs::cleanup`] (whose thread stays in the host's mount namespace,
/// where the folder is empty; it never removes through a mount).
pub(crate) struct Workspace(
    pub(crate) PathBuf,
    #[allow(dead_code)] safefs::cleanup::Registration,
);

/// The start of a workspace's name: `.sysext-merge-PID-N`.
const WORKSPACE_PREFIX: &str = ".sysext-merge-";

impl Workspace {
    pub(crate) fn new() -> Result<Workspace, MergeError> {
        let base = std::env::temp_dir();
        // Workspaces of runs killed before their drop (SIGKILL).
        safefs::cleanup::remove_stale(&base, WORKSPACE_PREFIX);
        // A process killed before its drop leaves its (empty) folder behind, and pids are
        // reused: skip names that exist instead of failing on them.
        loop {
            let p = base.join(format!(
                "{WORKSPACE_PREFIX}{}-{}",
                std::process::id(),
                WORKSPACE_SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            // Registered before it exists (a signal in between cannot leave it behind), and
            // checked once it does (safefs::cleanup::created).
            let r = safefs::cleanup::register(&p);
            match fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => {
                    safefs::cleanup::created(&p);
                    return Ok(Workspace(p, r));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("creating workspace", &p)(e)),
            }
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// Run `f` on a new thread in a private copy of the mount namespace, with `/` recursively
/// private and a tmpfs on `ws`. Everything mounted there vanishes when `f` (and any process it
/// started) is done.
pub(crate) fn in_private_namespace<T: Send, E: From<MergeError> + Send>(
    ws: &Path,
    f: impl FnOnce() -> Result<T, E> + Send,
) -> Result<T, E> {
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            sys::unshare_mount_namespace().map_err(MergeError::Unshare)?;
            rustix::mount::mount_change(
                "/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .map_err(|e| MergeError::Mount {
                what: "private propagation".into(),
                target: "/".into(),
                source: e.into(),
            })?;
            rustix::mount::mount("sysext", ws, "tmpfs", MountFlags::empty(), c"mode=0700")
                .map_err(|e| MergeError::Mount {
                    what: "tmpfs".into(),
                    target: ws.to_path_buf(),
                    source: e.into(),
                })?;
            f()
        });
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The `.systemd-sysext` (or `.systemd-confext`) folder in the merged hierarchy `p`, if any,
/// and the class that made it.
fn marker_dir(p: &Path) -> Option<(PathBuf, ImageClass)> {
    [ImageClass::Sysext, ImageClass::Confext]
        .into_iter()
        .map(|c| (p.join(c.marker_dir()), c))
        .find(|(m, _)| m.is_dir())
}

/// Whether `p` is an overlay systemd-sysext (or we) mounted: a mount point carrying
/// `.systemd-sysext/dev` with its own device number.
fn is_our_mount_point(p: &Path) -> Result<bool, MergeError> {
    let stx = match rustix::fs::statx(CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS) {
        Ok(s) => s,
        Err(e) if e == rustix::io::Errno::NOENT => return Ok(false),
        Err(e) => return Err(io_err("stat", p)(e.into())),
    };
    let mount_root = rustix::fs::StatxAttributes::MOUNT_ROOT;
    if stx.stx_attributes_mask.contains(mount_root) && !stx.stx_attributes.contains(mount_root) {
        return Ok(false);
    }
    let Some((marker, _)) = marker_dir(p) else {
        return Ok(false);
    };
    let f = marker.join("dev");
    let buf = match fs::read_to_string(&f) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("reading", &f)(e)),
    };
    let Some((maj, min)) = buf.trim().split_once(':') else {
        return Ok(false);
    };
    Ok(maj.parse::<u32>().ok() == Some(stx.stx_dev_major)
        && min.parse::<u32>().ok() == Some(stx.stx_dev_minor))
}

/// Merge the images over the root's hierarchies, persistently (until [`unmerge`]), as
/// `systemd-sysext --root=ROOT merge`. Fails if a hierarchy is already merged.
pub fn merge(opts: &MergeOptions) -> Result<MergeReport, MergeError> {
    for h in opts.hierarchies.iter().chain(&opts.confext_hierarchies) {
        if let Some(p) = chase(&opts.root, h)? {
            if is_our_mount_point(&p)? {
                return Err(MergeError::AlreadyMerged {
                    hierarchy: h.clone(),
                });
            }
        }
    }
    let cands = candidates(opts)?;
    let ws = Workspace::new()?;
    let (report, detached) = in_private_namespace::<_, MergeError>(&ws.0, || {
        let prepared = prepare(opts, &cands, &ws.0, true)?;
        let mut detached: Vec<(OwnedFd, PathBuf)> = Vec::new();
        for (_, overlay, target) in prepared.overlays {
            let fd = rustix::mount::open_tree(
                CWD,
                &overlay,
                rustix::mount::OpenTreeFlags::OPEN_TREE_CLONE
                    | rustix::mount::OpenTreeFlags::OPEN_TREE_CLOEXEC,
            )
            .map_err(|e| MergeError::Mount {
                what: "a detached copy of the overlay".into(),
                target: overlay.clone(),
                source: e.into(),
            })?;
            detached.push((fd, target));
        }
        Ok((prepared.report, detached))
    })?;
    // Back in the caller's namespace: attach the overlays.
    for (fd, target) in detached {
        mkdir_p(&target, 0o755)?;
        rustix::mount::move_mount(
            &fd,
            "",
            CWD,
            &target,
            rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| MergeError::Mount {
            what: "the merged overlay".into(),
            target: target.clone(),
            source: e.into(),
        })?;
    }
    Ok(report)
}

/// Unmount our overlays from the root's hierarchies (all stacked ones); returns the unmerged
/// paths. Mounts that are not ours are left alone.
pub fn unmerge(root: &Path, hierarchies: &[String]) -> Result<Vec<PathBuf>, MergeError> {
    let mut done = Vec::new();
    for h in hierarchies {
        let Some(p) = chase(root, h)? else { continue };
        while is_our_mount_point(&p)? {
            rustix::mount::unmount(&p, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW).map_err(
                |e| MergeError::Unmount {
                    target: p.clone(),
                    source: e.into(),
                },
            )?;
            done.push(p.clone());
        }
    }
    Ok(done)
}

/// The merge state of the root's hierarchies.
pub fn status(root: &Path, hierarchies: &[String]) -> Result<Vec<HierarchyStatus>, MergeError> {
    let mut out = Vec::new();
    for h in hierarchies {
        let Some(p) = chase(root, h)? else { continue };
        if !is_our_mount_point(&p)? {
            out.push(HierarchyStatus {
                hierarchy: h.clone(),
                extensions: None,
                since: None,
            });
            continue;
        }
        let f = match marker_dir(&p) {
            Some((m, class)) => m.join(class.marker_file()),
            None => p.join(".systemd-sysext/extensions"),
        };
        let text = fs::read_to_string(&f).map_err(io_err("reading", &f))?;
        let since = rustix::fs::stat(&p).ok().map(|st| st.st_mtime);
        out.push(HierarchyStatus {
            hierarchy: h.clone(),
            extensions: Some(
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            ),
            since,
        });
    }
    out.sort_by(|a, b| a.hierarchy.cmp(&b.hierarchy));
    Ok(out)
}

/// Merge the images in a private mount namespace and run `command` there (inside the root,
/// with `/proc`, `/dev` and `/sys` of the host, when the root is not `/`). The host's mounts are
/// never changed; the command's exit status is returned (128+N when killed by signal N).
pub fn run(opts: &MergeOptions, command: &[OsString]) -> Result<RunOutcome, MergeError> {
    run_with(opts, command, |_| {})
}

/// [`run`], calling `ready` with the merge report just before the command starts (to print
/// systemd's messages first).
pub fn run_with(
    opts: &MergeOptions,
    command: &[OsString],
    ready: impl FnOnce(&MergeReport) + Send,
) -> Result<RunOutcome, MergeError> {
    let (program, args) = command.split_first().ok_or(MergeError::NoCommand)?;
    let cands = candidates(opts)?;
    let ws = Workspace::new()?;
    let chroot = !is_host_root(&opts.root);
    in_private_namespace::<_, MergeError>(&ws.0, || {
        let prepared = prepare(opts, &cands, &ws.0, false)?;
        for (_, overlay, target) in &prepared.overlays {
            rustix::mount::mount_move(overlay, target).map_err(|e| MergeError::Mount {
                what: "the merged overlay".into(),
                target: target.clone(),
                source: e.into(),
            })?;
        }
        // The command sees the merged hierarchies, not our workspace.
        rustix::mount::unmount(&ws.0, UnmountFlags::DETACH).map_err(|e| MergeError::Unmount {
            target: ws.0.clone(),
            source: e.into(),
        })?;
        if chroot {
            for (what, fstype) in [("/proc", Some("proc")), ("/dev", None), ("/sys", None)] {
                let Some(t) = chase(&opts.root, what)? else {
                    continue;
                };
                if !t.is_dir() {
                    continue;
                }
                let r = match fstype {
                    Some(fs) => rustix::mount::mount(
                        fs,
                        &t,
                        fs,
                        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                        None,
                    ),
                    None => rustix::mount::mount_bind_recursive(what, &t),
                };
                r.map_err(|e| MergeError::Mount {
                    what: what.into(),
                    target: t.clone(),
                    source: e.into(),
                })?;
            }
            // Only this thread's root changes: unshare(CLONE_NEWNS) made its fs state private.
            rustix::process::chroot(&opts.root)
                .map_err(|e| io_err("chroot into", &opts.root)(e.into()))?;
            rustix::process::chdir("/").map_err(|e| io_err("chdir into", &opts.root)(e.into()))?;
        }
        ready(&prepared.report);
        let shown = Path::new(program).display().to_string();
        let mut cmd = Command::new(program);
        cmd.args(args);
        sys::prepare_command(&mut cmd);
        let _interrupts = sys::IgnoreInterrupts::new();
        let status = cmd.status().map_err(|source| MergeError::Spawn {
            command: shown,
            source,
        })?;
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(1);
        Ok(RunOutcome {
            report: prepared.report,
            status: code,
        })
    })
}

/// The program name of a command line, for messages.
pub fn display_command(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| String::from_utf8_lossy(a.as_bytes()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_option_string() {
        let l = [
            PathBuf::from("/run/meta/usr"),
            PathBuf::from("/run/ext/b,c/usr"),
            PathBuf::from("/a:b"),
        ];
        assert_eq!(
            overlay_options(&l),
            "lowerdir=/run/meta/usr:/run/ext/b\\,c/usr:/a\\:b"
        );
    }

    #[test]
    fn formats() {
        let mut erofs = vec![0u8; 2048];
        erofs[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        let mut ext4 = vec![0u8; 2048];
        ext4[1080..1082].copy_from_slice(&0xEF53u16.to_le_bytes());
        let mut gpt = vec![0u8; 1024];
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(detect_format(b"hsqs\x01\x02"), Ok(ImageFormat::Squashfs));
        assert_eq!(detect_format(&erofs), Ok(ImageFormat::Erofs));
        assert_eq!(detect_format(&ext4), Ok(ImageFormat::Ext4));
        assert_eq!(detect_format(&gpt), Err("a GPT disk image"));
        assert_eq!(detect_format(b""), Err("an empty file"));
        assert_eq!(detect_format(b"hsq"), Err("unknown content"));
        assert_eq!(detect_format(&[0u8; 1030]), Err("unknown content"));
    }

    #[test]
    fn image_names_from_paths() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("tool-1.2-x86-64.raw"), b"").unwrap();
        std::os::unix::fs::symlink("tool-1.2-x86-64.raw", t.path().join("tool.raw")).unwrap();
        fs::create_dir(t.path().join("folder")).unwrap();
        let c = candidate_from_path(&t.path().join("tool.raw")).unwrap();
        assert_eq!((c.name.as_str(), c.directory), ("tool", false));
        let c = candidate_from_path(&t.path().join("folder")).unwrap();
        assert_eq!((c.name.as_str(), c.directory), ("folder", true));
        let err = candidate_from_path(&t.path().join("missing.raw")).unwrap_err();
        assert!(err.to_string().contains("missing.raw"), "{err}");
        // The first image of a name wins, given ones before discovered ones.
        let mut o = MergeOptions {
            root: t.path().to_path_buf(),
            images: vec![
                t.path().join("tool.raw"),
                t.path().join("tool-1.2-x86-64.raw"),
            ],
            ..MergeOptions::default()
        };
        let names: Vec<String> = candidates(&o)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["tool", "tool-1.2-x86-64"]);
        o.images.push(t.path().join("tool.raw"));
        assert_eq!(candidates(&o).unwrap().len(), 2);
    }

    #[test]
    fn messages_are_systemds() {
        use crate::release::{check_compatibility, OsRelease};
        let host = OsRelease::parse("ID=debian\nVERSION_ID=12\n");
        for (ext, want) in [
            ("", "Extension 'e' carries no extension-release data, ignoring extension."),
            ("ID=_any\nSYSEXT_SCOPE=portable", "Extension 'e' is not suitable for scope system, ignoring extension."),
            ("ID=_any\nARCHITECTURE=arm64", "Extension 'e' is for architecture 'arm64', but deployed on top of 'x86-64'."),
            ("VERSION_ID=12", "Extension 'e' does not contain ID in extension-release but requested to match 'debian' or be '_any'"),
            ("ID=fedora", "Extension 'e' is for OS 'fedora', but deployed on top of 'debian'."),
            ("ID=debian", "Extension 'e' does not contain VERSION_ID in extension-release but requested to match '12'"),
            ("ID=debian\nVERSION_ID=11", "Extension 'e' is for OS '11', but deployed on top of '12'."),
        ] {
            let Verdict::Incompatible { reason } =
                check_compatibility(&OsRelease::parse(ext), &host, "x86-64")
            else {
                panic!("{ext:?} should be incompatible");
            };
            assert_eq!(skip_message("e", &reason), want, "{ext:?}");
        }
    }

    #[test]
    fn names() {
        for (n, ok) in [
            ("tools", true),
            ("a_b+c", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            (".#tmp", false),
            ("tab\t", false),
        ] {
            assert_eq!(image_name_is_valid(n), ok, "{n:?}");
        }
    }

    #[test]
    fn discovery_order_and_masking() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in [
            "etc/extensions/a",
            "var/lib/extensions/a",
            "var/lib/extensions/b",
            "usr/lib/extensions/c",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(
            r.join("run/extensions/x.raw")
                .parent()
                .map(|p| {
                    fs::create_dir_all(p).unwrap();
                    p.join("x.raw")
                })
                .unwrap(),
            b"",
        )
        .unwrap();
        fs::write(r.join("run/extensions/notes.txt"), b"").unwrap();
        std::os::unix::fs::symlink("/elsewhere/l.raw", r.join("var/lib/extensions/l.raw")).unwrap();
        let found = discover(r).unwrap();
        let got: Vec<(&str, &Path)> = found
            .iter()
            .map(|c| (c.name.as_str(), c.path.strip_prefix(r).unwrap()))
            .collect();
        assert_eq!(got[0], ("a", Path::new("etc/extensions/a")));
        assert_eq!(got[1], ("x", Path::new("run/extensions/x.raw")));
        assert!(got.contains(&("b", Path::new("var/lib/extensions/b"))));
        assert!(got.contains(&("c", Path::new("usr/lib/extensions/c"))));
        assert_eq!(got.len(), 4, "{got:?}");
    }
}
