//! Compression: one codec per compressor, for data blocks and metadata.

use super::*;

pub(super) struct Codec {
    pub(super) compression: Compression,
    pub(super) level: i32,
    pub(super) zlib: Option<libdeflater::Compressor>,
    pub(super) zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Codec {
    pub(super) fn new(compression: Compression, level: i32) -> io::Result<Self> {
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

    pub(super) fn compress(&mut self, input: &[u8]) -> Result<Vec<u8>, WriteError> {
        let name = self.compression.name();
        let err = |e: io::Error| WriteError::Compress(name, e);
        match self.compression {
            Compression::Gzip => {
                // Blocks are compressed whole, so libdeflate's one-shot compressor fits; the
                // level was checked against `level_range` when the codec was made.
                let level = self.level;
                let z = match &mut self.zlib {
                    Some(z) => z,
                    None => {
                        let l = libdeflater::CompressionLvl::new(level)
                            .map_err(|_| err(io::Error::other(format!("no gzip level {level}"))))?;
                        self.zlib.insert(libdeflater::Compressor::new(l))
                    }
                };
                let mut out = vec![0u8; z.zlib_compress_bound(input.len())];
                let n = z
                    .zlib_compress(input, &mut out)
                    .map_err(|e| err(io::Error::other(format!("{e:?}"))))?;
                out.truncate(n);
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
    pub(super) fn block(&mut self, input: Vec<u8>) -> Result<(Vec<u8>, bool), WriteError> {
        let c = self.compress(&input)?;
        if c.len() < input.len() {
            Ok((c, false))
        } else {
            Ok((input, true))
        }
    }
}
