//! Reads a squashfs image back: its entries and file contents, without extracting anything.
//!
//! Built on `backhand`'s parser (independent of our writer, so a round trip through both is a
//! real check) for the superblock, the inode and directory tables and file data. The tree is
//! walked here, iteratively (backhand's own walk recurses once per folder level, so a deep
//! image would overflow the stack): every directory listing is checked while it is read, and
//! an image is refused as malformed when
//! - a directory holds two entries with the same name (the kernel's lookup returns the first
//!   one, a reader keeping the last would judge another file than the host sees),
//! - a name is empty, `.`, `..` or holds `/` or NUL (no path names such an entry),
//! - a directory is reached twice (a loop),
//! - folders nest deeper than [`MAX_DEPTH`] levels.
//!
//! `security.capability` xattrs are read from the xattr table (backhand does not read xattrs)
//! and reported per entry ([`Node::capability`]). File reads always carry a limit
//! ([`SquashfsReader::read_file`], [`SquashfsReader::read_prefix`]) and never allocate by the
//! size an inode declares; [`SquashfsReader::scan_elf`] reads only the parts of a file the ELF
//! scan asks for. Corrupt input is an error, never a panic: every call into the parser runs
//! under `catch_unwind` as a second line of defence.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use backhand::v4::inode::{BasicDirectory, InodeInner};
use backhand::{FilesystemReader, Inode, Squashfs, SquashfsFileReader};

use elf_closure::{ElfError, ElfInfo};
use gentext::escape;

use crate::read_error::show_dir;
pub use crate::read_error::{ImageFormat, ReadError, MAX_DEPTH};

/// How far into one file [`SquashfsReader::scan_elf`] may read (its headers, dynamic section
/// and strings must lie within): 1 GiB.
pub const MAX_ELF_SCAN: u64 = 1 << 30;

/// The entries of an image are [`crate::Entry`]s: the same for a squashfs image and a folder.
pub use crate::{Entry as Node, EntryKind as NodeKind};

/// An open squashfs image.
pub struct SquashfsReader {
    path: PathBuf,
    /// backhand's reader, used for file data only (its node list holds just the root).
    fs: FilesystemReader<'static>,
    nodes: Vec<Node>,
    /// Relative path of each regular file → its data layout.
    files: HashMap<String, SquashfsFileReader>,
}

impl std::fmt::Debug for SquashfsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SquashfsReader")
            .field("path", &self.path)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

fn panic_reason(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "parser failure".into())
}

/// One parsed directory entry: its name and inode number.
type DirEntry = (Vec<u8>, u32);

/// Parses a directory listing (the kernel's `squashfs_dir_header` + `squashfs_dir_entry`
/// records, little-endian). Truncated records are an error.
fn parse_listing(mut bytes: &[u8]) -> Result<Vec<DirEntry>, String> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        if b.len() < n {
            return Err("directory listing is truncated".into());
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = take(&mut bytes, 12)?;
        let count = u32_at(h, 0) as usize + 1;
        let base = u32_at(h, 8);
        // The kernel refuses more than 256 entries behind one header.
        if count > 256 {
            return Err(format!("directory header announces {count} entries"));
        }
        for _ in 0..count {
            let e = take(&mut bytes, 8)?;
            let delta = u16_at(e, 2) as i16;
            let name_len = usize::from(u16_at(e, 6)) + 1;
            let name = take(&mut bytes, name_len)?;
            let ino = u32::try_from(i64::from(base) + i64::from(delta))
                .map_err(|_| "directory entry points at an inode number out of range")?;
            out.push((name.to_vec(), ino));
        }
    }
    Ok(out)
}

