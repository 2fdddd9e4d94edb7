//! `sysext install-image`: extensions baked into an OS disk image, as Flatcar's
//! `bake_flatcar_image.sh` does, without sudo prompts or shell.
//!
//! The disk image (raw, or bzip2/xz/zstd/gzip compressed) is copied (decompressed, sparse) to
//! a temporary output beside OUTPUT; the input is only read. Its GUID partition table is read
//! ([`fsimage::gpt`]) and the partitions are found by label and type: `USR-A` (the OS's
//! `/usr`, read-only, for its os-release and libraries), `ROOT` and, when an extension goes
//! there, `OEM`. In a private mount namespace on its own thread, each is attached to a loop
//! device (autoclear, limited to the partition's bytes) and mounted (`nodev,nosuid,noexec`);
//! when the thread ends, or the process is killed, the kernel drops the mounts and the loop
//! devices with them. Each extension is first checked ([`crate::check`]) against the OS
//! image's os-release and `/usr`, under the name its link gives it; one with errors is
//! refused and nothing is written. Then, for each: the image goes into a folder of its own in
//! the install folder (`root:/opt/extensions/NAME/` by default, where sysupdate keeps NAME's
//! versions, or `oem:/DIR/NAME/`, which the booted host sees under `/oem`),
//! `/etc/extensions/NAME.raw` on ROOT links to it (a confext's `/var/lib/confexts/NAME.raw`),
//! and its transfer file (`NAME.transfer` or `NAME.conf`, and `NAME.feature`, found beside
//! the image) goes to `/etc/sysupdate.NAME.d/`; a transfer file whose `[Target] Path=` or
//! `CurrentSymlink=` names another place is refused before anything is copied. Every write
//! into the mounted file systems goes through the safe writer ([`safefs::tree`]): a link
//! planted in the OS image is never followed out of it.
//! Only ROOT and OEM are written; every other byte of the disk stays as it was. The output is
//! renamed into place at the end ([`safefs::atomic`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};
use safefs::atomic::{AtomicError, AtomicOutput};
use safefs::tree::{Tree, TreeError, TreeOptions};
use serde::Serialize;

use crate::check::{check_image, CheckError, Host, Severity};
use crate::decompress::{self, Compression};
use crate::inspect::{Image, InspectError};
use crate::merge::sys::LoopDevice;
use crate::merge::{in_private_namespace, MergeError, Workspace};
use crate::release::{arch_from_elf_header, validate_name, ReleaseError};

/// Flatcar's partition type GUIDs (its `disk_layout.json` names in parentheses).
pub mod types {
    /// `flatcar-rootfs`: USR-A and USR-B.
    pub const USR: &str = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6";
    /// `flatcar-resize`: ROOT, grown to the disk at first boot.
    pub const ROOT: &str = "3884dd41-8582-4404-b9a8-e9b84f2df50e";
    /// `data` (Linux file system data): OEM, and ROOT in container layouts.
    pub const LINUX_DATA: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
}

/// Why the extensions cannot go into the disk image.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {what}", path.display())]
    Disk { path: PathBuf, what: String },
    #[error(transparent)]
    Gpt(#[from] fsimage::gpt::GptError),
    #[error("{}: no partition labelled {label} (of type {ty}); the table holds: {table}. Is it a Flatcar OS image (flatcar_production_image.bin)?", disk.display())]
    MissingPartition {
        disk: PathBuf,
        label: &'static str,
        ty: &'static str,
        table: String,
    },
    #[error("{}: partition {number} is labelled {label} but its type is {found}, not {ty}", disk.display())]
    WrongType {
        disk: PathBuf,
        label: &'static str,
        number: u32,
        found: String,
        ty: String,
    },
    #[error("{}: cannot tell the name of the extension ({why}); give it as NAME:FILE", file.display())]
    NoName { file: PathBuf, why: String },
    #[error("extension name {name:?}: {source}")]
    Name {
        name: String,
        #[source]
        source: ReleaseError,
    },
    #[error("the extension {0:?} is given twice")]
    Duplicate(String),
    #[error("install target {0:?}: give root:/DIR or oem:/DIR, an absolute folder without . or .. (e.g. root:/opt/extensions/)")]
    Target(String),
    #[error("{} cannot go into {}: {reasons}; nothing was written", file.display(), disk.display())]
    Incompatible {
        file: PathBuf,
        disk: PathBuf,
        reasons: String,
    },
    #[error("{}: {what}, so systemd-sysupdate on the host would not see the installed version; install it where the transfer file says (--to [NAME=]PART:/DIR puts the image in DIR/NAME/) or give a transfer file for that place", file.display())]
    TransferMismatch { file: PathBuf, what: String },
    #[error("{} already holds {path} (from another extension or an earlier install); use a fresh OS image", disk.display())]
    Exists { disk: PathBuf, path: String },
    #[error("writing {what} into the {partition} partition of {}: {source}", disk.display())]
    Write {
        disk: PathBuf,
        partition: &'static str,
        what: String,
        #[source]
        source: Box<TreeError>,
    },
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Atomic(#[from] AtomicError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The partition an extension goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionKind {
    Root,
    Oem,
}

impl PartitionKind {
    fn label(self) -> &'static str {
        match self {
            PartitionKind::Root => "ROOT",
            PartitionKind::Oem => "OEM",
        }
    }
}

