//! A staged extension tree to `NAME.raw` (squashfs, or EROFS with [`Fs::Erofs`]) or a
//! folder copy.
//!
//! Everything comes out root-owned (uid/gid 0), with the tree's modes, symlinks, hardlinks and
//! `user.*` / `trusted.*` / `security.capability` xattrs, and every timestamp set to one fixed
//! time (`mtime`, else `SOURCE_DATE_EPOCH`, else 0), so packing the same tree twice gives the
//! same bytes. The output is written under a temporary name and renamed into place
//! ([`AtomicOutput`]); an existing output is replaced only with `force`.
//!
//! The tree must hold `usr/lib/extension-release.d/extension-release.NAME`, NAME being the
//! output's file name without `.raw` or `.sysext.raw` (or [`PackOptions::name`]):
//! systemd-sysext refuses an image without it. A confext ([`PackOptions::class`]) holds
//! `etc/extension-release.d/extension-release.NAME` instead (NAME without `.confext.raw` or
//! `.raw`), and nothing outside `etc/`: systemd-confext merges only `/etc`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::release::ImageClass;
use fsimage::erofs::writer as erofs_writer;
pub use fsimage::erofs::writer::WriteStats as ErofsStats;
pub use fsimage::erofs::Compression as ErofsCompression;
pub use fsimage::squashfs::writer::WriteStats;
use fsimage::squashfs::writer::{self, WriteError, WriterOptions};
pub use fsimage::squashfs::Compression;
use safefs::atomic::{AtomicError, AtomicOutput};
use safefs::tree::{self, Tree, TreeOptions};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A squashfs image (`NAME.raw`).
    Raw,
    /// A plain folder, as systemd-sysext also accepts.
    Dir,
    /// A GPT disk image (`NAME.raw`) holding the file system and its dm-verity hash tree in
    /// the partitions systemd-repart `--make-ddi=sysext` uses.
    Ddi,
}

impl Format {
    /// The format an output path asks for: a name ending in `.raw` is a squashfs image,
    /// anything else a folder (what `pack` does without an explicit format).
    pub fn of_output(output: &Path) -> Format {
        if output
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".raw"))
        {
            Format::Raw
        } else {
            Format::Dir
        }
    }

    /// The default output for an extension `name`: `NAME.raw` or the folder `NAME`.
    pub fn default_output(self, name: &str) -> PathBuf {
        match self {
            Format::Raw | Format::Ddi => PathBuf::from(format!("{name}.raw")),
            Format::Dir => PathBuf::from(name),
        }
    }

    /// The word on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Dir => "dir",
            Format::Ddi => "ddi",
        }
    }
}

/// The file system of a `.raw` image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    /// squashfs, compressed (gzip, zstd or xz).
    #[default]
    Squashfs,
    /// EROFS, uncompressed or compressed with lz4, lz4hc or zstd.
    Erofs,
}

impl Fs {
    pub fn name(self) -> &'static str {
        match self {
            Fs::Squashfs => "squashfs",
            Fs::Erofs => "erofs",
        }
    }
}

impl std::str::FromStr for Fs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "squashfs" => Ok(Fs::Squashfs),
            "erofs" => Ok(Fs::Erofs),
            other => Err(format!(
                "unknown file system {other:?}; use squashfs or erofs"
            )),
        }
    }
}

impl std::fmt::Display for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Format::Raw),
            "dir" => Ok(Format::Dir),
            "ddi" => Ok(Format::Ddi),
            other => Err(format!(
                "unknown format {other:?}; use raw (a squashfs NAME.raw), dir (a folder) or ddi (a GPT disk image with verity)"
            )),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Options for [`pack`], applied in this order: name (explicit, else from the output's file
/// name), format (explicit, else by the output's name), then the writer settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PackOptions {
    /// The file system of a `.raw` image (squashfs by default).
    pub fs: Fs,
    /// Squashfs compressor (gzip by default); not used for EROFS.
    pub compression: Compression,
    /// EROFS compressor (none by default); not used for squashfs.
    pub erofs_compression: ErofsCompression,
    /// Compressor level (squashfs: gzip 1-12, zstd 1-22, xz 0-9, `None` = 6 for gzip, else
    /// mksquashfs' default; EROFS: lz4hc 1-12, zstd 1-22, `None` = mkfs.erofs' default, refused for none
    /// and lz4).
    pub level: Option<i32>,
    /// Replace an existing output.
    pub force: bool,
    /// Timestamp of every entry; default `SOURCE_DATE_EPOCH`, else 0.
    pub mtime: Option<u64>,
    /// Raw or Dir; `None` = by the output's name (".raw" → Raw, else Dir).
    pub format: Option<Format>,
    /// Extension name; `None` = the output's file name without ".raw".
    pub name: Option<String>,
    /// Compression threads; 0 = one per CPU. The output does not depend on it.
    pub threads: usize,
    /// A system extension (default) or a configuration extension (systemd-confext).
    pub class: ImageClass,
    /// Also write a dm-verity hash tree beside a `.raw` image: `NAME.verity` and
    /// `NAME.roothash` (the "naked" form systemd-dissect and systemd-sysext look for).
    pub verity: bool,
    /// The 128-bit seed the verity salt and UUID are derived from (systemd-repart's
    /// `--seed`); `None` = [`default_seed`] of the name and mtime.
    pub seed: Option<[u8; 16]>,
    /// Sign the root hash: `NAME.roothash.p7s` beside a naked image, the signature partition
    /// of a DDI.
    pub signer: Option<fsimage::signature::Signer>,
}

