//! Read an extension image back: a squashfs `.raw` (recognised by its `hsqs` magic, whatever
//! its name), an EROFS `.raw` (its magic at offset 1024; compressed or not) or a folder. Lists
//! entries, reads files, and summarises the image: release file,
//! file count, sizes and the CPU architectures of the ELF files inside.
//!
//! Nothing is extracted and nothing in the image is followed out of it: a `.raw` is read in
//! place ([`SquashfsReader`], [`ErofsReader`]), a folder's files are opened beneath the folder without following
//! any symlink (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`) and only when they are
//! regular files. Every read has a limit ([`MAX_READ`], release files
//! [`crate::release::MAX_RELEASE_BYTES`]); walks are iterative. Text from images (names,
//! release values) in human output goes through [`gentext::escape`].

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::release::{ImageClass, ReleaseError, MAX_RELEASE_BYTES};
use elf_closure::{ElfError, ElfInfo};
use elf_closure::{TreeView, ViewKind};
use fsimage::dissect::{DissectError, Dissected, Protected};
use fsimage::erofs::reader::ErofsReader;
use fsimage::squashfs::reader::{ReadError, SquashfsReader, MAX_DEPTH};
use fsimage::{Entry, EntryKind};
use gentext::escape;

/// The most [`Image::read_file`] reads of one file: 256 MiB.
pub const MAX_READ: u64 = 256 << 20;

/// Errors from [`Image::open`] and [`Image::read_file`].
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot open image {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is neither a squashfs image (no \"hsqs\" magic), an EROFS one, a verity disk image holding one, nor a folder; pass a NAME.raw made by `sysext pack`, mksquashfs or mkfs.erofs, or an extension folder", .0.display())]
    UnknownFormat(PathBuf),
    #[error(transparent)]
    Image(#[from] ReadError),
    #[error(transparent)]
    Dissect(#[from] DissectError),
    #[error("{}: the dm-verity check failed, refusing the image (it was changed after it was built, or its root hash is not this image's)", image.display())]
    Verity {
        image: PathBuf,
        #[source]
        source: fsimage::verity::VerifyError,
    },
    #[error("cannot read {} in the folder image", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a regular file in the image {}", escape(path), image.display())]
    NotAFile { image: PathBuf, path: String },
    #[error("{} in the folder image {} is larger than {limit} bytes, the most read for analysis", escape(path), image.display())]
    TooLarge {
        image: PathBuf,
        path: String,
        limit: u64,
    },
    #[error("reading the release file of the image {}", image.display())]
    Release {
        image: PathBuf,
        path: String,
        #[source]
        source: ReleaseError,
    },
    #[error("folder image {} nests folders deeper than {MAX_DEPTH} levels (under {}); refusing to read it, no extension needs that", image.display(), escape(path.split('/').next().unwrap_or("")))]
    TooDeep { image: PathBuf, path: String },
}

/// The image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Squashfs,
    Erofs,
    Dir,
}

/// A summary of an image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    /// `sysext` or `confext` ([`ImageClass::detect`]).
    pub class: ImageClass,
    pub path: PathBuf,
    pub format: ImageFormat,
    /// Size of the `.raw` file (squashfs) or none for a folder.
    pub image_bytes: Option<u64>,
    /// The release file found, e.g. "usr/lib/extension-release.d/extension-release.NAME".
    pub release_file: Option<String>,
    /// Its text.
    pub release: Option<String>,
    /// Regular files.
    pub files: u64,
    /// Sum of regular file sizes.
    pub total_size: u64,
    /// systemd architecture names of the ELF files inside, sorted, e.g. ["x86-64"].
    pub architectures: Vec<String>,
    /// The dm-verity side of a DDI or a naked verity image: partitions, root hash (not
    /// checked by `info`; [`Image::verify`] checks it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verity: Option<Protected>,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
enum Source {
    Squashfs(Arc<SquashfsReader>),
    Erofs(Arc<ErofsReader>),
    Dir(PathBuf),
}

/// An opened image.
pub struct Image {
    path: PathBuf,
    name: String,
    class: ImageClass,
    source: Source,
    entries: Vec<Entry>,
    /// What the file holds around its file system (`None` for a folder).
    dissected: Option<Dissected>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .finish()
    }
}

