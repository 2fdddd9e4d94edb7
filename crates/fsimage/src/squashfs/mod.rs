//! Squashfs 4.0 images: our own writer and a reader.
//!
//! - [`writer`]: a folder to a squashfs image, parallel block compression, fragments for tail
//!   ends, duplicate files stored once, hardlinks as one inode, xattrs, reproducible output
//!   (same bytes whatever the thread count).
//! - [`reader`]: read an image back (entries, file contents) for `inspect`.
//!
//! The on-disk format follows the Linux kernel's `fs/squashfs` documentation: a 96-byte
//! superblock, data and fragment blocks, then the inode, directory, fragment, id and xattr
//! tables, all little-endian, metadata in 8 KiB blocks each behind a 16-bit length header.

pub mod reader;
pub mod writer;

use serde::Serialize;

/// The superblock magic, "hsqs" on disk.
pub const MAGIC: &[u8; 4] = b"hsqs";

/// A block compressor supported by the kernel and by squashfs-tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zlib, the safe default: every kernel has it. Compressed with libdeflate, whose levels
    /// 1-12 give smaller blocks than zlib's same level, faster; the default, 7, gives images no
    /// larger than mksquashfs' default (zlib level 9) in about a third of the time.
    #[default]
    Gzip,
    /// zstd (kernel 4.14+). Default level 15, as mksquashfs.
    Zstd,
    /// xz / LZMA2 (kernel 2.6.38+). Default preset 6, as mksquashfs.
    Xz,
}

impl Compression {
    /// The compressor id stored in the superblock.
    pub fn id(self) -> u16 {
        match self {
            Compression::Gzip => 1,
            Compression::Xz => 4,
            Compression::Zstd => 6,
        }
    }

    /// The level used when none is given: mksquashfs' defaults, but for gzip, where level 6 of
    /// libdeflate makes images no larger than zlib's level 9 (mksquashfs' default; measured:
    /// 0.992x on a relocated htop, nginx, curl and python tree, 0.991x on trixie's /usr/lib and
    /// /usr/bin) with 17% less CPU than its level 7.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Gzip => 6,
            Compression::Zstd => 15,
            Compression::Xz => 6,
        }
    }

    /// The accepted levels.
    pub fn level_range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Gzip => 1..=12,
            Compression::Zstd => 1..=22,
            Compression::Xz => 0..=9,
        }
    }

    /// The name as mksquashfs spells it (`-comp NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "gzip" | "zlib" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            "xz" => Ok(Compression::Xz),
            other => Err(format!(
                "unknown compression {other:?}; use gzip, zstd or xz"
            )),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
