//! Writes the extension tree for a [`Plan`] into an empty folder: the whole rootfs copied under
//! `usr/local/NAME/` (modes, symlinks and hardlinks kept, file data through `copy_file_range`,
//! several threads), the helper and its staging folder under `usr/local/NAME/.flatwrap/`, a
//! launcher or a symlink at each entry's target, and the release file.
//!
//! Folders in the copy are 0755 (the copy is read-only at run time; systemd-sysext wants
//! 0755 folders). The source is only read. Device nodes, fifos and sockets are not copied (the launchers bind
//! the host's `/dev`, `/run` and `/tmp` over the places that hold them); their count is
//! reported. Run as root, everything written is owned by root.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use sysext_core::pack::copy_xattrs;
use sysext_core::release::{release_file_path, ExtensionRelease};

use crate::plan::{host_path, EntryKind, Plan, PRIVATE_DIR};
use crate::wrapper;

/// Errors from [`stage`].
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot read {} in the rootfs", path.display())]
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
    #[error("cannot copy {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot walk the rootfs {}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
}

/// What [`stage`] wrote.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageReport {
    /// Regular files copied (hardlinks counted once).
    pub files: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Device nodes, fifos and sockets left out.
    pub skipped_special: u64,
    /// Launchers written (targets).
    pub launchers: Vec<String>,
    /// Symlinks into `/usr/local/NAME` written (targets).
    pub links: Vec<String>,
    /// The release file's text.
    pub release: String,
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> StageError + '_ {
    move |source| StageError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The extension-release text (`ID=_any`, the architecture, the reload flag).
pub fn release_text(architecture: Option<&str>, reload_manager: bool) -> String {
    ExtensionRelease {
        architecture: architecture.map(String::from),
        reload_manager,
        ..Default::default()
    }
    .render()
}

/// Creates the folders of `rel` (relative) under `tree`, mode 0755.
fn mkdirs(tree: &Path, rel: &Path) -> Result<(), StageError> {
    let mut p = tree.to_path_buf();
    for c in rel.components() {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(StageError::Write {
                    path: p,
                    source: io::Error::new(io::ErrorKind::AlreadyExists, "not a folder"),
                })
            }
            Err(_) => {
                fs::create_dir(&p).map_err(write_err(&p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                    .map_err(write_err(&p))?;
            }
        }
    }
    Ok(())
}

struct FileJob {
    from: PathBuf,
    to: PathBuf,
    mode: u32,
}

/// Copies the rootfs `src` into the empty-or-missing folder `dst`.
/// Files keep their modes (setuid included), folders become 0755.
pub fn copy_tree(src: &Path, dst: &Path, report: &mut StageReport) -> Result<(), StageError> {
    let mut files = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, u32)> = Vec::new();
    for e in walkdir::WalkDir::new(src).follow_links(false) {
        let e = e.map_err(|source| StageError::Walk {
            path: src.to_path_buf(),
            source,
        })?;
        let rel = e.path().strip_prefix(src).unwrap_or(Path::new(""));
        let to = dst.join(rel);
        let m = e
            .path()
            .symlink_metadata()
            .map_err(|source| StageError::Read {
                path: e.path().to_path_buf(),
                source,
            })?;
        let ft = m.file_type();
        if ft.is_dir() {
            if rel.as_os_str().is_empty() {
                if fs::symlink_metadata(&to).is_err() {
                    fs::create_dir(&to).map_err(write_err(&to))?;
                }
            } else {
                fs::create_dir(&to).map_err(write_err(&to))?;
            }
            // Writable while we fill it; the real mode is set at the end, deepest first.
            fs::set_permissions(&to, fs::Permissions::from_mode(0o700)).map_err(write_err(&to))?;
            // The copy is read-only at run time, so a folder's own mode (1777 /tmp, 0700
            // /root, setgid /var/mail) protects nothing; systemd-sysext wants 0755 folders
            // (`sysext check`), and 0755 lets a user launcher read them.
            dirs.push((to, 0o755));
            report.dirs += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(|source| StageError::Read {
                path: e.path().to_path_buf(),
                source,
            })?;
            symlink(&target, &to).map_err(write_err(&to))?;
            report.symlinks += 1;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                let key = (m.dev(), m.ino());
                if let Some(first) = first_of.get(&key) {
                    links.push((first.clone(), to));
                    report.hardlinks += 1;
                    continue;
                }
                first_of.insert(key, to.clone());
            }
            report.files += 1;
            report.bytes += m.len();
            files.push(FileJob {
                from: e.path().to_path_buf(),
                to,
                mode: m.mode() & 0o7777,
            });
        } else {
            tracing::debug!("not copying special file {}", e.path().display());
            report.skipped_special += 1;
        }
    }
    copy_files(files)?;
    for (first, to) in links {
        fs::hard_link(&first, &to).map_err(|source| StageError::Copy {
            from: first.clone(),
            to: to.clone(),
            source,
        })?;
    }
    for (dir, mode) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(write_err(dir))?;
    }
    Ok(())
}

