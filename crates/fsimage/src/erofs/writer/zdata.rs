//! The data pass of a compressed image: regular files are read in tree order and cut into
//! segments of at most [`SEGMENT`] bytes (a file's segments start on 4 KiB boundaries, so
//! each one starts a logical cluster); a pool of worker threads compresses the segments and
//! the results are written in submission order, from block 1 on, so the bytes never depend
//! on the thread count. At most [`WINDOW`] segments are in flight, which bounds memory.
//!
//! A segment is cut into extents: from each position, as much input as fits compressed into
//! one 4 KiB physical cluster ("destination-size" compression), the compressed bytes at the
//! end of the block (the `0PADDING` feature: the decompressor skips the leading zeros).
//! Where compression gains nothing (the input consumed fits in the block as it is), the
//! next 4 KiB are stored as they are (a `PLAIN` extent). A file of one segment that gains
//! no block over storing it flat is stored flat instead (its tail beside its inode), as
//! mkfs.erofs does. A file of one segment with the same bytes as an earlier one shares its
//! blocks (found by size and SHA-256 before any compression).
//!
//! Tail packing (`ztailpacking`): a file's last extent, when it fits compressed (or, gaining
//! nothing, as it is) in the room left in the block where the file's indexes end, goes there
//! instead of into a block of its own; small files are then compressed too, when that
//! shrinks what sits beside the inode.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::super::Compression;
use super::{WriteError, BLK};

/// The longest segment a worker compresses at once.
pub(super) const SEGMENT: u64 = 4 << 20;
/// Segments in flight (read, compressing or waiting to be written).
const WINDOW: usize = 16;
/// The most input one extent takes (256 logical clusters).
const MAX_EXTENT: usize = 1 << 20;
const BLK_USIZE: usize = BLK as usize;

/// One regular file of the data pass.
pub(super) struct FileJob {
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Whether its tail would be stored beside its inode if it were stored flat.
    pub(super) inline_tail: bool,
    /// The most bytes its last extent may take beside its inode if it is stored compressed.
    pub(super) tail_room: usize,
}

/// One extent of a compressed file: `len` bytes of the file, in the block `blkaddr`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Extent {
    pub(super) len: u32,
    pub(super) raw: bool,
    pub(super) blkaddr: u32,
}

/// How a file was stored.
#[derive(Debug, Clone)]
pub(super) enum Stored {
    /// Uncompressed: whole blocks from `startblk` (none: `NULL_ADDR`), the tail (when it
    /// goes beside the inode) kept here.
    Flat { startblk: u32, tail: Vec<u8> },
    /// Compressed: its extents in order, `blocks` physical blocks in all; the last
    /// extent's bytes when they go beside the inode.
    Z {
        extents: Vec<Extent>,
        blocks: u64,
        tail: Option<Vec<u8>>,
    },
}

/// The data pass' result: every file's storage (in job order), the first block after the
/// data, and a digest of everything written.
pub(super) struct DataOut {
    pub(super) files: Vec<Stored>,
    pub(super) end_blk: u64,
    pub(super) digest: [u8; 32],
    /// Files sharing an earlier file's blocks.
    pub(super) duplicates: u64,
}

