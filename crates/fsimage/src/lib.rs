//! Image formats: writers and readers of the file-system images an extension ships as.
//!
//! - [`squashfs`]: our squashfs 4.0 writer (parallel, reproducible) and a reader that reads an
//!   image in place (entries, file contents, the ELF scan of a file).
//! - [`erofs`]: our EROFS writer (uncompressed or LZ4/LZ4HC/zstd; 4 KiB blocks, inline tails,
//!   hardlinks, xattrs), reproducible like the squashfs one, and its reader.
//! - [`gpt`]: a reader of GUID partition tables in disk image files (labels, types, ranges).
//! - [`verity`]: dm-verity hash trees (format 1, sha256, 4 KiB blocks, superblock), salt and
//!   UUIDs derived from a seed as systemd-repart derives them, and the userspace check.
//! - [`ddi`]: the GPT disk image (DDI) of a verity-protected extension, as systemd-repart
//!   `--make-ddi=sysext` lays it out: plan, write, read, find the partitions by type.
//! - [`dissect`]: what an image file holds (a file system, a naked verity image, a DDI), the
//!   file system's byte range and the verity check.
//! - [`signature`]: PKCS#7 signatures of root hashes as systemd-repart writes them, and the
//!   signature partition's JSON object.
//! - [`entry`]: [`Entry`] and [`EntryKind`], one entry of an image as the readers list it.

pub mod ddi;
pub mod dissect;
pub mod entry;
pub mod erofs;
pub mod gpt;
pub mod read_error;
pub mod signature;
pub mod squashfs;
pub mod verity;

pub use entry::{Entry, EntryKind};
pub use read_error::{ImageFormat, ReadError};