/// Where in the OS image extensions are installed: `root:/opt/extensions/` or `oem:/DIR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub partition: PartitionKind,
    /// The folder inside that partition, relative (`opt/extensions`).
    pub dir: PathBuf,
}

impl Target {
    /// Parses `root:/DIR` or `oem:/DIR`.
    pub fn parse(s: &str) -> Result<Target, InstallError> {
        let bad = || InstallError::Target(s.to_string());
        let (part, dir) = s.split_once(':').ok_or_else(bad)?;
        let partition = match part {
            "root" => PartitionKind::Root,
            "oem" => PartitionKind::Oem,
            _ => return Err(bad()),
        };
        if !dir.starts_with('/') || gentext::has_control(dir) {
            return Err(bad());
        }
        let mut rel = PathBuf::new();
        for c in Path::new(dir).components() {
            match c {
                Component::RootDir => {}
                Component::Normal(n) => rel.push(n),
                _ => return Err(bad()),
            }
        }
        if dir.split('/').any(|c| c == ".") {
            return Err(bad());
        }
        Ok(Target {
            partition,
            dir: rel,
        })
    }

    /// The path the booted host sees the folder at (`/opt/extensions`, `/oem/DIR`).
    fn host_dir(&self) -> PathBuf {
        match self.partition {
            PartitionKind::Root => Path::new("/").join(&self.dir),
            PartitionKind::Oem => Path::new("/oem").join(&self.dir),
        }
    }
}

impl Default for Target {
    fn default() -> Self {
        Target {
            partition: PartitionKind::Root,
            dir: PathBuf::from("opt/extensions"),
        }
    }
}

/// One extension to install: `NAME:FILE` or a plain `FILE` (named by its release file).
#[derive(Debug, Clone)]
pub struct ExtensionSpec {
    pub name: Option<String>,
    pub file: PathBuf,
    /// Overrides the default target.
    pub target: Option<Target>,
}

impl ExtensionSpec {
    /// `NAME:FILE` or `FILE` (a file name holding `:` needs the `NAME:` part).
    pub fn parse(s: &str) -> ExtensionSpec {
        match s.split_once(':') {
            Some((n, f)) if !n.is_empty() && !n.contains('/') => ExtensionSpec {
                name: Some(n.to_string()),
                file: PathBuf::from(f),
                target: None,
            },
            _ => ExtensionSpec {
                name: None,
                file: PathBuf::from(s),
                target: None,
            },
        }
    }
}

/// Options of [`install`].
#[derive(Debug, Clone, Default)]
pub struct InstallOptions {
    pub disk: PathBuf,
    pub output: PathBuf,
    pub force: bool,
    pub extensions: Vec<ExtensionSpec>,
    pub default_target: Target,
    /// The OS image's architecture (systemd's name); default: from its `/usr`'s programs.
    pub arch: Option<String>,
}

/// One installed extension.
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub name: String,
    pub source: PathBuf,
    pub partition: PartitionKind,
    /// Where the booted host sees the image.
    pub path: PathBuf,
    /// `/etc/extensions/NAME.raw` (a confext's: `/var/lib/confexts/NAME.raw`).
    pub link: PathBuf,
    /// Transfer and feature files placed in `/etc/sysupdate.NAME.d/`.
    pub sysupdate: Vec<PathBuf>,
    /// Warnings of the check (errors refuse the image).
    pub warnings: Vec<String>,
}

