//! Sparse copies: only the data extents of a file are copied, all-zero blocks of a stream are
//! skipped, so a sparse input stays sparse.

use super::*;

/// Copies the data of `src` into the empty `dst`, extent by extent (`SEEK_DATA`/`SEEK_HOLE`),
/// so holes stay holes; `dst` gets `src`'s length. Returns the bytes of data copied.
pub fn copy_sparse(src: &File, dst: &File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    let mut off = 0u64;
    let mut copied = 0u64;
    while off < len {
        let data = match rfs::seek(src, rfs::SeekFrom::Data(off)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break,
            // No SEEK_DATA on this file system: the rest is one extent.
            Err(Errno::INVAL | Errno::OPNOTSUPP) => off,
            Err(e) => return Err(e.into()),
        };
        let hole = match rfs::seek(src, rfs::SeekFrom::Hole(data)) {
            Ok(h) => h.min(len),
            Err(Errno::INVAL | Errno::OPNOTSUPP) => len,
            Err(e) => return Err(e.into()),
        };
        copy_range(src, dst, data, hole - data)?;
        copied += hole - data;
        off = hole;
    }
    dst.set_len(len)?;
    Ok(copied)
}

/// Copies `n` bytes at `off` of `src` to the same offset of `dst`.
pub(super) fn copy_range(src: &File, dst: &File, off: u64, n: u64) -> io::Result<()> {
    let (mut in_off, mut out_off) = (off, off);
    let end = off + n;
    while in_off < end {
        let want = (end - in_off).min(1 << 30) as usize;
        match rfs::copy_file_range(src, Some(&mut in_off), dst, Some(&mut out_off), want) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP | Errno::PERM) => {
                return copy_range_rw(src, dst, in_off, end - in_off);
            }
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) fn copy_range_rw(src: &File, dst: &File, mut off: u64, n: u64) -> io::Result<()> {
    let mut buf = vec![0u8; (n.min(1 << 20)) as usize];
    let end = off + n;
    while off < end {
        let want = ((end - off) as usize).min(buf.len());
        let k = src.read_at(&mut buf[..want], off)?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        dst.write_all_at(&buf[..k], off)?;
        off += k as u64;
    }
    Ok(())
}

/// Block size below which zeros are written rather than skipped.
pub(super) const HOLE_BLOCK: usize = 64 << 10;

pub(super) static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Compared with `memcmp` against a zero block: fast in every build profile.
pub(super) fn all_zero(b: &[u8]) -> bool {
    b.chunks(HOLE_BLOCK).all(|c| c == &ZEROS[..c.len()])
}

/// Which side of [`write_sparse`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SparseError {
    #[error("cannot read the data")]
    Read(#[source] io::Error),
    #[error("cannot write the data")]
    Write(#[source] io::Error),
}

impl SparseError {
    pub fn into_io(self) -> io::Error {
        match self {
            SparseError::Read(e) | SparseError::Write(e) => e,
        }
    }
}

/// Writes everything `reader` gives into the empty `dst` through `buf`, leaving all-zero
/// blocks ([`HOLE_BLOCK`]) as holes; `dst` gets the full length. Returns that length.
pub fn write_sparse(
    reader: &mut impl Read,
    dst: &File,
    buf: &mut [u8],
) -> Result<u64, SparseError> {
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SparseError::Read(e)),
            }
        }
        if n == 0 {
            break;
        }
        let data = &buf[..n];
        let mut i = 0;
        while i < n {
            let piece = &data[i..(i + HOLE_BLOCK).min(n)];
            if !all_zero(piece) {
                dst.write_all_at(piece, total + i as u64)
                    .map_err(SparseError::Write)?;
            }
            i += piece.len();
        }
        total += n as u64;
        if n < buf.len() {
            break;
        }
    }
    dst.set_len(total).map_err(SparseError::Write)?;
    Ok(total)
}
