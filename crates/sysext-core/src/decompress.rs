//! Streams compressed by whatever made them, told apart by their first bytes: the one place
//! that knows the magics and opens the decoders (container layers: gzip and zstd, as OCI
//! allows; disk images: bzip2, xz, zstd and gzip, as distributions ship them).

use std::io::{self, BufRead, Read};

/// A compression recognised by its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

impl Compression {
    /// Every compression recognised.
    pub const ALL: &'static [Compression] = &[
        Compression::Gzip,
        Compression::Zstd,
        Compression::Bzip2,
        Compression::Xz,
    ];

    /// The compression of a stream starting with `head` (`None`: not compressed, or by
    /// something not recognised).
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if head.starts_with(b"BZh") {
            Some(Compression::Bzip2)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }

    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }
}

/// `r` decompressed by the compression its first bytes show, when it is one of `allowed`
/// (concatenated members or frames read as one stream); the stream as it is when its first
/// bytes show no compression; an error naming the compression when it is not allowed.
pub fn decoder<'a, R: BufRead + 'a>(
    mut r: R,
    allowed: &[Compression],
) -> io::Result<(Option<Compression>, Box<dyn Read + 'a>)> {
    let kind = Compression::sniff(r.fill_buf()?);
    let decoded: Box<dyn Read + 'a> = match kind {
        None => Box::new(r),
        Some(k) if !allowed.contains(&k) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("compressed with {}, which is not accepted here", k.name()),
            ))
        }
        Some(Compression::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Some(Compression::Bzip2) => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Some(Compression::Xz) => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
    };
    Ok((kind, decoded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn magics() {
        assert_eq!(Compression::sniff(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(Compression::Zstd)
        );
        assert_eq!(Compression::sniff(b"EFI PART"), None);
        assert_eq!(Compression::sniff(b""), None);
    }

    #[test]
    fn round_trips_and_refusals() {
        let data = b"hello, hello, hello".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        for (bytes, kind) in [
            (gz.clone(), Some(Compression::Gzip)),
            (
                zstd::encode_all(&data[..], 1).unwrap(),
                Some(Compression::Zstd),
            ),
            (xz.clone(), Some(Compression::Xz)),
            (data.clone(), None),
        ] {
            let (k, mut r) = decoder(&bytes[..], Compression::ALL).unwrap();
            assert_eq!(k, kind);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
        let err = decoder(&xz[..], &[Compression::Gzip, Compression::Zstd])
            .err()
            .unwrap();
        assert!(err.to_string().contains("xz"), "{err}");
    }
}
