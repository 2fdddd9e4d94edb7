//! ELF rewriting for flix: the in-memory editor lives in the `flix-rewrite` crate (kept free of
//! flix's heavier dependencies so its fuzz target builds quickly); this module re-exports it and
//! adds the file operations, which write through [`sysext_core::atomic::AtomicOutput`].

use std::path::Path;

pub use flix_rewrite::*;

/// Rewrite a file in place: the result is verified, written beside it and renamed over it
/// (permissions kept).
pub fn rewrite_file(path: &Path, edits: &Edits) -> Result<(), RewriteError> {
    let wrap = |e: RewriteError| RewriteError::File {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let input = std::fs::read(path).map_err(|source| RewriteError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let out = rewrite_named(&input, edits, name.as_deref()).map_err(wrap)?;
    write_atomic(path, &out)
}

/// Write `bytes` to `path` through a temporary file and a rename, keeping the mode of an
/// existing file. A symlink is followed (its target is replaced, the link stays); an existing
/// non-regular file such as `/dev/null` or a pipe is written to directly, never replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RewriteError> {
    use std::os::unix::fs::PermissionsExt;
    let werr = |source| RewriteError::Write {
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
    let tmp = sysext_core::atomic::AtomicOutput::file(&target, true).map_err(|source| {
        RewriteError::Atomic {
            path: target.clone(),
            source: Box::new(source),
        }
    })?;
    std::fs::write(tmp.path(), bytes).map_err(werr)?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode)).map_err(werr)?;
    tmp.commit().map_err(|source| RewriteError::Atomic {
        path: target.clone(),
        source: Box::new(source),
    })?;
    Ok(())
}
