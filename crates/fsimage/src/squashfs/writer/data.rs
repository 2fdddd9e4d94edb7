//! Data pass: every regular file in tree order, cut into blocks compressed by a pool of
//! worker threads and written back in submission order; tail ends packed into fragments,
//! duplicate files stored once.

use super::*;

pub(super) struct Job {
    pub(super) seq: usize,
    pub(super) data: Vec<u8>,
}

pub(super) struct Done {
    pub(super) seq: usize,
    pub(super) result: Result<(Vec<u8>, bool), WriteError>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum BlockRef {
    Seq(usize),
    Sparse,
}

#[derive(Debug, Clone, Default)]
pub(super) struct FileData {
    /// Job sequence number the file's blocks start at.
    pub(super) first_seq: usize,
    pub(super) blocks: Vec<BlockRef>,
    /// (fragment index, offset inside the fragment block).
    pub(super) fragment: Option<(u32, u32)>,
}

/// Where every regular file's data went.
pub(super) struct DataLayout {
    pub(super) files: HashMap<usize, FileData>,
    /// Job results: (absolute offset, size word).
    pub(super) placed: Vec<(u64, u32)>,
    /// Fragment block job sequence numbers, by fragment index.
    pub(super) fragments: Vec<usize>,
    pub(super) end: u64,
    pub(super) data_bytes: u64,
    pub(super) duplicates: u64,
}

pub(super) struct Submitter {
    pub(super) tx: SyncSender<Job>,
    pub(super) next_seq: usize,
    pub(super) frag_buf: Vec<u8>,
    pub(super) fragments: Vec<usize>,
}

impl Submitter {
    pub(super) fn submit(&mut self, data: Vec<u8>) -> Option<usize> {
        let seq = self.next_seq;
        self.next_seq += 1;
        // A send error means the pipeline stopped on an error, reported at the join.
        self.tx.send(Job { seq, data }).ok().map(|_| seq)
    }

    pub(super) fn flush_fragment(&mut self) {
        if !self.frag_buf.is_empty() {
            let data =
                std::mem::replace(&mut self.frag_buf, Vec::with_capacity(BLOCK_SIZE as usize));
            let seq = self.next_seq;
            self.submit(data);
            self.fragments.push(seq);
        }
    }

    pub(super) fn block(&mut self, fd: &mut FileData, block: &[u8]) {
        if block.iter().all(|&b| b == 0) {
            fd.blocks.push(BlockRef::Sparse);
        } else {
            let seq = self.next_seq;
            self.submit(block.to_vec());
            fd.blocks.push(BlockRef::Seq(seq));
        }
    }

    pub(super) fn tail(&mut self, fd: &mut FileData, tail: &[u8]) {
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
    pub(super) fn file_bytes(&mut self, content: &[u8]) -> FileData {
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
    pub(super) fn file_stream(
        &mut self,
        mut read: impl Read,
        size: u64,
    ) -> io::Result<(FileData, u64)> {
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

pub(super) fn data_pass(
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
    // Files too large to hold in memory are hashed first, in a read of their own, when
    // another file has the same size (only those can be duplicates), as mksquashfs stores
    // duplicates of any size once.
    let mut large_sizes: HashMap<u64, u32> = HashMap::new();
    for inode in &tree.inodes {
        if let Kind::File { size, .. } = &inode.kind {
            if *size > DEDUP_MAX {
                *large_sizes.entry(*size).or_default() += 1;
            }
        }
    }
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
                let hash = if large_sizes.get(&size).is_some_and(|&n| n > 1) {
                    let mut h = HashReader(&mut f, Some(Sha256::new()), 0);
                    io::copy(&mut h, &mut io::sink()).map_err(read_err(path))?;
                    let HashReader(_, hasher, read) = h;
                    if read != size {
                        return Err(changed(read));
                    }
                    let hash: [u8; 32] = hasher.expect("hashing").finalize().into();
                    if let Some(&orig) = seen.get(&(size, hash)) {
                        duplicates += 1;
                        files.insert(idx, DupOf(orig).into());
                        continue;
                    }
                    f.seek(SeekFrom::Start(0)).map_err(read_err(path))?;
                    Some(hash)
                } else {
                    None
                };
                // Hashed again while stored: what is stored is what was compared.
                let mut h = HashReader(&mut f, hash.map(|_| Sha256::new()), 0);
                let (fd, got) = sub.file_stream(&mut h, size).map_err(read_err(path))?;
                let HashReader(_, hasher, _) = h;
                let mut extra = [0u8; 1];
                if got != size || f.read(&mut extra).map_err(read_err(path))? != 0 {
                    return Err(changed(got));
                }
                if let (Some(hash), Some(hasher)) = (hash, hasher) {
                    let again: [u8; 32] = hasher.finalize().into();
                    if again != hash {
                        return Err(WriteError::Read {
                            path: path.clone(),
                            source: io::Error::other("the file changed while it was read"),
                        });
                    }
                    seen.insert((size, hash), idx);
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

pub(super) struct DupOf(pub(super) usize);

/// A reader that hashes (when it has a hasher) what it reads, and counts it.
struct HashReader<R>(R, Option<Sha256>, u64);

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        if let Some(h) = &mut self.1 {
            h.update(&buf[..n]);
        }
        self.2 += n as u64;
        Ok(n)
    }
}

pub(super) enum Placed {
    File(FileData),
    Dup(DupOf),
}

impl From<DupOf> for Placed {
    fn from(d: DupOf) -> Self {
        Placed::Dup(d)
    }
}
