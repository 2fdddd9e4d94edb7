//! Outputs written under a temporary name beside their final place and renamed into place.
//!
//! Every tool of the workspace writes its results through [`AtomicOutput`], so an interrupted
//! or failed run never leaves a half-written file or folder under the name the user asked for,
//! and an existing output is replaced only when the caller passed `force`.
//!
//! The temporary name is `.NAME.tmp-PID-N`. It is [registered](crate::cleanup::register) so
//! that SIGINT/SIGTERM remove it, and creating an output removes the `.NAME.tmp-PID-N` entries
//! left beside it by processes that are gone ([`crate::cleanup::remove_stale`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cleanup::{self, Registration};

/// Errors from preparing or committing an output.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("output {} already exists; pass --force to replace it", .0.display())]
    Exists(PathBuf),
    #[error("output path {} has no file name", .0.display())]
    NoFileName(PathBuf),
    #[error("cannot create the temporary output {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot move {} into place as {}", from.display(), to.display())]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot remove the existing output {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
}

/// A file or folder being written under a temporary name next to `final_path`.
///
/// Dropping it without [`commit`](AtomicOutput::commit) removes the temporary output.
#[derive(Debug)]
pub struct AtomicOutput {
    final_path: PathBuf,
    tmp_path: PathBuf,
    kind: Kind,
    force: bool,
    done: bool,
    registration: Option<Registration>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// `.NAME.tmp-`: the start of every temporary name of the output `NAME`.
fn tmp_prefix(final_path: &Path) -> Result<String, AtomicError> {
    let name = final_path
        .file_name()
        .ok_or_else(|| AtomicError::NoFileName(final_path.to_path_buf()))?;
    Ok(format!(".{}.tmp-", name.to_string_lossy()))
}

fn tmp_name(final_path: &Path) -> Result<PathBuf, AtomicError> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!("{}{}-{}", tmp_prefix(final_path)?, std::process::id(), n);
    Ok(final_path.with_file_name(tmp))
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl AtomicOutput {
    fn new(final_path: &Path, force: bool, kind: Kind) -> Result<Self, AtomicError> {
        let final_path = if final_path.is_relative()
            && final_path.parent().is_none_or(|p| p.as_os_str().is_empty())
        {
            Path::new(".").join(final_path)
        } else {
            final_path.to_path_buf()
        };
        if exists(&final_path) && !force {
            return Err(AtomicError::Exists(final_path));
        }
        if let Some(parent) = final_path.parent() {
            cleanup::remove_stale(parent, &tmp_prefix(&final_path)?);
        }
        let tmp_path = tmp_name(&final_path)?;
        // Registered before it exists: a signal between creating and registering would leave
        // it behind (removing a path that is not there yet is a no-op).
        let registration = Some(cleanup::register(&tmp_path));
        let created = match kind {
            Kind::File => fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_path)
                .map(drop),
            Kind::Dir => fs::create_dir(&tmp_path),
        };
        created.map_err(|source| AtomicError::Create {
            path: tmp_path.clone(),
            source,
        })?;
        cleanup::created(&tmp_path);
        Ok(Self {
            final_path,
            tmp_path,
            kind,
            force,
            done: false,
            registration,
        })
    }

    /// Prepares a file output: an empty temporary file exists at [`path`](Self::path).
    pub fn file(final_path: &Path, force: bool) -> Result<Self, AtomicError> {
        Self::new(final_path, force, Kind::File)
    }

    /// Prepares a folder output: an empty temporary folder exists at [`path`](Self::path).
    pub fn dir(final_path: &Path, force: bool) -> Result<Self, AtomicError> {
        Self::new(final_path, force, Kind::Dir)
    }

    /// Where to write: the temporary name.
    pub fn path(&self) -> &Path {
        &self.tmp_path
    }