/// The listing bytes of a directory inode; `None` for an empty directory.
fn listing<'s>(sq: &'s Squashfs<'static>, inode: &Inode) -> Result<Option<&'s [u8]>, String> {
    let (block, size, offset) = match &inode.inner {
        InodeInner::BasicDirectory(d) => (
            u64::from(d.block_index),
            u64::from(d.file_size),
            usize::from(d.block_offset),
        ),
        InodeInner::ExtendedDirectory(d) => (
            u64::from(d.block_index),
            u64::from(d.file_size),
            usize::from(d.block_offset),
        ),
        _ => return Err("a directory entry's inode is not a directory".into()),
    };
    // The stored size counts 3 bytes more than the listing ("." and ".." in the kernel).
    if size < 4 {
        return Ok(None);
    }
    let start = *sq
        .dir_blocks
        .0
        .get(&block)
        .ok_or("directory points outside the directory table")?;
    let bytes = usize::try_from(start)
        .ok()
        .and_then(|s| sq.dir_blocks.1.get(s..))
        .and_then(|b| b.get(offset..))
        .and_then(|b| b.get(..usize::try_from(size - 3).ok()?))
        .ok_or("directory listing lies outside the directory table")?;
    Ok(Some(bytes))
}

/// What the walk found.
struct Walk {
    nodes: Vec<Node>,
    files: HashMap<String, SquashfsFileReader>,
    /// (index into `nodes`, xattr index) of entries with xattrs.
    xattrs: Vec<(usize, u32)>,
}

fn id_of(sq: &Squashfs<'static>, idx: u16) -> Result<u32, String> {
    sq.id
        .get(usize::from(idx))
        .map(|i| i.num)
        .ok_or_else(|| format!("uid/gid index {idx} is not in the id table"))
}

/// Walks the tree from the root inode, iteratively, checking each listing (see the module
/// documentation).
fn walk(sq: &Squashfs<'static>, image: &Path) -> Result<Walk, ReadError> {
    let corrupt = |reason: String| ReadError::Corrupt {
        format: ImageFormat::Squashfs,
        path: image.to_path_buf(),
        reason,
    };
    let mut out = Walk {
        nodes: Vec::new(),
        files: HashMap::new(),
        xattrs: Vec::new(),
    };
    let root = &sq.root_inode;
    out.nodes.push(Node {
        path: String::new(),
        kind: NodeKind::Dir,
        mode: u32::from(root.header.permissions) & 0o7777,
        uid: id_of(sq, root.header.uid).map_err(corrupt)?,
        gid: id_of(sq, root.header.gid).map_err(corrupt)?,
        size: 0,
        target: None,
        capability: false,
    });
    if let InodeInner::ExtendedDirectory(d) = &root.inner {
        if d.xattr_index != u32::MAX {
            out.xattrs.push((0, d.xattr_index));
        }
    }
    let mut visited: HashSet<u32> = HashSet::from([root.header.inode_number]);
    // (directory inode, its relative path, its depth)
    let mut todo: Vec<(&Inode, String, usize)> = vec![(root, String::new(), 0)];
    while let Some((dir, dir_path, depth)) = todo.pop() {
        let Some(bytes) = listing(sq, dir).map_err(corrupt)? else {
            continue;
        };
        let entries = parse_listing(bytes)
            .map_err(|r| corrupt(format!("directory {}: {r}", show_dir(&dir_path))))?;
        let mut seen: HashSet<String> = HashSet::with_capacity(entries.len());
        for (raw, ino) in entries {
            let name = String::from_utf8_lossy(&raw).into_owned();
            if raw.is_empty()
                || raw == b"."
                || raw == b".."
                || raw.contains(&b'/')
                || raw.contains(&0)
            {
                return Err(ReadError::BadName {
                    path: image.to_path_buf(),
                    dir: dir_path,
                    name,
                });
            }
            if !seen.insert(name.clone()) {
                return Err(ReadError::Duplicate {
                    format: ImageFormat::Squashfs,
                    path: image.to_path_buf(),
                    dir: dir_path,
                    name,
                });
            }
            let path = if dir_path.is_empty() {
                name
            } else {
                format!("{dir_path}/{name}")
            };
            let inode = sq.inodes.get(&ino).ok_or_else(|| {
                corrupt(format!(
                    "{} points at inode {ino}, which is not in the inode table",
                    escape(&path)
                ))
            })?;
            let mut xattr = u32::MAX;
            let (kind, size, target) = match &inode.inner {
                InodeInner::BasicDirectory(_) | InodeInner::ExtendedDirectory(_) => {
                    if let InodeInner::ExtendedDirectory(d) = &inode.inner {
                        xattr = d.xattr_index;
                    }
                    if depth + 1 > MAX_DEPTH {
                        return Err(ReadError::TooDeep {
                            path: image.to_path_buf(),
                            dir: path,
                        });
                    }
                    if !visited.insert(ino) {
                        return Err(corrupt(format!(
                            "directory {} is reached twice (a loop in the directory table)",
                            escape(&path)
                        )));
                    }
                    todo.push((inode, path.clone(), depth + 1));
                    (NodeKind::Dir, 0, None)
                }
                InodeInner::BasicFile(f) => {
                    out.files
                        .insert(path.clone(), SquashfsFileReader::Basic(f.clone()));
                    (NodeKind::File, u64::from(f.file_size), None)
                }
                InodeInner::ExtendedFile(f) => {
                    xattr = f.xattr_index;
                    out.files
                        .insert(path.clone(), SquashfsFileReader::Extended(f.clone()));
                    (NodeKind::File, f.file_size, None)
                }
                InodeInner::BasicSymlink(s) => (
                    NodeKind::Symlink,
                    s.target_path.len() as u64,
                    Some(String::from_utf8_lossy(&s.target_path).into_owned()),
                ),
                InodeInner::ExtendedSymlink(s) => {
                    xattr = s.xattr_index;
                    (
                        NodeKind::Symlink,
                        s.target_path.len() as u64,
                        Some(String::from_utf8_lossy(&s.target_path).into_owned()),
                    )
                }
                InodeInner::BasicBlockDevice(_) => (NodeKind::BlockDevice, 0, None),
                InodeInner::ExtendedBlockDevice(d) => {
                    xattr = d.xattr_index;
                    (NodeKind::BlockDevice, 0, None)
                }
                InodeInner::BasicCharacterDevice(_) => (NodeKind::CharDevice, 0, None),
                InodeInner::ExtendedCharacterDevice(d) => {
                    xattr = d.xattr_index;
                    (NodeKind::CharDevice, 0, None)
                }
                InodeInner::BasicNamedPipe(_) => (NodeKind::Fifo, 0, None),
                InodeInner::ExtendedNamedPipe(d) => {
                    xattr = d.xattr_index;
                    (NodeKind::Fifo, 0, None)
                }
                InodeInner::BasicSocket(_) => (NodeKind::Socket, 0, None),
                InodeInner::ExtendedSocket(d) => {
                    xattr = d.xattr_index;
                    (NodeKind::Socket, 0, None)
                }
            };
            if xattr != u32::MAX {
                out.xattrs.push((out.nodes.len(), xattr));
            }
            out.nodes.push(Node {
                path,
                kind,
                mode: u32::from(inode.header.permissions) & 0o7777,
                uid: id_of(sq, inode.header.uid).map_err(corrupt)?,
                gid: id_of(sq, inode.header.gid).map_err(corrupt)?,
                size,
                target,
                capability: false,
            });
        }
    }
    Ok(out)
}

