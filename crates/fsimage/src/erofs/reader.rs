//! Reads an EROFS image back, in place: its entries and file contents.
//!
//! Our own parser of the format the writer writes and mkfs.erofs (erofs-utils 1.8) writes:
//! 4 KiB blocks, compact and extended inodes, `FLAT_PLAIN` and `FLAT_INLINE` data, compressed
//! files with full or compact lcluster indexes (LZ4 or zstd, with or without `0PADDING`, a
//! second algorithm in `HEAD2` clusters), big physical clusters (`-C`, at most
//! [`MAX_PCLUSTER`] bytes), uncompressed clusters stored rotated (`INTERLACED`), tails packed
//! beside their inode (`-Eztailpacking`), fragments (`-Efragments`, `-Eall-fragments`: a
//! file's tail or all of it stored in the special packed inode, itself read like a file but
//! never referring to fragments), shared clusters (`-Ededupe`, an extent decoding only the
//! start of a cluster), inline and shared xattrs (for `security.capability`). An image using
//! another incompatible feature (chunks, extra devices, long xattr prefixes, 48-bit
//! addresses, extent records of erofs-utils 1.9) is refused as not read yet.
//! A compressed file is read one extent at a time (at most [`MAX_EXTENT`] bytes
//! decompressed, the last one kept for the next read, the packed inode's apart); every index
//! walk is bounded by that size, so a hostile map ends in an error; a fragment is read only
//! inside the packed inode's size. The tree is walked iteratively with the same
//! refusals as the squashfs reader (`crates/fsimage/src/squashfs/reader.rs`): a duplicate
//! name in one directory, a name no path can name, a directory reached twice, folders
//! deeper than [`MAX_DEPTH`]. Every read is bounds-checked against the image; nothing is
//! allocated by a size an inode declares beyond the caller's limit.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use elf_closure::{ElfError, ElfInfo};
use gentext::escape;

use crate::read_error::show_dir;
pub use crate::read_error::{ImageFormat, ReadError, MAX_DEPTH};
pub use crate::squashfs::reader::MAX_ELF_SCAN;
use crate::{Entry, EntryKind};

const BLK: u64 = super::BLOCK_SIZE as u64;
const NULL_ADDR: u32 = u32::MAX;
/// The longest extent decompressed (the kernel's limit, `Z_EROFS_PCLUSTER_MAX_DSIZE`).
pub const MAX_EXTENT: u64 = 12 << 20;
/// The largest physical cluster (the kernel's `Z_EROFS_PCLUSTER_MAX_SIZE`).
pub const MAX_PCLUSTER: u64 = 1 << 20;
const INCOMPAT_ZERO_PADDING: u32 = 0x1;
/// Compression configurations after the superblock; the same bit allows big clusters.
const INCOMPAT_COMPR_CFGS: u32 = 0x2;
/// `HEAD2` clusters; the same bit announces a device table (read when it lists no device).
const INCOMPAT_HEAD2: u32 = 0x8;
const INCOMPAT_ZTAILPACKING: u32 = 0x10;
/// Fragments in the packed inode; the same bit announces shared (deduplicated) clusters.
const INCOMPAT_FRAGMENTS: u32 = 0x20;
// The map header's options (`h_advise`).
const ADVISE_COMPACTED_2B: u16 = 0x1;
const ADVISE_BIG_PCLUSTER_1: u16 = 0x2;
const ADVISE_BIG_PCLUSTER_2: u16 = 0x4;
const ADVISE_INLINE_PCLUSTER: u16 = 0x8;
const ADVISE_INTERLACED_PCLUSTER: u16 = 0x10;
const ADVISE_FRAGMENT_PCLUSTER: u16 = 0x20;
/// A non-head lcluster index holding its physical cluster's block count.
const D0_CBLKCNT: u32 = 0x800;
const ALG_LZ4: u8 = 0;
const ALG_ZSTD: u8 = 3;
/// Longest symlink target read (PATH_MAX).
const MAX_TARGET: u64 = 4096;

/// Where an inode's data lies.
#[derive(Debug, Clone, Copy)]
struct Data {
    size: u64,
    /// A compressed file's map; `None` for flat data.
    z: Option<ZMap>,
    /// First block of the data outside the inode.
    startblk: u32,
    /// Offset in the file where the inline part starts (`size` when there is none).
    inline_from: u64,
    /// Image offset of the inline part.
    inline_at: u64,
}

