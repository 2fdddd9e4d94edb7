//! Image formats: writers and readers of the file-system images an extension ships as.
//!
//! - [`squashfs`]: our squashfs 4.0 writer (parallel, reproducible) and a reader that reads an
//!   image in place (entries, file contents, the ELF scan of a file).
//! - [`erofs`]: our EROFS writer (uncompressed or LZ4/LZ4HC/zstd; 4 KiB blocks, inline tails,
//!   hardlinks, xattrs), reproducible like the squashfs one, and its reader.
//! - [`entry`]: [`Entry`] and [`EntryKind`], one entry of an image as the readers list it.

pub mod entry;
pub mod erofs;
pub mod read_error;
pub mod squashfs;

pub use entry::{Entry, EntryKind};
pub use read_error::{ImageFormat, ReadError};
