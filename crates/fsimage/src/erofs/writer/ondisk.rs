//! The on-disk encodings: inodes (compact and extended), the inline xattr body, directory
//! blocks and the superblock (fields as `include/erofs_fs.h` of erofs-utils lays them out).

use super::{Compression, Placed, WriteError, BLK};
use crate::squashfs::writer::scan::{Inode, Kind, Xattr};

/// "No block": an inode whose data is all inline, or that has none.
pub(super) const NULL_ADDR: u32 = u32::MAX;
/// The longest name a directory entry holds.
pub(super) const NAME_LEN: usize = 255;
const DIRENT_LEN: usize = 12;
const XATTR_HEADER_LEN: usize = 12;

const LAYOUT_FLAT_PLAIN: u16 = 0;
const LAYOUT_COMPRESSED_COMPACT: u16 = 3;
const LAYOUT_FLAT_INLINE: u16 = 2;

// Incompatible features.
const INCOMPAT_ZERO_PADDING: u32 = 0x1;
const INCOMPAT_COMPR_CFGS: u32 = 0x2;
const INCOMPAT_ZTAILPACKING: u32 = 0x10;

// Directory entry file types.
const FT_REG_FILE: u8 = 1;
pub(super) const FT_DIR: u8 = 2;
const FT_CHRDEV: u8 = 3;
const FT_BLKDEV: u8 = 4;
const FT_FIFO: u8 = 5;
const FT_SOCK: u8 = 6;
const FT_SYMLINK: u8 = 7;

pub(super) fn file_type(kind: &Kind) -> u8 {
    match kind {
        Kind::File { .. } => FT_REG_FILE,
        Kind::Dir { .. } => FT_DIR,
        Kind::Char(_) => FT_CHRDEV,
        Kind::Block(_) => FT_BLKDEV,
        Kind::Fifo => FT_FIFO,
        Kind::Socket => FT_SOCK,
        Kind::Symlink(_) => FT_SYMLINK,
    }
}

fn type_bits(kind: &Kind) -> u16 {
    match kind {
        Kind::File { .. } => 0o100000,
        Kind::Dir { .. } => 0o040000,
        Kind::Char(_) => 0o020000,
        Kind::Block(_) => 0o060000,
        Kind::Fifo => 0o010000,
        Kind::Socket => 0o140000,
        Kind::Symlink(_) => 0o120000,
    }
}