/// A compressor for one worker.
pub(super) struct Codec {
    kind: Compression,
    level: i32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl Codec {
    pub(super) fn new(kind: Compression, level: i32) -> Result<Self, WriteError> {
        let zstd = match kind {
            Compression::Zstd => Some(zstd::bulk::Compressor::new(level).map_err(|e| {
                WriteError::TooLarge(format!("cannot start the zstd compressor: {e}"))
            })?),
            _ => None,
        };
        Ok(Self {
            kind,
            level,
            zstd,
            scratch: vec![0u8; 2 * BLK_USIZE],
        })
    }

    /// Compresses as much of `src` as fits into `dst` (one block): (bytes of `src` taken,
    /// bytes of `dst` written); `None` when nothing fits.
    fn fill(&mut self, src: &[u8], dst: &mut [u8]) -> Option<(usize, usize)> {
        let r = match self.kind {
            Compression::Lz4 => lzzzz::lz4::compress_fill(src, dst).ok(),
            Compression::Lz4hc => lzzzz::lz4_hc::compress_fill(src, dst, self.level).ok(),
            Compression::Zstd => self.zstd_fill(src, dst),
            Compression::None => None,
        };
        r.filter(|&(read, wrote)| read > 0 && wrote > 0 && wrote <= dst.len())
    }

    /// zstd has no destination-size mode: the longest prefix of `src` whose frame fits
    /// `dst` (within 1/128 of the block), searched by the ratio seen so far and by halving
    /// when a try overflows; at most 8 tries. Each fitting try is longer than the one
    /// before, so `dst` ends holding the longest.
    fn zstd_fill(&mut self, src: &[u8], dst: &mut [u8]) -> Option<(usize, usize)> {
        let cap = dst.len();
        let z = self.zstd.as_mut()?;
        let mut fit: Option<(usize, usize)> = None;
        // Longest prefix known to fit, shortest known not to.
        let mut lo = 0usize;
        let mut hi = src.len() + 1;
        let mut m = (cap * 3).min(src.len());
        for _ in 0..8 {
            m = m.clamp(lo + 1, hi - 1);
            match z.compress_to_buffer(&src[..m], &mut self.scratch[..]) {
                Ok(n) if n <= cap => {
                    dst[..n].copy_from_slice(&self.scratch[..n]);
                    fit = Some((m, n));
                    lo = m;
                    if hi <= lo + 1 || n + cap / 128 >= cap {
                        break;
                    }
                    // Grow by the ratio seen, aiming a little short of the block.
                    let target = (cap - cap / 64) as u64;
                    m = (m as u64 * target / n.max(1) as u64) as usize;
                }
                _ => {
                    hi = m;
                    if hi <= lo + 1 {
                        break;
                    }
                    m = lo + (hi - lo) / 2;
                }
            }
        }
        fit
    }
}

/// A compressed segment: its blocks, its extents' (length, raw) in order and, when its
/// last extent is packed beside the inode (tail packing), that extent's bytes (it has no
/// block).
pub(super) struct Segment {
    pub(super) blocks: Vec<u8>,
    pub(super) extents: Vec<(u32, bool)>,
    pub(super) tail: Option<Vec<u8>>,
}

/// Cuts `data` into extents (see the module documentation). `tail_room`: the most bytes the
/// file's last extent may take beside the inode (0: none; only for the file's last
/// segment): the rest of the data, once it fits there compressed (or, when compression
/// gains nothing, as it is), goes there instead of into a block of its own.
pub(super) fn compress_segment(codec: &mut Codec, data: &[u8], tail_room: usize) -> Segment {
    let mut blocks = Vec::new();
    let mut extents = Vec::new();
    let mut pos = 0;
    let mut buf = vec![0u8; BLK_USIZE];
    let room = tail_room.min(BLK_USIZE - 1);
    while pos < data.len() {
        let rest = &data[pos..];
        let window = &rest[..rest.len().min(MAX_EXTENT)];
        let compressed = if rest.len() > BLK_USIZE {
            codec.fill(window, &mut buf)
        } else if room > 0 {
            // The last few bytes: worth compressing only beside the inode.
            codec.fill(rest, &mut buf[..room])
        } else {
            None
        };
        if room > 0 {
            let tail = match compressed {
                Some((read, wrote)) if read == rest.len() && wrote <= room && wrote < read => {
                    Some((buf[..wrote].to_vec(), false))
                }
                _ if rest.len() <= room => Some((rest.to_vec(), true)),
                _ => None,
            };
            if let Some((bytes, raw)) = tail {
                extents.push((rest.len() as u32, raw));
                return Segment {
                    blocks,
                    extents,
                    tail: Some(bytes),
                };
            }
        }
        match compressed.filter(|&(read, _)| read > BLK_USIZE) {
            Some((read, wrote)) => {
                let start = blocks.len();
                blocks.resize(start + BLK_USIZE, 0);
                blocks[start + BLK_USIZE - wrote..].copy_from_slice(&buf[..wrote]);
                extents.push((read as u32, false));
                pos += read;
            }
            None => {
                let n = rest.len().min(BLK_USIZE);
                let start = blocks.len();
                blocks.extend_from_slice(&rest[..n]);
                blocks.resize(start + BLK_USIZE, 0);
                extents.push((n as u32, true));
                pos += n;
            }
        }
    }
    Segment {
        blocks,
        extents,
        tail: None,
    }
}

/// What makes a file a copy of an earlier one: size, tail placement (flat, packed), bytes.
type DupKey = (u64, bool, usize, [u8; 32]);

struct Job {
    seq: usize,
    file: usize,
    data: Vec<u8>,
    /// The whole file is this segment: it may be stored flat.
    whole: bool,
    /// The file's last segment: its tail may go beside the inode, in this many bytes.
    tail_room: usize,
}

enum Out {
    Z(Segment),
    Flat(Vec<u8>),
    /// The same bytes as an earlier file (of the same tail placement): stored once.
    Dup(usize),
}

struct Done {
    seq: usize,
    file: usize,
    result: Result<Out, WriteError>,
}

/// Runs the data pass over `files` into `out` (see the module documentation).
pub(super) fn run(
    files: &[FileJob],
    out: &File,
    out_path: &Path,
    kind: Compression,
    level: i32,
    threads: usize,
) -> Result<DataOut, WriteError> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
    .max(1);
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    // One token a segment in flight: the reader takes one, the writer gives it back.
    let (tok_tx, tok_rx) = mpsc::sync_channel::<()>(WINDOW);

