//! Writes the extension tree for a [`Plan`] into an empty folder: the whole rootfs copied under
//! `usr/local/NAME/` (modes, symlinks and hardlinks kept, file data through `copy_file_range`
//! with holes kept, several threads; setuid/setgid bits and file capabilities stripped and
//! listed unless [`StageOptions::keep_privileges`]; everything written through
//! [`safefs::tree::Tree`] without following a link, every file of the rootfs read with the
//! rootfs as `/`), the helper and its staging folder under `usr/local/NAME/.flatwrap/`, a
//! launcher or a symlink at each entry's target, and the release file.
//!
//! Folders in the copy are 0755 (the copy is read-only at run time; systemd-sysext wants
//! 0755 folders). The source is only read. Device nodes, fifos and sockets are not copied (the launchers bind
//! the host's `/dev`, `/run` and `/tmp` over the places that hold them); their count is
//! reported. Run as root, everything written is owned by root.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use safefs::tree::{Stripped, Tree, TreeError, TreeOptions};
use serde::Serialize;
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
    #[error("cannot stage {}: the target of this link is missing in the copy", path.display())]
    LinkTargetMissing { path: PathBuf },
    #[error("cannot walk the rootfs {}", path.display())]
    Walk {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
    #[error(transparent)]
    Tree(Box<TreeError>),
}

impl From<TreeError> for StageError {
    fn from(e: TreeError) -> Self {
        StageError::Tree(Box::new(e))
    }
}

/// How to stage: the producers' one set of options.
pub use safefs::tree::StageOptions;

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
    /// Setuid/setgid bits and file capabilities stripped from the copy, by path in the image.
    pub stripped: Vec<Stripped>,
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

struct FileJob {
    from: PathBuf,
    /// Relative to the rootfs.
    rel: PathBuf,
    /// Relative to the tree.
    to: PathBuf,
    mode: u32,
}

/// Copies the rootfs `src` into the folder `dst` of `out` (created when missing; relative to
/// the tree). Folders become 0755, files keep their modes but setuid/setgid and file
/// capabilities, which go unless `opts.keep_privileges` (listed in `report.stripped`); files
/// are hard links to the source's where `opts.link_source` allows.
pub fn copy_tree(
    src: &Path,
    out: &Tree,
    dst: &Path,
    opts: &StageOptions,
    report: &mut StageReport,
) -> Result<(), StageError> {
    let mut files = Vec::new();
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
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
            // Writable while we fill it; the real mode is set at the end, deepest first.
            if rel.as_os_str().is_empty() {
                out.create_dir_all(&to, 0o700)?;
            } else {
                out.create_dir(&to, 0o700)?;
            }
            // The copy is read-only at run time, so a folder's own mode (1777 /tmp, 0700
            // /root, setgid /var/mail) protects nothing; systemd-sysext wants 0755 folders
            // (`sysext check`), and 0755 lets a user launcher read them.
            dirs.push(to);
            report.dirs += 1;
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(|source| StageError::Read {
                path: e.path().to_path_buf(),
                source,
            })?;
            out.symlink(&to, &target)?;
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
                rel: rel.to_path_buf(),
                to,
                mode: m.mode() & 0o7777,
            });
        } else {
            tracing::debug!("not copying special file {}", e.path().display());
            report.skipped_special += 1;
        }
    }
    report.stripped.extend(copy_files(src, out, files, opts)?);
    report.stripped.sort_by(|a, b| a.path.cmp(&b.path));
    for (first, to) in links {
        out.hardlink(&to, &first)?;
    }
    for dir in dirs.iter().rev() {
        out.set_mode(dir, 0o755)?;
    }
    Ok(())
}

/// Copies regular files on several threads (largest first, so the threads finish together);
/// returns what was stripped.
fn copy_files(
    src: &Path,
    out: &Tree,
    mut jobs: Vec<FileJob>,
    opts: &StageOptions,
) -> Result<Vec<Stripped>, StageError> {
    jobs.sort_by_key(|j| std::cmp::Reverse(fs::symlink_metadata(&j.from).map_or(0, |m| m.len())));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let next = AtomicU64::new(0);
    let error: Mutex<Option<StageError>> = Mutex::new(None);
    let stripped: Mutex<Vec<Stripped>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(job) = jobs.get(i) else { break };
                if error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                if let Err(e) = copy_one(src, out, job, opts, &stripped) {
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
        _ => Ok(stripped.into_inner().unwrap_or_default()),
    }
}

