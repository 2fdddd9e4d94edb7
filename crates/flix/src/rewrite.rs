//! ELF files for flix: the in-memory editor is the `elf-edit` crate (its errors are about ELF
//! only); this module reads and writes the files, through [`safefs::atomic::AtomicOutput`].

use std::io;
use std::path::{Path, PathBuf};

use elf_edit::{rewrite_named, Edits, RewriteError};
use safefs::atomic::{AtomicError, AtomicOutput};

/// Errors of [`rewrite_file`] and [`write_atomic`].
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot replace {}", path.display())]
    Atomic {
        path: PathBuf,
        #[source]
        source: AtomicError,
    },
    #[error("{}", path.display())]
    Rewrite {
        path: PathBuf,
        #[source]
        source: RewriteError,
    },
}

/// Rewrite a file in place: the result is verified, written beside it and renamed over it
/// (permissions kept).
pub fn rewrite_file(path: &Path, edits: &Edits) -> Result<(), FileError> {
    let input = std::fs::read(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let out =
        rewrite_named(&input, edits, name.as_deref()).map_err(|source| FileError::Rewrite {
            path: path.to_path_buf(),
            source,
        })?;
    write_atomic(path, &out)
}

/// Write `bytes` to `path` through a temporary file and a rename, keeping the mode of an
/// existing file. A symlink is followed (its target is replaced, the link stays); an existing
/// non-regular file such as `/dev/null` or a pipe is written to directly, never replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let werr = |source| FileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let target = match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).map_err(werr)?,
        _ => path.to_path_buf(),
    };
    let meta = std::fs::metadata(&target).ok();
    if meta.as_ref().is_some_and(|m| !m.is_file()) {
        return std::fs::write(&target, bytes).map_err(werr);
    }
    let mode = meta.map_or(0o755, |m| m.permissions().mode());
    let aerr = |source| FileError::Atomic {
        path: target.clone(),
        source,
    };
    let tmp = AtomicOutput::file(&target, true).map_err(aerr)?;
    std::fs::write(tmp.path(), bytes).map_err(werr)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(werr)?;
    tmp.commit().map_err(aerr)?;
    Ok(())
}
