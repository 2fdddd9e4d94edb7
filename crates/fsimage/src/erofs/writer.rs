//! Writes a folder as an EROFS image, uncompressed or compressed.
//!
//! Uncompressed, four steps, each a function of the tree alone: [`scan`] (shared with the
//! squashfs writer: metadata only, names sorted by bytes, hardlinks folded into one inode,
//! the kept xattrs); the layout, which gives every inode its slot in the metadata area (its
//! nid) and every data-carrying inode its blocks (directory sizes depend on names only, so
//! this needs no nids); the copy, where worker threads stream the files' whole blocks to
//! their places (positions are known up front, so the bytes never depend on the thread
//! count) and hand back their tails; and the metadata pass, which encodes inodes, inline
//! tails, directory blocks and the superblock. Image layout: the metadata area starts at
//! block 0, which holds the superblock at offset 1024; the inodes follow it (the root first,
//! nid 36), then the data blocks in inode order.
//!
//! Compressed, the data comes first, as its sizes are known only once compressed: the
//! regular files' data from block 1 on, in tree order ([`zdata`]: compressed in parallel,
//! written in order), then the metadata area (its block in the superblock; nid 0 unused),
//! then the directory and symlink blocks; block 0 holds the superblock and the compressor's
//! configuration.
//!
//! Ownership is always root, every timestamp is `mtime`, the UUID is derived from the
//! image's contents.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Compression;
use crate::squashfs::writer::scan::{scan, Kind, Tree};
use crate::squashfs::writer::WriteError as ScanError;

mod copy;
mod ondisk;
mod zdata;

use ondisk::*;

const BLK: u64 = super::BLOCK_SIZE as u64;
/// The end of the superblock: the first inode slot.
const SUPER_END: u64 = super::SUPER_OFFSET as u64 + 128;

/// Errors from writing an image.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed while it was being packed (size {expected} bytes, read {got})", path.display())]
    Changed {
        path: PathBuf,
        expected: u64,
        got: u64,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("device number of {} does not fit EROFS' 32-bit encoding", .0.display())]
    Device(PathBuf),
    #[error("name {0:?} is longer than EROFS' 255 bytes")]
    NameTooLong(String),
    #[error("cannot write the image {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the tree is too large for EROFS ({0})")]
    TooLarge(String),
}

impl From<ScanError> for WriteError {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Read { path, source } => WriteError::Read { path, source },
            ScanError::NotADirectory(p) => WriteError::NotADirectory(p),
            ScanError::Device(p) => WriteError::Device(p),
            ScanError::NameTooLong { name, .. } => WriteError::NameTooLong(name),
            // The scan reports nothing else.
            other => WriteError::TooLarge(other.to_string()),
        }
    }
}

/// How to write the image.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct WriterOptions {
    /// The modification time of every inode (seconds since the epoch).
    pub mtime: u64,
    /// Copy or compression threads; 0 = the number of CPUs. The output does not depend on
    /// it.
    pub threads: usize,
    /// How regular files are compressed (none by default).
    pub compression: Compression,
    /// The compressor's level; `None` = [`Compression::default_level`].
    pub level: Option<i32>,
}

/// What was written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteStats {
    /// Inodes (hardlinks count once).
    pub inodes: u64,
    /// Regular files (inodes).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes of regular file data (each inode once).
    pub data_bytes: u64,
    /// Inodes whose tail (or whole data) is stored beside the inode.
    pub inline_tails: u64,
    /// Inodes stored in the 64-byte extended form.
    pub extended_inodes: u64,
    /// Regular files stored compressed (the others gained nothing from it).
    pub compressed_files: u64,
    /// Regular files sharing the blocks of an earlier file with the same bytes (compressed
    /// images).
    pub duplicates: u64,
    /// Size of the image.
    pub image_bytes: u64,
}

/// One inode's place in the image.
#[derive(Debug, Clone, Default)]
pub(super) struct Placed {
    pub(super) nid: u64,
    pub(super) size: u64,
    pub(super) nlink: u32,
    pub(super) extended: bool,
    pub(super) xattrs: Vec<u8>,
    /// The tail is stored after the inode (and its xattrs).
    pub(super) inline: bool,
    /// First data block, or [`NULL_ADDR`] when there are no whole blocks.
    pub(super) startblk: u32,
    /// Data blocks (of a compressed file: its physical clusters).
    pub(super) blocks: u64,
    /// A compressed file's map (header and compact indexes; see [`zdata::map_bytes`]);
    /// empty for any other inode.
    pub(super) zmap: Vec<u8>,
}

