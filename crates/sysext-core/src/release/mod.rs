//! os-release and extension-release metadata, the way systemd reads and judges it.
//!
//! - [`OsRelease`]: a parsed `KEY=value` file (os-release syntax, parsed as systemd's env-file
//!   parser does: optional quotes, backslash escapes, `#`/`;` comments, last duplicate wins,
//!   lines without `=` ignored).
//! - [`ExtensionRelease`]: the metadata we write into an image, rendered in a stable key order.
//! - [`ImageClass`]: sysext or confext, and everything that differs between them (release
//!   folder, merged hierarchies, level and scope keys, search path, `.sysext.raw` names).
//! - [`check_compatibility`], [`check_class_compatibility`]: systemd-sysext's (or
//!   systemd-confext's) decision whether an image merges on a host
//!   (`extension_release_validate` in systemd, as of 257), as a [`Verdict`] with systemd's reason.
//! - [`arch_from_elf`], [`arch_from_uname`], [`host_architecture`]: systemd's architecture
//!   names (`x86-64`, `arm64`, ...), the values `ARCHITECTURE=` is compared against.
//! - [`validate_name`]: whether systemd accepts a name as an extension image name;
//!   [`validate_new_name`]: the stricter rule for the names of images we produce.
//! - [`arch_from_elf_header`]: the architecture name from ELF header bytes.
//!
//! Submodules: `parse` ([`OsRelease`]), `extension` ([`ExtensionRelease`], the file's path),
//! `compat` ([`check_compatibility`]), `arch` (architecture names), `names` (name rules).

use std::path::{Path, PathBuf};

mod arch;
mod class;
mod compat;
mod extension;
mod names;
mod parse;

#[cfg(test)]
mod tests;

pub use arch::{arch_from_elf, arch_from_elf_header, arch_from_uname, host_architecture};
pub use class::{ImageClass, IMAGES_DIR};
pub use compat::{check_class_compatibility, check_compatibility, Verdict};
pub use extension::{release_file_path, ExtensionRelease};
pub use names::{validate_name, validate_new_name, MAX_NAME_LEN, NEW_NAME_PUNCTUATION};
pub use parse::OsRelease;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The release file could not be read.
    #[error("cannot read release file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// systemd refuses a release file with invalid UTF-8 as a whole.
    #[error("release file {path} is not valid UTF-8 (systemd refuses to parse it)")]
    InvalidUtf8 { path: PathBuf },
    /// Not a regular file (a FIFO, a device, a folder): never read, it could block or not end.
    #[error("release file {path} is not a regular file ({kind}); replace it with a regular file")]
    NotRegular { path: PathBuf, kind: &'static str },
    /// Larger than [`MAX_RELEASE_BYTES`].
    #[error("release file {path} is larger than {MAX_RELEASE_BYTES} bytes; a release file holds a few KEY=value lines, shorten it")]
    TooLarge { path: PathBuf },
    /// The extension name is not one systemd accepts.
    #[error("invalid extension name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
}

/// The largest release file (os-release or extension-release) any reader accepts: 64 KiB.
pub const MAX_RELEASE_BYTES: u64 = 64 * 1024;

/// Reads at most [`MAX_RELEASE_BYTES`] from `r`; more is [`ReleaseError::TooLarge`] naming
/// `path` (what the bytes are, for messages). The buffer grows with what is read, never by a
/// size the input declares. Every reader of release files ends here: [`read_release_file`] for
/// files on the host, [`crate::inspect::Image::read_release`] for files inside images.
pub fn read_release_bounded(r: impl std::io::Read, path: &Path) -> Result<Vec<u8>, ReleaseError> {
    use std::io::Read;
    let mut out = Vec::new();
    r.take(MAX_RELEASE_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|source| ReleaseError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if out.len() as u64 > MAX_RELEASE_BYTES {
        return Err(ReleaseError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// The bytes of the release file at `path` on the host: opened without blocking
/// (`O_NONBLOCK`, so a FIFO does not hang the open), refused unless the opened file is a
/// regular file (a symlink is followed to what it names; links to FIFOs or devices are
/// refused), and read up to [`MAX_RELEASE_BYTES`].
pub fn read_release_file(path: &Path) -> Result<Vec<u8>, ReleaseError> {
    let file = safefs::tree::open_regular(path)
        .map_err(|source| ReleaseError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .map_err(|kind| ReleaseError::NotRegular {
            path: path.to_path_buf(),
            kind,
        })?;
    read_release_bounded(file, path)
}
