//! Writes a folder as a squashfs 4.0 image.
//!
//! Three passes: [`scan`] reads the tree into memory (metadata only, entries sorted by name
//! bytes as squashfs requires, hardlinks folded into one inode); the data pass streams every
//! regular file in tree order, cuts it into 128 KiB blocks compressed by a pool of worker
//! threads and written back in submission order (so the bytes never depend on the thread
//! count), tail ends packed into shared fragment blocks, duplicate files stored once; the
//! metadata pass writes inodes (children before their directory), directory listings, the
//! fragment, id and xattr tables and finally the superblock at offset 0.
//!
//! Ownership is always root (one id, 0), timestamps are one fixed `mtime`: the output is a
//! function of the tree's names, modes, contents, links and kept xattrs only.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;

use sha2::{Digest, Sha256};

use super::{Compression, MAGIC};

/// Data block size: 128 KiB, mksquashfs' default.
pub const BLOCK_SIZE: u32 = 128 * 1024;
const BLOCK_LOG: u16 = 17;
const METADATA_SIZE: usize = 8192;
const UNCOMPRESSED_BLOCK: u32 = 1 << 24;
const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
const NO_XATTR: u32 = 0xFFFF_FFFF;
const NO_TABLE: u64 = 0xFFFF_FFFF_FFFF_FFFF;
/// Files up to this size are read whole and hashed, so duplicates are stored once.
const DEDUP_MAX: u64 = 32 * 1024 * 1024;

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
    #[error("device number of {} does not fit squashfs' 32-bit encoding", .0.display())]
    Device(PathBuf),
    #[error("name {name:?} in {} is longer than squashfs' 256 bytes", dir.display())]
    NameTooLong { dir: PathBuf, name: String },
    #[error("{what} level {level} is out of range {min}..={max}")]
    Level {
        what: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },
    #[error("{0} compression failed")]
    Compress(&'static str, #[source] io::Error),
    #[error("cannot write the image {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the tree is too large for squashfs ({0})")]
    TooLarge(&'static str),
}

/// How to write the image.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WriterOptions {
    /// Block compressor (also used for metadata).
    pub compression: Compression,
    /// Compressor level; `None` = [`Compression::default_level`].
    pub level: Option<i32>,
    /// The modification time of every inode and of the image.
    pub mtime: u32,
    /// Compression threads; 0 = the number of CPUs. The output does not depend on it.
    pub threads: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Gzip,
            level: None,
            mtime: 0,
            threads: 0,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteStats {
    /// Inodes (hardlinks count once).
    pub inodes: u32,
    /// Regular files (inodes).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Bytes of regular file data before compression (each inode once).
    pub data_bytes: u64,
    /// Files whose contents were already stored under another name.
    pub duplicates: u64,
    /// Size of the image, padded to 4 KiB.
    pub image_bytes: u64,
    /// Fragment blocks.
    pub fragments: u32,
    /// Distinct xattr sets.
    pub xattr_sets: u32,
}

// ---------------------------------------------------------------------------------------------
// Scan

/// An xattr as stored: (prefix type, name without the prefix, value).
type Xattr = (u16, Vec<u8>, Vec<u8>);

/// The writer thread's result: job placements (offset, size word), end offset, the file.
type Written = (Vec<(u64, u32)>, u64, File);

#[derive(Debug)]
enum Kind {
    Dir { entries: Vec<(Vec<u8>, usize)> },
    File { size: u64, path: PathBuf },
    Symlink(Vec<u8>),
    Char(u32),
    Block(u32),
    Fifo,
    Socket,
}

#[derive(Debug)]
struct Inode {
    mode: u16,
    nlink: u32,
    xattrs: Vec<Xattr>,
    kind: Kind,
}

struct Tree {
    inodes: Vec<Inode>,
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Kept xattrs: `user.*`, `trusted.*` and `security.capability`, as (type, name without
/// prefix, value), sorted.
fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 8, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let (ty, rest) = if let Some(r) = name.strip_prefix(b"user.") {
            (0u16, r)
        } else if let Some(r) = name.strip_prefix(b"trusted.") {
            (1, r)
        } else if name == b"security.capability" {
            (2, &b"capability"[..])
        } else {
            continue;
        };
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname, &mut value[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 16, 0),
                Err(e) => return Err(e.into()),
            }
        };
        value.truncate(len);
        out.push((ty, rest.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

fn squashfs_dev(rdev: u64, path: &Path) -> Result<u32, WriteError> {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    let enc = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    u32::try_from(enc).map_err(|_| WriteError::Device(path.to_path_buf()))
}

fn scan(root: &Path) -> Result<Tree, WriteError> {
    let meta = fs::metadata(root).map_err(read_err(root))?;
    if !meta.is_dir() {
        return Err(WriteError::NotADirectory(root.to_path_buf()));
    }
    let mut tree = Tree { inodes: Vec::new() };
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    scan_dir(root, &meta, &mut tree, &mut links)?;
    Ok(tree)
}

fn scan_dir(
    dir: &Path,
    meta: &fs::Metadata,
    tree: &mut Tree,
    links: &mut HashMap<(u64, u64), usize>,
) -> Result<usize, WriteError> {
    let idx = tree.inodes.len();
    tree.inodes.push(Inode {
        mode: (meta.mode() & 0o7777) as u16,
        nlink: 1,
        xattrs: read_xattrs(dir).map_err(read_err(dir))?,
        kind: Kind::Dir {
            entries: Vec::new(),
        },
    });
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(read_err(dir))? {
        let e = e.map_err(read_err(dir))?;
        names.push(e.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        if name.len() > 256 {
            return Err(WriteError::NameTooLong {
                dir: dir.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
            });
        }
        let path = dir.join(&name);
        let m = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let ft = m.file_type();
        let child = if ft.is_dir() {
            scan_dir(&path, &m, tree, links)?
        } else {
            if ft.is_file() && m.nlink() > 1 {
                if let Some(&i) = links.get(&(m.dev(), m.ino())) {
                    tree.inodes[i].nlink += 1;
                    entries.push((name.as_bytes().to_vec(), i));
                    continue;
                }
            }
            let kind = if ft.is_file() {
                Kind::File {
                    size: m.len(),
                    path: path.clone(),
                }
            } else if ft.is_symlink() {
                let t = fs::read_link(&path).map_err(read_err(&path))?;
                Kind::Symlink(t.as_os_str().as_bytes().to_vec())
            } else if ft.is_char_device() {
                Kind::Char(squashfs_dev(m.rdev(), &path)?)
            } else if ft.is_block_device() {
                Kind::Block(squashfs_dev(m.rdev(), &path)?)
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            let i = tree.inodes.len();
            tree.inodes.push(Inode {
                mode: (m.mode() & 0o7777) as u16,
                nlink: 1,
                xattrs: read_xattrs(&path).map_err(read_err(&path))?,
                kind,
            });
            if ft.is_file() && m.nlink() > 1 {
                links.insert((m.dev(), m.ino()), i);
            }
            i
        };
        entries.push((name.as_bytes().to_vec(), child));
    }
    if let Kind::Dir { entries: e } = &mut tree.inodes[idx].kind {
        *e = entries;
    }
    Ok(idx)
}

// ---------------------------------------------------------------------------------------------
// Compression

struct Codec {
    compression: Compression,
    level: i32,
    zlib: Option<flate2::Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Codec {
    fn new(compression: Compression, level: i32) -> io::Result<Self> {
        Ok(Self {
            compression,
            level,
            zlib: None,
            zstd: match compression {
                Compression::Zstd => Some(zstd::bulk::Compressor::new(level)?),
                _ => None,
            },
        })
    }

    fn compress(&mut self, input: &[u8]) -> Result<Vec<u8>, WriteError> {
        let name = self.compression.name();
        let err = |e: io::Error| WriteError::Compress(name, e);
        match self.compression {
            Compression::Gzip => {
                let level = self.level as u32;
                let z = self.zlib.get_or_insert_with(|| {
                    flate2::Compress::new(flate2::Compression::new(level), true)
                });
                z.reset();
                let mut out = Vec::with_capacity(input.len() + input.len() / 512 + 64);
                let mut consumed = 0usize;
                loop {
                    let before = z.total_in();
                    let st = z
                        .compress_vec(&input[consumed..], &mut out, flate2::FlushCompress::Finish)
                        .map_err(|e| err(io::Error::other(e)))?;
                    consumed += (z.total_in() - before) as usize;
                    if st == flate2::Status::StreamEnd {
                        break;
                    }
                    out.reserve(out.capacity().max(4096));
                }
                Ok(out)
            }
            Compression::Zstd => self
                .zstd
                .as_mut()
                .expect("zstd compressor created with the codec")
                .compress(input)
                .map_err(err),
            Compression::Xz => {
                let mut opts = liblzma::stream::LzmaOptions::new_preset(self.level as u32)
                    .map_err(|e| err(io::Error::other(e)))?;
                opts.dict_size(BLOCK_SIZE);
                let mut filters = liblzma::stream::Filters::new();
                filters.lzma2(&opts);
                let mut s = liblzma::stream::Stream::new_stream_encoder(
                    &filters,
                    liblzma::stream::Check::Crc32,
                )
                .map_err(|e| err(io::Error::other(e)))?;
                let mut out = Vec::with_capacity(input.len() + input.len() / 512 + 128);
                let mut consumed = 0usize;
                loop {
                    let before = s.total_in();
                    let st = s
                        .process_vec(
                            &input[consumed..],
                            &mut out,
                            liblzma::stream::Action::Finish,
                        )
                        .map_err(|e| err(io::Error::other(e)))?;
                    consumed += (s.total_in() - before) as usize;
                    if st == liblzma::stream::Status::StreamEnd {
                        break;
                    }
                    out.reserve(out.capacity().max(4096));
                }
                Ok(out)
            }
        }
    }

    /// Compressed bytes and whether they are stored uncompressed (when compression does not
    /// make the block smaller).
    fn block(&mut self, input: Vec<u8>) -> Result<(Vec<u8>, bool), WriteError> {
        let c = self.compress(&input)?;
        if c.len() < input.len() {
            Ok((c, false))
        } else {
            Ok((input, true))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata blocks

struct MetaWriter {
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl MetaWriter {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            buf: Vec::with_capacity(METADATA_SIZE * 2),
        }
    }

    /// (start of the current block relative to the table, offset inside it).
    fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.buf.len() as u16)
    }

    fn reference(&self) -> u64 {
        let (b, o) = self.pos();
        (b << 16) | o as u64
    }

    fn write(&mut self, codec: &mut Codec, bytes: &[u8]) -> Result<(), WriteError> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= METADATA_SIZE {
            let rest = self.buf.split_off(METADATA_SIZE);
            let block = std::mem::replace(&mut self.buf, rest);
            self.emit(codec, block)?;
        }
        Ok(())
    }

    fn emit(&mut self, codec: &mut Codec, block: Vec<u8>) -> Result<(), WriteError> {
        let len = block.len();
        let (bytes, raw) = codec.block(block)?;
        let header = bytes.len() as u16 | if raw { 0x8000 } else { 0 };
        debug_assert!(raw || bytes.len() < len);
        self.out.extend_from_slice(&header.to_le_bytes());
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    fn finish(mut self, codec: &mut Codec) -> Result<Vec<u8>, WriteError> {
        if !self.buf.is_empty() {
            let block = std::mem::take(&mut self.buf);
            self.emit(codec, block)?;
        }
        Ok(self.out)
    }
}

// ---------------------------------------------------------------------------------------------
// Data pass

struct Job {
    seq: usize,
    data: Vec<u8>,
}

struct Done {
    seq: usize,
    result: Result<(Vec<u8>, bool), WriteError>,
}

#[derive(Debug, Clone, Copy)]
enum BlockRef {
    Seq(usize),
    Sparse,
}

#[derive(Debug, Clone, Default)]
struct FileData {
    /// Job sequence number the file's blocks start at.
    first_seq: usize,
    blocks: Vec<BlockRef>,
    /// (fragment index, offset inside the fragment block).
    fragment: Option<(u32, u32)>,
}

/// Where every regular file's data went.
struct DataLayout {
    files: HashMap<usize, FileData>,
    /// Job results: (absolute offset, size word).
    placed: Vec<(u64, u32)>,
    /// Fragment block job sequence numbers, by fragment index.
    fragments: Vec<usize>,
    end: u64,
    data_bytes: u64,
    duplicates: u64,
}

struct Submitter {
    tx: SyncSender<Job>,
    next_seq: usize,
    frag_buf: Vec<u8>,
    fragments: Vec<usize>,
}

impl Submitter {
    fn submit(&mut self, data: Vec<u8>) -> Option<usize> {
        let seq = self.next_seq;
        self.next_seq += 1;
        // A send error means the pipeline stopped on an error, reported at the join.
        self.tx.send(Job { seq, data }).ok().map(|_| seq)
    }

    fn flush_fragment(&mut self) {
        if !self.frag_buf.is_empty() {
            let data =
                std::mem::replace(&mut self.frag_buf, Vec::with_capacity(BLOCK_SIZE as usize));
            let seq = self.next_seq;
            self.submit(data);
            self.fragments.push(seq);
        }
    }

    fn block(&mut self, fd: &mut FileData, block: &[u8]) {
        if block.iter().all(|&b| b == 0) {
            fd.blocks.push(BlockRef::Sparse);
        } else {
            let seq = self.next_seq;
            self.submit(block.to_vec());
            fd.blocks.push(BlockRef::Seq(seq));
        }
    }

    fn tail(&mut self, fd: &mut FileData, tail: &[u8]) {
        if tail.is_empty() {
            return;
        }
        if self.frag_buf.len() + tail.len() > BLOCK_SIZE as usize {
            self.flush_fragment();
        }
        fd.fragment = Some((self.fragments.len() as u32, self.frag_buf.len() as u32));
        self.frag_buf.extend_from_slice(tail);
    }

    /// A file held in memory: full blocks, then the tail into a fragment.
    fn file_bytes(&mut self, content: &[u8]) -> FileData {
        let mut fd = FileData {
            first_seq: self.next_seq,
            ..Default::default()
        };
        let bs = BLOCK_SIZE as usize;
        let full = content.len() / bs * bs;
        for block in content[..full].chunks(bs) {
            self.block(&mut fd, block);
        }
        self.tail(&mut fd, &content[full..]);
        fd
    }

    /// A file streamed from `read`, expected to hold `size` bytes; returns the bytes read
    /// (at most `size` + one block, to notice a file that grew).
    fn file_stream(&mut self, mut read: impl Read, size: u64) -> io::Result<(FileData, u64)> {
        let mut fd = FileData {
            first_seq: self.next_seq,
            ..Default::default()
        };
        let bs = BLOCK_SIZE as usize;
        let mut buf = vec![0u8; bs];
        let mut total = 0u64;
        loop {
            let mut n = 0;
            while n < bs {
                let r = read.read(&mut buf[n..])?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            total += n as u64;
            if n == bs && total < size {
                self.block(&mut fd, &buf);
                continue;
            }
            if n == bs && total == size {
                self.block(&mut fd, &buf);
            } else {
                self.tail(&mut fd, &buf[..n]);
            }
            break;
        }
        Ok((fd, total))
    }
}

fn data_pass(
    tree: &Tree,
    out: File,
    opts: &WriterOptions,
    level: i32,
    out_path: &Path,
) -> Result<(DataLayout, File), WriteError> {
    let threads = if opts.threads == 0 {
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.threads
    };
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads * 4);
    let job_rx: Arc<Mutex<Receiver<Job>>> = Arc::new(Mutex::new(job_rx));
    let (done_tx, done_rx) = mpsc::channel::<Done>();

    let mut workers = Vec::new();
    for _ in 0..threads {
        let rx = Arc::clone(&job_rx);
        let tx = done_tx.clone();
        let compression = opts.compression;
        workers.push(thread::spawn(move || {
            let mut codec = match Codec::new(compression, level) {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Done {
                        seq: usize::MAX,
                        result: Err(WriteError::Compress(compression.name(), e)),
                    });
                    return;
                }
            };
            loop {
                let job = match rx.lock() {
                    Ok(guard) => guard.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let result = codec.block(job.data);
                let failed = result.is_err();
                if tx
                    .send(Done {
                        seq: job.seq,
                        result,
                    })
                    .is_err()
                    || failed
                {
                    return;
                }
            }
        }));
    }
    drop(done_tx);

    let out_path_w = out_path.to_path_buf();
    let writer = thread::spawn(move || -> Result<Written, WriteError> {
        let werr = |source| WriteError::Write {
            path: out_path_w.clone(),
            source,
        };
        let mut w = BufWriter::with_capacity(1 << 20, out);
        w.seek(SeekFrom::Start(96)).map_err(werr)?;
        let mut offset = 96u64;
        let mut placed: Vec<(u64, u32)> = Vec::new();
        let mut pending: BTreeMap<usize, (Vec<u8>, bool)> = BTreeMap::new();
        let mut next = 0usize;
        let mut first_err = None;
        for done in done_rx {
            match done.result {
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue;
                }
                Ok(r) => {
                    pending.insert(done.seq, r);
                }
            }
            while let Some((bytes, raw)) = pending.remove(&next) {
                w.write_all(&bytes).map_err(werr)?;
                placed.push((
                    offset,
                    bytes.len() as u32 | if raw { UNCOMPRESSED_BLOCK } else { 0 },
                ));
                offset += bytes.len() as u64;
                next += 1;
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let f = w.into_inner().map_err(|e| werr(e.into_error()))?;
        Ok((placed, offset, f))
    });

    let mut sub = Submitter {
        tx: job_tx,
        next_seq: 0,
        frag_buf: Vec::with_capacity(BLOCK_SIZE as usize),
        fragments: Vec::new(),
    };
    let mut files = HashMap::new();
    let mut seen: HashMap<(u64, [u8; 32]), usize> = HashMap::new();
    let mut data_bytes = 0u64;
    let mut duplicates = 0u64;
    let mut produce = || -> Result<(), WriteError> {
        for (idx, inode) in tree.inodes.iter().enumerate() {
            let Kind::File { size, path } = &inode.kind else {
                continue;
            };
            let size = *size;
            let mut f = File::open(path).map_err(read_err(path))?;
            let changed = |got| WriteError::Changed {
                path: path.clone(),
                expected: size,
                got,
            };
            if size <= DEDUP_MAX {
                let mut content = Vec::with_capacity(size as usize);
                Read::by_ref(&mut f)
                    .take(size + 1)
                    .read_to_end(&mut content)
                    .map_err(read_err(path))?;
                if content.len() as u64 != size {
                    return Err(changed(content.len() as u64));
                }
                let hash: [u8; 32] = Sha256::digest(&content).into();
                if let Some(&orig) = seen.get(&(size, hash)) {
                    duplicates += 1;
                    files.insert(idx, DupOf(orig).into());
                    continue;
                }
                seen.insert((size, hash), idx);
                let fd = sub.file_bytes(&content);
                files.insert(idx, Placed::File(fd));
            } else {
                let (fd, got) = sub.file_stream(&mut f, size).map_err(read_err(path))?;
                let mut extra = [0u8; 1];
                if got != size || f.read(&mut extra).map_err(read_err(path))? != 0 {
                    return Err(changed(got));
                }
                files.insert(idx, Placed::File(fd));
            }
            data_bytes += size;
        }
        sub.flush_fragment();
        Ok(())
    };
    let produced = produce();
    let Submitter { tx, fragments, .. } = sub;
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    let written = writer
        .join()
        .map_err(|_| WriteError::Compress("worker", io::Error::other("writer thread panicked")))?;
    produced?;
    let (placed, end, file) = written?;

    let mut resolved = HashMap::new();
    for (idx, p) in &files {
        if let Placed::File(fd) = p {
            resolved.insert(*idx, fd.clone());
        }
    }
    for (idx, p) in &files {
        if let Placed::Dup(DupOf(orig)) = p {
            let fd = resolved[orig].clone();
            resolved.insert(*idx, fd);
        }
    }
    Ok((
        DataLayout {
            files: resolved,
            placed,
            fragments,
            end,
            data_bytes,
            duplicates,
        },
        file,
    ))
}

struct DupOf(usize);

enum Placed {
    File(FileData),
    Dup(DupOf),
}

impl From<DupOf> for Placed {
    fn from(d: DupOf) -> Self {
        Placed::Dup(d)
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata pass

struct XattrTable {
    kv: MetaWriter,
    ids: Vec<(u64, u32, u32)>,
    by_set: HashMap<Vec<Xattr>, u32>,
}

impl XattrTable {
    fn id(&mut self, codec: &mut Codec, set: &[Xattr]) -> Result<u32, WriteError> {
        if set.is_empty() {
            return Ok(NO_XATTR);
        }
        if let Some(&id) = self.by_set.get(set) {
            return Ok(id);
        }
        let reference = self.kv.reference();
        let mut bytes = Vec::new();
        for (ty, name, value) in set {
            bytes.extend_from_slice(&ty.to_le_bytes());
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend_from_slice(value);
        }
        self.kv.write(codec, &bytes)?;
        let id = self.ids.len() as u32;
        self.ids
            .push((reference, set.len() as u32, bytes.len() as u32));
        self.by_set.insert(set.to_vec(), id);
        Ok(id)
    }
}

struct MetaPass<'a> {
    tree: &'a Tree,
    layout: &'a DataLayout,
    codec: Codec,
    mtime: u32,
    inodes: MetaWriter,
    dirs: MetaWriter,
    xattrs: XattrTable,
    numbers: Vec<u32>,
    refs: Vec<Option<u64>>,
}

fn post_order(tree: &Tree, dir: usize, seen: &mut [bool], order: &mut Vec<usize>) {
    if let Kind::Dir { entries } = &tree.inodes[dir].kind {
        for &(_, child) in entries {
            if matches!(tree.inodes[child].kind, Kind::Dir { .. }) {
                post_order(tree, child, seen, order);
            } else if !seen[child] {
                seen[child] = true;
                order.push(child);
            }
        }
    }
    order.push(dir);
}

fn basic_type(kind: &Kind) -> u16 {
    match kind {
        Kind::Dir { .. } => 1,
        Kind::File { .. } => 2,
        Kind::Symlink(_) => 3,
        Kind::Block(_) => 4,
        Kind::Char(_) => 5,
        Kind::Fifo => 6,
        Kind::Socket => 7,
    }
}

impl MetaPass<'_> {
    fn header(&self, buf: &mut Vec<u8>, ty: u16, idx: usize) {
        buf.extend_from_slice(&ty.to_le_bytes());
        buf.extend_from_slice(&self.tree.inodes[idx].mode.to_le_bytes());
        buf.extend_from_slice(&0u16.to_le_bytes()); // uid index: id 0 (root)
        buf.extend_from_slice(&0u16.to_le_bytes()); // gid index
        buf.extend_from_slice(&self.mtime.to_le_bytes());
        buf.extend_from_slice(&self.numbers[idx].to_le_bytes());
    }

    fn write_dir(&mut self, idx: usize, parent: u32) -> Result<(), WriteError> {
        let tree = self.tree;
        let Kind::Dir { entries } = &tree.inodes[idx].kind else {
            unreachable!("write_dir on a directory")
        };
        let mut subdirs = 0u32;
        for &(_, child) in entries {
            if matches!(self.tree.inodes[child].kind, Kind::Dir { .. }) {
                subdirs += 1;
                self.write_dir(child, self.numbers[idx])?;
            } else if self.refs[child].is_none() {
                self.write_other(child)?;
            }
        }
        // The listing: runs of entries sharing an inode metadata block, at most 256 each, a
        // new run (and an index entry) whenever the listing enters a new metadata block, so a
        // lookup in a large directory decompresses one block of it.
        let (dir_block, dir_offset) = self.dirs.pos();
        let mut listing_len = 0usize;
        let mut index: Vec<(u32, u32, &[u8])> = Vec::new();
        let mut last_block = dir_block;
        let mut i = 0;
        while i < entries.len() {
            let (run_block, run_offset) = self.dirs.pos();
            if run_block != last_block {
                let block = u32::try_from(run_block)
                    .map_err(|_| WriteError::TooLarge("directory table"))?;
                index.push((listing_len as u32, block, &entries[i].0));
                last_block = run_block;
            }
            let first = entries[i].1;
            let base_ref = self.refs[first].expect("child inode written");
            let base_num = self.numbers[first];
            let mut run = Vec::with_capacity(1024);
            run.extend_from_slice(&[0u8; 12]);
            let mut j = i;
            while j < entries.len() && j - i < 256 {
                let (name, c) = &entries[j];
                let r = self.refs[*c].expect("child inode written");
                let diff = self.numbers[*c] as i64 - base_num as i64;
                if r >> 16 != base_ref >> 16 || !(-32768..=32767).contains(&diff) {
                    break;
                }
                if j > i && run_offset as usize + run.len() >= METADATA_SIZE {
                    break;
                }
                run.extend_from_slice(&((r & 0xffff) as u16).to_le_bytes());
                run.extend_from_slice(&(diff as i16).to_le_bytes());
                run.extend_from_slice(&basic_type(&tree.inodes[*c].kind).to_le_bytes());
                run.extend_from_slice(&((name.len() - 1) as u16).to_le_bytes());
                run.extend_from_slice(name);
                j += 1;
            }
            run[0..4].copy_from_slice(&((j - i - 1) as u32).to_le_bytes());
            run[4..8].copy_from_slice(&((base_ref >> 16) as u32).to_le_bytes());
            run[8..12].copy_from_slice(&base_num.to_le_bytes());
            self.dirs.write(&mut self.codec, &run)?;
            listing_len += run.len();
            i = j;
        }
        let file_size = listing_len as u64 + 3;
        let xattr = self
            .xattrs
            .id(&mut self.codec, &self.tree.inodes[idx].xattrs)?;
        let nlink = 2 + subdirs;
        let dir_block =
            u32::try_from(dir_block).map_err(|_| WriteError::TooLarge("directory table"))?;
        let mut buf = Vec::with_capacity(40);
        if file_size > 0xffff || xattr != NO_XATTR || !index.is_empty() {
            self.header(&mut buf, 8, idx);
            buf.extend_from_slice(&nlink.to_le_bytes());
            buf.extend_from_slice(&(file_size as u32).to_le_bytes());
            buf.extend_from_slice(&dir_block.to_le_bytes());
            buf.extend_from_slice(&parent.to_le_bytes());
            buf.extend_from_slice(&(index.len() as u16).to_le_bytes());
            buf.extend_from_slice(&dir_offset.to_le_bytes());
            buf.extend_from_slice(&xattr.to_le_bytes());
            for (offset, block, name) in &index {
                buf.extend_from_slice(&offset.to_le_bytes());
                buf.extend_from_slice(&block.to_le_bytes());
                buf.extend_from_slice(&((name.len() - 1) as u32).to_le_bytes());
                buf.extend_from_slice(name);
            }
        } else {
            self.header(&mut buf, 1, idx);
            buf.extend_from_slice(&dir_block.to_le_bytes());
            buf.extend_from_slice(&nlink.to_le_bytes());
            buf.extend_from_slice(&(file_size as u16).to_le_bytes());
            buf.extend_from_slice(&dir_offset.to_le_bytes());
            buf.extend_from_slice(&parent.to_le_bytes());
        }
        self.refs[idx] = Some(self.inodes.reference());
        self.inodes.write(&mut self.codec, &buf)?;
        Ok(())
    }

    fn write_other(&mut self, idx: usize) -> Result<(), WriteError> {
        let inode = &self.tree.inodes[idx];
        let xattr = self.xattrs.id(&mut self.codec, &inode.xattrs)?;
        let ext = xattr != NO_XATTR;
        let mut buf = Vec::with_capacity(64);
        match &inode.kind {
            Kind::Dir { .. } => unreachable!("directories are written by write_dir"),
            Kind::File { size, .. } => {
                let fd = &self.layout.files[&idx];
                let start = match fd.blocks.iter().find_map(|b| match b {
                    BlockRef::Seq(s) => Some(*s),
                    BlockRef::Sparse => None,
                }) {
                    Some(s) => self.layout.placed[s].0,
                    None => self
                        .layout
                        .placed
                        .get(fd.first_seq)
                        .map_or(self.layout.end, |p| p.0),
                };
                let sizes: Vec<u32> = fd
                    .blocks
                    .iter()
                    .map(|b| match b {
                        BlockRef::Seq(s) => self.layout.placed[*s].1,
                        BlockRef::Sparse => 0,
                    })
                    .collect();
                let sparse = fd
                    .blocks
                    .iter()
                    .filter(|b| matches!(b, BlockRef::Sparse))
                    .count() as u64
                    * BLOCK_SIZE as u64;
                let (frag, frag_off) = fd.fragment.unwrap_or((NO_FRAGMENT, 0));
                if ext
                    || inode.nlink > 1
                    || sparse > 0
                    || *size > u32::MAX as u64
                    || start > u32::MAX as u64
                {
                    self.header(&mut buf, 9, idx);
                    buf.extend_from_slice(&start.to_le_bytes());
                    buf.extend_from_slice(&size.to_le_bytes());
                    buf.extend_from_slice(&sparse.to_le_bytes());
                    buf.extend_from_slice(&inode.nlink.to_le_bytes());
                    buf.extend_from_slice(&frag.to_le_bytes());
                    buf.extend_from_slice(&frag_off.to_le_bytes());
                    buf.extend_from_slice(&xattr.to_le_bytes());
                } else {
                    self.header(&mut buf, 2, idx);
                    buf.extend_from_slice(&(start as u32).to_le_bytes());
                    buf.extend_from_slice(&frag.to_le_bytes());
                    buf.extend_from_slice(&frag_off.to_le_bytes());
                    buf.extend_from_slice(&(*size as u32).to_le_bytes());
                }
                for s in sizes {
                    buf.extend_from_slice(&s.to_le_bytes());
                }
            }
            Kind::Symlink(target) => {
                self.header(&mut buf, if ext { 10 } else { 3 }, idx);
                buf.extend_from_slice(&inode.nlink.to_le_bytes());
                buf.extend_from_slice(&(target.len() as u32).to_le_bytes());
                buf.extend_from_slice(target);
                if ext {
                    buf.extend_from_slice(&xattr.to_le_bytes());
                }
            }
            Kind::Block(dev) | Kind::Char(dev) => {
                let basic = basic_type(&inode.kind);
                self.header(&mut buf, if ext { basic + 7 } else { basic }, idx);
                buf.extend_from_slice(&inode.nlink.to_le_bytes());
                buf.extend_from_slice(&dev.to_le_bytes());
                if ext {
                    buf.extend_from_slice(&xattr.to_le_bytes());
                }
            }
            Kind::Fifo | Kind::Socket => {
                let basic = basic_type(&inode.kind);
                self.header(&mut buf, if ext { basic + 7 } else { basic }, idx);
                buf.extend_from_slice(&inode.nlink.to_le_bytes());
                if ext {
                    buf.extend_from_slice(&xattr.to_le_bytes());
                }
            }
        }
        self.refs[idx] = Some(self.inodes.reference());
        self.inodes.write(&mut self.codec, &buf)?;
        Ok(())
    }
}

/// A table of fixed-size entries in metadata blocks followed by the u64 array of the blocks'
/// absolute positions; returns (bytes to append at `at`, position of the array).
fn indexed_table(codec: &mut Codec, entries: &[u8], at: u64) -> Result<(Vec<u8>, u64), WriteError> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for chunk in entries.chunks(METADATA_SIZE) {
        starts.push(at + out.len() as u64);
        let mut m = MetaWriter::new();
        m.write(codec, chunk)?;
        out.extend_from_slice(&m.finish(codec)?);
    }
    let index_at = at + out.len() as u64;
    for s in starts {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok((out, index_at))
}

/// Writes `tree` as a squashfs image into `out` (an empty file at `out_path`, named in errors).
pub fn write_image(
    tree_root: &Path,
    out: File,
    out_path: &Path,
    opts: &WriterOptions,
) -> Result<WriteStats, WriteError> {
    let level = opts.level.unwrap_or(opts.compression.default_level());
    let range = opts.compression.level_range();
    if !range.contains(&level) {
        return Err(WriteError::Level {
            what: opts.compression.name(),
            level,
            min: *range.start(),
            max: *range.end(),
        });
    }
    let tree = scan(tree_root)?;
    if tree.inodes.len() >= u32::MAX as usize - 1 {
        return Err(WriteError::TooLarge("inode count"));
    }
    let (layout, mut file) = data_pass(&tree, out, opts, level, out_path)?;
    let werr = |source| WriteError::Write {
        path: out_path.to_path_buf(),
        source,
    };

    let mut order = Vec::with_capacity(tree.inodes.len());
    let mut seen = vec![false; tree.inodes.len()];
    post_order(&tree, 0, &mut seen, &mut order);
    let mut numbers = vec![0u32; tree.inodes.len()];
    for (n, &idx) in order.iter().enumerate() {
        numbers[idx] = n as u32 + 1;
    }
    let inode_count = order.len() as u32;
    let mut pass = MetaPass {
        tree: &tree,
        layout: &layout,
        codec: Codec::new(opts.compression, level)
            .map_err(|e| WriteError::Compress(opts.compression.name(), e))?,
        mtime: opts.mtime,
        inodes: MetaWriter::new(),
        dirs: MetaWriter::new(),
        xattrs: XattrTable {
            kv: MetaWriter::new(),
            ids: Vec::new(),
            by_set: HashMap::new(),
        },
        numbers,
        refs: vec![None; tree.inodes.len()],
    };
    pass.write_dir(0, inode_count + 1)?;
    let root_ref = pass.refs[0].expect("root written");
    let MetaPass {
        mut codec,
        inodes,
        dirs,
        xattrs,
        ..
    } = pass;
    let inode_bytes = inodes.finish(&mut codec)?;
    let dir_bytes = dirs.finish(&mut codec)?;

    let mut tail = Vec::new();
    let inode_table_start = layout.end;
    tail.extend_from_slice(&inode_bytes);
    let directory_table_start = inode_table_start + tail.len() as u64;
    tail.extend_from_slice(&dir_bytes);

    let mut frag_entries = Vec::with_capacity(layout.fragments.len() * 16);
    for &seq in &layout.fragments {
        let (start, size) = layout.placed[seq];
        frag_entries.extend_from_slice(&start.to_le_bytes());
        frag_entries.extend_from_slice(&size.to_le_bytes());
        frag_entries.extend_from_slice(&0u32.to_le_bytes());
    }
    let (bytes, fragment_table_start) =
        indexed_table(&mut codec, &frag_entries, layout.end + tail.len() as u64)?;
    tail.extend_from_slice(&bytes);

    let (bytes, id_table_start) = indexed_table(
        &mut codec,
        &0u32.to_le_bytes(),
        layout.end + tail.len() as u64,
    )?;
    tail.extend_from_slice(&bytes);

    let xattr_sets = xattrs.ids.len() as u32;
    let xattr_id_table_start = if xattrs.ids.is_empty() {
        NO_TABLE
    } else {
        let kv_start = layout.end + tail.len() as u64;
        let kv_bytes = xattrs.kv.finish(&mut codec)?;
        tail.extend_from_slice(&kv_bytes);
        let mut ids = Vec::with_capacity(xattrs.ids.len() * 16);
        for (r, count, size) in &xattrs.ids {
            ids.extend_from_slice(&r.to_le_bytes());
            ids.extend_from_slice(&count.to_le_bytes());
            ids.extend_from_slice(&size.to_le_bytes());
        }
        let mut starts = Vec::new();
        for chunk in ids.chunks(METADATA_SIZE) {
            starts.push(layout.end + tail.len() as u64);
            let mut m = MetaWriter::new();
            m.write(&mut codec, chunk)?;
            tail.extend_from_slice(&m.finish(&mut codec)?);
        }
        let header_at = layout.end + tail.len() as u64;
        tail.extend_from_slice(&kv_start.to_le_bytes());
        tail.extend_from_slice(&xattr_sets.to_le_bytes());
        tail.extend_from_slice(&0u32.to_le_bytes());
        for s in starts {
            tail.extend_from_slice(&s.to_le_bytes());
        }
        header_at
    };
    let bytes_used = layout.end + tail.len() as u64;
    let padded = bytes_used.div_ceil(4096) * 4096;
    tail.resize((padded - layout.end) as usize, 0);

    let mut flags: u16 = 0x0020 | 0x0040; // fragments for tail ends, duplicates removed
    if xattr_sets == 0 {
        flags |= 0x0200;
    }
    let mut sb = Vec::with_capacity(96);
    sb.extend_from_slice(MAGIC);
    sb.extend_from_slice(&inode_count.to_le_bytes());
    sb.extend_from_slice(&opts.mtime.to_le_bytes());
    sb.extend_from_slice(&BLOCK_SIZE.to_le_bytes());
    sb.extend_from_slice(&(layout.fragments.len() as u32).to_le_bytes());
    sb.extend_from_slice(&opts.compression.id().to_le_bytes());
    sb.extend_from_slice(&BLOCK_LOG.to_le_bytes());
    sb.extend_from_slice(&flags.to_le_bytes());
    sb.extend_from_slice(&1u16.to_le_bytes()); // id count
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&root_ref.to_le_bytes());
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table_start.to_le_bytes());
    sb.extend_from_slice(&xattr_id_table_start.to_le_bytes());
    sb.extend_from_slice(&inode_table_start.to_le_bytes());
    sb.extend_from_slice(&directory_table_start.to_le_bytes());
    sb.extend_from_slice(&fragment_table_start.to_le_bytes());
    sb.extend_from_slice(&NO_TABLE.to_le_bytes()); // no export table
    debug_assert_eq!(sb.len(), 96);

    file.seek(SeekFrom::Start(layout.end)).map_err(werr)?;
    file.write_all(&tail).map_err(werr)?;
    file.seek(SeekFrom::Start(0)).map_err(werr)?;
    file.write_all(&sb).map_err(werr)?;
    file.sync_all().map_err(werr)?;

    let dirs = tree
        .inodes
        .iter()
        .filter(|i| matches!(i.kind, Kind::Dir { .. }))
        .count() as u64;
    let files = tree
        .inodes
        .iter()
        .filter(|i| matches!(i.kind, Kind::File { .. }))
        .count() as u64;
    Ok(WriteStats {
        inodes: inode_count,
        files,
        dirs,
        data_bytes: layout.data_bytes,
        duplicates: layout.duplicates,
        image_bytes: padded,
        fragments: layout.fragments.len() as u32,
        xattr_sets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_use_the_kernel_encoding() {
        // major 8, minor 1 (sda1) and a large minor.
        let rdev = (8u64 << 8) | 1;
        assert_eq!(squashfs_dev(rdev, Path::new("x")).unwrap(), (8 << 8) | 1);
        let rdev = (1u64 << 8) | (0x123 & 0xff) | ((0x123u64 & !0xff) << 12);
        assert_eq!(
            squashfs_dev(rdev, Path::new("x")).unwrap(),
            0x23 | (1 << 8) | (0x100 << 12)
        );
    }

    #[test]
    fn metadata_blocks_split_at_8k_and_store_incompressible_raw() {
        let mut codec = Codec::new(Compression::Gzip, 9).unwrap();
        let mut m = MetaWriter::new();
        m.write(&mut codec, &vec![7u8; 10000]).unwrap();
        assert_eq!(m.pos().1 as usize, 10000 - 8192);
        let out = m.finish(&mut codec).unwrap();
        let h = u16::from_le_bytes([out[0], out[1]]);
        assert_eq!(h & 0x8000, 0, "zeros compress");
        let mut codec = Codec::new(Compression::Zstd, 3).unwrap();
        let (b, raw) = codec.block(vec![1, 2, 3]).unwrap();
        assert!(raw);
        assert_eq!(b, vec![1, 2, 3]);
    }

    #[test]
    fn codecs_roundtrip() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for c in [Compression::Gzip, Compression::Zstd, Compression::Xz] {
            let mut codec = Codec::new(c, c.default_level()).unwrap();
            let z = codec.compress(&data).unwrap();
            let back = match c {
                Compression::Gzip => {
                    let mut d = flate2::read::ZlibDecoder::new(&z[..]);
                    let mut v = Vec::new();
                    d.read_to_end(&mut v).unwrap();
                    v
                }
                Compression::Zstd => zstd::bulk::decompress(&z, data.len()).unwrap(),
                Compression::Xz => {
                    let mut d = liblzma::read::XzDecoder::new(&z[..]);
                    let mut v = Vec::new();
                    d.read_to_end(&mut v).unwrap();
                    v
                }
            };
            assert_eq!(back, data, "{c}");
        }
    }
}