/// What [`install`] did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    pub output: PathBuf,
    /// The compression the input was read through, if any.
    pub decompressed: Option<&'static str>,
    /// `ID` and `VERSION_ID` of the OS image.
    pub os: String,
    pub architecture: String,
    pub installed: Vec<Installed>,
}

/// A resolved extension: its name, image and sysupdate files.
struct Prepared {
    name: String,
    file: PathBuf,
    image: Image,
    target: Target,
    sysupdate: Vec<PathBuf>,
}

/// Where an extension goes: the image in a folder of its own under the target folder
/// (`/opt/extensions/NAME/FILE`, where sysupdate keeps NAME's versions) and the link of its
/// class ([`crate::release::ImageClass::current_link`]: `/etc/extensions/NAME.raw`, a confext's
/// `/var/lib/confexts/NAME.raw`) on ROOT. One rule for the writes and for the check of the
/// transfer files that come along.
struct Placement {
    /// The image's folder, relative to its partition's root.
    dir: PathBuf,
    /// The image file, relative to its partition's root.
    file: PathBuf,
    /// The image's folder and file as the booted host sees them.
    host_dir: PathBuf,
    host_file: PathBuf,
    /// The link, as the booted host sees it (on ROOT).
    link: PathBuf,
}

impl Prepared {
    fn placement(&self) -> Placement {
        let file_name = self.file.file_name().map(PathBuf::from).unwrap_or_default();
        let class = self.image.class();
        let suffix = class.link_suffix(&file_name.to_string_lossy());
        let dir = self.target.dir.join(&self.name);
        let host_dir = self.target.host_dir().join(&self.name);
        Placement {
            file: dir.join(&file_name),
            host_file: host_dir.join(&file_name),
            dir,
            host_dir,
            link: PathBuf::from(class.current_link(&self.name, suffix)),
        }
    }