impl Placed {
    /// Bytes of the tail stored inline.
    pub(super) fn tail(&self) -> u64 {
        if self.inline {
            self.size % BLK
        } else {
            0
        }
    }

    /// Byte offset of the inline tail inside the metadata area.
    pub(super) fn tail_at(&self) -> usize {
        (self.nid * 32) as usize + self.inode_len() + self.xattrs.len()
    }

    /// Byte offset of the compressed map inside the metadata area (8-byte aligned after
    /// the inode and its xattrs).
    pub(super) fn zmap_at(&self) -> usize {
        ((self.nid * 32) as usize + self.inode_len() + self.xattrs.len()).next_multiple_of(8)
    }

    pub(super) fn inode_len(&self) -> usize {
        if self.extended {
            64
        } else {
            32
        }
    }
}

/// Writes `tree_root` as an EROFS image into `out` (an empty file at `out_path`, named in
/// errors).
pub fn write_image(
    tree_root: &Path,
    out: File,
    out_path: &Path,
    opts: &WriterOptions,
) -> Result<WriteStats, WriteError> {
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let tree = scan(tree_root)?;
    let parents = parents(&tree)?;
    let mut placed = sized(&tree, &parents)?;
    if opts.compression != Compression::None {
        return write_compressed(&tree, &parents, placed, out, out_path, opts);
    }
    let meta_len = place_inodes(&mut placed, SUPER_END)?;
    let meta_blocks = meta_len.div_ceil(BLK);
    let mut next = meta_blocks;
    for p in &mut placed {
        next = place_blocks(p, next)?;
    }
    out.set_len(next * BLK).map_err(werr)?;

    // The files' whole blocks go straight to their places; tails come back for the
    // metadata area.
    let jobs: Vec<copy::Job> = tree
        .inodes
        .iter()
        .zip(&placed)
        .filter_map(|(inode, p)| match &inode.kind {
            Kind::File { path, size } => Some(copy::Job {
                path: path.clone(),
                size: *size,
                body_at: u64::from(p.startblk) * BLK,
                body: size - p.tail(),
            }),
            _ => None,
        })
        .collect();
    let copied = copy::run(&jobs, &out, out_path, opts.threads)?;

    let mut uuid_hash = Sha256::new();
    let mut tails = Vec::with_capacity(copied.len());
    for (tail, digest) in copied {
        uuid_hash.update(digest);
        tails.push(tail);
    }
    let layout = Layout {
        meta_blkaddr: 0,
        meta_blocks,
        next,
        compression: Compression::None,
    };
    finish(
        &tree, &parents, &placed, tails, &out, out_path, opts, uuid_hash, layout,
    )
}

/// Where the metadata area lies and what the superblock says of the data.
struct Layout {
    meta_blkaddr: u64,
    meta_blocks: u64,
    /// The image's length in blocks.
    next: u64,
    compression: Compression,
}

/// The end both forms share: the metadata area encoded (hashed into the UUID after the data)
/// and written at its block, the superblock, the image's length.
#[allow(clippy::too_many_arguments)]
fn finish(
    tree: &Tree,
    parents: &[usize],
    placed: &[Placed],
    tails: Vec<Vec<u8>>,
    out: &File,
    out_path: &Path,
    opts: &WriterOptions,
    mut uuid_hash: Sha256,
    l: Layout,
) -> Result<WriteStats, WriteError> {
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let mut meta = vec![0u8; (l.meta_blocks * BLK) as usize];
    let mut stats = encode_meta(
        tree,
        parents,
        placed,
        tails,
        &mut meta,
        out,
        out_path,
        opts,
        &mut uuid_hash,
    )?;
    uuid_hash.update(&meta);
    out.write_all_at(&meta, l.meta_blkaddr * BLK)
        .map_err(werr)?;
    let sb = superblock(&Super {
        root_nid: placed[0].nid,
        inodes: tree.inodes.len() as u64,
        mtime: opts.mtime,
        blocks: u32::try_from(l.next).map_err(|_| WriteError::TooLarge("block count".into()))?,
        meta_blkaddr: u32::try_from(l.meta_blkaddr)
            .map_err(|_| WriteError::TooLarge("block addresses".into()))?,
        uuid: uuid_of(uuid_hash),
        compression: l.compression,
    });
    out.write_all_at(&sb, super::SUPER_OFFSET as u64)
        .map_err(werr)?;
    out.set_len(l.next * BLK).map_err(werr)?;
    out.sync_all().map_err(werr)?;
    stats.image_bytes = l.next * BLK;
    Ok(stats)
}

