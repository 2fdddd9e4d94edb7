//! EROFS images: our own writer (uncompressed for now).
//!
//! - [`reader`]: read an uncompressed image back in place (entries, file contents, the ELF
//!   scan of a file) for `inspect` and `check`.
//! - [`writer`]: a folder to an EROFS image: 4 KiB blocks, compact inodes (extended ones only
//!   where a size or link count needs them), directories as sorted dirent blocks, file tails
//!   and small files packed beside their inode (`FLAT_INLINE`), hardlinks as one inode, inline
//!   xattrs, reproducible output (same bytes whatever the thread count).
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