/// A compressed file's map: lcluster indexes at `index_at`, one per 4 KiB of the file,
/// full (8 bytes each) or compact.
#[derive(Debug, Clone, Copy)]
struct ZMap {
    index_at: u64,
    /// The algorithms of `HEAD1` and `HEAD2` clusters.
    algorithms: [u8; 2],
    compact: Option<Compact>,
    /// Big physical clusters for `HEAD1` clusters, for `PLAIN` and `HEAD2` ones.
    big: [bool; 2],
    /// Uncompressed clusters are stored rotated by their extent's offset in its block.
    interlaced: bool,
    /// The last extent packed beside the inode (after the indexes): where, how many bytes.
    tail: Option<(u64, u64)>,
    /// The last extent in the packed inode at this offset (its low 32 bits with full
    /// indexes, the high ones in the extent's head).
    fragment: Option<u64>,
    /// The whole file in the packed inode at this offset (no indexes).
    whole: Option<u64>,
    /// This is the packed inode (its extents are kept apart).
    packed: bool,
}

/// The compact index form: `initial` 4-byte entries up to a 32-byte boundary, then `two`
/// 2-byte entries (packs of 16), then 4-byte entries (packs of 2).
#[derive(Debug, Clone, Copy)]
struct Compact {
    initial: u64,
    two: u64,
}

/// One extent of a compressed file: bytes `start..end` of the file, where `at` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Extent {
    start: u64,
    end: u64,
    at: At,
    /// Stored uncompressed, else the algorithm.
    alg: Option<u8>,
}

/// Where an extent's stored bytes lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// `blocks` blocks from block `blkaddr`.
    Blocks { blkaddr: u32, blocks: u32 },
    /// In the inode's tail (`ZMap::tail`).
    Inline,
    /// Uncompressed in the packed inode, at this offset of it for the extent's start.
    Fragment(u64),
}

/// One lcluster index: its type, offset in the cluster and its block or deltas (the
/// distance back to its head for a `NONHEAD`); a `NONHEAD` may instead give its physical
/// cluster's block count (`cblk`, distance 1).
#[derive(Clone, Copy)]
struct Index {
    ty: u16,
    clusterofs: u64,
    u: u32,
    cblk: Option<u32>,
}

const PLAIN: u16 = 0;
const HEAD1: u16 = 1;
const NONHEAD: u16 = 2;
const HEAD2: u16 = 3;

