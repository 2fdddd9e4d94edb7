//! EROFS images: our own writer and reader, uncompressed or compressed ([`Compression`]).
//!
//! - [`reader`]: read an image back in place (entries, file contents decompressed, the ELF
//!   scan of a file) for `inspect` and `check`.
//! - [`writer`]: a folder to an EROFS image: 4 KiB blocks, compact inodes (extended ones only
//!   where a size or link count needs them), directories as sorted dirent blocks, file tails
//!   and small files packed beside their inode (`FLAT_INLINE`), regular files optionally
//!   compressed (LZ4, LZ4HC, zstd) into 4 KiB physical clusters with compact indexes,
//!   hardlinks as one inode, inline xattrs, reproducible output (same bytes whatever the
//!   thread count).
//!
//! The on-disk format follows the Linux kernel's `Documentation/filesystems/erofs.rst` and
//! erofs-utils' `include/erofs_fs.h`: a 128-byte superblock at offset 1024, inodes in a
//! metadata area addressed by their 32-byte slot number (nid), data in whole blocks, all
//! little-endian. [`is_erofs`] tells an image by its magic.

pub mod reader;
pub mod writer;

/// The superblock magic.
pub const MAGIC: u32 = 0xE0F5_E1E2;
/// Where the superblock starts.
pub const SUPER_OFFSET: usize = 1024;
/// The block size of our images.
pub const BLOCK_SIZE: u32 = 4096;

/// True when `head` (the image's first bytes, at least 1028 of them) holds the EROFS magic.
pub fn is_erofs(head: &[u8]) -> bool {
    head.get(SUPER_OFFSET..SUPER_OFFSET + 4)
        .is_some_and(|m| m == MAGIC.to_le_bytes())
}

/// How an image's regular files are compressed. EROFS compresses each file into 4 KiB
/// physical clusters, each holding as much of the file as fits ("destination-size"
/// compression); a file that gains nothing is stored uncompressed, as mkfs.erofs does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed: any kernel with EROFS reads it.
    #[default]
    None,
    /// LZ4 (fast compression; every kernel with EROFS compression has it).
    Lz4,
    /// LZ4 high compression: the same decoder as LZ4, smaller images. Default level 9.
    Lz4hc,
    /// Zstandard (kernel 6.10+). Default level 3.
    Zstd,
}

impl Compression {
    /// The name as mkfs.erofs spells it (`-zNAME`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Lz4hc => "lz4hc",
            Compression::Zstd => "zstd",
        }
    }

    /// The level used when none is given (mkfs.erofs' defaults); 0 for none and lz4.
    pub fn default_level(self) -> i32 {
        match self {
            Compression::Lz4hc => 9,
            Compression::Zstd => 3,
            _ => 0,
        }
    }

    /// The accepted levels (an empty range: no level).
    pub fn level_range(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Compression::Lz4hc => 1..=12,
            Compression::Zstd => 1..=22,
            #[allow(clippy::reversed_empty_ranges)]
            _ => 1..=0,
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "none" => Compression::None,
            "lz4" => Compression::Lz4,
            "lz4hc" => Compression::Lz4hc,
            "zstd" => Compression::Zstd,
            other => {
                return Err(format!(
                    "unknown EROFS compression {other:?}; use none, lz4, lz4hc or zstd"
                ))
            }
        })
    }
}
