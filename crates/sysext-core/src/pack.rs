//! A staged extension tree to `NAME.raw` (squashfs) or a folder copy.
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

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use fsimage::squashfs::writer::WriteStats;
use fsimage::squashfs::writer::{self, WriteError, WriterOptions};
pub use fsimage::squashfs::Compression;
use safefs::atomic::{AtomicError, AtomicOutput};
use safefs::tree::{self, copy_sparse, Tree, TreeOptions};

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A squashfs image (`NAME.raw`).
    Raw,
    /// A plain folder, as systemd-sysext also accepts.
    Dir,
}

/// Options for [`pack`], applied in this order: name (explicit, else from the output's file
/// name), format (explicit, else by the output's name), then the writer settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PackOptions {
    /// Squashfs compressor (gzip by default).
    pub compression: Compression,
    /// Compressor level (gzip 1-9, zstd 1-22, xz 0-9); `None` = mksquashfs' default.
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
    /// Set for squashfs output.
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    pub mtime: u64,
    /// Size of the output file (squashfs) or of the copied file data (folder).
    pub bytes: u64,
    /// Squashfs details (None for a folder).
    pub squashfs: Option<WriteStats>,
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
    #[error("invalid extension name {name:?}: {reason}")]
    Name { name: String, reason: &'static str },
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

fn check_name(name: &str) -> Result<(), PackError> {
    let bad = |reason| {
        Err(PackError::Name {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.contains('/') {
        return bad("it contains '/'");
    }
    if name == "." || name == ".." {
        return bad("it is a path component");
    }
    if name.contains('\0') || name.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    Ok(())
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
    let file_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| PackError::NoName(output.to_path_buf()))?;
    let format = opts.format.unwrap_or(if file_name.ends_with(".raw") {
        Format::Raw
    } else {
        Format::Dir
    });
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => file_name
            .strip_suffix(".raw")
            .unwrap_or(&file_name)
            .to_string(),
    };
    check_name(&name)?;
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
    let mtime32 = u32::try_from(mtime).map_err(|_| PackError::Mtime(mtime))?;
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

    match format {
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
            let final_path = out.commit()?;
            Ok(PackReport {
                output: final_path,
                name,
                format,
                compression: Some(opts.compression),
                level: Some(opts.level.unwrap_or(opts.compression.default_level())),
                mtime,
                bytes: stats.image_bytes,
                squashfs: Some(stats),
            })
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
            let mut copier = Copier {
                out: dest,
                links: HashMap::new(),
                mtime: mtime as i64,
                bytes: 0,
            };
            copier.copy_tree(tree)?;
            let final_path = out.commit()?;
            Ok(PackReport {
                output: final_path,
                name,
                format,
                compression: None,
                level: None,
                mtime,
                bytes: copier.bytes,
                squashfs: None,
            })
        }
    }
}

struct Copier {
    /// The output folder, written through the safe tree writer.
    out: Tree,
    /// First copy (relative to the output) of each multiply-linked file.
    links: HashMap<(u64, u64), PathBuf>,
    mtime: i64,
    bytes: u64,
}

impl Copier {
    /// Owner root, the xattrs images carry, the mode (not for links) and the fixed time of the
    /// copy `to` (relative to the output) of `from`.
    fn finish_entry(&self, from: &Path, to: &Path, mode: u32, symlink: bool) -> io::Result<()> {
        let out = &self.out;
        match out.set_owner(to, 0, 0) {
            Ok(()) => {}
            Err(e) if e.io_error().and_then(|e| e.raw_os_error()) == Some(libc::EPERM) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
        if !symlink {
            copy_xattrs_into(from, out, to)?;
            out.set_mode(to, mode & 0o7777).map_err(io::Error::other)?;
        }
        out.set_times(to, self.mtime).map_err(io::Error::other)
    }

    /// Copies the tree `from` into the output, walking with a work list (no recursion on the
    /// tree's depth); folders get their metadata last, deepest first.
    fn copy_tree(&mut self, from: &Path) -> Result<(), PackError> {
        let out_root = self.out.root_path().to_path_buf();
        let cerr = |from: &Path, to: &Path| {
            let (from, to) = (from.to_path_buf(), out_root.join(to));
            move |source| PackError::Copy { from, to, source }
        };
        let mut todo = vec![PathBuf::new()];
        let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
        while let Some(rel) = todo.pop() {
            let dir = from.join(&rel);
            let mut names = Vec::new();
            for e in fs::read_dir(&dir).map_err(cerr(&dir, &rel))? {
                names.push(e.map_err(cerr(&dir, &rel))?.file_name());
            }
            names.sort();
            for name in names {
                let src = dir.join(&name);
                let dst = rel.join(&name);
                let m = fs::symlink_metadata(&src).map_err(cerr(&src, &dst))?;
                let ft = m.file_type();
                if ft.is_dir() {
                    self.out
                        .create_dir(&dst, 0o700)
                        .map_err(|e| cerr(&src, &dst)(io::Error::other(e)))?;
                    dirs.push((dst.clone(), m.mode()));
                    todo.push(dst);
                    continue;
                }
                if ft.is_file() && m.nlink() > 1 {
                    if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                        self.out
                            .hardlink(&dst, first)
                            .map_err(|e| cerr(&src, &dst)(io::Error::other(e)))?;
                        continue;
                    }
                }
                let res = (|| -> io::Result<()> {
                    let out = &self.out;
                    if ft.is_file() {
                        let f = fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                            .open(&src)?;
                        let to = out.create_file(&dst, 0o600).map_err(io::Error::other)?;
                        copy_sparse(&f, &to)?;
                        self.bytes += m.len();
                    } else if ft.is_symlink() {
                        out.symlink(&dst, &fs::read_link(&src)?)
                            .map_err(io::Error::other)?;
                    } else {
                        let ty = if ft.is_char_device() {
                            rustix::fs::FileType::CharacterDevice
                        } else if ft.is_block_device() {
                            rustix::fs::FileType::BlockDevice
                        } else if ft.is_fifo() {
                            rustix::fs::FileType::Fifo
                        } else {
                            rustix::fs::FileType::Socket
                        };
                        out.mknod(&dst, ty, m.mode() & 0o7777, m.rdev())
                            .map_err(io::Error::other)?;
                    }
                    self.finish_entry(&src, &dst, m.mode(), ft.is_symlink())
                })();
                res.map_err(cerr(&src, &dst))?;
                if ft.is_file() && m.nlink() > 1 {
                    self.links.insert((m.dev(), m.ino()), dst);
                }
            }
        }
        for (dst, mode) in dirs.iter().rev() {
            let src = from.join(dst);
            self.finish_entry(&src, dst, *mode, false)
                .map_err(cerr(&src, dst))?;
        }
        let dm = fs::symlink_metadata(from).map_err(cerr(from, Path::new("")))?;
        self.finish_entry(from, Path::new(""), dm.mode(), false)
            .map_err(cerr(from, Path::new("")))
    }
}

/// The xattrs an image carries ([`tree::image_xattrs`], file capabilities included: pack
/// keeps what the staged tree holds) of `from`, a regular file or folder, set on `to` in the
/// output tree. A symlink (which holds none of those) is passed over.
fn copy_xattrs_into(from: &Path, out: &Tree, to: &Path) -> io::Result<()> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (xattrs, _) = tree::image_xattrs(&file, true)?;
    for (name, value) in xattrs {
        out.set_xattr(to, &name.to_string_lossy(), &value)
            .map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["foo", "foo-1.2", "a.b"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "a/b", ".", "..", ".hidden", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
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