/// Metadata blocks read one after another from `next` (the kernel's metadata stream), with
/// what was read and not yet consumed in `buf`.
struct MetaStream<'r> {
    file: &'r mut Box<dyn backhand::BufReadSeek + 'static>,
    next: u64,
    end: u64,
    buf: Vec<u8>,
}

impl MetaStream<'_> {
    fn take(
        &mut self,
        n: usize,
        sq: &backhand::SuperBlock,
        kind: &backhand::kind::Kind,
    ) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            if self.next >= self.end {
                return Err("xattr table is truncated".into());
            }
            self.file
                .seek(SeekFrom::Start(self.next))
                .map_err(|e| e.to_string())?;
            let block = backhand::v4::metadata::read_block(&mut *self.file, sq, kind)
                .map_err(|e| e.to_string())?;
            self.next = self.file.stream_position().map_err(|e| e.to_string())?;
            self.buf.extend_from_slice(&block);
        }
        Ok(self.buf.drain(..n).collect())
    }
}

/// The xattr indexes (of `wanted`) whose set holds `security.capability`.
fn capability_sets(
    sq: &mut Squashfs<'static>,
    wanted: &HashSet<u32>,
) -> Result<HashSet<u32>, String> {
    let mut found = HashSet::new();
    let table = sq.superblock.xattr_table;
    if wanted.is_empty() || table == backhand::v4::squashfs::NOT_SET {
        return Ok(found);
    }
    let superblock = sq.superblock;
    let kind = sq.kind.clone();
    let file = &mut sq.file;
    let total = file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
    let read_at = |file: &mut Box<dyn backhand::BufReadSeek>, at: u64, n: usize| {
        let mut b = vec![0u8; n];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut b))
            .map(|_| b)
            .map_err(|e| format!("reading the xattr table at {at}: {e}"))
    };
    // squashfs_xattr_id_table: kv start, id count, unused; then the id blocks' positions.
    let head = read_at(file, table, 16)?;
    let kv_start = u64::from_le_bytes(head[0..8].try_into().expect("8 bytes"));
    let ids = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let id_blocks = (u64::from(ids) * 16).div_ceil(8192);
    if table + 16 + id_blocks * 8 > total || kv_start > table {
        return Err("xattr table lies outside the image".into());
    }
    let ptrs = read_at(file, table + 16, (id_blocks * 8) as usize)?;
    let ptr = |i: u64| {
        let o = (i * 8) as usize;
        u64::from_le_bytes(ptrs[o..o + 8].try_into().expect("8 bytes"))
    };
    let mut id_cache: HashMap<u64, Vec<u8>> = HashMap::new();
    for &idx in wanted {
        if idx >= ids {
            return Err(format!(
                "xattr index {idx} is beyond the {ids} in the table"
            ));
        }
        let pos = u64::from(idx) * 16;
        let (blk, off) = (pos / 8192, (pos % 8192) as usize);
        let block = match id_cache.entry(blk) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                file.seek(SeekFrom::Start(ptr(blk)))
                    .map_err(|e| e.to_string())?;
                v.insert(
                    backhand::v4::metadata::read_block(&mut *file, &superblock, &kind)
                        .map_err(|e| e.to_string())?,
                )
            }
        };
        let entry = block
            .get(off..off + 16)
            .ok_or("xattr id entry lies outside its block")?;
        let xref = u64::from_le_bytes(entry[0..8].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(entry[8..12].try_into().expect("4 bytes"));
        let mut stream = MetaStream {
            file: &mut *file,
            next: kv_start + (xref >> 16),
            end: table,
            buf: Vec::new(),
        };
        // Skip to the offset inside the first block.
        stream.take((xref & 0xffff) as usize, &superblock, &kind)?;
        for _ in 0..count.min(65_536) {
            let k = stream.take(4, &superblock, &kind)?;
            let ty = u16::from_le_bytes([k[0], k[1]]);
            let name_len = usize::from(u16::from_le_bytes([k[2], k[3]]));
            let name = stream.take(name_len, &superblock, &kind)?;
            if ty & 0xff == 2 && name == b"capability" {
                found.insert(idx);
                break;
            }
            let v = stream.take(4, &superblock, &kind)?;
            let vlen = u32::from_le_bytes([v[0], v[1], v[2], v[3]]) as usize;
            // Out-of-line values hold an 8-byte reference here; either way skip `vlen`.
            stream.take(vlen, &superblock, &kind)?;
        }
    }
    Ok(found)
}