    std::thread::scope(|s| {
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || {
                let mut codec = match Codec::new(kind, level) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = done_tx.send(Done {
                            seq: 0,
                            file: 0,
                            result: Err(e),
                        });
                        return;
                    }
                };
                loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let seg = compress_segment(&mut codec, &job.data, job.tail_room);
                    let size = job.data.len() as u64;
                    // Flat when compression saves no block, or stores everything as it is.
                    let gains = seg.extents.iter().any(|e| !e.1);
                    let out = if job.whole
                        && (!gains || seg.blocks.len() as u64 >= size.next_multiple_of(BLK))
                    {
                        Out::Flat(job.data)
                    } else {
                        Out::Z(seg)
                    };
                    if done_tx
                        .send(Done {
                            seq: job.seq,
                            file: job.file,
                            result: Ok(out),
                        })
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
        // The reader: files in order, segment by segment.
        let reader_done = done_tx.clone();
        drop(done_tx);
        s.spawn(move || {
            let mut seq = 0;
            let mut seen = HashMap::new();
            for (i, f) in files.iter().enumerate() {
                let sent = read_file(f, i, &mut seq, &job_tx, &tok_tx, &mut seen, &reader_done);
                if let Err(e) = sent {
                    let Some(e) = e else { return };
                    let _ = tok_tx.send(());
                    let _ = reader_done.send(Done {
                        seq,
                        file: i,
                        result: Err(e),
                    });
                    return;
                }
            }
        });
        write_in_order(files, out, out_path, done_rx, tok_rx)
    })
}

/// Reads one file into jobs. `Err(None)`: the pass is being abandoned.
fn read_file(
    f: &FileJob,
    file: usize,
    seq: &mut usize,
    job_tx: &mpsc::SyncSender<Job>,
    tok_tx: &mpsc::SyncSender<()>,
    seen: &mut HashMap<DupKey, usize>,
    done_tx: &mpsc::Sender<Done>,
) -> Result<(), Option<WriteError>> {
    let rerr = |source| {
        Some(WriteError::Read {
            path: f.path.clone(),
            source,
        })
    };
    let changed = |got| {
        Some(WriteError::Changed {
            path: f.path.clone(),
            expected: f.size,
            got,
        })
    };
    let mut h = safefs::tree::open_input(&f.path).map_err(rerr)?;
    let mut done = 0u64;
    let whole = f.size <= SEGMENT;
    loop {
        let want = (f.size - done).min(SEGMENT) as usize;
        let mut data = Vec::with_capacity(want);
        (&mut h)
            .take(want as u64)
            .read_to_end(&mut data)
            .map_err(rerr)?;
        if data.len() < want {
            return Err(changed(done + data.len() as u64));
        }
        done += want as u64;
        if done == f.size {
            let mut probe = [0u8; 1];
            if h.read(&mut probe).map_err(rerr)? > 0 {
                return Err(changed(f.size + 1));
            }
        }
        tok_tx.send(()).map_err(|_| None)?;
        if whole && f.size > 0 {
            // The same placement of the tail too: a copy is stored exactly as its original.
            let key = (
                f.size,
                f.inline_tail,
                f.tail_room,
                Sha256::digest(&data).into(),
            );
            if let Some(&orig) = seen.get(&key) {
                done_tx
                    .send(Done {
                        seq: *seq,
                        file,
                        result: Ok(Out::Dup(orig)),
                    })
                    .map_err(|_| None)?;
                *seq += 1;
                return Ok(());
            }
            seen.insert(key, file);
        }
        job_tx
            .send(Job {
                seq: *seq,
                file,
                data,
                whole,
                tail_room: if done == f.size { f.tail_room } else { 0 },
            })
            .map_err(|_| None)?;
        *seq += 1;
        if done == f.size {
            return Ok(());
        }
    }
}

