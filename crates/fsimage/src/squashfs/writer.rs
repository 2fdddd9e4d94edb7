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

mod codec;
mod data;
mod meta;
mod metapass;
pub(crate) mod scan;

use codec::*;
use data::*;
use meta::*;
use metapass::*;
use scan::*;

/// Data block size: 128 KiB, mksquashfs' default.
pub const BLOCK_SIZE: u32 = 128 * 1024;
const BLOCK_LOG: u16 = 17;
const METADATA_SIZE: usize = 8192;
const UNCOMPRESSED_BLOCK: u32 = 1 << 24;
const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
const NO_XATTR: u32 = 0xFFFF_FFFF;
const NO_TABLE: u64 = 0xFFFF_FFFF_FFFF_FFFF;
/// Files up to this size are read whole and hashed, so duplicates are stored once (larger ones
/// are hashed in a read of their own when another file has their size).
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
