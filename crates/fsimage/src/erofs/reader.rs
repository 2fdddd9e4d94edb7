//! Reads an uncompressed EROFS image back, in place: its entries and file contents.
//!
//! Our own parser of the format the writer writes (and mkfs.erofs writes without
//! compression): 4 KiB blocks, compact and extended inodes, `FLAT_PLAIN` and `FLAT_INLINE`
//! data, inline and shared xattrs (for `security.capability`). An image using an incompatible
//! feature (compression, chunks, extra devices, long xattr prefixes, 48-bit addresses) is
//! refused as not read yet. The tree is walked iteratively with the same refusals as the
//! squashfs reader (`crates/fsimage/src/squashfs/reader.rs`): a duplicate name in one
//! directory, a name no path can name, a directory reached twice, folders deeper than
//! [`MAX_DEPTH`]. Every read is bounds-checked against the image; nothing is allocated by a
//! size an inode declares beyond the caller's limit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use elf_closure::{ElfError, ElfInfo};
use gentext::escape;

use crate::read_error::show_dir;
pub use crate::read_error::{ImageFormat, ReadError, MAX_DEPTH};
pub use crate::squashfs::reader::MAX_ELF_SCAN;
use crate::{Entry, EntryKind};

const BLK: u64 = super::BLOCK_SIZE as u64;
const NULL_ADDR: u32 = u32::MAX;
/// Longest symlink target read (PATH_MAX).
const MAX_TARGET: u64 = 4096;

/// Where an inode's data lies.
#[derive(Debug, Clone, Copy)]
struct Data {
    size: u64,
    /// First block of the data outside the inode.
    startblk: u32,
    /// Offset in the file where the inline part starts (`size` when there is none).
    inline_from: u64,
    /// Image offset of the inline part.
    inline_at: u64,
}

/// A parsed inode.
struct Inode {
    mode: u16,
    uid: u32,
    gid: u32,
    data: Data,
    capability: bool,
}

/// An open EROFS image.
pub struct ErofsReader {
    path: PathBuf,
    file: File,
    /// Where the image starts in the file.
    base: u64,
    len: u64,
    nodes: Vec<Entry>,
    files: HashMap<String, Data>,
}

impl std::fmt::Debug for ErofsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErofsReader")
            .field("path", &self.path)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

struct Super {
    meta: u64,
    xattr: u64,
    root: u64,
}