/// The writer: results in submission order, to consecutive blocks from block 1.
fn write_in_order(
    files: &[FileJob],
    out: &File,
    out_path: &Path,
    done_rx: mpsc::Receiver<Done>,
    tok_rx: mpsc::Receiver<()>,
) -> Result<DataOut, WriteError> {
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let mut stored: Vec<Option<Stored>> = (0..files.len()).map(|_| None).collect();
    let mut pending: BTreeMap<usize, Done> = BTreeMap::new();
    let mut next_seq = 0;
    let mut blk = 1u64;
    let mut hash = Sha256::new();
    let mut duplicates = 0;
    let too_large = || WriteError::TooLarge("block addresses".into());
    for d in done_rx.iter() {
        pending.insert(d.seq, d);
        while let Some(d) = pending.remove(&next_seq) {
            next_seq += 1;
            let _ = tok_rx.recv();
            match d.result? {
                Out::Dup(orig) => {
                    stored[d.file] = stored[orig].clone();
                    duplicates += 1;
                }
                Out::Flat(data) => {
                    let f = &files[d.file];
                    let body = if f.inline_tail {
                        data.len() - data.len() % BLK_USIZE
                    } else {
                        data.len()
                    };
                    let startblk = if body == 0 {
                        super::ondisk::NULL_ADDR
                    } else {
                        u32::try_from(blk).map_err(|_| too_large())?
                    };
                    for (k, b) in data[..body].chunks(BLK_USIZE).enumerate() {
                        if b.iter().any(|&x| x != 0) {
                            out.write_all_at(b, (blk + k as u64) * BLK).map_err(werr)?;
                        }
                    }
                    hash.update(&data);
                    blk += (body as u64).div_ceil(BLK);
                    stored[d.file] = Some(Stored::Flat {
                        startblk,
                        tail: data[body..].to_vec(),
                    });
                }
                Out::Z(seg) => {
                    out.write_all_at(&seg.blocks, blk * BLK).map_err(werr)?;
                    hash.update(&seg.blocks);
                    let entry = stored[d.file].get_or_insert(Stored::Z {
                        extents: Vec::new(),
                        blocks: 0,
                        tail: None,
                    });
                    let Stored::Z {
                        extents,
                        blocks,
                        tail,
                    } = entry
                    else {
                        unreachable!("a file is flat only when it is one segment")
                    };
                    let n = seg.extents.len();
                    for (k, (len, raw)) in seg.extents.into_iter().enumerate() {
                        if k + 1 == n && seg.tail.is_some() {
                            // Beside the inode: no block.
                            extents.push(Extent {
                                len,
                                raw,
                                blkaddr: 0,
                            });
                            break;
                        }
                        extents.push(Extent {
                            len,
                            raw,
                            blkaddr: u32::try_from(blk).map_err(|_| too_large())?,
                        });
                        blk += 1;
                        *blocks += 1;
                    }
                    if let Some(t) = seg.tail {
                        hash.update(&t);
                        *tail = Some(t);
                    }
                }
            }
        }
    }
    // Every job came back (the reader and workers ended), unless one failed before.
    let files: Vec<Stored> = stored
        .into_iter()
        .map(|s| {
            s.unwrap_or(Stored::Flat {
                startblk: super::ondisk::NULL_ADDR,
                tail: Vec::new(),
            })
        })
        .collect();
    Ok(DataOut {
        files,
        end_blk: blk,
        digest: hash.finalize().into(),
        duplicates,
    })
}

