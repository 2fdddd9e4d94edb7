//! Carries out a [`Plan`]: builds the extension tree and packs it.
//!
//! The source rootfs is only read: ELF files are read, rewritten in memory
//! ([`crate::rewrite::rewrite`]) and written into the tree; other files are copied. Files are
//! handled in parallel on one thread per CPU. The tree is staged in a temporary folder beside
//! the output and packed with [`sysext_core::pack::pack`], which writes the output atomically;
//! the staging folder is removed afterwards, also on failure.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sysext_core::atomic::{AtomicError, AtomicOutput};
use sysext_core::pack::{self, PackError, PackOptions, PackReport};

use crate::plan::{Action, Plan};
use crate::rewrite::{self, Edits, RewriteError};

/// Errors from staging.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot relocate {}", path.display())]
    Rewrite {
        path: PathBuf,
        #[source]
        source: RewriteError,
    },
    #[error("refusing to write {}: not a path inside the extension tree", .0.display())]
    Escapes(PathBuf),
    #[error(transparent)]
    Output(#[from] AtomicError),
    #[error(transparent)]
    Pack(#[from] PackError),
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// `tree/to`, refusing anything that would leave the tree.
fn dest(tree: &Path, to: &Path) -> Result<PathBuf, StageError> {
    if crate::plan::is_inside_tree(to) {
        Ok(tree.join(to))
    } else {
        Err(StageError::Escapes(to.to_path_buf()))
    }
}

fn copy_one(tree: &Path, a: &Action) -> Result<(), StageError> {
    match a {
        Action::Dir { .. } | Action::Symlink { .. } => Ok(()),
        Action::Write { to, contents, mode } => {
            let dest = dest(tree, to)?;
            fs::write(&dest, contents).map_err(write_err(&dest))?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(*mode)).map_err(write_err(&dest))
        }
        Action::Copy {
            from,
            to,
            mode,
            elf,
        } => {
            let dest = dest(tree, to)?;
            match elf {
                Some(e) => {
                    let bytes = fs::read(from).map_err(|source| StageError::Read {
                        path: from.clone(),
                        source,
                    })?;
                    let mut edits = Edits::default();
                    edits.interpreter = e.interpreter.clone();
                    edits.runpath = Some(e.runpath.clone());
                    edits.nodeflib = e.nodeflib;
                    let out =
                        rewrite::rewrite(&bytes, &edits).map_err(|source| StageError::Rewrite {
                            path: from.clone(),
                            source,
                        })?;
                    fs::write(&dest, out).map_err(write_err(&dest))?;
                }
                None => {
                    fs::copy(from, &dest).map_err(|source| StageError::Read {
                        path: from.clone(),
                        source,
                    })?;
                }
            }
            // Never carry setuid/setgid into the extension by accident; keep rwx bits.
            fs::set_permissions(&dest, fs::Permissions::from_mode(mode & 0o1777))
                .map_err(write_err(&dest))
        }
    }
}

/// Writes the plan's tree into `tree` (an existing empty folder).
pub fn stage_tree(plan: &Plan, tree: &Path) -> Result<(), StageError> {
    // Directories first (actions list parents before children), then files in parallel,
    // then symlinks.
    for a in &plan.actions {
        if let Action::Dir { to } = a {
            let dest = dest(tree, to)?;
            match fs::create_dir(&dest) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(write_err(&dest)(e)),
            }
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .map_err(write_err(&dest))?;
        }
    }
    let next = AtomicUsize::new(0);
    let first_err: Mutex<Option<StageError>> = Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    // Largest first, so a big library does not end up last on one thread.
    let mut order: Vec<&Action> = plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Copy { .. } | Action::Write { .. }))
        .collect();
    order.sort_by_key(|a| match a {
        Action::Copy { from, .. } => std::cmp::Reverse(fs::metadata(from).map_or(0, |m| m.len())),
        _ => std::cmp::Reverse(0),
    });
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(a) = order.get(i) else { break };
                if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                if let Err(e) = copy_one(tree, a) {
                    if let Ok(mut slot) = first_err.lock() {
                        slot.get_or_insert(e);
                    }
                    break;
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    for a in &plan.actions {
        if let Action::Symlink { to, target } = a {
            let dest = dest(tree, to)?;
            std::os::unix::fs::symlink(target, &dest).map_err(write_err(&dest))?;
        }
    }
    Ok(())
}

/// Stages the plan and packs it to `output` (see [`PackOptions`]); `opts.name` is set to the
/// plan's name.
pub fn stage_and_pack(
    plan: &Plan,
    output: &Path,
    opts: &PackOptions,
) -> Result<PackReport, StageError> {
    if !opts.force && fs::symlink_metadata(output).is_ok() {
        return Err(AtomicError::Exists(output.to_path_buf()).into());
    }
    let staging_name = match output.file_name() {
        Some(n) => format!("{}.flix-tree", n.to_string_lossy()),
        None => return Err(AtomicError::NoFileName(output.to_path_buf()).into()),
    };
    // Never committed: dropping it removes the staged tree.
    let staging = AtomicOutput::dir(&output.with_file_name(staging_name), true)?;
    stage_tree(plan, staging.path())?;
    let mut opts = opts.clone();
    opts.name = Some(plan.name.clone());
    Ok(pack::pack(staging.path(), output, &opts)?)
}