/// A decompressed extent kept for the next read: the map it belongs to (`index_at`), the
/// extent, its bytes.
type Cached = Option<(u64, Extent, Vec<u8>)>;

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
    /// Every regular file's data and inode number (nid).
    files: HashMap<String, (Data, u64)>,
    /// The algorithms the superblock declares (bit per algorithm number).
    algorithms: u16,
    /// Compressed data ends its block (`0PADDING`), else it starts it.
    zero_padding: bool,
    /// Big physical clusters are allowed.
    big_pcluster: bool,
    /// The packed inode (fragments), when the image has one.
    packed: Option<Data>,
    /// The last extent decompressed, for the next read: of a file, of the packed inode.
    last: [Mutex<Cached>; 2],
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
    algorithms: u16,
    zero_padding: bool,
    big_pcluster: bool,
    packed_nid: Option<u64>,
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
        let file = safefs::tree::open_input(path).map_err(|source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::open_file_range(file, path, offset, len)
    }

    /// [`ErofsReader::open_range`] of the open file `file`, which is the file `path` (named in
    /// errors): what is read is what the caller opened and checked.
    pub fn open_file_range(
        file: File,
        path: &Path,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Self, ReadError> {
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
            algorithms: 0,
            zero_padding: false,
            big_pcluster: false,
            packed: None,
            last: [Mutex::new(None), Mutex::new(None)],
        };
        let sb = r.superblock()?;
        r.algorithms = sb.algorithms;
        r.zero_padding = sb.zero_padding;
        r.big_pcluster = sb.big_pcluster;
        if let Some(nid) = sb.packed_nid {
            let packed = r.inode(&sb, nid, true)?;
            if packed.mode & 0o170000 != 0o100000 {
                return Err(r.corrupt(format!("the packed inode {nid} is not a regular file")));
            }
            r.packed = Some(packed.data);
        }
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
        let known = INCOMPAT_ZERO_PADDING
            | INCOMPAT_COMPR_CFGS
            | INCOMPAT_HEAD2
            | INCOMPAT_ZTAILPACKING
            | INCOMPAT_FRAGMENTS;
        if incompat & !known != 0 {
            return Err(unsupported(format!(
                "incompatible features {:#x} (chunks, long xattr prefixes, 48-bit addresses or a metadata box)",
                incompat & !known
            )));
        }
        let devices = u16::from_le_bytes([b[86], b[87]]);
        if incompat & INCOMPAT_HEAD2 != 0 && devices != 0 {
            return Err(unsupported(format!("{devices} extra devices")));
        }
        let packed_nid = u64::from_le_bytes(b[96..104].try_into().expect("8 bytes"));
        // Without COMPR_CFGS, LZ4 is the one algorithm.
        let algorithms = if incompat & INCOMPAT_COMPR_CFGS == 0 {
            1 << ALG_LZ4
        } else {
            u16::from_le_bytes([b[84], b[85]])
        };
        Ok(Super {
            root: u64::from(u16::from_le_bytes([b[14], b[15]])),
            meta: u64::from(u32_at(40)) * BLK,
            xattr: u64::from(u32_at(44)) * BLK,
            algorithms,
            zero_padding: incompat & INCOMPAT_ZERO_PADDING != 0,
            big_pcluster: incompat & INCOMPAT_COMPR_CFGS != 0,
            packed_nid: (incompat & INCOMPAT_FRAGMENTS != 0 && packed_nid != 0)
                .then_some(packed_nid),
        })
    }

    /// The inode `nid`; `packed` when it is the packed inode (which may not refer to
    /// fragments).
    fn inode(&self, sb: &Super, nid: u64, packed: bool) -> Result<Inode, ReadError> {
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
                z: None,
                startblk: NULL_ADDR,
                inline_from: 0,
                inline_at: 0,
            },
            0 => Data {
                size,
                z: None,
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
                    z: None,
                    startblk: i_u,
                    inline_from,
                    inline_at,
                }
            }
            1 | 3 if mode & 0o170000 == 0o100000 => Data {
                size,
                z: Some(self.zmap(nid, at + isize + xattr_len, size, layout == 3, packed)?),
                startblk: NULL_ADDR,
                inline_from: size,
                inline_at: 0,
            },
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

    /// A compressed file's map header (at the 8-byte boundary after the inode's xattrs): the
    /// forms read here, and the indexes inside the image. `packed`: this is the packed
    /// inode, which may not refer to fragments (itself).
    fn zmap(
        &self,
        nid: u64,
        end: u64,
        size: u64,
        compact: bool,
        packed: bool,
    ) -> Result<ZMap, ReadError> {
        let at = end.next_multiple_of(8);
        let mut h = [0u8; 8];
        self.read_exact_at(&mut h, at)?;
        let unsupported = |what: String| ReadError::Unsupported {
            path: self.path.clone(),
            what: format!("inode {nid}: {what}"),
        };
        let mut z = ZMap {
            index_at: at + 8,
            algorithms: [h[6] & 15, h[6] >> 4],
            compact: None,
            big: [false; 2],
            interlaced: false,
            tail: None,
            fragment: None,
            whole: None,
            packed,
        };
        let fragments = |what: &str| -> Result<Data, ReadError> {
            if packed {
                return Err(self.corrupt(format!(
                    "the packed inode {nid} stores {what} in fragments (in itself)"
                )));
            }
            self.packed.ok_or_else(|| {
                self.corrupt(format!(
                    "inode {nid} stores {what} in fragments, but the image has no packed inode"
                ))
            })
        };
        // The highest bit set: the whole file is a fragment, at the offset the other 63 bits
        // give.
        if h[7] & 0x80 != 0 {
            let p = fragments("all its data")?;
            let off = u64::from_le_bytes(h) & !(1 << 63);
            if off.checked_add(size).is_none_or(|e| e > p.size) {
                return Err(self.corrupt(format!(
                    "inode {nid}: its {size} bytes at offset {off} of the packed inode lie outside it ({} bytes)",
                    p.size
                )));
            }
            z.whole = Some(off);
            return Ok(z);
        }
        let advise = u16::from_le_bytes([h[4], h[5]]);
        let allowed = ADVISE_BIG_PCLUSTER_1
            | ADVISE_BIG_PCLUSTER_2
            | ADVISE_INLINE_PCLUSTER
            | ADVISE_INTERLACED_PCLUSTER
            | ADVISE_FRAGMENT_PCLUSTER
            | if compact { ADVISE_COMPACTED_2B } else { 0 };
        if advise & !allowed != 0 {
            return Err(unsupported(format!(
                "a compressed file's map with options {advise:#x} (extent records)"
            )));
        }
        if h[7] & 15 != 0 {
            return Err(unsupported(format!(
                "logical clusters of {} bytes",
                BLK << (h[7] & 15)
            )));
        }
        z.big = [
            advise & ADVISE_BIG_PCLUSTER_1 != 0,
            advise & ADVISE_BIG_PCLUSTER_2 != 0,
        ];
        if (z.big[0] || z.big[1]) && !self.big_pcluster {
            return Err(self.corrupt(format!(
                "inode {nid} has big physical clusters, which the superblock does not allow"
            )));
        }
        if compact && z.big[0] != z.big[1] {
            return Err(self.corrupt(format!(
                "inode {nid}: compact indexes with big clusters for one head type only"
            )));
        }
        z.interlaced = advise & ADVISE_INTERLACED_PCLUSTER != 0;
        // A fragment's offset and a packed tail's size share the header's first 4 bytes.
        let idata = if advise & ADVISE_FRAGMENT_PCLUSTER != 0 {
            fragments("its tail")?;
            z.fragment = Some(u64::from(u32::from_le_bytes(
                h[..4].try_into().expect("4 bytes"),
            )));
            0
        } else {
            let idata = u64::from(u16::from_le_bytes([h[2], h[3]]));
            if advise & ADVISE_INLINE_PCLUSTER == 0 && idata != 0 {
                return Err(unsupported(format!(
                    "a compressed file's map with {idata} bytes of packed tail but no packed tail"
                )));
            }
            idata
        };
        let algorithm = z.algorithms[0];
        if self.algorithms & (1 << algorithm) == 0 || !matches!(algorithm, ALG_LZ4 | ALG_ZSTD) {
            return Err(unsupported(format!(
                "compression algorithm {algorithm} (LZ4 and zstd are read)"
            )));
        }
        let indexes = size.div_ceil(BLK);
        let (index_at, compact, bytes) = if compact {
            let ebase = at + 8;
            let initial = ((32 - ebase % 32) / 4) & 7;
            let two = if advise & ADVISE_COMPACTED_2B != 0 && initial < indexes {
                (indexes - initial) / 16 * 16
            } else {
                0
            };
            let rest = indexes.saturating_sub(initial + two);
            let bytes =
                (initial.min(indexes).next_multiple_of(2) + rest.next_multiple_of(2)) * 4 + two * 2;
            (ebase, Some(Compact { initial, two }), Some(bytes))
        } else {
            (at + 16, None, indexes.checked_mul(8))
        };
        let Some(idx_end) = bytes
            .and_then(|n| n.checked_add(index_at))
            .filter(|&e| e <= self.len)
        else {
            return Err(self.corrupt(format!(
                "inode {nid}: a compressed file of {size} bytes has more indexes than the image holds"
            )));
        };
        // The packed tail follows the indexes, inside one block.
        if advise & ADVISE_INLINE_PCLUSTER != 0 && z.fragment.is_none() {
            if idata == 0 || idx_end % BLK + idata > BLK || idx_end + idata > self.len {
                return Err(self.corrupt(format!(
                    "inode {nid}: its packed tail of {idata} bytes lies outside its block"
                )));
            }
            z.tail = Some((idx_end, idata));
        }
        z.index_at = index_at;
        z.compact = compact;
        Ok(z)
    }

    fn index(&self, z: &ZMap, lcn: u64) -> Result<Index, ReadError> {
        let big = z.big[0] || z.big[1];
        if let Some(c) = &z.compact {
            return self.compact_index(z.index_at, c, lcn, big);
        }
        let mut b = [0u8; 8];
        self.read_exact_at(&mut b, z.index_at + lcn * 8)?;
        let ty = u16::from_le_bytes([b[0], b[1]]) & 3;
        let u = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        if ty == NONHEAD {
            let d0 = u & 0xffff;
            if d0 & D0_CBLKCNT == 0 {
                return Ok(Index {
                    ty,
                    clusterofs: BLK,
                    u: d0,
                    cblk: None,
                });
            }
            if !big {
                return Err(self.corrupt(
                    "an index counts the blocks of a big cluster in a file without them",
                ));
            }
            return Ok(Index {
                ty,
                clusterofs: BLK,
                u: 1,
                cblk: Some(d0 & !D0_CBLKCNT),
            });
        }
        Ok(Index {
            ty,
            clusterofs: u64::from(u16::from_le_bytes([b[2], b[3]])),
            u,
            cblk: None,
        })
    }

    /// A compact index: found in its pack as the kernel finds it. A `NONHEAD` entry holds
    /// the distance back to its head (the last of a pack: the distance on to the next head,
    /// its own then taken from the entry before it) or, right after its head, the block count
    /// of a big cluster; a head's block is the pack's base (its last 4 bytes) plus the blocks
    /// of the clusters heading before it in the pack (one each without big clusters).
    fn compact_index(
        &self,
        ebase: u64,
        c: &Compact,
        lcn: u64,
        big: bool,
    ) -> Result<Index, ReadError> {
        let (mut pos, mut l, mut entry) = (ebase, lcn, 4u64);
        if lcn >= c.initial {
            pos += c.initial * 4;
            l -= c.initial;
            if l < c.two {
                entry = 2;
            } else {
                pos += c.two * 2;
                l -= c.two;
            }
        }
        pos += l * entry;
        let vcnt: usize = if entry == 4 { 2 } else { 16 };
        let psize = vcnt as u64 * entry;
        let base = pos / psize * psize;
        let mut pack = [0u8; 32];
        let pack = &mut pack[..psize as usize];
        self.read_exact_at(pack, base)?;
        let encodebits = (pack.len() * 8 - 32) / vcnt;
        let decode = |i: usize| -> (u16, u64) {
            let bit = encodebits * i;
            let mut w = 0u32;
            for k in 0..3 {
                w |= u32::from(*pack.get(bit / 8 + k).unwrap_or(&0)) << (8 * k);
            }
            let v = (w >> (bit % 8)) & ((1 << encodebits) - 1);
            (((v >> 12) & 3) as u16, u64::from(v & 0xfff))
        };
        let cblk = u64::from(D0_CBLKCNT);
        let i = ((pos - base) / entry) as usize;
        let (ty, lo) = decode(i);
        if ty == NONHEAD {
            if lo & cblk != 0 {
                if !big {
                    return Err(self.corrupt(
                        "a compact index counts the blocks of a big cluster in a file without them",
                    ));
                }
                return Ok(Index {
                    ty,
                    clusterofs: BLK,
                    u: 1,
                    cblk: Some((lo & !cblk) as u32),
                });
            }
            let d0 = if i + 1 != vcnt {
                lo
            } else {
                match decode(i - 1) {
                    (NONHEAD, prev) if prev & cblk != 0 => 2,
                    (NONHEAD, prev) => prev + 1,
                    _ => 1,
                }
            };
            return Ok(Index {
                ty,
                clusterofs: BLK,
                u: d0 as u32,
                cblk: None,
            });
        }
        let mut nblk = 0u32;
        let mut j = i as i64;
        if !big {
            nblk = 1;
            while j > 0 {
                j -= 1;
                let (t, lo) = decode(j as usize);
                if t == NONHEAD {
                    j -= lo as i64;
                }
                if j >= 0 {
                    nblk += 1;
                }
            }
        } else {
            while j > 0 {
                j -= 1;
                let (t, lo) = decode(j as usize);
                if t != NONHEAD {
                    nblk += 1;
                } else if lo & cblk != 0 {
                    // The count follows its head: skip the head.
                    j -= 1;
                    nblk += (lo & !cblk) as u32;
                } else if lo <= 1 {
                    return Err(self.corrupt(
                        "a compact index of big clusters gives a distance of 1 to its head",
                    ));
                } else {
                    // On to the entry holding the count, after the head.
                    j -= lo as i64 - 2;
                }
            }
        }
        let stored = u32::from_le_bytes(pack[pack.len() - 4..].try_into().expect("4 bytes"));
        Ok(Index {
            ty,
            clusterofs: lo,
            u: stored.wrapping_add(nblk),
            cblk: None,
        })
    }

    /// The extent of a compressed file holding byte `o` (inside its size): back from `o`'s
    /// cluster to the head cluster where the extent starts, on to the next head (or the
    /// end of the file); where its stored bytes lie (blocks, the packed tail, a fragment).
    fn extent_at(&self, d: &Data, z: &ZMap, o: u64) -> Result<Extent, ReadError> {
        let bad = |why: &str| self.corrupt(format!("a compressed file's index at byte {o}: {why}"));
        let n = d.size.div_ceil(BLK);
        let max_steps = MAX_EXTENT / BLK + 1;
        let mut lcn = o / BLK;
        let mut i = self.index(z, lcn)?;
        if i.ty != NONHEAD && o % BLK < i.clusterofs {
            // The extent starting in this cluster starts after `o`: `o` is in the previous one.
            lcn = lcn
                .checked_sub(1)
                .ok_or_else(|| bad("the first cluster does not start the file"))?;
            i = self.index(z, lcn)?;
        }
        let mut steps = 0;
        while i.ty == NONHEAD {
            let back = u64::from(i.u & 0xffff);
            steps += back;
            if back == 0 || back > lcn || steps > max_steps {
                return Err(bad("no head cluster within reach"));
            }
            lcn -= back;
            i = self.index(z, lcn)?;
        }
        if i.clusterofs >= BLK {
            return Err(bad("a head's offset lies outside its cluster"));
        }
        let head = i;
        let start = lcn * BLK + head.clusterofs;
        let mut m = lcn + 1;
        let mut next = None;
        let end = loop {
            if m >= n {
                break d.size;
            }
            let j = self.index(z, m)?;
            let (ty, ofs) = (j.ty, j.clusterofs);
            if m == lcn + 1 {
                next = Some(j);
            }
            if ty != NONHEAD {
                break (m * BLK + ofs.min(BLK)).min(d.size);
            }
            m += 1;
            if m - lcn > max_steps {
                return Err(bad("an extent longer than 12 MiB"));
            }
        };
        if start > o || end <= o || end - start > MAX_EXTENT {
            return Err(bad("the extents do not cover it"));
        }
        let alg = match head.ty {
            PLAIN => None,
            HEAD2 => Some(z.algorithms[1]),
            _ => Some(z.algorithms[0]),
        };
        // The file's last extent may be packed beside the inode or be a fragment.
        let last = end == d.size;
        let at = match (z.tail, z.fragment) {
            (Some(_), _) if last => At::Inline,
            (_, Some(f)) if last => {
                // Full indexes keep the offset's high 32 bits in the head.
                let high = if z.compact.is_none() {
                    u64::from(head.u) << 32
                } else {
                    0
                };
                return Ok(Extent {
                    start,
                    end,
                    at: At::Fragment(f | high),
                    alg,
                });
            }
            _ => {
                let big = if head.ty == HEAD1 { z.big[0] } else { z.big[1] };
                let blocks = match next {
                    Some(Index {
                        ty: NONHEAD,
                        cblk: Some(c),
                        ..
                    }) if big => c,
                    Some(Index { ty: NONHEAD, .. }) if big => {
                        return Err(bad("a big cluster without its block count"))
                    }
                    _ => 1,
                };
                if blocks == 0 || u64::from(blocks) * BLK > MAX_PCLUSTER {
                    return Err(bad(&format!("a physical cluster of {blocks} blocks")));
                }
                At::Blocks {
                    blkaddr: head.u,
                    blocks,
                }
            }
        };
        match (alg, at) {
            (None, At::Blocks { blocks, .. }) if end - start > u64::from(blocks) * BLK => {
                return Err(bad("more bytes than its uncompressed cluster stores"))
            }
            (Some(a), _) if self.algorithms & (1 << a) == 0 || !matches!(a, ALG_LZ4 | ALG_ZSTD) => {
                return Err(ReadError::Unsupported {
                    path: self.path.clone(),
                    what: format!("compression algorithm {a} (LZ4 and zstd are read)"),
                });
            }
            _ => {}
        }
        Ok(Extent {
            start,
            end,
            at,
            alg,
        })
    }

    /// The decompressed bytes of an extent stored in blocks or beside its inode. An extent
    /// may decode only the start of its cluster (a cluster shared by `-Ededupe`).
    fn decompress(&self, z: &ZMap, e: &Extent) -> Result<Vec<u8>, ReadError> {
        let len = (e.end - e.start) as usize;
        let (stored, where_) = match (e.at, z.tail) {
            (At::Inline, Some((at, n))) => {
                let mut b = vec![0u8; n as usize];
                self.read_exact_at(&mut b, at)?;
                (b, "beside its inode".to_string())
            }
            (At::Blocks { blkaddr, blocks }, _) => {
                let mut b = vec![0u8; (u64::from(blocks) * BLK) as usize];
                self.read_exact_at(&mut b, u64::from(blkaddr) * BLK)?;
                (b, format!("at block {blkaddr}"))
            }
            _ => return Err(self.corrupt("a compressed file's fragment read as a cluster")),
        };
        let bad = |why: String| {
            self.corrupt(format!(
                "the compressed cluster {where_} (file bytes {}..{}): {why}",
                e.start, e.end
            ))
        };
        let Some(alg) = e.alg else {
            if z.interlaced && e.at == At::Inline {
                return self
                    .rotated_tail(z, e.start % BLK, len)
                    .map_err(|why| bad(why.into()));
            }
            return plain(&stored, len, z.interlaced.then_some(e.start % BLK))
                .map_err(|why| bad(why.into()));
        };
        // 0PADDING: the compressed stream ends the cluster, zeros before it in its first
        // block (else it starts the cluster, and the decoder stops once the extent is whole).
        let from = if self.zero_padding {
            let first = &stored[..stored.len().min(BLK as usize)];
            first.iter().position(|&b| b != 0).unwrap_or(first.len())
        } else {
            0
        };
        let src = &stored[from..];
        let mut out = vec![0u8; len];
        if alg == ALG_LZ4 {
            let got = lzzzz::lz4::decompress_partial(src, &mut out, len)
                .map_err(|e| bad(format!("LZ4: {e}")))?;
            if got != len {
                return Err(bad(format!("{got} bytes decompressed, {len} expected")));
            }
        } else {
            zstd_prefix(src, &mut out).map_err(|e| bad(format!("zstd: {e}")))?;
        }
        Ok(out)
    }

    /// A packed tail stored uncompressed and rotated (`len` bytes from `ofs` in its block), as
    /// the kernel reads it: the rotation taken over the whole block holding the tail, the part
    /// up to the block's end from where the stored bytes would end in it. erofs-utils 1.8
    /// writes such a tail (the packed inode's, with `-Efragments,ztailpacking`) unrotated, so
    /// the kernel (and so this reader) sees other bytes than the files had; where the kernel
    /// reads past the block (memory outside the image), this is an error.
    fn rotated_tail(&self, z: &ZMap, ofs: u64, len: usize) -> Result<Vec<u8>, &'static str> {
        const PAST: &str =
            "an uncompressed tail stored rotated beside its inode, which the kernel \
                            reads from outside its block (erofs-utils 1.8 writes these with \
                            -Efragments,ztailpacking); rebuild the image without ztailpacking";
        let (at, n) = z.tail.ok_or("no packed tail")?;
        let mut block = vec![0u8; BLK as usize];
        self.read_exact_at(&mut block, at / BLK * BLK)
            .map_err(|_| "its block lies outside the image")?;
        let (bs, p) = (BLK as usize, (at % BLK) as usize);
        let cur = bs - ofs as usize;
        let from = (p + n as usize + bs - cur) % bs;
        let first = cur.min(len);
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(block.get(from..from + first).ok_or(PAST)?);
        out.extend_from_slice(block.get(p..p + len - first).ok_or(PAST)?);
        Ok(out)
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

    /// Reads `buf.len()` bytes of a compressed file at `off` (inside its size), extent by
    /// extent; the last extent is kept for the next read (the packed inode's apart, as a
    /// file's fragment is read from it while the file's extent is kept).
    fn read_z(&self, d: &Data, z: &ZMap, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if let Some(at) = z.whole {
            let at = at
                .checked_add(off)
                .ok_or_else(|| self.corrupt("a fragment lies beyond any image"))?;
            return self.read_packed(at, buf);
        }
        let mut done = 0;
        let mut last = self.last[usize::from(z.packed)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while done < buf.len() {
            let o = off + done as u64;
            let hit = last
                .as_ref()
                .is_some_and(|(at, e, _)| *at == z.index_at && e.start <= o && o < e.end);
            if !hit {
                let e = self.extent_at(d, z, o)?;
                if let At::Fragment(f) = e.at {
                    let n = (e.end - o).min((buf.len() - done) as u64) as usize;
                    let at = f
                        .checked_add(o - e.start)
                        .ok_or_else(|| self.corrupt("a fragment lies beyond any image"))?;
                    self.read_packed(at, &mut buf[done..done + n])?;
                    done += n;
                    continue;
                }
                let bytes = self.decompress(z, &e)?;
                *last = Some((z.index_at, e, bytes));
            }
            let (_, e, bytes) = last.as_ref().expect("just filled");
            let from = (o - e.start) as usize;
            let n = (bytes.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&bytes[from..from + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes of the packed inode at `at`, inside its size.
    fn read_packed(&self, at: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        let p = self.packed.as_ref().ok_or_else(|| {
            self.corrupt("a file refers to fragments, but the image has no packed inode")
        })?;
        if at.checked_add(buf.len() as u64).is_none_or(|e| e > p.size) {
            return Err(self.corrupt(format!(
                "a fragment of {} bytes at offset {at} lies outside the packed inode ({} bytes)",
                buf.len(),
                p.size
            )));
        }
        self.read_data(p, at, buf)
    }

    /// Reads `buf.len()` bytes of a file's data at `off` (inside its size).
    fn read_data(&self, d: &Data, off: u64, buf: &mut [u8]) -> Result<(), ReadError> {
        if let Some(z) = &d.z {
            if off.checked_add(buf.len() as u64).is_none_or(|e| e > d.size) {
                return Err(self.corrupt("a read past a compressed file's end"));
            }
            return self.read_z(d, z, off, buf);
        }
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
        let root = self.inode(sb, sb.root, false)?;
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
                let inode = self.inode(sb, nid, false)?;
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
                        self.files.insert(path.clone(), (inode.data, nid));
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
            .map(|(d, _)| (want, *d))
            .ok_or_else(|| ReadError::NotAFile {
                image: self.path.clone(),
                path: want.to_string(),
            })
    }

    /// The inode number of the regular file at `rel_path`: hardlinks share it.
    pub fn file_id(&self, rel_path: &str) -> Option<u64> {
        self.files
            .get(rel_path.trim_start_matches('/'))
            .map(|(_, nid)| *nid)
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
        // Flat data lies in the image; a compressed file's size is bounded by its indexes
        // (checked against the image when its inode was read) and by `limit`.
        let n = if d.z.is_some() {
            d.size.min(limit)
        } else {
            d.size.min(limit).min(self.len)
        };
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

/// An uncompressed cluster's `len` bytes: its start, or, stored rotated (`interlaced`: the
/// extent's offset in its block), from that offset to the block's end, then from its start.
/// A rotated cluster is one block (as erofs-utils writes and reads them).
fn plain(stored: &[u8], len: usize, interlaced: Option<u64>) -> Result<Vec<u8>, &'static str> {
    const SHORT: &str = "stored data shorter than its extent";
    let Some(ofs) = interlaced else {
        return stored.get(..len).map(<[u8]>::to_vec).ok_or(SHORT);
    };
    if stored.len() > BLK as usize {
        return Err("an uncompressed cluster stored rotated over more than one block");
    }
    let ofs = ofs as usize;
    let right = (BLK as usize - ofs).min(len);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(stored.get(ofs..ofs + right).ok_or(SHORT)?);
    out.extend_from_slice(stored.get(..len - right).ok_or(SHORT)?);
    Ok(out)
}

/// Fills `out` with the start of the zstd frame `src` (the whole frame, or its first bytes
/// for a shared cluster), with a window of at most 16 MiB.
fn zstd_prefix(src: &[u8], out: &mut [u8]) -> io::Result<()> {
    let mut d = zstd::stream::read::Decoder::with_buffer(src)?.single_frame();
    d.window_log_max(24)?;
    d.read_exact(out)
}
