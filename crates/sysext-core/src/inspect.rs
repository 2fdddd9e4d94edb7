//! Read an extension image back: a squashfs `.raw` (recognised by its `hsqs` magic, whatever
//! its name) or a folder. Lists entries, reads files, and summarises the image: release file,
//! file count, sizes and the CPU architectures of the ELF files inside.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::squashfs::reader::{ReadError, SquashfsReader};

/// Errors from [`Image::open`] and [`Image::read_file`].
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot open image {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is neither a squashfs image (no \"hsqs\" magic) nor a folder; pass a NAME.raw made by `sysext pack` or mksquashfs, or an extension folder", .0.display())]
    UnknownFormat(PathBuf),
    #[error(transparent)]
    Squashfs(#[from] ReadError),
    #[error("cannot read {} in the folder image", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path:?} is not a regular file in the image {}", image.display())]
    NotAFile { image: PathBuf, path: String },
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One entry of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Relative path, e.g. "usr/bin/x" (the root itself is not listed in [`Image::entries`];
    /// [`SquashfsReader::nodes`] lists it with the path "").
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (0o7777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// File size; symlink target length; 0 otherwise.
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
}

/// The image's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Squashfs,
    Dir,
}

/// A summary of an image.
#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
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
    pub entries: Vec<Entry>,
}

enum Source {
    Squashfs(Box<SquashfsReader>),
    Dir(PathBuf),
}

/// An opened image.
pub struct Image {
    path: PathBuf,
    name: String,
    source: Source,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .finish()
    }
}

fn walk_dir(root: &Path, rel: &str, out: &mut Vec<Entry>) -> Result<(), InspectError> {
    let dir = root.join(rel);
    let rerr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InspectError::Read { path, source }
    };
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
        out.push(Entry {
            path: path.clone(),
            kind,
            mode: m.permissions().mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size,
            target,
        });
        if ft.is_dir() {
            walk_dir(root, &path, out)?;
        }
    }
    Ok(())
}

impl Image {
    /// Opens a squashfs `.raw` (by content) or a folder.
    pub fn open(path: &Path) -> Result<Image, InspectError> {
        let oerr = |source| InspectError::Open {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(oerr)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.to_string_lossy().into_owned());
        if meta.is_dir() {
            let mut entries = Vec::new();
            walk_dir(path, "", &mut entries)?;
            entries.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok(Image {
                path: path.to_path_buf(),
                name: file_name,
                source: Source::Dir(path.to_path_buf()),
                entries,
            });
        }
        let mut magic = [0u8; 4];
        let mut f = fs::File::open(path).map_err(oerr)?;
        let n = f.read(&mut magic).map_err(oerr)?;
        if n < 4 || &magic != crate::squashfs::MAGIC {
            return Err(InspectError::UnknownFormat(path.to_path_buf()));
        }
        let reader = SquashfsReader::open(path)?;
        let entries = reader
            .nodes()
            .iter()
            .filter(|n| !n.path.is_empty())
            .cloned()
            .collect();
        Ok(Image {
            path: path.to_path_buf(),
            name: file_name
                .strip_suffix(".raw")
                .unwrap_or(&file_name)
                .to_string(),
            source: Source::Squashfs(Box::new(reader)),
            entries,
        })
    }

    /// The image name: the file name without ".raw", or the folder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every entry but the root, sorted by path.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The contents of the regular file at `path` (relative, e.g. "usr/bin/x").
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, InspectError> {
        let rel = path.trim_start_matches('/');
        let is_file = self
            .entries
            .iter()
            .any(|e| e.path == rel && e.kind == EntryKind::File);
        if !is_file {
            return Err(InspectError::NotAFile {
                image: self.path.clone(),
                path: rel.to_string(),
            });
        }
        match &self.source {
            Source::Squashfs(r) => Ok(r.read_file(rel)?),
            Source::Dir(root) => {
                let p = root.join(rel);
                fs::read(&p).map_err(|source| InspectError::Read { path: p, source })
            }
        }
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder of a folder image; `None` for a `.raw`.
    pub fn folder(&self) -> Option<&Path> {
        match &self.source {
            Source::Dir(root) => Some(root),
            Source::Squashfs(_) => None,
        }
    }

    /// The first (up to) 20 bytes of a file (an ELF header), without reading it all.
    pub fn head(&self, e: &Entry) -> Option<Vec<u8>> {
        match &self.source {
            Source::Dir(root) => {
                let mut buf = vec![0u8; 20];
                let mut f = fs::File::open(root.join(&e.path)).ok()?;
                let n = f.read(&mut buf).ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Source::Squashfs(r) => r.read_prefix(&e.path, 20).ok(),
        }
    }

    /// A summary: release file, counts, sizes, ELF architectures, entries.
    pub fn info(&self) -> ImageInfo {
        let release_rel = format!(
            "usr/lib/extension-release.d/extension-release.{}",
            self.name
        );
        let release_file = self
            .entries
            .iter()
            .find(|e| e.path == release_rel && e.kind == EntryKind::File)
            .or_else(|| {
                self.entries.iter().find(|e| {
                    e.kind == EntryKind::File
                        && e.path
                            .starts_with("usr/lib/extension-release.d/extension-release.")
                })
            })
            .map(|e| e.path.clone());
        let release = release_file
            .as_deref()
            .and_then(|p| self.read_file(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned());
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
            if let Some(arch) = self.head(e).and_then(|h| elf_arch(&h)) {
                if !architectures.iter().any(|a| a == arch) {
                    architectures.push(arch.to_string());
                }
            }
        }
        architectures.sort();
        ImageInfo {
            name: self.name.clone(),
            path: self.path.clone(),
            format: match self.source {
                Source::Squashfs(_) => ImageFormat::Squashfs,
                Source::Dir(_) => ImageFormat::Dir,
            },
            image_bytes: match self.source {
                Source::Squashfs(_) => fs::metadata(&self.path).ok().map(|m| m.len()),
                Source::Dir(_) => None,
            },
            release_file,
            release,
            files: files.len() as u64,
            total_size: files.iter().map(|e| e.size).sum(),
            architectures,
            entries: self.entries.clone(),
        }
    }
}

/// systemd's architecture name from an ELF header (first 20 bytes); None if not ELF or unknown.
/// The table is [`crate::release::arch_from_elf`]'s.
fn elf_arch(h: &[u8]) -> Option<&'static str> {
    if h.len() < 20 || &h[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match h[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match h[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let machine = if le {
        u16::from_le_bytes([h[18], h[19]])
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    crate::release::arch_from_elf(machine, class64, le)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend_from_slice(&[class, data, 1, 0]);
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&2u16.to_le_bytes());
        if data == 1 {
            h.extend_from_slice(&machine.to_le_bytes());
        } else {
            h.extend_from_slice(&machine.to_be_bytes());
        }
        h
    }

    #[test]
    fn elf_architectures() {
        assert_eq!(elf_arch(&header(2, 1, 62)), Some("x86-64"));
        assert_eq!(elf_arch(&header(2, 1, 183)), Some("arm64"));
        assert_eq!(elf_arch(&header(1, 1, 3)), Some("x86"));
        assert_eq!(elf_arch(&header(1, 1, 40)), Some("arm"));
        assert_eq!(elf_arch(&header(2, 1, 21)), Some("ppc64-le"));
        assert_eq!(elf_arch(&header(2, 2, 22)), Some("s390x"));
        assert_eq!(elf_arch(&header(2, 1, 9999)), None);
        assert_eq!(elf_arch(b"#!/bin/sh\n0123456789"), None);
        assert_eq!(elf_arch(b"\x7fELF"), None);
    }

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