    /// The name the output will have once committed.
    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    /// Renames the temporary output into place, replacing an existing output only if `force`
    /// was given (checked again here, in case something appeared meanwhile).
    pub fn commit(mut self) -> Result<PathBuf, AtomicError> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        use rustix::io::Errno;
        let rename_err = |from: &Path, to: &Path, e: Errno| AtomicError::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source: e.into(),
        };
        // Without --force: never replace, also not an output that appeared meanwhile.
        // With it: swap the new output and the old one in one step (there is never a moment
        // without an output), then remove the old one from the temp name.
        let flags = if self.force {
            RenameFlags::EXCHANGE
        } else {
            RenameFlags::NOREPLACE
        };
        match renameat_with(CWD, &self.tmp_path, CWD, &self.final_path, flags) {
            Ok(()) => {
                self.done = true;
                self.registration = None;
                if self.force {
                    // The temp name now holds the old output.
                    let old = self.tmp_path.clone();
                    remove_any(&old).map_err(|source| AtomicError::Remove { path: old, source })?;
                }
                return Ok(self.final_path.clone());
            }
            Err(Errno::EXIST) if !self.force => {
                return Err(AtomicError::Exists(self.final_path.clone()))
            }
            // Nothing to exchange with: a plain rename that still never replaces.
            Err(Errno::NOENT) if self.force && !exists(&self.final_path) => {
                renameat_with(
                    CWD,
                    &self.tmp_path,
                    CWD,
                    &self.final_path,
                    RenameFlags::NOREPLACE,
                )
                .map_err(|e| rename_err(&self.tmp_path, &self.final_path, e))?;
                self.done = true;
                self.registration = None;
                return Ok(self.final_path.clone());
            }
            // A file system without renameat2 flags: the old way below.
            Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {}
            Err(e) => return Err(rename_err(&self.tmp_path, &self.final_path, e)),
        }
        if exists(&self.final_path) {
            if !self.force {
                return Err(AtomicError::Exists(self.final_path.clone()));
            }
            let old_is_dir = fs::symlink_metadata(&self.final_path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if self.kind == Kind::Dir || old_is_dir {
                // rename(2) cannot replace a non-empty folder: move the old one aside first.
                let aside = tmp_name(&self.final_path)?;
                fs::rename(&self.final_path, &aside).map_err(|source| AtomicError::Rename {
                    from: self.final_path.clone(),
                    to: aside.clone(),
                    source,
                })?;
                if let Err(source) = fs::rename(&self.tmp_path, &self.final_path) {
                    let _ = fs::rename(&aside, &self.final_path);
                    return Err(AtomicError::Rename {
                        from: self.tmp_path.clone(),
                        to: self.final_path.clone(),
                        source,
                    });
                }
                self.done = true;
                self.registration = None;
                remove_any(&aside).map_err(|source| AtomicError::Remove {
                    path: aside,
                    source,
                })?;
                return Ok(self.final_path.clone());
            }
        }
        fs::rename(&self.tmp_path, &self.final_path).map_err(|source| AtomicError::Rename {
            from: self.tmp_path.clone(),
            to: self.final_path.clone(),
            source,
        })?;
        self.done = true;
        self.registration = None;
        Ok(self.final_path.clone())
    }
}

impl Drop for AtomicOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_any(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a.raw");
        let o = AtomicOutput::file(&out, false).unwrap();
        fs::write(o.path(), b"data").unwrap();
        assert!(!out.exists());
        o.commit().unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"data");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let o = AtomicOutput::dir(&dir.path().join("tree"), false).unwrap();
        fs::write(o.path().join("f"), b"x").unwrap();
        drop(o);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn temp_names_are_registered_until_commit_or_drop() {
        let dir = tempfile::tempdir().unwrap();
        let o = AtomicOutput::dir(&dir.path().join("tree"), false).unwrap();
        let tmp = std::path::absolute(o.path()).unwrap();
        assert!(cleanup::registered().contains(&tmp));
        o.commit().unwrap();
        assert!(!cleanup::registered().contains(&tmp));
        let o = AtomicOutput::file(&dir.path().join("f"), false).unwrap();
        let tmp = std::path::absolute(o.path()).unwrap();
        assert!(cleanup::registered().contains(&tmp));
        drop(o);
        assert!(!cleanup::registered().contains(&tmp));
    }

    #[test]
    fn temps_of_gone_processes_are_removed_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let gone = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let id = c.id();
            c.wait().unwrap();
            id
        };
        let stale = dir.path().join(format!(".a.raw.tmp-{gone}-0"));
        let other = dir.path().join(format!(".b.raw.tmp-{gone}-0"));
        fs::write(&stale, b"partial").unwrap();
        fs::create_dir(&other).unwrap();
        let o = AtomicOutput::file(&dir.path().join("a.raw"), false).unwrap();
        assert!(!stale.exists(), "the stale temp of a.raw is removed");
        assert!(
            other.exists(),
            "another output's temp is not ours to judge here"
        );
        o.commit().unwrap();
    }

    #[test]
    fn existing_output_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("tree");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old"), b"old").unwrap();
        let err = AtomicOutput::dir(&out, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        let o = AtomicOutput::dir(&out, true).unwrap();
        fs::write(o.path().join("new"), b"new").unwrap();
        o.commit().unwrap();
        assert!(out.join("new").exists());
        assert!(!out.join("old").exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// An output that appears while the new one is being written is not replaced without
    /// --force (the rename refuses, race-free); with --force a file replaces a folder and a
    /// folder a file, and nothing but the output is left.
    #[test]
    fn commit_never_replaces_without_force_and_swaps_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.raw");
        let o = AtomicOutput::file(&out, false).unwrap();
        fs::write(o.path(), b"new").unwrap();
        fs::write(&out, b"appeared meanwhile").unwrap();
        let err = o.commit().unwrap_err();
        assert!(matches!(err, AtomicError::Exists(_)), "{err}");
        assert_eq!(fs::read(&out).unwrap(), b"appeared meanwhile");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        fs::remove_file(&out).unwrap();
        fs::create_dir(&out).unwrap();
        fs::write(out.join("old"), b"old").unwrap();
        let o = AtomicOutput::file(&out, true).unwrap();
        fs::write(o.path(), b"file").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"file");
        let o = AtomicOutput::dir(&out, true).unwrap();
        fs::write(o.path().join("f"), b"dir").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::read(out.join("f")).unwrap(), b"dir");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