/// The seed of an image's verity salt and UUID when none is given: the first 16 bytes of
/// `sha256("sysext-tools/verity-seed\0" NAME "\0" MTIME-as-8-bytes-LE)`, so the same tree,
/// name and time give the same bytes, and another version another salt.
pub fn default_seed(name: &str, mtime: u64) -> [u8; 16] {
    use sha2::{Digest, Sha256};
    let h = Sha256::new()
        .chain_update(b"sysext-tools/verity-seed\0")
        .chain_update(name.as_bytes())
        .chain_update(b"\0")
        .chain_update(mtime.to_le_bytes())
        .finalize();
    h[..16].try_into().unwrap()
}

/// The partitions of a DDI that [`pack`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct DdiReport {
    /// systemd's architecture name the partition types are of.
    pub architecture: String,
    pub disk_uuid: String,
    pub partitions: Vec<DdiPartition>,
}

/// One partition of a [`DdiReport`].
#[derive(Debug, Clone, Serialize)]
pub struct DdiPartition {
    pub label: String,
    pub type_uuid: String,
    pub uuid: String,
    pub offset: u64,
    pub bytes: u64,
}

/// The dm-verity part of a [`PackReport`].
#[derive(Debug, Clone, Serialize)]
pub struct VerityReport {
    /// The root hash, hex.
    pub root_hash: String,
    /// The hash device's file (`NAME.verity`).
    pub hash_file: PathBuf,
    /// The root hash's file (`NAME.roothash`).
    pub roothash_file: PathBuf,
    /// Bytes of the hash device (superblock and tree).
    pub hash_bytes: u64,
    /// The salt (hex) and the superblock UUID.
    pub salt: String,
    pub uuid: String,
    /// Whether the root hash was signed (`NAME.roothash.p7s` or the DDI's signature
    /// partition).
    pub signed: bool,
    /// `NAME.roothash.p7s` (a naked image signed at pack time).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_file: Option<PathBuf>,
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub output: PathBuf,
    pub name: String,
    /// `sysext` or `confext`.
    pub class: ImageClass,
    pub format: Format,
    /// The file system of a `.raw` image (None for a folder).
    pub fs: Option<Fs>,
    /// Set for squashfs output.
    pub compression: Option<Compression>,
    /// Set for EROFS output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erofs_compression: Option<ErofsCompression>,
    /// The compressor's level (squashfs, compressed EROFS but lz4).
    pub level: Option<i32>,
    pub mtime: u64,
    /// Size of the output file (squashfs) or of the copied file data (folder).
    pub bytes: u64,
    /// Squashfs details (None for a folder or EROFS).
    pub squashfs: Option<WriteStats>,
    /// EROFS details (None for a folder or squashfs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erofs: Option<ErofsStats>,
    /// The GPT disk image's partitions (`Format::Ddi`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ddi: Option<DdiReport>,
    /// The hash tree written beside the image (`verity`) or into the DDI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<VerityReport>,
}

