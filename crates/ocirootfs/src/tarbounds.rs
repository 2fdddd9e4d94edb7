//! A bound on the tar records the `tar` crate reads whole into memory.
//!
//! The `tar` crate reads a PAX extended header (`x`) and a GNU long name or long link (`L`,
//! `K`) entirely into a `Vec` before it hands out the entry they describe, so a layer or
//! archive declaring a 1 GiB PAX record costs 1 GiB of memory. [`Bounded`] sits between the
//! stream and [`tar::Archive`], follows the archive's headers as the bytes pass (the same walk
//! the `tar` crate does: header, GNU sparse extension blocks, data rounded up to 512 bytes, a
//! PAX `size` record overriding the next header's size) and fails the read as soon as a header
//! announces such a record larger than [`MAX_EXTENSION`], before any of its data is read.
//! Global PAX headers (`g`) are not held in memory by the `tar` crate and are not limited.

use std::io::{self, Read};

/// The largest PAX extended header or GNU long name/link record accepted (1 MiB). Ordinary
/// records are a few hundred bytes; the largest real ones carry xattrs (at most 64 KiB each).
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: u64 = 512;

/// Where the walk is.
enum State {
    /// Collecting a 512-byte header.
    Header,
    /// Collecting a GNU sparse extension block; `size` is the data that follows.
    SparseExt { size: u64 },
    /// Passing `left` bytes of data (padding included); `pax` collects a PAX record.
    Data { left: u64, pax: Option<Vec<u8>> },
    /// After the end-of-archive block (or a header the `tar` crate refuses): no more checks.
    Done,
}

/// A reader that refuses oversized PAX / GNU long-name records; see the module docs.
pub struct Bounded<R> {
    inner: R,
    state: State,
    block: Vec<u8>,
    /// The `size` of the last PAX record, for the next entry that is not an extension.
    pax_size: Option<u64>,
    /// Stream offset of the next byte, for messages.
    pos: u64,
    limit: u64,
}

impl<R: Read> Bounded<R> {
    /// Wraps a tar stream, limiting records to [`MAX_EXTENSION`].
    pub fn new(inner: R) -> Bounded<R> {
        Bounded::with_limit(inner, MAX_EXTENSION)
    }