/// The bytes `start..end` of a file, seen as a whole file: reads stop at `end`.
struct Window {
    file: File,
    start: u64,
    end: u64,
    /// Relative to `start`.
    pos: u64,
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let left = (self.end - self.start).saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.start + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.end - self.start;
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl SquashfsReader {
    /// Opens and indexes the image at `path` (see the module documentation for what makes an
    /// image refused).
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        Self::open_range(path, 0, None)
    }

    /// Opens the image that takes `len` bytes (default: the rest of the file) at `offset` of
    /// the file `path` (a partition of a disk image). Nothing outside those bytes is read: a
    /// damaged image cannot read the partitions after it.
    pub fn open_range(path: &Path, offset: u64, len: Option<u64>) -> Result<Self, ReadError> {
        let file = safefs::tree::open_input(path).map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::open_file_range(file, path, offset, len)
    }

    /// [`SquashfsReader::open_range`] of the open file `file`, which is the file `path` (named
    /// in errors): what is read is what the caller opened and checked.
    pub fn open_file_range(
        file: File,
        path: &Path,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Self, ReadError> {
        let open_err = |source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file_len = file.metadata().map_err(open_err)?.len();
        let end = match len {
            Some(l) => offset.saturating_add(l).min(file_len),
            None => file_len,
        };
        let file = Window {
            file,
            start: offset.min(end),
            end,
            pos: 0,
        };
        let corrupt = |reason: String| ReadError::Corrupt {
            format: ImageFormat::Squashfs,
            path: path.to_path_buf(),
            reason,
        };
        let mut sq = catch_unwind(AssertUnwindSafe(|| {
            Squashfs::from_reader(BufReader::new(file))
        }))
        .map_err(|p| corrupt(panic_reason(p)))?
        .map_err(|e| corrupt(e.to_string()))?;
        let mut w = catch_unwind(AssertUnwindSafe(|| walk(&sq, path)))
            .map_err(|p| corrupt(panic_reason(p)))??;
        let wanted: HashSet<u32> = w.xattrs.iter().map(|(_, x)| *x).collect();
        let caps = catch_unwind(AssertUnwindSafe(|| capability_sets(&mut sq, &wanted)))
            .map_err(|p| corrupt(panic_reason(p)))?
            .map_err(corrupt)?;
        for (i, x) in &w.xattrs {
            w.nodes[*i].capability = caps.contains(x);
        }
        // backhand's reader for file data: its own tree walk (recursive) is given an empty
        // root, as the tree is already known.
        sq.inodes = Default::default();
        sq.root_inode.inner = InodeInner::BasicDirectory(BasicDirectory {
            block_index: 0,
            link_count: 2,
            file_size: 3,
            block_offset: 0,
            parent_inode: 0,
        });
        let fs = catch_unwind(AssertUnwindSafe(|| sq.into_filesystem_reader()))
            .map_err(|p| corrupt(panic_reason(p)))?
            .map_err(|e| corrupt(e.to_string()))?;
        let mut nodes = w.nodes;
        nodes.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Self {
            path: path.to_path_buf(),
            fs,
            nodes,
            files: w.files,
        })
    }