impl ErofsReader {
    /// Opens and indexes the image at `path` (see the module documentation for what makes an
    /// image refused).
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        Self::open_range(path, 0, None)
    }

    /// Opens the image that takes `len` bytes (default: the rest of the file) at `offset` of
    /// the file `path` (a partition of a disk image).
    pub fn open_range(path: &Path, offset: u64, len: Option<u64>) -> Result<Self, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let file_len = file
            .metadata()
            .map_err(|source| ReadError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let len = len
            .unwrap_or(file_len.saturating_sub(offset))
            .min(file_len.saturating_sub(offset));
        let mut r = Self {
            path: path.to_path_buf(),
            file,
            base: offset,
            len,
            nodes: Vec::new(),
            files: HashMap::new(),
        };
        let sb = r.superblock()?;
        r.walk(&sb)?;
        r.nodes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(r)
    }

    /// Every entry, sorted by path; the root is the entry with path "".
    pub fn nodes(&self) -> &[Entry] {
        &self.nodes
    }

    fn corrupt(&self, reason: impl Into<String>) -> ReadError {
        ReadError::Corrupt {
            format: ImageFormat::Erofs,
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// `buf.len()` bytes at `at`, all inside the image.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> Result<(), ReadError> {
        let end = at.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(self.corrupt(format!(
                "a read of {} bytes at offset {at} goes past the end ({} bytes)",
                buf.len(),
                self.len
            )));
        }
        self.file
            .read_exact_at(buf, self.base + at)
            .map_err(|e| self.corrupt(format!("cannot read {} bytes at {at}: {e}", buf.len())))
    }

    fn superblock(&self) -> Result<Super, ReadError> {
        let mut b = [0u8; 128];
        self.read_exact_at(&mut b, super::SUPER_OFFSET as u64)?;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        if u32_at(0) != super::MAGIC {
            return Err(self.corrupt("no EROFS magic at offset 1024"));
        }
        let unsupported = |what: String| ReadError::Unsupported {
            path: self.path.clone(),
            what,
        };
        if b[12] != 12 {
            return Err(unsupported(format!(
                "{}-byte blocks",
                1u64 << b[12].min(63)
            )));
        }
        let incompat = u32_at(80);
        if incompat != 0 {
            return Err(unsupported(format!(
                "incompatible features {incompat:#x} (compression, chunks, devices, long xattr prefixes or 48-bit addresses)"
            )));
        }
        Ok(Super {
            root: u64::from(u16::from_le_bytes([b[14], b[15]])),
            meta: u64::from(u32_at(40)) * BLK,
            xattr: u64::from(u32_at(44)) * BLK,
        })
    }

    fn inode(&self, sb: &Super, nid: u64) -> Result<Inode, ReadError> {
        let at = nid
            .checked_mul(32)
            .and_then(|o| o.checked_add(sb.meta))
            .ok_or_else(|| self.corrupt(format!("inode {nid} lies beyond any image")))?;
        let mut b = [0u8; 64];
        self.read_exact_at(&mut b[..32], at)?;
        let format = u16::from_le_bytes([b[0], b[1]]);
        let extended = format & 1 == 1;
        let layout = (format >> 1) & 7;
        if extended {
            self.read_exact_at(&mut b[32..], at + 32)?;
        }
        let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().expect("2 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let icount = u64::from(u16_at(2));
        let mode = u16_at(4);
        let (size, i_u, uid, gid) = if extended {
            let size = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
            (size, u32_at(16), u32_at(24), u32_at(28))
        } else {
            (
                u64::from(u32_at(8)),
                u32_at(16),
                u32::from(u16_at(24)),
                u32::from(u16_at(26)),
            )
        };
        let isize = if extended { 64 } else { 32 };
        let xattr_len = if icount == 0 {
            0
        } else {
            12 + (icount - 1) * 4
        };
        let capability = icount > 0 && self.has_capability(sb, at + isize, xattr_len)?;
        let data_layout = matches!(mode & 0o170000, 0o100000 | 0o040000 | 0o120000);
        let data = match layout {
            _ if !data_layout => Data {
                size: 0,
                startblk: NULL_ADDR,
                inline_from: 0,
                inline_at: 0,
            },
            0 => Data {
                size,
                startblk: i_u,
                inline_from: size,
                inline_at: 0,
            },
            2 => {
                let inline_from = size.div_ceil(BLK).saturating_sub(1) * BLK;
                let inline_at = at + isize + xattr_len;
                if inline_at % BLK + (size - inline_from) > BLK {
                    return Err(self.corrupt(format!(
                        "inode {nid}: its inline data crosses a block boundary"
                    )));
                }
                Data {
                    size,
                    startblk: i_u,
                    inline_from,
                    inline_at,
                }
            }
            other => {
                return Err(ReadError::Unsupported {
                    path: self.path.clone(),
                    what: format!("an inode of data layout {other} (compressed or chunked)"),
                })
            }
        };
        Ok(Inode {
            mode,
            uid,
            gid,
            data,
            capability,
        })
    }

    /// Whether the xattr body at `at` (inline entries and shared ids) holds
    /// `security.capability`.
    fn has_capability(&self, sb: &Super, at: u64, len: u64) -> Result<bool, ReadError> {
        if len > 12 + 4 * u64::from(u16::MAX) {
            return Err(self.corrupt("an xattr body larger than its count allows"));
        }
        let mut body = vec![0u8; len as usize];
        self.read_exact_at(&mut body, at)?;
        let shared = usize::from(body[4]);
        let mut pos = 12 + 4 * shared;
        if pos > body.len() {
            return Err(self.corrupt("more shared xattrs than the xattr body holds"));
        }
        let is_cap = |index: u8, name: &[u8]| index == 6 && name == b"capability";
        for i in 0..shared {
            let id = u32::from_le_bytes(body[12 + 4 * i..16 + 4 * i].try_into().expect("4"));
            let mut head = [0u8; 4 + 10];
            self.read_exact_at(&mut head, sb.xattr + u64::from(id) * 4)?;
            if head[0] as usize == 10 && is_cap(head[1], &head[4..14]) {
                return Ok(true);
            }
        }
        while pos + 4 <= body.len() {
            let name_len = usize::from(body[pos]);
            let value_len = usize::from(u16::from_le_bytes([body[pos + 2], body[pos + 3]]));
            let end = pos + 4 + name_len + value_len;
            if end > body.len() {
                return Err(self.corrupt("an xattr entry runs past its inode's xattr body"));
            }
            if is_cap(body[pos + 1], &body[pos + 4..pos + 4 + name_len]) {
                return Ok(true);
            }
            pos = end.next_multiple_of(4);
        }
        Ok(false)
    }

    /// Reads `buf.len()` bytes of a file's data at `off` (inside its size).
    fn read_data(&self, d: &Data, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let mut done = 0;
        while done < buf.len() {
            let o = off + done as u64;
            let (at, n) = if o >= d.inline_from {
                (d.inline_at + (o - d.inline_from), buf.len() - done)
            } else {
                if d.startblk == NULL_ADDR {
                    return Err(self.corrupt("file data points at no block"));
                }
                let n = (d.inline_from - o).min((buf.len() - done) as u64) as usize;
                let at = (u64::from(d.startblk) * BLK)
                    .checked_add(o)
                    .ok_or_else(|| self.corrupt("file data lies beyond any image"))?;
                (at, n)
            };
            self.read_exact_at(&mut buf[done..done + n], at)?;
            done += n;
        }
        Ok(())
    }

    fn walk(&mut self, sb: &Super) -> Result<(), ReadError> {
        let root = self.inode(sb, sb.root)?;
        if root.mode & 0o170000 != 0o040000 {
            return Err(self.corrupt("the root inode is not a directory"));
        }
        self.nodes
            .push(entry(String::new(), &root, EntryKind::Dir, None));
        let mut visited = HashSet::from([sb.root]);
        let mut todo = vec![(root.data, String::new(), 0usize)];
        while let Some((dir, dir_path, depth)) = todo.pop() {
            let mut seen = HashSet::new();
            for (raw, nid) in self.dirents(&dir, &dir_path)? {
                let name = String::from_utf8_lossy(&raw).into_owned();
                if raw == b"." || raw == b".." {
                    continue;
                }
                if raw.is_empty() || raw.contains(&b'/') || raw.contains(&0) {
                    return Err(ReadError::BadName {
                        path: self.path.clone(),
                        dir: dir_path,
                        name,
                    });
                }
                if !seen.insert(raw) {
                    return Err(ReadError::Duplicate {
                        format: ImageFormat::Erofs,
                        path: self.path.clone(),
                        dir: dir_path,
                        name,
                    });
                }
                let path = if dir_path.is_empty() {
                    name
                } else {
                    format!("{dir_path}/{name}")
                };
                let inode = self.inode(sb, nid)?;
                let (kind, target) = match inode.mode & 0o170000 {
                    0o040000 => {
                        if depth + 1 > MAX_DEPTH {
                            return Err(ReadError::TooDeep {
                                path: self.path.clone(),
                                dir: path,
                            });
                        }
                        if !visited.insert(nid) {
                            return Err(self.corrupt(format!(
                                "directory {} is reached twice (a loop)",
                                escape(&path)
                            )));
                        }
                        todo.push((inode.data, path.clone(), depth + 1));
                        (EntryKind::Dir, None)
                    }
                    0o100000 => {
                        self.files.insert(path.clone(), inode.data);
                        (EntryKind::File, None)
                    }
                    0o120000 => {
                        if inode.data.size > MAX_TARGET {
                            return Err(self.corrupt(format!(
                                "symlink {} is {} bytes long",
                                escape(&path),
                                inode.data.size
                            )));
                        }
                        let mut t = vec![0u8; inode.data.size as usize];
                        self.read_data(&inode.data, 0, &mut t)?;
                        (
                            EntryKind::Symlink,
                            Some(String::from_utf8_lossy(&t).into_owned()),
                        )
                    }
                    0o020000 => (EntryKind::CharDevice, None),
                    0o060000 => (EntryKind::BlockDevice, None),
                    0o010000 => (EntryKind::Fifo, None),
                    0o140000 => (EntryKind::Socket, None),
                    other => {
                        return Err(self.corrupt(format!(
                            "{} has the unknown file type {other:#o}",
                            escape(&path)
                        )))
                    }
                };
                self.nodes.push(entry(path, &inode, kind, target));
            }
        }
        Ok(())
    }

    /// A directory's entries (name, nid), block by block.
    fn dirents(&self, dir: &Data, dir_path: &str) -> Result<Vec<(Vec<u8>, u64)>, ReadError> {
        let bad = |why: &str| self.corrupt(format!("directory {}: {why}", show_dir(dir_path)));
        let mut out = Vec::new();
        let mut block = vec![0u8; BLK as usize];
        let mut off = 0;
        while off < dir.size {
            let n = (dir.size - off).min(BLK) as usize;
            let b = &mut block[..n];
            self.read_data(dir, off, b)?;
            let first = if n >= 12 {
                usize::from(u16::from_le_bytes([b[8], b[9]]))
            } else {
                0
            };
            if first < 12 || first % 12 != 0 || first > n {
                return Err(bad("a block's first name offset is out of range"));
            }
            let count = first / 12;
            for i in 0..count {
                let d = &b[i * 12..i * 12 + 12];
                let nid = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
                let start = usize::from(u16::from_le_bytes([d[8], d[9]]));
                let end = if i + 1 < count {
                    usize::from(u16::from_le_bytes([b[i * 12 + 20], b[i * 12 + 21]]))
                } else {
                    b[start.min(n)..]
                        .iter()
                        .position(|&c| c == 0)
                        .map_or(n, |p| start + p)
                };
                if start < first || end < start || end > n {
                    return Err(bad("a name lies outside its block"));
                }
                out.push((b[start..end].to_vec(), nid));
            }
            off += n as u64;
        }
        Ok(out)
    }

    fn file<'p>(&self, rel_path: &'p str) -> Result<(&'p str, Data), ReadError> {
        let want = rel_path.trim_start_matches('/');
        self.files
            .get(want)
            .map(|d| (want, *d))
            .ok_or_else(|| ReadError::NotAFile {
                image: self.path.clone(),
                path: want.to_string(),
            })
    }

    /// The contents of the regular file at `rel_path` (relative, e.g. "usr/bin/x"), when it
    /// holds at most `limit` bytes; [`ReadError::TooLarge`] (and nothing read) otherwise.
    pub fn read_file(&self, rel_path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let (want, d) = self.file(rel_path)?;
        if d.size > limit {
            return Err(ReadError::TooLarge {
                image: self.path.clone(),
                path: want.to_string(),
                limit,
            });
        }
        self.read_prefix(rel_path, limit)
    }

    /// At most the first `limit` bytes of the regular file at `rel_path`.
    pub fn read_prefix(&self, rel_path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let (_, d) = self.file(rel_path)?;
        let n = d.size.min(limit).min(self.len);
        let mut out = vec![0u8; n as usize];
        self.read_data(&d, 0, &mut out)?;
        Ok(out)
    }

    /// The ELF scan ([`elf_closure::scan_reader`]) of the regular file at `rel_path`, read in
    /// place within the first [`MAX_ELF_SCAN`] bytes. `Ok(None)` when it is not an ELF file.
    pub fn scan_elf(&self, rel_path: &str) -> Result<Option<ElfInfo>, ElfError> {
        let (want, d) = self.file(rel_path).map_err(|e| ElfError::Io {
            path: PathBuf::from(rel_path),
            source: io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        })?;
        let cursor = Cursor {
            r: self,
            data: d,
            len: d.size.min(MAX_ELF_SCAN),
            pos: 0,
        };
        elf_closure::scan_reader(cursor, &format!("{want} in {}", self.path.display()))
    }
}

fn entry(path: String, inode: &Inode, kind: EntryKind, target: Option<String>) -> Entry {
    Entry {
        path,
        kind,
        mode: u32::from(inode.mode & 0o7777),
        uid: inode.uid,
        gid: inode.gid,
        size: match kind {
            EntryKind::File | EntryKind::Symlink => inode.data.size,
            _ => 0,
        },
        target,
        capability: inode.capability,
    }
}

/// A regular file of the image as `Read + Seek`.
struct Cursor<'a> {
    r: &'a ErofsReader,
    data: Data,
    len: u64,
    pos: u64,
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        self.r
            .read_data(&self.data, self.pos, &mut buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        self.pos = new;
        Ok(new)
    }
}