/// Reads up to `buf.len()` bytes at `off` of `f`, at most `limit` of them.
fn read_at_most(f: &fs::File, buf: &mut [u8], off: u64, limit: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let want = buf.len().min(limit as usize);
    let mut n = 0;
    while n < want {
        match f.read_at(&mut buf[n..want], off + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The entries of the folder `root`, walked with an explicit stack (no recursion on depth),
/// symlinks listed but never followed.
fn walk_dir(root: &Path) -> Result<Vec<Entry>, InspectError> {
    let rerr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InspectError::Read { path, source }
    };
    let mut out = Vec::new();
    let mut todo: Vec<(String, usize)> = vec![(String::new(), 0)];
    while let Some((rel, depth)) = todo.pop() {
        let dir = root.join(&rel);
        for e in fs::read_dir(&dir).map_err(rerr(&dir))? {
            let e = e.map_err(rerr(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let full = root.join(&path);
            let m = fs::symlink_metadata(&full).map_err(rerr(&full))?;
            let ft = m.file_type();
            let (kind, size, target) = if ft.is_dir() {
                (EntryKind::Dir, 0, None)
            } else if ft.is_file() {
                (EntryKind::File, m.len(), None)
            } else if ft.is_symlink() {
                let t = fs::read_link(&full).map_err(rerr(&full))?;
                (
                    EntryKind::Symlink,
                    m.len(),
                    Some(t.to_string_lossy().into_owned()),
                )
            } else if ft.is_char_device() {
                (EntryKind::CharDevice, 0, None)
            } else if ft.is_block_device() {
                (EntryKind::BlockDevice, 0, None)
            } else if ft.is_fifo() {
                (EntryKind::Fifo, 0, None)
            } else {
                (EntryKind::Socket, 0, None)
            };
            let capability = !ft.is_symlink()
                && rustix::fs::lgetxattr(&full, "security.capability", &mut [0u8; 0][..]).is_ok();
            if ft.is_dir() {
                if depth + 1 > MAX_DEPTH {
                    return Err(InspectError::TooDeep {
                        image: root.to_path_buf(),
                        path,
                    });
                }
                todo.push((path.clone(), depth + 1));
            }
            out.push(Entry {
                path,
                kind,
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size,
                target,
                capability,
            });
        }
    }
    Ok(out)
}

/// Opens the regular file `rel` beneath the folder `root`: no symlink followed in any
/// component, no escape by `..`, no blocking on a FIFO, and only a regular file accepted.
fn open_beneath(root: &Path, rel: &str) -> io::Result<fs::File> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = safefs::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(fs::File::from(fd))
}

impl Image {
    /// Opens a squashfs or EROFS `.raw` (by content, also inside a verity DDI) or a folder.
    /// The file is opened once, without blocking (a FIFO does not hang the call), and only a
    /// regular file is read: what is dissected is what is then read.
    pub fn open(path: &Path) -> Result<Image, InspectError> {
        let oerr = |source| InspectError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string_lossy().into_owned());
        let f = match safefs::tree::open_regular(path).map_err(oerr)? {
            Ok(f) => f,
            Err("a folder") => {
                let mut entries = walk_dir(path)?;
                entries.sort_by(|a, b| a.path.cmp(&b.path));
                return Ok(Image {
                    path: path.to_path_buf(),
                    name: file_name,
                    class: ImageClass::detect(entries.iter().map(|e| e.path.as_str())),
                    source: Source::Dir(path.to_path_buf()),
                    entries,
                    dissected: None,
                });
            }
            Err(kind) => {
                return Err(oerr(io::Error::other(format!(
                    "it is {kind}, not an image file or a folder"
                ))))
            }
        };
        // A DDI's file system is read in its partition, in place.
        let dissected = Dissected::open_file(&f, path)?;
        let (off, len) = (dissected.data_offset, dissected.data_bytes);
        let mut head = vec![0u8; fsimage::erofs::SUPER_OFFSET + 4];
        let n = read_at_most(&f, &mut head, off, len).map_err(oerr)?;
        head.truncate(n);
        // A squashfs or EROFS image, told apart by magic as systemd does.
        let (source, nodes) = if head.len() >= 4 && &head[..4] == fsimage::squashfs::MAGIC {
            let reader = Arc::new(SquashfsReader::open_file_range(f, path, off, Some(len))?);
            (Source::Squashfs(reader.clone()), reader.nodes().to_vec())
        } else if fsimage::erofs::is_erofs(&head) {
            let reader = Arc::new(ErofsReader::open_file_range(f, path, off, Some(len))?);
            (Source::Erofs(reader.clone()), reader.nodes().to_vec())
        } else {
            return Err(InspectError::UnknownFormat(path.to_path_buf()));
        };
        let entries: Vec<Entry> = nodes.into_iter().filter(|n| !n.path.is_empty()).collect();
        let class = ImageClass::detect(entries.iter().map(|e| e.path.as_str()));
        Ok(Image {
            path: path.to_path_buf(),
            name: class
                .image_name(&file_name)
                .unwrap_or(&file_name)
                .to_string(),
            class,
            source,
            entries,
            dissected: Some(dissected),
        })
    }

    /// The verity side of the image (a DDI or a naked verity image), if any.
    pub fn verity(&self) -> Option<&Protected> {
        self.dissected.as_ref()?.verity.as_ref()
    }

    /// Checks the image's dm-verity hash tree against its data and root hash in userspace
    /// (every block is read); `Ok(false)` when the image has no hash tree.
    pub fn verify(&self) -> Result<bool, InspectError> {
        let Some(d) = &self.dissected else {
            return Ok(false);
        };
        let Some(v) = &d.verity else {
            return Ok(false);
        };
        v.verify(d, 0).map_err(|source| InspectError::Verity {
            image: self.path.clone(),
            source,
        })?;
        Ok(true)
    }

    /// The same image under the name systemd will see it by: the name of the link that points
    /// to it (`/etc/extensions/NAME.raw`), not its own file name.
    pub fn with_name(mut self, name: &str) -> Image {
        self.name = name.to_string();
        self
    }

    /// The image name: the file name without ".raw" (or ".sysext.raw" / ".confext.raw" for
    /// its class), or the folder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sysext or confext, by the release file it holds ([`ImageClass::detect`]).
    pub fn class(&self) -> ImageClass {
        self.class
    }

    /// Every entry but the root, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The contents of the regular file at `path` (relative, e.g. "usr/bin/x"), at most
    /// [`MAX_READ`] bytes (a larger file is an error, nothing read).
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, InspectError> {
        self.read_file_limited(path, MAX_READ)
    }

    fn file_entry(&self, path: &str) -> Result<&Entry, InspectError> {
        let rel = path.trim_start_matches('/');
        self.entry(rel)
            .filter(|e| e.kind == EntryKind::File)
            .ok_or_else(|| InspectError::NotAFile {
                image: self.path.clone(),
                path: rel.to_string(),
            })
    }

    /// The entry at the relative `path`, if any (no symlink followed).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// [`Image::read_file`] with another limit than [`MAX_READ`].
    pub fn read_file_limited(&self, path: &str, limit: u64) -> Result<Vec<u8>, InspectError> {
        let e = self.file_entry(path)?;
        match &self.source {
            Source::Squashfs(r) => Ok(r.read_file(&e.path, limit)?),
            Source::Erofs(r) => Ok(r.read_file(&e.path, limit)?),
            Source::Dir(root) => {
                let p = root.join(&e.path);
                let rerr = |source| InspectError::Read {
                    path: p.clone(),
                    source,
                };
                let f = open_beneath(root, &e.path).map_err(rerr)?;
                let mut out = Vec::new();
                f.take(limit + 1).read_to_end(&mut out).map_err(rerr)?;
                if out.len() as u64 > limit {
                    return Err(InspectError::TooLarge {
                        image: self.path.clone(),
                        path: e.path.clone(),
                        limit,
                    });
                }
                Ok(out)
            }
        }
    }

    /// The bytes of the release file at `path` (relative): a regular file of the image, at
    /// most [`MAX_RELEASE_BYTES`] (read through [`crate::release::read_release_bounded`]).
    pub fn read_release(&self, path: &str) -> Result<Vec<u8>, InspectError> {
        let e = self.file_entry(path)?;
        let rel_err = |source| InspectError::Release {
            image: self.path.clone(),
            path: e.path.clone(),
            source,
        };
        let shown = PathBuf::from(&e.path);
        match &self.source {
            Source::Squashfs(r) => {
                let bytes = r.read_prefix(&e.path, MAX_RELEASE_BYTES + 1)?;
                crate::release::read_release_bounded(&bytes[..], &shown).map_err(rel_err)
            }
            Source::Erofs(r) => {
                let bytes = r.read_prefix(&e.path, MAX_RELEASE_BYTES + 1)?;
                crate::release::read_release_bounded(&bytes[..], &shown).map_err(rel_err)
            }
            Source::Dir(root) => {
                let f = open_beneath(root, &e.path).map_err(|source| {
                    rel_err(ReleaseError::Read {
                        path: shown.clone(),
                        source,
                    })
                })?;
                crate::release::read_release_bounded(f, &shown).map_err(rel_err)
            }
        }
    }

    /// The ELF scan of the regular file at `path` (relative), read in place with the image
    /// as its own root: `Ok(None)` when it is not ELF.
    pub fn scan_elf(&self, path: &str) -> Result<Option<ElfInfo>, ElfError> {
        let rel = path.trim_start_matches('/');
        match &self.source {
            Source::Squashfs(r) => r.scan_elf(rel),
            Source::Erofs(r) => r.scan_elf(rel),
            Source::Dir(root) => {
                let f = open_beneath(root, rel).map_err(|source| ElfError::Io {
                    path: root.join(rel),
                    source,
                })?;
                elf_closure::scan_reader(f, &root.join(rel).display().to_string())
            }
        }
    }

    /// The squashfs reader of a `.raw` image; `None` for a folder.
    pub fn squashfs(&self) -> Option<&SquashfsReader> {
        match &self.source {
            Source::Squashfs(r) => Some(r),
            Source::Erofs(_) | Source::Dir(_) => None,
        }
    }

    /// The image's tree (or its folder `under`, relative, "" for the whole image) as a
    /// read-only [`TreeView`] for a [`elf_closure::RootStack`]: entries and file contents
    /// come from the image in place, nothing is extracted, and a folder image's files are
    /// opened beneath it without following links.
    pub fn view(&self, under: &str) -> Arc<dyn TreeView> {
        let mut kinds = std::collections::HashMap::with_capacity(self.entries.len());
        let mut children: std::collections::HashMap<String, Vec<std::ffi::OsString>> =
            std::collections::HashMap::new();
        for e in &self.entries {
            let kind = match (e.kind, &e.target) {
                (EntryKind::Dir, _) => ViewKind::Dir,
                (EntryKind::File, _) => ViewKind::File,
                (EntryKind::Symlink, Some(t)) => ViewKind::Symlink(PathBuf::from(t)),
                _ => ViewKind::Other,
            };
            kinds.insert(e.path.clone(), kind);
            let (dir, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
            children
                .entry(dir.to_string())
                .or_default()
                .push(name.into());
        }
        Arc::new(ImageView {
            data: Arc::new(ViewData {
                origin: self.path.clone(),
                source: self.source.clone(),
                kinds,
                children,
            }),
            prefix: under.trim_matches('/').to_string(),
        })
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder of a folder image; `None` for a `.raw`.
    pub fn folder(&self) -> Option<&Path> {
        match &self.source {
            Source::Dir(root) => Some(root),
            Source::Squashfs(_) | Source::Erofs(_) => None,
        }
    }

    /// The first (up to) 20 bytes of a file (an ELF header), without reading it all.
    pub fn head(&self, e: &Entry) -> Option<Vec<u8>> {
        match &self.source {
            Source::Dir(root) => {
                let mut buf = Vec::with_capacity(20);
                let f = open_beneath(root, &e.path).ok()?;
                f.take(20).read_to_end(&mut buf).ok()?;
                Some(buf)
            }
            Source::Squashfs(r) => r.read_prefix(&e.path, 20).ok(),
            Source::Erofs(r) => r.read_prefix(&e.path, 20).ok(),
        }
    }

    /// A summary: release file, counts, sizes, ELF architectures, entries. A release file
    /// that cannot be read (too large, not a regular file) is an error naming it.
    pub fn info(&self) -> Result<ImageInfo, InspectError> {
        let release_rel = self
            .class
            .release_file(&self.name)
            .to_string_lossy()
            .into_owned();
        let release_prefix = format!("{}/extension-release.", self.class.release_dir());
        let release_file = self
            .entries
            .iter()
            .find(|e| e.path == release_rel && e.kind == EntryKind::File)
            .or_else(|| {
                self.entries
                    .iter()
                    .find(|e| e.kind == EntryKind::File && e.path.starts_with(&release_prefix))
            })
            .map(|e| e.path.clone());
        let release = match release_file.as_deref() {
            Some(p) => Some(String::from_utf8_lossy(&self.read_release(p)?).into_owned()),
            None => None,
        };
        let files: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .collect();
        let mut architectures: Vec<String> = Vec::new();
        for e in &files {
            if e.size < 20 {
                continue;
            }
            if let Some(arch) = self
                .head(e)
                .and_then(|h| crate::release::arch_from_elf_header(&h))
            {
                if !architectures.iter().any(|a| a == arch) {
                    architectures.push(arch.to_string());
                }
            }
        }
        architectures.sort();
        Ok(ImageInfo {
            name: self.name.clone(),
            class: self.class,
            path: self.path.clone(),
            format: match self.source {
                Source::Squashfs(_) => ImageFormat::Squashfs,
                Source::Erofs(_) => ImageFormat::Erofs,
                Source::Dir(_) => ImageFormat::Dir,
            },
            image_bytes: match self.source {
                Source::Squashfs(_) | Source::Erofs(_) => {
                    fs::metadata(&self.path).ok().map(|m| m.len())
                }
                Source::Dir(_) => None,
            },
            release_file,
            release,
            files: files.len() as u64,
            total_size: files.iter().map(|e| e.size).sum(),
            architectures,
            verity: self.verity().cloned(),
            entries: self.entries.clone(),
        })
    }
}

#[derive(Debug)]
struct ViewData {
    origin: PathBuf,
    source: Source,
    kinds: std::collections::HashMap<String, ViewKind>,
    children: std::collections::HashMap<String, Vec<std::ffi::OsString>>,
}

/// [`Image::view`]'s tree.
#[derive(Debug)]
struct ImageView {
    data: Arc<ViewData>,
    /// The image folder shown as the root ("" for the image root).
    prefix: String,
}

impl ImageView {
    /// The image-relative path of the inside-view path `inside`.
    fn rel(&self, inside: &Path) -> String {
        let inside = inside.to_string_lossy();
        let inside = inside.trim_matches('/');
        match (self.prefix.is_empty(), inside.is_empty()) {
            (true, _) => inside.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{inside}", self.prefix),
        }
    }

    fn regular(&self, rel: &str) -> io::Result<()> {
        match self.data.kinds.get(rel) {
            Some(ViewKind::File) => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file in the image", escape(rel)),
            )),
        }
    }
}

impl TreeView for ImageView {
    fn origin(&self) -> &Path {
        &self.data.origin
    }

    fn entry(&self, inside: &Path) -> Option<ViewKind> {
        let rel = self.rel(inside);
        if rel.is_empty() {
            return Some(ViewKind::Dir);
        }
        self.data.kinds.get(&rel).cloned()
    }

    fn names(&self, inside: &Path) -> Vec<std::ffi::OsString> {
        self.data
            .children
            .get(&self.rel(inside))
            .cloned()
            .unwrap_or_default()
    }

    fn read(&self, inside: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let rel = self.rel(inside);
        self.regular(&rel)?;
        match &self.data.source {
            Source::Squashfs(r) => r
                .read_prefix(&rel, limit)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            Source::Erofs(r) => r
                .read_prefix(&rel, limit)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            Source::Dir(root) => {
                let mut out = Vec::new();
                open_beneath(root, &rel)?
                    .take(limit)
                    .read_to_end(&mut out)?;
                Ok(out)
            }
        }
    }

    fn scan_elf(&self, inside: &Path) -> Result<Option<ElfInfo>, ElfError> {
        let rel = self.rel(inside);
        self.regular(&rel).map_err(|source| ElfError::Io {
            path: inside.to_path_buf(),
            source,
        })?;
        match &self.data.source {
            Source::Squashfs(r) => r.scan_elf(&rel),
            Source::Erofs(r) => r.scan_elf(&rel),
            Source::Dir(root) => {
                let f = open_beneath(root, &rel).map_err(|source| ElfError::Io {
                    path: root.join(&rel),
                    source,
                })?;
                elf_closure::scan_reader(f, &root.join(&rel).display().to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.raw");
        fs::write(&p, b"not an image at all").unwrap();
        let e = Image::open(&p).unwrap_err().to_string();
        assert!(e.contains("hsqs"), "{e}");
        let mut bad = b"hsqs".to_vec();
        bad.extend(std::iter::repeat_n(0xabu8, 200));
        fs::write(&p, &bad).unwrap();
        let e = Image::open(&p).unwrap_err().to_string();
        assert!(e.contains("not a valid squashfs image"), "{e}");
    }
}
