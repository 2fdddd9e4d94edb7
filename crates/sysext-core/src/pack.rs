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
//! output's file name without `.raw` (or [`PackOptions::name`]): systemd-sysext refuses an image
//! without it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

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
            Format::Raw => PathBuf::from(format!("{name}.raw")),
            Format::Dir => PathBuf::from(name),
        }
    }

    /// The word on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Dir => "dir",
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
            other => Err(format!(
                "unknown format {other:?}; use raw (a squashfs NAME.raw) or dir (a folder)"
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
    /// Compressor level (squashfs: gzip 1-9, zstd 1-22, xz 0-9, `None` = mksquashfs'
    /// default; EROFS: lz4hc 1-12, zstd 1-22, `None` = mkfs.erofs' default, refused for none
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
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub output: PathBuf,
    pub name: String,
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
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The extension-release file's path inside a tree, for `name`.
fn release_rel(name: &str) -> PathBuf {
    Path::new("usr/lib/extension-release.d").join(format!("extension-release.{name}"))
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
        None => file_name
            .strip_suffix(".raw")
            .unwrap_or(&file_name)
            .to_string(),
    };
    // The name first: nothing is read or written for a name no image may have.
    crate::release::validate_new_name(&name)?;
    // Then the compressor's level, before the tree is looked at.
    let erofs = format == Format::Raw && opts.fs == Fs::Erofs;
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
    fs::read_dir(tree).map_err(|source| PackError::Tree {
        path: tree.to_path_buf(),
        source,
    })?;
    let release = release_rel(&name);
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
    let (out, bytes, squashfs) = match format {
        Format::Raw if erofs => {
            let out = AtomicOutput::file(output, opts.force)?;
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
        Format::Raw => {
            let out = AtomicOutput::file(output, opts.force)?;
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
    let compression = squashfs.as_ref().map(|_| opts.compression);
    let erofs_compression = erofs_stats.as_ref().map(|_| opts.erofs_compression);
    let erofs_level = erofs_compression
        .filter(|c| !c.level_range().is_empty())
        .map(|c| opts.level.unwrap_or(c.default_level()));
    Ok(PackReport {
        output: out.commit()?,
        name,
        format,
        fs: (format == Format::Raw).then_some(opts.fs),
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
}
