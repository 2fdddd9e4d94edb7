//! The layer's byte streams: the blob hashed and decompressed (gzip, zstd or none, by magic)
//! on one thread, its tar stream sent in chunks to the tar side and the tar-stream hasher, and
//! ended gracefully when a writer left out the end-of-archive blocks.

use std::cell::{Cell, RefCell};
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use sha2::{Digest as _, Sha256};
use sysext_core::decompress::Compression;

struct Hashing<R> {
    inner: R,
    state: Rc<RefCell<Sha256>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.state.borrow_mut().update(&buf[..n]);
        Ok(n)
    }
}

/// Ends the tar stream gracefully: some writers (umoci 0.4 `insert`) stop right after the last
/// entry's data, without padding or the end-of-archive blocks, and umoci and Go accept that. At
/// the first EOF this reader records where the real data ended and supplies the missing zeros;
/// `Applier::entry` refuses an entry whose data would reach past that point, so a stream cut
/// inside a file is still an error.
pub(super) struct Tail<R> {
    inner: R,
    pos: u64,
    eof: Rc<Cell<Option<u64>>>,
    pad_left: u64,
}

impl<R> Tail<R> {
    /// `inner` with the missing end supplied; `eof` receives where its real data ended.
    pub(super) fn new(inner: R, eof: Rc<Cell<Option<u64>>>) -> Tail<R> {
        Tail {
            inner,
            pos: 0,
            eof,
            pad_left: 0,
        }
    }
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof.get().is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 {
                self.pos += n as u64;
                return Ok(n);
            }
            self.eof.set(Some(self.pos));
            self.pad_left = (512 - self.pos % 512) % 512 + 1024;
        }
        let n = (self.pad_left.min(buf.len() as u64)) as usize;
        buf[..n].fill(0);
        self.pad_left -= n as u64;
        Ok(n)
    }
}

/// A piece of the tar stream, shared by the tar side and the hashing thread.
pub(super) type Chunk = std::sync::Arc<Vec<u8>>;

/// Reads the blob, hashes it, decompresses it (gzip, zstd or none, by magic) and sends the tar
/// stream in chunks to the tar side (`tx`) and to the tar-stream hasher (`hash_tx`); returns
/// the blob's hex sha256.
pub(super) fn decode_stream(
    blob: impl Read,
    tx: &std::sync::mpsc::SyncSender<io::Result<Chunk>>,
    hash_tx: std::sync::mpsc::SyncSender<Chunk>,
) -> io::Result<String> {
    let outer = Rc::new(RefCell::new(Sha256::new()));
    let buffered = BufReader::with_capacity(
        1 << 20,
        Hashing {
            inner: blob,
            state: outer.clone(),
        },
    );
    // OCI's layer media types allow gzip and zstd.
    let (_, mut decoded) =
        sysext_core::decompress::decoder(buffered, &[Compression::Gzip, Compression::Zstd])?;
    const CHUNK: usize = 256 << 10;
    loop {
        let mut buf = Vec::with_capacity(CHUNK);
        // Read straight into the spare capacity: no zeroing of every chunk first.
        let n = (&mut decoded).take(CHUNK as u64).read_to_end(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = Chunk::new(buf);
        if hash_tx.send(chunk.clone()).is_err() || tx.send(Ok(chunk)).is_err() {
            // The tar side stopped (an error it reports itself).
            return Err(io::Error::other("unpacking stopped"));
        }
    }
    drop(hash_tx);
    drop(decoded);
    Ok(hex::encode(outer.take().finalize()))
}

/// The tar side's end of the chunk channel, read as one stream.
pub(super) struct ChanReader {
    rx: std::sync::mpsc::Receiver<io::Result<Chunk>>,
    cur: Chunk,
    off: usize,
}

impl ChanReader {
    pub(super) fn new(rx: std::sync::mpsc::Receiver<io::Result<Chunk>>) -> ChanReader {
        ChanReader {
            rx,
            cur: Chunk::default(),
            off: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.off == self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(v)) => {
                    self.cur = v;
                    self.off = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.off);
        buf[..n].copy_from_slice(&self.cur[self.off..self.off + n]);
        self.off += n;
        Ok(n)
    }
}