/// One logical cluster's index: its type (`PLAIN`/`HEAD1` where an extent starts, else
/// `NONHEAD`), the extent's offset in its head cluster, its block (heads) or the distances
/// back to its head and on to the next head (`NONHEAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Index {
    pub(super) ty: u16,
    pub(super) clusterofs: u16,
    pub(super) blkaddr: u32,
    pub(super) d0: u16,
    pub(super) d1: u16,
}

pub(super) const PLAIN: u16 = 0;
pub(super) const HEAD1: u16 = 1;
pub(super) const NONHEAD: u16 = 2;

/// The indexes of a file of `size` bytes stored as `extents`: a head index for the cluster
/// where each extent starts, a `NONHEAD` one for each cluster it covers past that, and, when
/// the file ends inside a cluster after an extent that crossed into it, a final `PLAIN`
/// index holding the end offset. One index per logical cluster.
pub(super) fn indexes(size: u64, extents: &[Extent]) -> Vec<Index> {
    let mut out = Vec::with_capacity(size.div_ceil(BLK) as usize);
    let mut clusterofs = 0u64;
    for e in extents {
        let head = Index {
            ty: if e.raw { PLAIN } else { HEAD1 },
            clusterofs: clusterofs as u16,
            blkaddr: e.blkaddr,
            d0: 0,
            d1: 0,
        };
        let mut count = u64::from(e.len);
        let mut d1 = (clusterofs + count) / BLK;
        if d1 == 0 {
            // Ends in the cluster it starts in: only the file's last extent.
            out.push(head);
            clusterofs = 0;
            continue;
        }
        let mut d0 = 0u64;
        loop {
            out.push(if d0 == 0 {
                head
            } else {
                Index {
                    ty: NONHEAD,
                    d0: d0.min(2047) as u16,
                    d1: d1 as u16,
                    ..head
                }
            });
            count -= BLK - clusterofs;
            clusterofs = 0;
            d0 += 1;
            d1 -= 1;
            if count < BLK {
                break;
            }
        }
        clusterofs = count;
    }
    if clusterofs != 0 {
        out.push(Index {
            ty: PLAIN,
            clusterofs: clusterofs as u16,
            blkaddr: 0,
            d0: 0,
            d1: 0,
        });
    }
    debug_assert_eq!(
        out.len() as u64,
        size.div_ceil(BLK),
        "one index per cluster"
    );
    out
}

/// Where the compact index area starts relative to the inode (which starts a 32-byte
/// slot), for an inode and xattrs of `meta_len` bytes: after the map header, itself at the
/// next 8-byte boundary.
pub(super) fn compact_start(meta_len: usize) -> usize {
    meta_len.next_multiple_of(8) + 8
}