/// Errors from [`pack`].
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("tree {} is not a readable folder", path.display())]
    Tree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tree {} is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error(transparent)]
    Name(#[from] crate::release::ReleaseError),
    #[error("cannot tell the extension name from the output {}; pass a name", .0.display())]
    NoName(PathBuf),
    #[error("the tree has no release file {}; an extension named {name:?} needs it (create it, or pass the name the tree's release file uses)", path.display())]
    NoReleaseFile { name: String, path: PathBuf },
    #[error("the confext tree {} holds {entry:?} outside etc/; systemd-confext merges only /etc and ignores it, so move it under etc/ (or pack a sysext)", tree.display())]
    OutsideEtc { tree: PathBuf, entry: String },
    #[error("output {} lies inside the tree {}; write it elsewhere", output.display(), tree.display())]
    OutputInTree { output: PathBuf, tree: PathBuf },
    #[error("SOURCE_DATE_EPOCH={0:?} is not a number of seconds")]
    SourceDateEpoch(String),
    #[error("mtime {0} does not fit squashfs' 32-bit timestamps")]
    Mtime(u64),
    #[error(transparent)]
    Output(#[from] AtomicError),
    #[error("cannot write the squashfs image {}", path.display())]
    Squashfs {
        path: PathBuf,
        #[source]
        source: WriteError,
    },
    #[error("cannot write the EROFS image {}", path.display())]
    Erofs {
        path: PathBuf,
        #[source]
        source: erofs_writer::WriteError,
    },
    #[error("{0}")]
    ErofsLevel(String),
    #[error("no partition types for the architecture {0:?}: DDIs are written for x86-64, arm64 and x86 (set ARCHITECTURE= in the release file to one of them)")]
    DdiArch(String),
    #[error("cannot sign the root hash of {}", path.display())]
    Sign {
        path: PathBuf,
        #[source]
        source: fsimage::signature::SignError,
    },
    #[error("--key/--cert sign a root hash: add --verity or --format ddi")]
    SignWithoutVerity,
    #[error("--verity needs a .raw image (a folder has no blocks to hash); drop --verity or write a .raw image")]
    VerityDir,
    #[error("cannot write the verity hash tree of {}", path.display())]
    Verity {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn resolve_mtime(opt: Option<u64>) -> Result<u64, PackError> {
    if let Some(m) = opt {
        return Ok(m);
    }
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().map_err(|_| PackError::SourceDateEpoch(v))
        }
        _ => Ok(0),
    }
}

/// Packs `tree` into `output` (see the module docs).
pub fn pack(tree: &Path, output: &Path, opts: &PackOptions) -> Result<PackReport, PackError> {
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| PackError::NoName(output.to_path_buf()))?;
    let format = opts.format.unwrap_or(Format::of_output(output));
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => opts
            .class
            .image_name(&file_name)
            .unwrap_or(&file_name)
            .to_string(),
    };
    // The name first: nothing is read or written for a name no image may have.
    crate::release::validate_new_name(&name)?;
    // Then the compressor's level, before the tree is looked at.
    let image = matches!(format, Format::Raw | Format::Ddi);
    let erofs = image && opts.fs == Fs::Erofs;
    if erofs {
        let c = opts.erofs_compression;
        if let Some(l) = opts.level {
            if !c.level_range().contains(&l) {
                return Err(PackError::ErofsLevel(if c.level_range().is_empty() {
                    format!("EROFS compression {c} takes no level (level {l} given)")
                } else {
                    format!(
                        "EROFS compression {c} takes a level from {} to {} (level {l} given)",
                        c.level_range().start(),
                        c.level_range().end()
                    )
                }));
            }
        }
    }
    let meta = fs::metadata(tree).map_err(|source| PackError::Tree {
        path: tree.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(PackError::NotAFolder(tree.to_path_buf()));
    }
    let top = fs::read_dir(tree).map_err(|source| PackError::Tree {
        path: tree.to_path_buf(),
        source,
    })?;
    if opts.class == ImageClass::Confext {
        let mut names = Vec::new();
        for e in top {
            let e = e.map_err(|source| PackError::Tree {
                path: tree.to_path_buf(),
                source,
            })?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        if let Some(entry) = names.into_iter().find(|n| n != "etc") {
            return Err(PackError::OutsideEtc {
                tree: tree.to_path_buf(),
                entry,
            });
        }
    }
    let release = opts.class.release_file(&name);
    let release_ok = fs::symlink_metadata(tree.join(&release))
        .map(|m| m.is_file())
        .unwrap_or(false);
    if !release_ok {
        return Err(PackError::NoReleaseFile {
            name,
            path: tree.join(release),
        });
    }
    let mtime = resolve_mtime(opts.mtime)?;
    if opts.verity && format == Format::Dir {
        return Err(PackError::VerityDir);
    }
    if opts.signer.is_some() && !(opts.verity && format == Format::Raw) && format != Format::Ddi {
        return Err(PackError::SignWithoutVerity);
    }
    let ddi_arch = if format == Format::Ddi {
        Some(ddi_arch(&tree.join(&release))?)
    } else {
        None
    };
    // The side files are claimed before any work, so an existing one stops the run early.
    let verity_outs = if opts.verity && format == Format::Raw {
        let hash = AtomicOutput::file(&fsimage::verity::side_path(output, ".verity"), opts.force)?;
        let root =
            AtomicOutput::file(&fsimage::verity::side_path(output, ".roothash"), opts.force)?;
        let p7s = match opts.signer {
            Some(_) => Some(AtomicOutput::file(
                &fsimage::verity::side_path(output, ".roothash.p7s"),
                opts.force,
            )?),
            None => None,
        };
        Some((hash, root, p7s))
    } else {
        None
    };
    // EROFS keeps 64-bit timestamps.
    let mtime32 = match u32::try_from(mtime) {
        Ok(m) => m,
        Err(_) if erofs => 0,
        Err(_) => return Err(PackError::Mtime(mtime)),
    };
    if let (Ok(t), Some(parent)) = (tree.canonicalize(), output.parent()) {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(p) = parent.canonicalize() {
            if p.starts_with(&t) {
                return Err(PackError::OutputInTree {
                    output: output.to_path_buf(),
                    tree: tree.to_path_buf(),
                });
            }
        }
    }

    // Each format writes under a temporary name; the output is renamed into place once whole.
    let mut erofs_stats = None;
    // A DDI's file system is written to a scratch file beside it first (never committed).
    let fs_output = match format {
        Format::Ddi => output.with_file_name(format!(".{name}.ddi-fs")),
        _ => output.to_path_buf(),
    };
    let fs_force = opts.force || format == Format::Ddi;
    let (out, bytes, squashfs) = match format {
        Format::Raw | Format::Ddi if erofs => {
            let out = AtomicOutput::file(&fs_output, fs_force)?;
            let werr = |source| PackError::Erofs {
                path: output.to_path_buf(),
                source,
            };
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(out.path())
                .map_err(|source| {
                    werr(erofs_writer::WriteError::Write {
                        path: out.path().to_path_buf(),
                        source,
                    })
                })?;
            let mut wopts = erofs_writer::WriterOptions::default();
            wopts.mtime = mtime;
            wopts.threads = opts.threads;
            wopts.compression = opts.erofs_compression;
            wopts.level = opts.level;
            let stats = erofs_writer::write_image(tree, file, out.path(), &wopts).map_err(werr)?;
            let bytes = stats.image_bytes;
            erofs_stats = Some(stats);
            (out, bytes, None)
        }
        Format::Raw | Format::Ddi => {
            let out = AtomicOutput::file(&fs_output, fs_force)?;
            let file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(out.path())
                .map_err(|source| PackError::Squashfs {
                    path: out.path().to_path_buf(),
                    source: WriteError::Write {
                        path: out.path().to_path_buf(),
                        source,
                    },
                })?;
            let mut wopts = WriterOptions::default();
            wopts.compression = opts.compression;
            wopts.level = opts.level;
            wopts.mtime = mtime32;
            wopts.threads = opts.threads;
            let stats = writer::write_image(tree, file, out.path(), &wopts).map_err(|source| {
                PackError::Squashfs {
                    path: output.to_path_buf(),
                    source,
                }
            })?;
            (out, stats.image_bytes, Some(stats))
        }
        Format::Dir => {
            let out = AtomicOutput::dir(output, opts.force)?;
            let dest = Tree::open(out.path(), &TreeOptions::no_symlinks()).map_err(|e| {
                PackError::Copy {
                    from: tree.to_path_buf(),
                    to: out.path().to_path_buf(),
                    source: io::Error::other(e),
                }
            })?;
            let mut copy_opts = tree::CopyTreeOptions::default();
            copy_opts.root_owned = true;
            copy_opts.mtime = Some(mtime as i64);
            let bytes = tree::copy_tree(tree, &dest, &copy_opts).map_err(|e| PackError::Copy {
                from: e.from,
                to: e.to,
                source: e.source,
            })?;
            (out, bytes, None)
        }
    };
    let seed = opts.seed.unwrap_or_else(|| default_seed(&name, mtime));
    let mut ddi = None;
    let (verity, out) = match (verity_outs, ddi_arch) {
        (Some(side_outs), _) => (
            Some(write_verity(out.path(), output, &seed, opts, side_outs)?),
            out,
        ),
        (None, Some(arch)) => {
            let (v, d, ddi_out) = write_ddi(out.path(), output, arch, &seed, opts)?;
            drop(out);
            ddi = Some(d);
            (Some(v), ddi_out)
        }
        (None, None) => (None, out),
    };
    let bytes = if ddi.is_some() {
        fs::metadata(out.path()).map(|m| m.len()).unwrap_or(bytes)
    } else {
        bytes
    };
    let compression = squashfs.as_ref().map(|_| opts.compression);
    let erofs_compression = erofs_stats.as_ref().map(|_| opts.erofs_compression);
    let erofs_level = erofs_compression
        .filter(|c| !c.level_range().is_empty())
        .map(|c| opts.level.unwrap_or(c.default_level()));
    Ok(PackReport {
        verity,
        ddi,
        output: out.commit()?,
        name,
        class: opts.class,
        format,
        fs: image.then_some(opts.fs),
        compression,
        erofs_compression,
        level: compression
            .map(|c| opts.level.unwrap_or(c.default_level()))
            .or(erofs_level),
        mtime,
        bytes,
        squashfs,
        erofs: erofs_stats,
    })
}

/// The architecture of a DDI of the tree whose release file is `release`: its
/// `ARCHITECTURE=` unless unset or `_any`, else the host's (as systemd-repart does).
fn ddi_arch(release: &Path) -> Result<&'static fsimage::ddi::ArchTypes, PackError> {
    let rel = crate::release::OsRelease::read(release)?;
    let arch = match rel
        .get("ARCHITECTURE")
        .filter(|a| !a.is_empty() && *a != "_any")
    {
        Some(a) => a.to_string(),
        None => crate::release::host_architecture()
            .unwrap_or("unknown")
            .to_string(),
    };
    fsimage::ddi::arch_types(&arch).ok_or(PackError::DdiArch(arch))
}