    /// Wraps a tar stream, limiting records to `limit` bytes.
    pub fn with_limit(inner: R, limit: u64) -> Bounded<R> {
        Bounded {
            inner,
            state: State::Header,
            block: Vec::with_capacity(BLOCK as usize),
            pax_size: None,
            pos: 0,
            limit,
        }
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Advances the walk over `bytes`, the next bytes of the stream.
    fn walk(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Header | State::SparseExt { .. } => {
                    let want = BLOCK as usize - self.block.len();
                    let n = want.min(bytes.len());
                    self.block.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.pos += n as u64;
                    if self.block.len() == BLOCK as usize {
                        let block = std::mem::take(&mut self.block);
                        self.state = self.after_block(&block)?;
                        self.block = block;
                        self.block.clear();
                    }
                }
                State::Data { left, pax } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    if let Some(buf) = pax {
                        // Only the record itself, not its padding.
                        let room = self.limit as usize - buf.len().min(self.limit as usize);
                        buf.extend_from_slice(&bytes[..n.min(room)]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    self.pos += n as u64;
                    if *left == 0 {
                        if let Some(buf) = pax.take() {
                            self.pax_size = pax_size(&buf);
                        }
                        self.state = State::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a complete header or sparse extension block.
    fn after_block(&mut self, block: &[u8]) -> io::Result<State> {
        if let State::SparseExt { size } = self.state {
            // `isextended` of a GNU extension block: byte 504, exactly 1 to continue.
            if block[504] == 1 {
                return Ok(State::SparseExt { size });
            }
            return Ok(data(size, None));
        }
        if block.iter().all(|b| *b == 0) {
            // The `tar` crate stops at the first zero block.
            return Ok(State::Done);
        }
        let h = tar::Header::from_byte_slice(block);
        let Ok(header_size) = h.entry_size() else {
            // The `tar` crate refuses this header itself.
            return Ok(State::Done);
        };
        let t = h.entry_type();
        let is_extension = t.is_gnu_longname()
            || t.is_gnu_longlink()
            || t.is_pax_local_extensions()
            || t.is_pax_global_extensions();
        let size = match self.pax_size {
            Some(s) if !is_extension => s,
            _ => header_size,
        };
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        // What the `tar` crate reads whole: recognized `x`, `L` and `K` records.
        let held = recognized
            && (t.is_gnu_longname() || t.is_gnu_longlink() || t.is_pax_local_extensions());
        if held && size > self.limit {
            let kind = if t.is_pax_local_extensions() {
                "PAX extended header"
            } else {
                "GNU long name record"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the {kind} at offset {} declares {size} bytes, over the limit of {} bytes; the archive is malformed or hostile and was not unpacked",
                    self.pos - BLOCK,
                    self.limit
                ),
            ));
        }
        if !held || t.is_pax_local_extensions() {
            // An entry the `tar` crate hands out (the PAX record applied to it), or a new PAX
            // record replacing the last one.
            self.pax_size = None;
        }
        let pax = (held && t.is_pax_local_extensions()).then(Vec::new);
        if t.is_gnu_sparse() {
            if let Some(gnu) = h.as_gnu() {
                if gnu.is_extended() {
                    return Ok(State::SparseExt { size });
                }
            }
        }
        Ok(data(size, pax))
    }
}

/// Data of `size` bytes, rounded up to whole blocks.
fn data(size: u64, pax: Option<Vec<u8>>) -> State {
    match size.checked_next_multiple_of(BLOCK) {
        // An empty PAX record sets nothing.
        Some(0) => State::Header,
        Some(left) => State::Data { left, pax },
        // The `tar` crate refuses a size that overflows.
        None => State::Done,
    }
}

/// The `size` record of a PAX header, as the `tar` crate reads it: the first `size` key, when
/// every record up to it is well formed and its value is a decimal number.
fn pax_size(record: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(record) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.walk(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    /// Reads `bytes` through [`Bounded`] (in odd-sized pieces) with the `tar` crate; the
    /// entries' paths and sizes, or the error.
    fn list(bytes: &[u8], limit: u64) -> Result<Vec<(String, u64)>, String> {
        struct Odd<'a>(&'a [u8]);
        impl Read for Odd<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(77);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut ar = tar::Archive::new(Bounded::with_limit(Odd(bytes), limit));
        let mut out = Vec::new();
        for e in ar.entries().map_err(|e| e.to_string())? {
            let mut e = e.map_err(|e| e.to_string())?;
            let mut data = Vec::new();
            e.read_to_end(&mut data).map_err(|e| e.to_string())?;
            out.push((
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                data.len() as u64,
            ));
        }
        Ok(out)
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}").into_bytes()
    }

    #[test]
    fn ordinary_archives_pass() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("dir/{}", "n".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        // A PAX record (an xattr) before a file, and an empty file.
        let pax = pax_record("SCHILY.xattr.user.k", &"v".repeat(2000));
        let x = header("PaxHeaders/f", tar::EntryType::XHeader, pax.len() as u64);
        b.append(&x, &pax[..]).unwrap();
        b.append(&header("f", tar::EntryType::Regular, 5), &b"hello"[..])
            .unwrap();
        b.append(&header("e", tar::EntryType::Regular, 0), &b""[..])
            .unwrap();
        let bytes = b.into_inner().unwrap();
        let got = list(&bytes, MAX_EXTENSION).unwrap();
        assert_eq!(got, [(long, 3), ("f".to_string(), 5), ("e".to_string(), 0)]);
    }

    #[test]
    fn pax_size_moves_the_next_header() {
        // A PAX `size` record overrides the header's size: the walk must follow it, or the
        // bytes of the file would be taken for a header announcing a huge long name.
        let payload = header("@LongLink", tar::EntryType::GNULongName, 1 << 40)
            .as_bytes()
            .to_vec();
        let pax = pax_record("size", &payload.len().to_string());
        let x = header("PaxHeaders/f", tar::EntryType::XHeader, pax.len() as u64);
        let mut raw = x.as_bytes().to_vec();
        raw.extend_from_slice(&pax);
        raw.resize(1024, 0);
        // The file's header says 0 bytes; PAX says 512.
        raw.extend_from_slice(header("f", tar::EntryType::Regular, 0).as_bytes());
        raw.extend_from_slice(&payload);
        raw.extend_from_slice(header("g", tar::EntryType::Regular, 0).as_bytes());
        raw.extend_from_slice(&[0; 1024]);
        let got = list(&raw, MAX_EXTENSION).unwrap();
        assert_eq!(got, [("f".to_string(), 512), ("g".to_string(), 0)]);
    }

    #[test]
    fn oversized_records_are_refused_before_they_are_read() {
        for kind in [
            tar::EntryType::XHeader,
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
        ] {
            // The header declares 1 GiB; only a few bytes follow. The refusal comes from the
            // header alone (reading the record would end in an unexpected EOF instead).
            let mut raw = header("x", kind, 1 << 30).as_bytes().to_vec();
            raw.extend_from_slice(&[b'a'; 4096]);
            let err = list(&raw, MAX_EXTENSION).unwrap_err();
            assert!(err.contains("over the limit"), "{kind:?}: {err}");
        }
        // At the limit passes, one byte over does not.
        let pax = pax_record("comment", &"c".repeat(100));
        for (limit, ok) in [(pax.len() as u64, true), (pax.len() as u64 - 1, false)] {
            let mut b = tar::Builder::new(Vec::new());
            let x = header("PaxHeaders/f", tar::EntryType::XHeader, pax.len() as u64);
            b.append(&x, &pax[..]).unwrap();
            b.append(&header("f", tar::EntryType::Regular, 1), &b"z"[..])
                .unwrap();
            let bytes = b.into_inner().unwrap();
            assert_eq!(list(&bytes, limit).is_ok(), ok, "limit {limit}");
        }
        // Global headers are skipped by the `tar` crate, not read whole: not limited.
        let mut b = tar::Builder::new(Vec::new());
        let g = header("g", tar::EntryType::XGlobalHeader, 4096);
        b.append(&g, &[b'x'; 4096][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(list(&bytes, 100).is_ok());
    }
}