/// Copies regular files on several threads (largest first, so the threads finish together).
fn copy_files(mut jobs: Vec<FileJob>) -> Result<(), StageError> {
    jobs.sort_by_key(|j| std::cmp::Reverse(fs::symlink_metadata(&j.from).map_or(0, |m| m.len())));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let next = AtomicU64::new(0);
    let error: Mutex<Option<StageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(job) = jobs.get(i) else { break };
                if error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                if let Err(e) = copy_one(job) {
                    if let Ok(mut slot) = error.lock() {
                        slot.get_or_insert(e);
                    }
                    break;
                }
            });
        }
    });
    match error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

fn copy_one(job: &FileJob) -> Result<(), StageError> {
    let err = |source| StageError::Copy {
        from: job.from.clone(),
        to: job.to.clone(),
        source,
    };
    // std::fs::copy uses copy_file_range (reflinks where the filesystem can).
    fs::copy(&job.from, &job.to).map_err(err)?;
    fs::set_permissions(&job.to, fs::Permissions::from_mode(job.mode)).map_err(err)?;
    copy_xattrs(&job.from, &job.to, true).map_err(err)?;
    Ok(())
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), StageError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(write_err(parent))?;
    }
    fs::write(path, text).map_err(write_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_err(path))
}

/// Writes the extension tree for `plan` into `tree` (an empty folder).
pub fn stage(plan: &Plan, tree: &Path) -> Result<StageReport, StageError> {
    let mut report = StageReport::default();
    let own_rel = PathBuf::from("usr/local").join(&plan.name);
    mkdirs(tree, Path::new("usr/local"))?;
    copy_tree(&plan.rootfs, &tree.join(&own_rel), &mut report)?;
    let own = tree.join(&own_rel);
    fs::set_permissions(&own, fs::Permissions::from_mode(0o755)).map_err(write_err(&own))?;
    let private = own.join(PRIVATE_DIR);
    mkdirs(&own, Path::new(PRIVATE_DIR))?;
    mkdirs(&private, Path::new("root"))?;
    write_file(&private.join("launch"), &wrapper::helper(plan), 0o755)?;
    for e in &plan.entries {
        let rel = e.target.trim_start_matches('/');
        let path = tree.join(rel);
        if let Some(parent) = Path::new(rel).parent() {
            mkdirs(tree, parent)?;
        }
        match e.kind {
            EntryKind::Launcher => {
                write_file(&path, &wrapper::launcher(&plan.name, &e.source), 0o755)?;
                report.launchers.push(e.target.clone());
            }
            EntryKind::Link => {
                let target = format!("/usr/local/{}{}", plan.name, e.resolved);
                symlink(&target, &path).map_err(write_err(&path))?;
                report.links.push(e.target.clone());
            }
        }
    }
    let release = release_file_path(&plan.name);
    if let Some(dir) = release.parent() {
        mkdirs(tree, dir)?;
    }
    report.release = release_text(plan.architecture.as_deref(), plan.reload_manager);
    write_file(&tree.join(&release), &report.release, 0o644)?;
    // Sanity: every link target exists in the copy.
    for e in plan.entries.iter().filter(|e| e.kind == EntryKind::Link) {
        let inside = host_path(&own, &e.resolved);
        if fs::symlink_metadata(&inside).is_err() {
            return Err(StageError::Write {
                path: inside,
                source: io::Error::new(io::ErrorKind::NotFound, "link target missing in the copy"),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_texts() {
        assert_eq!(
            release_text(Some("x86-64"), false),
            "ID=_any\nARCHITECTURE=x86-64\n"
        );
        assert_eq!(
            release_text(None, true),
            "ID=_any\nEXTENSION_RELOAD_MANAGER=1\n"
        );
    }

    #[test]
    fn copy_keeps_modes_symlinks_and_hardlinks() {
        let src = tempfile::tempdir().unwrap();
        let s = src.path();
        fs::create_dir_all(s.join("a/b")).unwrap();
        fs::write(s.join("a/b/f"), "data").unwrap();
        fs::set_permissions(s.join("a/b/f"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(s.join("a/b/f"), s.join("a/g")).unwrap();
        symlink("b/f", s.join("a/l")).unwrap();
        let xattr = rustix::fs::lsetxattr(
            s.join("a/b/f"),
            "user.flatwrap-test",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        fs::set_permissions(s.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let d = dst.path().join("copy");
        let mut r = StageReport::default();
        copy_tree(s, &d, &mut r).unwrap();
        assert_eq!(fs::read_to_string(d.join("a/b/f")).unwrap(), "data");
        let m = fs::metadata(d.join("a/b/f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(m.nlink(), 2);
        assert_eq!(m.ino(), fs::metadata(d.join("a/g")).unwrap().ino());
        assert_eq!(fs::read_link(d.join("a/l")).unwrap(), Path::new("b/f"));
        assert_eq!(
            fs::metadata(d.join("a/b")).unwrap().mode() & 0o7777,
            0o755,
            "folders become 0755"
        );
        assert_eq!((r.files, r.hardlinks, r.symlinks, r.bytes), (1, 1, 1, 4));
        if xattr {
            let mut v = [0u8; 16];
            let n = rustix::fs::lgetxattr(d.join("a/b/f"), "user.flatwrap-test", &mut v[..])
                .expect("the xattr is copied");
            assert_eq!(&v[..n], b"kept");
        }
        // The source is untouched.
        assert_eq!(fs::metadata(s.join("a/b/f")).unwrap().nlink(), 2);
        fs::set_permissions(d.join("a/b"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(s.join("a/b"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