    /// Every entry, sorted by path; the root is the entry with path "".
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    fn file<'s, 'p>(
        &'s self,
        rel_path: &'p str,
    ) -> Result<(&'p str, &'s SquashfsFileReader), ReadError> {
        let want = rel_path.trim_start_matches('/');
        self.files
            .get(want)
            .map(|f| (want, f))
            .ok_or_else(|| ReadError::NotAFile {
                image: self.path.clone(),
                path: want.to_string(),
            })
    }

    /// The contents of the regular file at `rel_path` (relative, e.g. "usr/bin/x"), when it
    /// holds at most `limit` bytes; [`ReadError::TooLarge`] (and nothing read) otherwise.
    pub fn read_file(&self, rel_path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let (want, f) = self.file(rel_path)?;
        if f.file_len() as u64 > limit {
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
        let (want, f) = self.file(rel_path)?;
        let corrupt = |reason: String| ReadError::Corrupt {
            format: ImageFormat::Squashfs,
            path: self.path.clone(),
            reason: format!("reading {}: {reason}", escape(want)),
        };
        catch_unwind(AssertUnwindSafe(|| -> Result<Vec<u8>, String> {
            let r = self
                .fs
                .file(f)
                .reader_checked()
                .map_err(|e| e.to_string())?;
            // Grows with what is read; the declared size only caps the first allocation.
            let mut out =
                Vec::with_capacity((f.file_len() as u64).min(limit).min(1 << 20) as usize);
            r.take(limit)
                .read_to_end(&mut out)
                .map_err(|e| e.to_string())?;
            Ok(out)
        }))
        .map_err(|p| corrupt(panic_reason(p)))?
        .map_err(corrupt)
    }

    /// The ELF scan ([`elf_closure::scan_reader`]) of the regular file at `rel_path`, read in
    /// place: only the parts the scan asks for are decompressed, within the first
    /// [`MAX_ELF_SCAN`] bytes. `Ok(None)` when it is not an ELF file.
    pub fn scan_elf(&self, rel_path: &str) -> Result<Option<ElfInfo>, ElfError> {
        let (want, f) = self.file(rel_path).map_err(|e| ElfError::Io {
            path: PathBuf::from(rel_path),
            source: io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        })?;
        let cursor = FileCursor {
            fs: &self.fs,
            file: f,
            len: (f.file_len() as u64).min(MAX_ELF_SCAN),
            pos: 0,
            inner: None,
        };
        let what = format!("{want} in {}", self.path.display());
        catch_unwind(AssertUnwindSafe(|| elf_closure::scan_reader(cursor, &what))).unwrap_or_else(
            |p| {
                Err(ElfError::Malformed {
                    what: what.clone(),
                    reason: panic_reason(p),
                })
            },
        )
    }
}

/// A regular file of the image as `Read + Seek`, decompressing on demand: a forward seek
/// skips, a backward one starts over. Its length is capped (reads past it end the file).
struct FileCursor<'a> {
    fs: &'a FilesystemReader<'static>,
    file: &'a SquashfsFileReader,
    len: u64,
    pos: u64,
    /// The open data reader and its position.
    inner: Option<(backhand::SquashfsReadFile<'a, 'static>, u64)>,
}