/// Lays the file system image `fs_tmp` and its hash tree out as a GPT disk image at `output`
/// (see [`fsimage::ddi`]); returns the verity and partition reports and the uncommitted DDI.
fn write_ddi(
    fs_tmp: &Path,
    output: &Path,
    arch: &'static fsimage::ddi::ArchTypes,
    seed: &[u8; 16],
    opts: &PackOptions,
) -> Result<(VerityReport, DdiReport, AtomicOutput), PackError> {
    use fsimage::{ddi, verity};
    let err = |source| PackError::Verity {
        path: output.to_path_buf(),
        source,
    };
    let data = fs::File::open(fs_tmp).map_err(err)?;
    let size = data.metadata().map_err(err)?.len();
    let params = verity::Params::from_seed(seed);
    let tree = verity::build(&data, 0, size, &params, opts.threads).map_err(err)?;
    let root_hash = hex::encode(tree.root_hash);
    let sig = match &opts.signer {
        Some(s) => Some(s.partition(&root_hash).map_err(|source| PackError::Sign {
            path: output.to_path_buf(),
            source,
        })?),
        None => None,
    };
    let disk_uuid = verity::derive_uuid(seed, b"disk-uuid");
    let out = AtomicOutput::file(output, opts.force)?;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out.path())
        .map_err(err)?;
    let contents = ddi::Contents {
        data: &data,
        data_offset: 0,
        data_bytes: size,
        hash: &tree.bytes,
        root_hash: tree.root_hash,
        sig: sig.as_deref(),
    };
    let parts = ddi::assemble(&f, arch, &disk_uuid, &contents).map_err(err)?;
    let v = VerityReport {
        signature_file: None,
        signed: sig.is_some(),
        root_hash,
        hash_file: output.to_path_buf(),
        roothash_file: output.to_path_buf(),
        hash_bytes: tree.bytes.len() as u64,
        salt: hex::encode(&params.salt),
        uuid: verity::uuid_string(&params.uuid),
    };
    let d = DdiReport {
        architecture: arch.arch.to_string(),
        disk_uuid: verity::uuid_string(&disk_uuid),
        partitions: parts
            .iter()
            .map(|p| DdiPartition {
                label: p.label.clone(),
                type_uuid: verity::uuid_string(&p.type_uuid),
                uuid: verity::uuid_string(&p.uuid),
                offset: p.offset(),
                bytes: p.bytes(),
            })
            .collect(),
    };
    Ok((v, d, out))
}