/// The compressed inode's map in the compact form (`COMPRESSED_COMPACT`, `COMPACTED_2B`):
/// the map header (algorithm, 4 KiB logical clusters), then the indexes in packs whose
/// last 4 bytes hold the block before the pack's first head (its heads' blocks follow one
/// another): 4-byte entries (packs of 2) up to the first 32-byte boundary, 2-byte entries
/// (packs of 16) for as many whole packs as remain, 4-byte entries for the rest. An entry
/// holds its type and its head's offset, or (`NONHEAD`) the distance back to its head,
/// except a pack's last `NONHEAD`, which holds the distance on to the next head.
/// `meta_len` is the inode's and its xattrs' length.
pub(super) fn map_bytes(
    size: u64,
    extents: &[Extent],
    algorithm: u8,
    meta_len: usize,
    tail: Option<&[u8]>,
) -> Vec<u8> {
    const COMPACTED_2B: u16 = 1;
    const INLINE_PCLUSTER: u16 = 8;
    let idx = indexes(size, extents);
    let total = idx.len();
    let ebase = compact_start(meta_len);
    let initial = ((32 - ebase % 32) / 4) & 7;
    let two = if initial < total {
        (total - initial) / 16 * 16
    } else {
        0
    };
    let mut out = Vec::with_capacity(8 + 2 * total + 64 + tail.map_or(0, <[u8]>::len));
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&(tail.map_or(0, <[u8]>::len) as u16).to_le_bytes());
    let advise = COMPACTED_2B | if tail.is_some() { INLINE_PCLUSTER } else { 0 };
    out.extend_from_slice(&advise.to_le_bytes());
    out.push(algorithm); // HEAD1's algorithm
    out.push(0); // logical clusters of one block
                 // The block before the first head of the next pack: starts before the first extent.
    let mut base = extents.first().map_or(0, |e| e.blkaddr.wrapping_sub(1));
    let mut at = 0;
    let mut pack = |out: &mut Vec<u8>, entries: &[Index], vcnt: usize, bytes: usize| {
        let encodebits = (vcnt * bytes * 8 - 32) / vcnt;
        let mut p = vec![0u8; vcnt * bytes];
        if let Some(h) = entries.iter().find(|e| e.ty != NONHEAD && e.blkaddr != 0) {
            base = h.blkaddr.wrapping_sub(1);
        }
        for i in 0..vcnt {
            // Past the file's last cluster (the end of the last 4-byte pack): a head.
            let e = entries.get(i).copied().unwrap_or(Index {
                ty: PLAIN,
                clusterofs: 0,
                blkaddr: 0,
                d0: 0,
                d1: 0,
            });
            let lo = match e.ty {
                NONHEAD if i + 1 == vcnt => e.d1.min(4095),
                NONHEAD => e.d0,
                _ => e.clusterofs,
            };
            let v = (u32::from(e.ty) << 12) | u32::from(lo);
            let pos = encodebits * i;
            let w = v << (pos % 8);
            for k in 0..3 {
                if let Some(b) = p.get_mut(pos / 8 + k) {
                    *b |= (w >> (8 * k)) as u8;
                }
            }
        }
        let n = p.len();
        p[n - 4..].copy_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&p);
        // The next pack's heads follow this one's.
        let heads = entries.iter().filter(|e| e.ty != NONHEAD).count() as u32;
        base = base.wrapping_add(heads);
    };
    while at < initial.min(total) {
        let n = 2.min(total - at);
        pack(&mut out, &idx[at..at + n], 2, 4);
        at += n;
    }
    while at < initial.min(total) + two {
        pack(&mut out, &idx[at..at + 16], 16, 2);
        at += 16;
    }
    while at < total {
        let n = 2.min(total - at);
        pack(&mut out, &idx[at..at + n], 2, 4);
        at += n;
    }
    // The tail-packed last extent follows the last pack.
    out.extend_from_slice(tail.unwrap_or_default());
    out
}