/// The inline xattr body: a 12-byte header (no shared xattrs, no name filter) and the
/// entries, each padded to 4 bytes. Empty when there are no xattrs.
pub(super) fn xattr_body(xattrs: &[Xattr]) -> Result<Vec<u8>, WriteError> {
    if xattrs.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = vec![0u8; XATTR_HEADER_LEN];
    for (ty, name, value) in xattrs {
        // The scan's prefix types (user, trusted, security) to EROFS' name indexes.
        let index: u8 = match ty {
            0 => 1,
            1 => 4,
            _ => 6,
        };
        let name_len = u8::try_from(name.len())
            .map_err(|_| WriteError::TooLarge(format!("an xattr name of {} bytes", name.len())))?;
        let value_len = u16::try_from(value.len()).map_err(|_| {
            WriteError::TooLarge(format!("an xattr value of {} bytes", value.len()))
        })?;
        out.push(name_len);
        out.push(index);
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    if (out.len() - XATTR_HEADER_LEN) / 4 + 1 > usize::from(u16::MAX) {
        return Err(WriteError::TooLarge(format!(
            "{} bytes of xattrs on one inode",
            out.len()
        )));
    }
    Ok(out)
}

/// A directory's data: blocks of dirents (nid, name offset, type) followed by their names,
/// an entry never split across blocks, every block but the last padded with zeros to the
/// block size. `nid` gives the nid of an inode index (any value while sizing).
pub(super) fn dir_block_bytes(
    entries: &[(&[u8], usize, u8)],
    nid: impl Fn(usize) -> u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = entries;
    while !rest.is_empty() {
        let mut used = 0;
        let count = rest
            .iter()
            .take_while(|(name, _, _)| {
                used += DIRENT_LEN + name.len();
                used <= BLK as usize
            })
            .count();
        let (group, tail) = rest.split_at(count);
        let start = out.len();
        let mut nameoff = DIRENT_LEN * group.len();
        for (name, child, ft) in group {
            out.extend_from_slice(&nid(*child).to_le_bytes());
            out.extend_from_slice(&(nameoff as u16).to_le_bytes());
            out.push(*ft);
            out.push(0);
            nameoff += name.len();
        }
        for (name, _, _) in group {
            out.extend_from_slice(name);
        }
        if !tail.is_empty() {
            out.resize(start + BLK as usize, 0);
        }
        rest = tail;
    }
    out
}

/// The inode (compact, or extended when `p.extended`) followed by its xattr body.
pub(super) fn inode_bytes(inode: &Inode, p: &Placed, index: usize, mtime: u64) -> Vec<u8> {
    let layout = if !p.zmap.is_empty() {
        LAYOUT_COMPRESSED_COMPACT
    } else if p.inline {
        LAYOUT_FLAT_INLINE
    } else {
        LAYOUT_FLAT_PLAIN
    };
    let i_u = match inode.kind {
        Kind::Char(dev) | Kind::Block(dev) => dev,
        Kind::Fifo | Kind::Socket => 0,
        // A compressed file: its block count (for stat).
        _ if !p.zmap.is_empty() => p.blocks as u32,
        _ => p.startblk,
    };
    let icount = if p.xattrs.is_empty() {
        0u16
    } else {
        ((p.xattrs.len() - XATTR_HEADER_LEN) / 4 + 1) as u16
    };
    let mode = type_bits(&inode.kind) | inode.mode;
    let ino = (index as u32).wrapping_add(1);
    let mut b = Vec::with_capacity(p.inode_len() + p.xattrs.len());
    b.extend_from_slice(&((layout << 1) | u16::from(p.extended)).to_le_bytes());
    b.extend_from_slice(&icount.to_le_bytes());
    b.extend_from_slice(&mode.to_le_bytes());
    if p.extended {
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&p.size.to_le_bytes());
        b.extend_from_slice(&i_u.to_le_bytes());
        b.extend_from_slice(&ino.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // uid
        b.extend_from_slice(&0u32.to_le_bytes()); // gid
        b.extend_from_slice(&mtime.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // nanoseconds
        b.extend_from_slice(&p.nlink.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
    } else {
        b.extend_from_slice(&(p.nlink as u16).to_le_bytes());
        b.extend_from_slice(&(p.size as u32).to_le_bytes());
        // Seconds after the superblock's epoch, which is `mtime` itself.
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&i_u.to_le_bytes());
        b.extend_from_slice(&ino.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes()); // uid
        b.extend_from_slice(&0u16.to_le_bytes()); // gid
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    debug_assert_eq!(b.len(), p.inode_len());
    b.extend_from_slice(&p.xattrs);
    b
}

/// The superblock's variable fields.
pub(super) struct Super {
    pub(super) root_nid: u64,
    pub(super) inodes: u64,
    pub(super) mtime: u64,
    pub(super) blocks: u32,
    pub(super) meta_blkaddr: u32,
    pub(super) uuid: [u8; 16],
    pub(super) compression: Compression,
}

/// The 128-byte superblock: no checksum, 4 KiB blocks, directory blocks of the block size,
/// compact inodes timed by the epoch. Uncompressed: no incompatible features. LZ4:
/// `ZERO_PADDING` (compressed data ends its block) and the default 64 KiB LZ4 window (the
/// kernel's default without `COMPR_CFGS`). zstd: `ZERO_PADDING` and `COMPR_CFGS`, the
/// available algorithms bitmap holding zstd's bit, and zstd's configuration record after
/// the superblock (its 2-byte length, the format 0 and the window log less 10).
pub(super) fn superblock(s: &Super) -> Vec<u8> {
    let (incompat, u1) = match s.compression {
        Compression::None => (0, 0u16),
        Compression::Lz4 | Compression::Lz4hc => (INCOMPAT_ZERO_PADDING | INCOMPAT_ZTAILPACKING, 0),
        Compression::Zstd => (
            INCOMPAT_ZERO_PADDING | INCOMPAT_COMPR_CFGS | INCOMPAT_ZTAILPACKING,
            1 << 3,
        ),
    };
    let mut b = Vec::with_capacity(128);
    b.extend_from_slice(&super::super::MAGIC.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // checksum
    b.extend_from_slice(&0u32.to_le_bytes()); // feature_compat
    b.push(12); // blkszbits
    b.push(0); // sb_extslots
    b.extend_from_slice(&(s.root_nid as u16).to_le_bytes());
    b.extend_from_slice(&s.inodes.to_le_bytes());
    b.extend_from_slice(&s.mtime.to_le_bytes()); // epoch (the build time of old kernels)
    b.extend_from_slice(&0u32.to_le_bytes()); // fixed_nsec
    b.extend_from_slice(&s.blocks.to_le_bytes());
    b.extend_from_slice(&s.meta_blkaddr.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes()); // xattr_blkaddr (no shared xattrs)
    b.extend_from_slice(&s.uuid);
    b.extend_from_slice(&[0u8; 16]); // volume_name
    b.extend_from_slice(&incompat.to_le_bytes());
    b.extend_from_slice(&u1.to_le_bytes());
    b.resize(128, 0); // no devices, prefixes, packed inode
    if s.compression == Compression::Zstd {
        b.extend_from_slice(&6u16.to_le_bytes());
        b.push(0);
        b.push((ZSTD_WINDOW_LOG - 10) as u8);
        b.extend_from_slice(&[0u8; 4]);
    }
    b
}

/// The largest window of our zstd frames: an extent takes at most 1 MiB of input.
pub(super) const ZSTD_WINDOW_LOG: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirents_never_cross_a_block() {
        let long = vec![b'a'; 255];
        let entries: Vec<(&[u8], usize, u8)> =
            (0..20).map(|i| (&long[..], i, FT_REG_FILE)).collect();
        let b = dir_block_bytes(&entries, |i| i as u64 + 100);
        // 267 bytes an entry: 15 in the first block, 5 in the last.
        assert_eq!(b.len(), 4096 + 5 * 267);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 15 * 12);
        assert_eq!(u64::from_le_bytes(b[4096..4104].try_into().unwrap()), 115);
        assert_eq!(u16::from_le_bytes([b[4096 + 8], b[4096 + 9]]), 5 * 12);
    }

    #[test]
    fn xattrs_are_padded_to_four_bytes() {
        let b = xattr_body(&[(0, b"test".to_vec(), b"v".to_vec())]).unwrap();
        assert_eq!(b.len(), 12 + 12);
        assert_eq!(&b[12..16], &[4, 1, 1, 0]);
        assert!(xattr_body(&[(1, b"x".to_vec(), vec![0; 70000])]).is_err());
    }
}