/// Hashes the written image `tmp` (the output `output`), writes the hash device and the root
/// hash into the side outputs and commits them (the image is committed after them).
fn write_verity(
    tmp: &Path,
    output: &Path,
    seed: &[u8; 16],
    opts: &PackOptions,
    (hash_out, root_out, p7s_out): (AtomicOutput, AtomicOutput, Option<AtomicOutput>),
) -> Result<VerityReport, PackError> {
    use fsimage::verity;
    let err = |source| PackError::Verity {
        path: output.to_path_buf(),
        source,
    };
    let f = fs::File::open(tmp).map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    let params = verity::Params::from_seed(seed);
    let tree = verity::build(&f, 0, size, &params, opts.threads).map_err(err)?;
    let root_hash = hex::encode(tree.root_hash);
    fs::write(hash_out.path(), &tree.bytes).map_err(err)?;
    fs::write(root_out.path(), format!("{root_hash}\n")).map_err(err)?;
    let signature_file = match (p7s_out, &opts.signer) {
        (Some(out), Some(signer)) => {
            let p7s = signer.p7s(&root_hash).map_err(|source| PackError::Sign {
                path: output.to_path_buf(),
                source,
            })?;
            fs::write(out.path(), p7s).map_err(err)?;
            Some(out.commit()?)
        }
        _ => None,
    };
    Ok(VerityReport {
        signature_file,
        signed: opts.signer.is_some(),
        root_hash,
        hash_file: hash_out.commit()?,
        roothash_file: root_out.commit()?,
        hash_bytes: tree.bytes.len() as u64,
        salt: hex::encode(&params.salt),
        uuid: verity::uuid_string(&params.uuid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_first() {
        let d = tempfile::tempdir().unwrap();
        // The tree does not even exist: the name is refused before it is looked at.
        let tree = d.path().join("missing");
        for bad in ["", "a/b", ".", "..", ".hidden", "a\nb", "a b"] {
            let o = PackOptions {
                name: Some(bad.to_string()),
                ..Default::default()
            };
            let e = pack(&tree, &d.path().join("out"), &o).unwrap_err();
            assert!(matches!(e, PackError::Name(_)), "{bad:?}: {e}");
            assert_eq!(
                e.to_string(),
                crate::release::validate_new_name(bad)
                    .unwrap_err()
                    .to_string()
            );
        }
        let e = pack(&tree, &d.path().join(".x.raw"), &PackOptions::default()).unwrap_err();
        assert!(matches!(e, PackError::Name(_)), "{e}");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn formats() {
        for f in [Format::Raw, Format::Dir] {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert!("squashfs".parse::<Format>().unwrap_err().contains("raw"));
        assert_eq!(Format::of_output(Path::new("a/x.raw")), Format::Raw);
        assert_eq!(Format::of_output(Path::new("a/x")), Format::Dir);
        assert_eq!(Format::of_output(Path::new("x.raw/")), Format::Raw);
        assert_eq!(Format::Raw.default_output("n"), Path::new("n.raw"));
        assert_eq!(Format::Dir.default_output("n"), Path::new("n"));
    }

    #[test]
    fn missing_release_file_names_the_expected_path() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        let out = d.path().join("foo.raw");
        let err = pack(&tree, &out, &PackOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("usr/lib/extension-release.d/extension-release.foo"),
            "{msg}"
        );
        assert!(!out.exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn confext_trees() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        fs::create_dir_all(tree.join("etc/extension-release.d")).unwrap();
        fs::write(
            tree.join("etc/extension-release.d/extension-release.conf"),
            "ID=_any\n",
        )
        .unwrap();
        let o = PackOptions {
            class: ImageClass::Confext,
            ..Default::default()
        };
        // The name drops `.confext.raw`; the release file is looked for under etc/.
        let r = pack(&tree, &d.path().join("conf.confext.raw"), &o).unwrap();
        assert_eq!((r.name.as_str(), r.class), ("conf", ImageClass::Confext));
        // As a sysext the same tree lacks its release file.
        let e = pack(&tree, &d.path().join("conf.raw"), &PackOptions::default()).unwrap_err();
        assert!(matches!(e, PackError::NoReleaseFile { .. }), "{e}");
        // Anything outside etc/ is refused, before anything is written.
        fs::create_dir_all(tree.join("usr/bin")).unwrap();
        let e = pack(&tree, &d.path().join("c2.raw"), &o).unwrap_err();
        assert!(e.to_string().contains("\"usr\" outside etc/"), "{e}");
        assert!(!d.path().join("c2.raw").exists());
    }
}