    /// Each transfer file's `[Target] Path=` and `CurrentSymlink=` must name where the image
    /// and its link go: otherwise sysupdate on the host would not count the installed version,
    /// and its first update would install beside it.
    fn check_transfers(&self) -> Result<(), InstallError> {
        let at = self.placement();
        for f in &self.sysupdate {
            if f.extension().is_some_and(|e| e == "feature") {
                continue;
            }
            let text = read_small(f)?;
            for (key, what, expected) in [
                ("Path", "image folder", &at.host_dir),
                ("CurrentSymlink", "link", &at.link),
            ] {
                // The last one counts, as in systemd; `%%` is a `%`.
                let Some(found) = crate::units::values(&text, "Target", key).pop() else {
                    continue;
                };
                if Path::new(&found.replace("%%", "%")) != expected {
                    return Err(InstallError::TransferMismatch {
                        file: f.clone(),
                        what: format!(
                            "its [Target] {key}={} is not where this install puts {}'s {what} \
                             ({})",
                            gentext::escape(&found),
                            self.name,
                            expected.display()
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// The text of a small file beside an image (a transfer file): a regular file of at most
/// 64 KiB ([`safefs::tree::read_input`]).
fn read_small(path: &Path) -> Result<String, InstallError> {
    let b = safefs::tree::read_input(path, 64 << 10).map_err(io_err(path))?;
    String::from_utf8(b).map_err(|_| InstallError::Io {
        path: path.to_path_buf(),
        source: io::Error::other("not UTF-8 text"),
    })
}

fn prepare_extensions(opts: &InstallOptions) -> Result<Vec<Prepared>, InstallError> {
    let mut out: Vec<Prepared> = Vec::new();
    for spec in &opts.extensions {
        let image = Image::open(&spec.file)?;
        let name = match &spec.name {
            Some(n) => n.clone(),
            None => release_name(&image).map_err(|why| InstallError::NoName {
                file: spec.file.clone(),
                why,
            })?,
        };
        validate_name(&name).map_err(|source| InstallError::Name {
            name: name.clone(),
            source,
        })?;
        if out.iter().any(|p| p.name == name) {
            return Err(InstallError::Duplicate(name));
        }
        let dir = spec
            .file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let sysupdate = ["transfer", "conf", "feature"]
            .iter()
            .map(|ext| dir.join(format!("{name}.{ext}")))
            .filter(|p| p.is_file())
            .collect();
        let p = Prepared {
            image: image.with_name(&name),
            name,
            file: spec.file.clone(),
            target: spec
                .target
                .clone()
                .unwrap_or_else(|| opts.default_target.clone()),
            sysupdate,
        };
        p.check_transfers()?;
        out.push(p);
    }
    Ok(out)
}

/// The NAME of the image's only `extension-release.NAME` (in `usr/lib/extension-release.d/`,
/// a confext's in `etc/extension-release.d/`).
fn release_name(image: &Image) -> Result<String, String> {
    let prefix = format!("{}/extension-release.", image.class().release_dir());
    let names: Vec<&str> = image
        .entries()
        .iter()
        .filter_map(|e| e.path.strip_prefix(prefix.as_str()))
        .filter(|n| !n.contains('/'))
        .collect();
    match names.as_slice() {
        [one] => Ok((*one).to_string()),
        [] => Err("it has no extension-release file".into()),
        _ => Err(format!("it has {} extension-release files", names.len())),
    }
}

/// The most bytes a compressed disk image may decompress to (Flatcar's images are about
/// 8.5 GiB): a bound on the time and disk a decompression bomb could take.
const MAX_DECOMPRESSED: u64 = 64 << 30;

/// Copies or decompresses the disk image into `out`; a compressed one may give at most
/// `limit` bytes.
fn copy_disk(disk: &Path, out: &Path, limit: u64) -> Result<Option<&'static str>, InstallError> {
    let f = safefs::tree::open_input(disk).map_err(io_err(disk))?;
    let dst = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(out)
        .map_err(io_err(out))?;
    let r = io::BufReader::with_capacity(1 << 20, f);
    let mut buf = vec![0u8; 1 << 20];
    let mut kind = None;
    // A disk image is mostly empty space: all-zero blocks stay holes.
    let res = decompress::decoder(r, Compression::ALL).and_then(|(k, reader)| {
        kind = k;
        let limit = if k.is_some() { limit } else { u64::MAX };
        let mut reader = reader.take(limit.saturating_add(1));
        let n = safefs::tree::write_sparse(&mut reader, &dst, &mut buf).map_err(|e| e.into_io())?;
        if n > limit {
            return Err(io::Error::other(format!(
                "it gives more than {limit} bytes, more than an OS disk image this command takes"
            )));
        }
        Ok(n)
    });
    res.map_err(|e| InstallError::Disk {
        path: disk.to_path_buf(),
        what: match kind {
            Some(k) => format!("cannot decompress it as {}: {e}", k.name()),
            None => format!("cannot copy it: {e}"),
        },
    })?;
    Ok(kind.map(Compression::name))
}

/// The partition labelled `label`, of one of the types `tys`.
fn find<'a>(
    table: &'a fsimage::gpt::Table,
    disk: &Path,
    label: &'static str,
    tys: &[&'static str],
) -> Result<&'a fsimage::gpt::Partition, InstallError> {
    let p = table
        .by_label(label)
        .ok_or_else(|| InstallError::MissingPartition {
            disk: disk.to_path_buf(),
            label,
            ty: tys[0],
            table: table.describe(),
        })?;
    if !tys.contains(&p.type_guid.as_str()) {
        return Err(InstallError::WrongType {
            disk: disk.to_path_buf(),
            label,
            number: p.number,
            found: p.type_guid.clone(),
            ty: tys.join(" or "),
        });
    }
    Ok(p)
}

/// The kernel file system type of the partition, by magic.
fn fs_type(f: &File, p: &fsimage::gpt::Partition) -> Option<&'static str> {
    let mut b = vec![0u8; 0x10048];
    let n = (p.size as usize).min(b.len());
    f.read_exact_at(&mut b[..n], p.offset).ok()?;
    let b = &b[..n];
    if n >= 4 && &b[..4] == b"hsqs" {
        Some("squashfs")
    } else if n >= 0x438 && b[0x438..0x43a] == [0x53, 0xef] {
        Some("ext4")
    } else if n >= 0x10048 && &b[0x10040..0x10048] == b"_BHRfS_M" {
        Some("btrfs")
    } else if n >= 1028 && b[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
        Some("erofs")
    } else {
        None
    }
}

/// Mounts partition `p` of `file` at `target`; the mount holds the loop device.
fn mount_partition(
    file: &File,
    disk: &Path,
    p: &fsimage::gpt::Partition,
    target: &Path,
    writable: bool,
) -> Result<(), InstallError> {
    let fstype = fs_type(file, p).ok_or_else(|| InstallError::Disk {
        path: disk.to_path_buf(),
        what: format!(
            "partition {} ({}) holds no file system this tool mounts (ext4, btrfs, squashfs, \
             EROFS)",
            p.number,
            gentext::escape(&p.label)
        ),
    })?;
    let name = format!("{}#{}", disk.display(), p.number);
    let dev =
        LoopDevice::attach_range(file, &name, p.offset, p.size, writable).map_err(|source| {
            MergeError::Loop {
                path: disk.to_path_buf(),
                source,
            }
        })?;
    let mut flags = MountFlags::NODEV | MountFlags::NOSUID | MountFlags::NOEXEC;
    if !writable {
        flags |= MountFlags::RDONLY;
    }
    rustix::mount::mount(&dev.path, target, fstype, flags, None).map_err(|e| {
        MergeError::Mount {
            what: format!("partition {} of {} ({fstype})", p.number, disk.display()),
            target: target.to_path_buf(),
            source: e.into(),
        }
    })?;
    Ok(())
}

/// Unmounts `target`, surfacing errors (a write that fails to reach the image shows here).
fn unmount(target: &Path) -> Result<(), InstallError> {
    rustix::mount::unmount(target, UnmountFlags::empty()).map_err(|e| {
        InstallError::from(MergeError::Mount {
            what: "unmount".into(),
            target: target.to_path_buf(),
            source: e.into(),
        })
    })
}

/// The architecture of the programs in the OS's `/usr` (mounted at `usr`).
fn usr_arch(usr: &Path) -> Option<&'static str> {
    for p in [
        "/bin/env",
        "/bin/bash",
        "/bin/sh",
        "/bin/ls",
        "/lib/systemd/systemd",
    ] {
        let Ok(inside) = safefs::rootfs::resolve(usr, Path::new(p), true) else {
            continue;
        };
        let path = safefs::rootfs::host_path(usr, &inside);
        let mut head = [0u8; 64];
        // Without blocking, and only a regular file: a FIFO in the OS image does not hang us.
        let opened = safefs::tree::open_regular(&path).ok().and_then(Result::ok);
        if opened.is_some_and(|mut f| f.read_exact(&mut head).is_ok()) {
            if let Some(a) = arch_from_elf_header(&head) {
                return Some(a);
            }
        }
    }
    None
}

/// Installs the extensions into a copy of the disk image (see the module docs).
pub fn install(opts: &InstallOptions) -> Result<InstallReport, InstallError> {
    let exts = prepare_extensions(opts)?;
    let out = AtomicOutput::file(&opts.output, opts.force)?;
    let tmp = out.path().to_path_buf();
    let decompressed = copy_disk(&opts.disk, &tmp, MAX_DECOMPRESSED)?;
    let table = fsimage::gpt::read(&tmp).map_err(|e| match e {
        // Name the input, not our temporary copy.
        fsimage::gpt::GptError::NoTable { .. } => fsimage::gpt::GptError::NoTable {
            path: opts.disk.clone(),
        },
        fsimage::gpt::GptError::Bad { message, .. } => fsimage::gpt::GptError::Bad {
            path: opts.disk.clone(),
            message,
        },
        other => other,
    })?;
    let disk = &opts.disk;
    let usr = find(&table, disk, "USR-A", &[types::USR])?;
    let root = find(&table, disk, "ROOT", &[types::ROOT, types::LINUX_DATA])?;
    let oem = if exts
        .iter()
        .any(|e| e.target.partition == PartitionKind::Oem)
    {
        Some(find(&table, disk, "OEM", &[types::LINUX_DATA])?)
    } else {
        None
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let ws = Workspace::new()?;
    let w = ws.0.clone();
    let (os, architecture, installed) = in_private_namespace::<_, InstallError>(&ws.0, || {
        // The OS's /usr, read-only, with the links its ROOT has to it, as a host root.
        let host_root = w.join("host");
        for d in ["host/usr", "root", "oem"] {
            fs::create_dir_all(w.join(d)).map_err(io_err(&w.join(d)))?;
        }
        for (l, t) in [
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
        ] {
            std::os::unix::fs::symlink(t, host_root.join(l)).map_err(io_err(&host_root))?;
        }
        mount_partition(&file, disk, usr, &host_root.join("usr"), false)?;
        let arch = match &opts.arch {
            Some(a) => a.clone(),
            None => usr_arch(&host_root.join("usr"))
                .ok_or_else(|| InstallError::Disk {
                    path: disk.clone(),
                    what: "cannot tell the OS image's architecture from the programs in its \
                           USR-A partition; pass --arch"
                        .into(),
                })?
                .to_string(),
        };
        let mut host = Host::from_root(&host_root, Some(&arch))?;
        // Messages name the OS image, not our workspace.
        if let Ok(inside) = host.origin.strip_prefix(&host_root) {
            host.origin = PathBuf::from(format!("{}: USR-A /{}", disk.display(), inside.display()));
        }
        let os = format!(
            "{} {}",
            host.os_release.get("ID").unwrap_or("?"),
            host.os_release.get("VERSION_ID").unwrap_or("?")
        );
        let mut warnings = Vec::new();
        for e in &exts {
            let report = check_image(&e.image, Some(&host))?;
            let (errors, warns): (Vec<_>, Vec<_>) = report
                .findings
                .iter()
                .partition(|f| f.severity == Severity::Error);
            if !errors.is_empty() {
                return Err(InstallError::Incompatible {
                    file: e.file.clone(),
                    disk: disk.clone(),
                    reasons: errors
                        .iter()
                        .map(|f| format!("{} ({})", f.message, f.code))
                        .collect::<Vec<_>>()
                        .join("; "),
                });
            }
            warnings.push(
                warns
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.message))
                    .collect::<Vec<_>>(),
            );
        }
        unmount(&host_root.join("usr"))?;

        let root_dir = w.join("root");
        mount_partition(&file, disk, root, &root_dir, true)?;
        let oem_dir = w.join("oem");
        if let Some(oem) = oem {
            mount_partition(&file, disk, oem, &oem_dir, true)?;
        }
        let result = write_all(disk, &exts, &root_dir, &oem_dir, warnings);
        // Unmounted also after a failed write (the output is dropped then anyway).
        let r1 = unmount(&root_dir);
        let r2 = if oem.is_some() {
            unmount(&oem_dir)
        } else {
            Ok(())
        };
        let installed = result?;
        r1?;
        r2?;
        Ok((os, arch, installed))
    })?;
    drop(ws);
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    let output = out.commit()?;
    Ok(InstallReport {
        output,
        decompressed,
        os,
        architecture,
        installed,
    })
}

/// The writes into the mounted ROOT (and OEM) file systems, through the safe writer.
fn write_all(
    disk: &Path,
    exts: &[Prepared],
    root_dir: &Path,
    oem_dir: &Path,
    warnings: Vec<Vec<String>>,
) -> Result<Vec<Installed>, InstallError> {
    let topts = TreeOptions::default();
    let werr = |partition: &'static str, what: String| {
        move |source| InstallError::Write {
            disk: disk.to_path_buf(),
            partition,
            what,
            source: Box::new(source),
        }
    };
    let root = Tree::open(root_dir, &topts).map_err(werr("ROOT", "/".into()))?;
    let oem = if exts
        .iter()
        .any(|e| e.target.partition == PartitionKind::Oem)
    {
        Some(Tree::open(oem_dir, &topts).map_err(werr("OEM", "/".into()))?)
    } else {
        None
    };
    let mut installed = Vec::new();
    for (e, warnings) in exts.iter().zip(warnings) {
        let label = e.target.partition.label();
        let tree = match e.target.partition {
            PartitionKind::Root => &root,
            PartitionKind::Oem => oem.as_ref().unwrap_or(&root),
        };
        let at = e.placement();
        let shown = at.host_file.display().to_string();
        tree.create_dir_all(&at.dir, 0o755)
            .map_err(werr(label, at.host_dir.display().to_string()))?;
        if tree
            .stat(&at.file)
            .map_err(werr(label, shown.clone()))?
            .is_some()
        {
            return Err(InstallError::Exists {
                disk: disk.to_path_buf(),
                path: format!("{shown} in {label}"),
            });
        }
        let src = safefs::tree::open_input(&e.file).map_err(io_err(&e.file))?;
        tree.copy_file(&at.file, &src, 0o644)
            .map_err(werr(label, shown.clone()))?;

        // On ROOT, relative to its root.
        let link = at.link.strip_prefix("/").unwrap_or(&at.link);
        let shown_link = at.link.display().to_string();
        if let Some(parent) = link.parent() {
            root.create_dir_all(parent, 0o755)
                .map_err(werr("ROOT", shown_link.clone()))?;
        }
        if root
            .stat(link)
            .map_err(werr("ROOT", shown_link.clone()))?
            .is_some()
        {
            return Err(InstallError::Exists {
                disk: disk.to_path_buf(),
                path: shown_link,
            });
        }
        root.symlink(link, &at.host_file)
            .map_err(werr("ROOT", shown_link))?;

        let conf_dir = PathBuf::from(format!("etc/sysupdate.{}.d", e.name));
        let mut placed = Vec::new();
        for f in &e.sysupdate {
            let Some(n) = f.file_name() else { continue };
            if placed.is_empty() {
                root.create_dir_all(&conf_dir, 0o755)
                    .map_err(werr("ROOT", conf_dir.display().to_string()))?;
            }
            let dst = conf_dir.join(n);
            let src = safefs::tree::open_input(f).map_err(io_err(f))?;
            root.copy_file(&dst, &src, 0o644)
                .map_err(werr("ROOT", dst.display().to_string()))?;
            placed.push(Path::new("/").join(&dst));
        }
        installed.push(Installed {
            name: e.name.clone(),
            source: e.file.clone(),
            partition: e.target.partition,
            path: at.host_file,
            link: at.link,
            sysupdate: placed,
            warnings,
        });
    }
    root.flush();
    if let Some(o) = &oem {
        o.flush();
    }
    Ok(installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_disk_is_decompressed_up_to_the_limit() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("disk.raw.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&vec![0u8; 3 << 20]).unwrap();
        fs::write(&disk, gz.finish().unwrap()).unwrap();
        // The output exists already (AtomicOutput's temporary file).
        let out = d.path().join("out");
        fs::write(&out, b"").unwrap();
        assert_eq!(copy_disk(&disk, &out, 3 << 20).unwrap(), Some("gzip"));
        assert_eq!(fs::metadata(&out).unwrap().len(), 3 << 20);
        let e = copy_disk(&disk, &out, 1 << 20).unwrap_err().to_string();
        assert!(e.contains("more than 1048576 bytes"), "{e}");
        // An uncompressed disk is copied whatever its size.
        fs::write(&disk, vec![1u8; 3 << 20]).unwrap();
        assert_eq!(copy_disk(&disk, &out, 1 << 20).unwrap(), None);
    }

    #[test]
    fn targets() {
        let t = Target::parse("root:/opt/extensions/").unwrap();
        assert_eq!(t, Target::default());
        assert_eq!(t.host_dir(), Path::new("/opt/extensions"));
        let t = Target::parse("oem:/sysext").unwrap();
        assert_eq!(t.partition, PartitionKind::Oem);
        assert_eq!(t.host_dir(), Path::new("/oem/sysext"));
        for bad in [
            "root:opt",
            "usr:/opt",
            "root:/opt/../etc",
            "root:/./x",
            "/opt",
            "root:/a\nb",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs() {
        let s = ExtensionSpec::parse("tools:out/tools-1-x86-64.raw");
        assert_eq!(s.name.as_deref(), Some("tools"));
        assert_eq!(s.file, Path::new("out/tools-1-x86-64.raw"));
        let s = ExtensionSpec::parse("./a:b.raw");
        assert_eq!(s.name, None);
        let s = ExtensionSpec::parse("x.raw");
        assert_eq!((s.name, s.file), (None, PathBuf::from("x.raw")));
    }
}