/// Every inode's size, link count, inode form and xattr body (directory sizes depend on
/// names only).
fn sized(tree: &Tree, parents: &[usize]) -> Result<Vec<Placed>, WriteError> {
    let mut placed = vec![Placed::default(); tree.inodes.len()];
    for (i, inode) in tree.inodes.iter().enumerate() {
        let p = &mut placed[i];
        p.size = match &inode.kind {
            Kind::Dir { .. } => dir_block_bytes(&dir_entries(tree, i, parents), |_| 0).len() as u64,
            Kind::File { size, .. } => *size,
            Kind::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        p.nlink = match &inode.kind {
            Kind::Dir { entries } => {
                let subdirs = entries
                    .iter()
                    .filter(|(_, c)| matches!(tree.inodes[*c].kind, Kind::Dir { .. }))
                    .count();
                u32::try_from(subdirs + 2)
                    .map_err(|_| WriteError::TooLarge("subfolders of one folder".into()))?
            }
            _ => inode.nlink,
        };
        p.extended = p.size > u64::from(u32::MAX) || p.nlink > u32::from(u16::MAX);
        p.xattrs = xattr_body(&inode.xattrs)?;
    }
    Ok(placed)
}

/// Gives an uncompressed inode's data its blocks from `next` on (the tail, when inline,
/// stays beside the inode); returns the next free block.
fn place_blocks(p: &mut Placed, next: u64) -> Result<u64, WriteError> {
    p.blocks = if p.inline {
        p.size / BLK
    } else {
        p.size.div_ceil(BLK)
    };
    p.startblk = if p.blocks == 0 {
        NULL_ADDR
    } else {
        u32::try_from(next).map_err(|_| WriteError::TooLarge("block addresses".into()))?
    };
    Ok(next + p.blocks)
}

/// A version-4 UUID from the image's digest.
fn uuid_of(hash: Sha256) -> [u8; 16] {
    let digest = hash.finalize();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// The metadata pass: every inode (with its xattrs, its compressed map or its inline tail)
/// into `meta` (the metadata area, addressed by nid), directory and symlink blocks into
/// `out`. `tails` are the regular files' inline tails, in tree order.
#[allow(clippy::too_many_arguments)]
fn encode_meta(
    tree: &Tree,
    parents: &[usize],
    placed: &[Placed],
    tails: Vec<Vec<u8>>,
    meta: &mut [u8],
    out: &File,
    out_path: &Path,
    opts: &WriterOptions,
    uuid_hash: &mut Sha256,
) -> Result<WriteStats, WriteError> {
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let mut tails = tails.into_iter();
    let mut stats = WriteStats::default();
    for (i, inode) in tree.inodes.iter().enumerate() {
        let p = &placed[i];
        stats.inodes += 1;
        stats.inline_tails += u64::from(p.tail() > 0);
        stats.extended_inodes += u64::from(p.extended);
        let data: Vec<u8> = match &inode.kind {
            Kind::Dir { .. } => {
                stats.dirs += 1;
                dir_block_bytes(&dir_entries(tree, i, parents), |c| placed[c].nid)
            }
            Kind::Symlink(t) => t.clone(),
            Kind::File { size, .. } => {
                stats.files += 1;
                stats.data_bytes += size;
                stats.compressed_files += u64::from(!p.zmap.is_empty());
                let tail = tails.next().expect("one tail per file");
                if p.tail() > 0 {
                    let at = p.tail_at();
                    meta[at..at + tail.len()].copy_from_slice(&tail);
                }
                Vec::new()
            }
            _ => Vec::new(),
        };
        if !data.is_empty() {
            uuid_hash.update(&data);
            let body = (p.size - p.tail()) as usize;
            if body > 0 {
                out.write_all_at(&data[..body], u64::from(p.startblk) * BLK)
                    .map_err(werr)?;
            }
            let at = p.tail_at();
            meta[at..at + data.len() - body].copy_from_slice(&data[body..]);
        }
        let at = (p.nid * 32) as usize;
        let len = p.inode_len() + p.xattrs.len();
        meta[at..at + len].copy_from_slice(&inode_bytes(inode, p, i, opts.mtime));
        if !p.zmap.is_empty() {
            let at = p.zmap_at();
            meta[at..at + p.zmap.len()].copy_from_slice(&p.zmap);
        }
    }
    Ok(stats)
}

/// A compressed image: block 0 holds the superblock (and the compressor's configuration),
/// the regular files' data follows from block 1 in tree order ([`zdata`]), then the
/// metadata area (its start in the superblock), then the directory and symlink blocks.
fn write_compressed(
    tree: &Tree,
    parents: &[usize],
    mut placed: Vec<Placed>,
    out: File,
    out_path: &Path,
    opts: &WriterOptions,
) -> Result<WriteStats, WriteError> {
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let kind = opts.compression;
    let level = opts.level.unwrap_or(kind.default_level());
    let files: Vec<usize> = (0..tree.inodes.len())
        .filter(|&i| matches!(tree.inodes[i].kind, Kind::File { .. }))
        .collect();
    let jobs: Vec<zdata::FileJob> = files
        .iter()
        .map(|&i| {
            let Kind::File { path, size } = &tree.inodes[i].kind else {
                unreachable!("a file")
            };
            let p = &placed[i];
            let meta_len = p.inode_len() + p.xattrs.len();
            let tail = size % BLK;
            // A tail-packed extent follows the indexes, inside the block where they end.
            let idx_end =
                zdata::compact_start(meta_len) + zdata::compact_index_len(*size, meta_len);
            let blk = BLK as usize;
            let tail_room = if idx_end < blk {
                blk - idx_end
            } else {
                blk - idx_end % blk
            };
            zdata::FileJob {
                path: path.clone(),
                size: *size,
                inline_tail: tail > 0 && meta_len as u64 + tail <= BLK,
                tail_room,
            }
        })
        .collect();
    out.set_len(0).map_err(werr)?;
    let data = zdata::run(&jobs, &out, out_path, kind, level, opts.threads)?;
    let duplicates = data.duplicates;
    let mut tails = Vec::with_capacity(files.len());
    for (&i, stored) in files.iter().zip(data.files) {
        let p = &mut placed[i];
        match stored {
            zdata::Stored::Flat { startblk, tail } => {
                p.startblk = startblk;
                tails.push(tail);
            }
            zdata::Stored::Z {
                extents,
                blocks,
                tail,
            } => {
                let meta_len = p.inode_len() + p.xattrs.len();
                p.zmap =
                    zdata::map_bytes(p.size, &extents, algorithm(kind), meta_len, tail.as_deref());
                p.blocks = blocks;
                tails.push(Vec::new());
            }
        }
    }
    let meta_blkaddr = data.end_blk;
    // nid 0 is left unused: inode numbers derive from nids.
    let meta_len = place_inodes(&mut placed, 32)?;
    let meta_blocks = meta_len.div_ceil(BLK);
    let mut next = meta_blkaddr + meta_blocks;
    for (i, p) in placed.iter_mut().enumerate() {
        if matches!(tree.inodes[i].kind, Kind::Dir { .. } | Kind::Symlink(_)) {
            next = place_blocks(p, next)?;
        }
    }
    let mut uuid_hash = Sha256::new();
    uuid_hash.update(data.digest);
    let layout = Layout {
        meta_blkaddr,
        meta_blocks,
        next,
        compression: kind,
    };
    let mut stats = finish(
        tree, parents, &placed, tails, &out, out_path, opts, uuid_hash, layout,
    )?;
    stats.duplicates = duplicates;
    Ok(stats)
}

/// The map header's algorithm number of a compressor.
fn algorithm(kind: Compression) -> u8 {
    match kind {
        Compression::Zstd => 3,
        _ => 0,
    }
}

/// The parent of every directory (the root is its own), and the names checked against
/// EROFS' limit.
fn parents(tree: &Tree) -> Result<Vec<usize>, WriteError> {
    let mut parents = vec![0; tree.inodes.len()];
    for (i, inode) in tree.inodes.iter().enumerate() {
        if let Kind::Dir { entries } = &inode.kind {
            for (name, c) in entries {
                if name.len() > NAME_LEN {
                    return Err(WriteError::NameTooLong(
                        String::from_utf8_lossy(name).into_owned(),
                    ));
                }
                if matches!(tree.inodes[*c].kind, Kind::Dir { .. }) {
                    parents[*c] = i;
                }
            }
        }
    }
    Ok(parents)
}

/// A directory's entries with `.` and `..`, sorted by name bytes as the kernel's lookup
/// (a binary search) requires.
fn dir_entries<'t>(tree: &'t Tree, dir: usize, parents: &[usize]) -> Vec<(&'t [u8], usize, u8)> {
    let Kind::Dir { entries } = &tree.inodes[dir].kind else {
        unreachable!("a directory")
    };
    let mut out: Vec<(&[u8], usize, u8)> = Vec::with_capacity(entries.len() + 2);
    out.push((b".", dir, FT_DIR));
    out.push((b"..", parents[dir], FT_DIR));
    for (name, c) in entries {
        out.push((name, *c, file_type(&tree.inodes[*c].kind)));
    }
    out.sort_by(|a, b| a.0.cmp(b.0));
    out
}

/// Gives every inode its nid, in tree order (the root first): each inode with its xattrs
/// (and its inline tail, when that fits beside it in one block) stays inside one block, so
/// the kernel reads it without crossing a block boundary. An inode goes into the partly
/// filled block with the least room that still fits it (the oldest of those), else into a
/// new block (a record larger than a block starts a block of its own). Returns the metadata
/// area's end.
fn place_inodes(placed: &mut [Placed], start: u64) -> Result<u64, WriteError> {
    // Partly filled blocks by their room in 32-byte slots: each one's next free offset.
    let mut open: Vec<VecDeque<u64>> = vec![VecDeque::new(); (BLK / 32) as usize + 1];
    let room = |o: u64| ((BLK - o % BLK) / 32) as usize;
    open[room(start)].push_back(start);
    let mut end = start;
    for p in placed.iter_mut() {
        let meta = (p.inode_len() + p.xattrs.len()) as u64;
        let tail = p.size % BLK;
        p.inline = p.zmap.is_empty() && tail > 0 && meta + tail <= BLK;
        let need = if p.zmap.is_empty() {
            meta + if p.inline { tail } else { 0 }
        } else {
            meta.next_multiple_of(8) + p.zmap.len() as u64
        };
        let fit = if need <= BLK {
            let slots = need.div_ceil(32) as usize;
            open[slots..].iter_mut().find_map(|q| q.pop_front())
        } else {
            None
        };
        let pos = fit.unwrap_or_else(|| end.next_multiple_of(BLK));
        let next = (pos + need).next_multiple_of(32);
        end = end.max(next);
        if next % BLK != 0 {
            open[room(next)].push_back(next);
        }
        p.nid = pos / 32;
    }
    if placed[0].nid > u64::from(u16::MAX) {
        return Err(WriteError::TooLarge("root inode slot".into()));
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_stay_in_one_block() {
        let mut placed = vec![
            Placed {
                size: 4000,
                ..Default::default()
            },
            Placed {
                size: 100,
                ..Default::default()
            },
            Placed {
                size: 4096 + 10,
                ..Default::default()
            },
            Placed {
                size: 4096,
                ..Default::default()
            },
        ];
        let len = place_inodes(&mut placed, 0).unwrap();
        // 32 + 4000 = 4032: inline at nid 0; 32 + 100 does not fit the rest of block 0.
        assert!(placed[0].inline && placed[0].nid == 0);
        assert!(placed[1].inline && placed[1].nid == 4096 / 32);
        // 32 + 10 fits the 64 bytes left in block 0.
        assert!(placed[2].inline && placed[2].tail() == 10);
        assert_eq!(placed[2].nid, 4032 / 32);
        assert!(!placed[3].inline, "a whole block stays a block");
        assert_eq!(placed[3].nid, (4096 + 160) / 32);
        assert_eq!(len, 4096 + 160 + 32);
    }
}