impl Read for FileCursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        if self.inner.as_ref().is_none_or(|(_, at)| *at > self.pos) {
            let r = self
                .fs
                .file(self.file)
                .reader_checked()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            self.inner = Some((r, 0));
        }
        let (r, at) = self.inner.as_mut().expect("just set");
        if *at < self.pos {
            let skip = self.pos - *at;
            let n = io::copy(&mut r.by_ref().take(skip), &mut io::sink())?;
            *at += n;
            if n < skip {
                return Ok(0);
            }
        }
        let want = (buf.len() as u64).min(self.len - self.pos) as usize;
        let n = r.read(&mut buf[..want])?;
        *at += n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FileCursor<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An image read as a partition of a disk: only its bytes are read; a range too short for
    /// it (its tables lie past the end) is an error, not a read into what follows.
    #[test]
    fn a_range_bounds_every_read() {
        let d = tempfile::tempdir().unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir_all(tree.join("usr")).unwrap();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(tree.join("usr/f"), &content).unwrap();
        let img = d.path().join("img.raw");
        let out = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&img)
            .unwrap();
        let opts = crate::squashfs::writer::WriterOptions::default();
        crate::squashfs::writer::write_image(&tree, out, &img, &opts).unwrap();
        let image = std::fs::read(&img).unwrap();
        let mut disk = vec![0xa5u8; 4096];
        disk.extend_from_slice(&image);
        disk.extend_from_slice(&[0x5a; 8192]);
        let disk_path = d.path().join("disk");
        std::fs::write(&disk_path, &disk).unwrap();
        let len = image.len() as u64;
        let r = SquashfsReader::open_range(&disk_path, 4096, Some(len)).unwrap();
        assert_eq!(r.read_file("usr/f", 1 << 20).unwrap(), content);
        assert!(SquashfsReader::open_range(&disk_path, 4096, Some(len / 2)).is_err());
    }

    fn listing_bytes(base: u32, entries: &[(&[u8], i16)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(entries.len() as u32 - 1).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&base.to_le_bytes());
        for (name, delta) in entries {
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&delta.to_le_bytes());
            b.extend_from_slice(&1u16.to_le_bytes());
            b.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
            b.extend_from_slice(name);
        }
        b
    }

    #[test]
    fn listings_parse_and_truncation_is_an_error() {
        let b = listing_bytes(10, &[(b"a", 0), (b"bb", 1), (b"c", -2)]);
        assert_eq!(
            parse_listing(&b).unwrap(),
            vec![
                (b"a".to_vec(), 10),
                (b"bb".to_vec(), 11),
                (b"c".to_vec(), 8)
            ]
        );
        for cut in 1..b.len() {
            assert!(parse_listing(&b[..cut]).is_err(), "cut at {cut}");
        }
        let under = listing_bytes(0, &[(b"a", -1)]);
        assert!(parse_listing(&under).is_err());
    }
}