fn copy_one(
    src: &Path,
    out: &Tree,
    job: &FileJob,
    opts: &StageOptions,
    stripped: &Mutex<Vec<Stripped>>,
) -> Result<(), StageError> {
    let keep = opts.keep_privileges;
    if opts.link_source && out.link_in(&job.to, src, &job.rel, job.mode, keep)? {
        return Ok(());
    }
    // The one producers' copier: listed without following links, opened the same way.
    let c = out.copy_in(&job.to, src, &job.rel, job.mode, keep)?;
    if let Ok(mut list) = stripped.lock() {
        list.extend(c.stripped);
    }
    Ok(())
}

fn write_file(out: &Tree, rel: &Path, text: &str, mode: u32) -> Result<(), StageError> {
    if let Some(parent) = rel.parent() {
        out.create_dir_all(parent, 0o755)?;
    }
    out.write_file(rel, text.as_bytes(), mode)?;
    Ok(())
}

/// Writes the extension tree for `plan` into `tree` (an empty folder), stripping privileges
/// (see [`stage_with`]).
pub fn stage(plan: &Plan, tree: &Path) -> Result<StageReport, StageError> {
    stage_with(plan, tree, &StageOptions::default())
}

/// Writes the extension tree for `plan` into `tree` (an empty folder) through the safe tree
/// writer, no link followed.
pub fn stage_with(
    plan: &Plan,
    tree: &Path,
    opts: &StageOptions,
) -> Result<StageReport, StageError> {
    let out = Tree::open(tree, &TreeOptions::no_symlinks())?;
    let opts = &opts.resolved_for(&out, &plan.rootfs);
    let mut report = StageReport::default();
    let own = PathBuf::from("usr/local").join(&plan.name);
    out.create_dir_all(Path::new("usr/local"), 0o755)?;
    copy_tree(&plan.rootfs, &out, &own, opts, &mut report)?;
    out.set_mode(&own, 0o755)?;
    let private = own.join(PRIVATE_DIR);
    out.create_dir_all(&private, 0o755)?;
    out.create_dir_all(&private.join("root"), 0o755)?;
    write_file(&out, &private.join("launch"), &wrapper::helper(plan), 0o755)?;
    for e in &plan.entries {
        let rel = Path::new(e.target.trim_start_matches('/'));
        if let Some(parent) = rel.parent() {
            out.create_dir_all(parent, 0o755)?;
        }
        match e.kind {
            EntryKind::Launcher => {
                write_file(&out, rel, &wrapper::launcher(&plan.name, &e.source), 0o755)?;
                report.launchers.push(e.target.clone());
            }
            EntryKind::Link => {
                let target = format!("/usr/local/{}{}", plan.name, e.resolved);
                out.symlink(rel, Path::new(&target))?;
                report.links.push(e.target.clone());
            }
        }
    }
    let release = release_file_path(&plan.name);
    report.release = release_text(plan.architecture.as_deref(), plan.reload_manager);
    write_file(&out, &release, &report.release, 0o644)?;
    // Sanity: every link target exists in the copy.
    for e in plan.entries.iter().filter(|e| e.kind == EntryKind::Link) {
        let inside = host_path(&own, &e.resolved);
        if out.stat(&inside)?.is_none() {
            return Err(StageError::LinkTargetMissing {
                path: tree.join(inside),
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

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
    fn copy_keeps_modes_symlinks_and_hardlinks_and_with_keep_setuid() {
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
        let out = Tree::open(dst.path(), &TreeOptions::no_symlinks()).unwrap();
        copy_tree(s, &out, Path::new("copy"), &StageOptions::new(true), &mut r).unwrap();
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
        assert!(r.stripped.is_empty());
        // Without keep: the setuid bit goes and is listed.
        let dst2 = tempfile::tempdir().unwrap();
        let out2 = Tree::open(dst2.path(), &TreeOptions::no_symlinks()).unwrap();
        let mut r2 = StageReport::default();
        copy_tree(s, &out2, Path::new("c"), &StageOptions::new(false), &mut r2).unwrap();
        let m = fs::metadata(dst2.path().join("c/a/b/f")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o755);
        assert_eq!(r2.stripped.len(), 1);
        assert_eq!(r2.stripped[0].path, "/c/a/b/f");
        assert!(r2.stripped[0].setuid);
        fs::set_permissions(dst2.path().join("c/a/b"), fs::Permissions::from_mode(0o755)).unwrap();
        // The source is untouched.
        assert_eq!(fs::metadata(s.join("a/b/f")).unwrap().nlink(), 2);
        fs::set_permissions(d.join("a/b"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(s.join("a/b"), fs::Permissions::from_mode(0o755)).unwrap();
    }
}