/// The bytes of the compact indexes of a file of `size` bytes (see [`map_bytes`]).
pub(super) fn compact_index_len(size: u64, meta_len: usize) -> usize {
    let total = size.div_ceil(BLK) as usize;
    let initial = ((32 - compact_start(meta_len) % 32) / 4) & 7;
    let two = if initial < total {
        (total - initial) / 16 * 16
    } else {
        0
    };
    let rest = total.saturating_sub(initial + two);
    (initial.min(total).next_multiple_of(2) + rest.next_multiple_of(2)) * 4 + two * 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let words = ["alpha ", "beta ", "gamma ", "delta "];
        let mut out = Vec::new();
        let mut x = 7u32;
        while out.len() < n {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            out.extend_from_slice(words[(x >> 16) as usize % 4].as_bytes());
        }
        out.truncate(n);
        out
    }

    #[test]
    fn extents_round_trip_through_lz4() {
        for kind in [Compression::Lz4, Compression::Lz4hc] {
            let mut c = Codec::new(kind, kind.default_level()).unwrap();
            let mut data = text(200_000);
            data.extend(testkit_free_random(10_000));
            data.extend(text(5000));
            let seg = compress_segment(&mut c, &data, 0);
            assert_eq!(seg.blocks.len(), seg.extents.len() * BLK_USIZE);
            let mut back = Vec::new();
            for (k, (len, raw)) in seg.extents.iter().enumerate() {
                let b = &seg.blocks[k * BLK_USIZE..(k + 1) * BLK_USIZE];
                if *raw {
                    back.extend_from_slice(&b[..*len as usize]);
                } else {
                    assert!(*len as usize > BLK_USIZE, "a compressed extent gains");
                    let z = b.iter().position(|&x| x != 0).unwrap();
                    let mut o = vec![0u8; *len as usize];
                    assert_eq!(lzzzz::lz4::decompress(&b[z..], &mut o).unwrap(), o.len());
                    back.extend_from_slice(&o);
                }
            }
            assert_eq!(back, data);
            assert!(seg.extents.iter().any(|e| e.1) && seg.extents.iter().any(|e| !e.1));
        }
    }

    fn testkit_free_random(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn zstd_fill_fits_one_block() {
        let mut c = Codec::new(Compression::Zstd, 3).unwrap();
        let data = text(300_000);
        let seg = compress_segment(&mut c, &data, 0);
        let mut back = Vec::new();
        for (k, (len, raw)) in seg.extents.iter().enumerate() {
            let b = &seg.blocks[k * BLK_USIZE..(k + 1) * BLK_USIZE];
            assert!(!raw);
            let z = b.iter().position(|&x| x != 0).unwrap();
            back.extend(zstd::bulk::decompress(&b[z..], *len as usize).unwrap());
        }
        assert_eq!(back, data);
        // Well filled: a few blocks, not one per 4 KiB of input.
        assert!(seg.extents.len() < 30, "{}", seg.extents.len());
    }

    #[test]
    fn indexes_follow_the_extents() {
        // 27011 bytes compressed, then 9104: heads in clusters 0 and 6, a final index.
        let e = [
            Extent {
                len: 27011,
                raw: false,
                blkaddr: 3,
            },
            Extent {
                len: 9104,
                raw: false,
                blkaddr: 4,
            },
        ];
        let idx = indexes(36115, &e);
        let i = |ty, clusterofs, blkaddr, d0, d1| Index {
            ty,
            clusterofs,
            blkaddr,
            d0,
            d1,
        };
        assert_eq!(idx.len(), 9);
        assert_eq!(idx[0], i(HEAD1, 0, 3, 0, 0));
        assert_eq!(idx[1], i(NONHEAD, 0, 3, 1, 5));
        assert_eq!(idx[5], i(NONHEAD, 0, 3, 5, 1));
        assert_eq!(idx[6], i(HEAD1, 2435, 4, 0, 0));
        assert_eq!(idx[7], i(NONHEAD, 2435, 4, 1, 1));
        assert_eq!(idx[8], i(PLAIN, 3347, 0, 0, 0));
        // A 32-byte inode: the header at 32, entries from 40: three 4-byte packs up to the
        // 32-byte boundary at 64, then (9 - 6 < 16) one more 4-byte pack and a half one.
        let m = map_bytes(36115, &e, 0, 32, None);
        assert_eq!(m.len(), 8 + 5 * 8);
        assert_eq!(&m[4..8], &[1, 0, 0, 0]);
        let entry = |pack: usize, k: usize| {
            u16::from_le_bytes([m[8 + pack * 8 + 2 * k], m[9 + pack * 8 + 2 * k]])
        };
        let base =
            |pack: usize| u32::from_le_bytes(m[12 + pack * 8..16 + pack * 8].try_into().unwrap());
        assert_eq!(
            (entry(0, 0), entry(0, 1), base(0)),
            (1 << 12, (2 << 12) | 5, 2)
        );
        // Cluster 5, a pack's last NONHEAD: the distance on to the next head.
        assert_eq!((entry(2, 0), entry(2, 1)), ((2 << 12) | 4, (2 << 12) | 1));
        assert_eq!(
            (entry(3, 0), entry(3, 1), base(3)),
            ((1 << 12) | 2435, (2 << 12) | 1, 3)
        );
        assert_eq!((entry(4, 0), entry(4, 1)), (3347, 0));
    }
}
