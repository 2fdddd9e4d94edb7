//! Carries out a [`Plan`]: builds the extension tree and packs it.
//!
//! The source rootfs is only read (every file opened with the rootfs as `/`, so a link in it
//! never sends a read to the build host): ELF files are read, rewritten in memory
//! ([`elf_edit::rewrite`]) and written into the tree; other files are copied, holes
//! kept. Everything is written through [`safefs::tree::Tree`] without following any
//! link. Setuid/setgid bits and file capabilities are stripped and listed unless
//! [`StageOptions::keep_privileges`]. Files are
//! handled in parallel on one thread per CPU. The tree is staged in a temporary folder beside
//! the output and packed with [`sysext_core::pack::pack`], which writes the output atomically;
//! the staging folder is removed afterwards, also on failure.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use safefs::atomic::{AtomicError, AtomicOutput};
use safefs::tree::{self, Stripped, Tree, TreeError, TreeOptions};
use sysext_core::pack::{self, PackError, PackOptions, PackReport};

use crate::plan::{Action, Plan};
use elf_edit::{Edits, RewriteError};

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
    Tree(#[from] Box<TreeError>),
    #[error(transparent)]
    Output(#[from] AtomicError),
    #[error(transparent)]
    Pack(#[from] PackError),
}

impl From<TreeError> for StageError {
    fn from(e: TreeError) -> Self {
        StageError::Tree(Box::new(e))
    }
}

/// How to stage: the producers' one set of options.
pub use safefs::tree::StageOptions;

/// `to`, refusing anything that would leave the tree.
fn dest(to: &Path) -> Result<&Path, StageError> {
    if crate::plan::is_inside_tree(to) {
        Ok(to)
    } else {
        Err(StageError::Escapes(to.to_path_buf()))
    }
}

fn copy_one(
    plan: &Plan,
    out: &Tree,
    a: &Action,
    opts: &StageOptions,
    stripped: &Mutex<Vec<Stripped>>,
) -> Result<(), StageError> {
    match a {
        Action::Dir { .. } | Action::Symlink { .. } => Ok(()),
        Action::Write { to, contents, mode } => {
            out.write_file(dest(to)?, contents.as_bytes(), *mode)?;
            Ok(())
        }
        Action::Copy {
            from,
            to,
            mode,
            elf,
        } => {
            let to = dest(to)?;
            let rel = from
                .strip_prefix(&plan.root)
                .map_err(|_| StageError::Read {
                    path: from.to_path_buf(),
                    source: std::io::Error::other("not inside the source rootfs"),
                })?;
            let werr = |source| StageError::Write {
                path: to.to_path_buf(),
                source,
            };
            if elf.is_none()
                && opts.link_source
                && out.link_in(to, &plan.root, rel, *mode, opts.keep_privileges)?
            {
                return Ok(());
            }
            // The one producers' copier (privileges stripped and listed unless kept), the data
            // rewritten on the way for ELF files with edits.
            let c = out.copy_in_with(
                to,
                &plan.root,
                rel,
                *mode,
                opts.keep_privileges,
                |src, dst| match elf {
                    Some(e) => {
                        let mut bytes = Vec::new();
                        std::io::Read::read_to_end(&mut &*src, &mut bytes).map_err(|source| {
                            StageError::Read {
                                path: from.clone(),
                                source,
                            }
                        })?;
                        let mut edits = Edits::default();
                        edits.interpreter = e.interpreter.clone();
                        edits.runpath = Some(e.runpath.clone());
                        edits.nodeflib = e.nodeflib;
                        let rerr = |source| StageError::Rewrite {
                            path: from.clone(),
                            source,
                        };
                        let mut new = elf_edit::rewrite(&bytes, &edits).map_err(rerr)?;
                        if !e.replace_strings.is_empty() {
                            elf_edit::replace_data_strings(&mut new, &e.replace_strings)
                                .map_err(rerr)?;
                        }
                        std::os::unix::fs::FileExt::write_all_at(dst, &new, 0).map_err(werr)?;
                        Ok(new.len() as u64)
                    }
                    None => tree::copy_sparse(src, dst).map_err(werr),
                },
            )?;
            if let Ok(mut list) = stripped.lock() {
                list.extend(c.stripped);
            }
            Ok(())
        }
    }
}

/// Writes the plan's tree into `tree` (an existing empty folder) through the safe tree
/// writer (no link followed); returns what was stripped (setuid/setgid bits, file
/// capabilities), sorted by path, unless `opts.keep_privileges`.
pub fn stage_tree(
    plan: &Plan,
    tree: &Path,
    opts: &StageOptions,
) -> Result<Vec<Stripped>, StageError> {
    let out = Tree::open(tree, &TreeOptions::no_symlinks())?;
    let opts = &opts.resolved_for(&out, &plan.root);
    // Directories first (actions list parents before children), then files in parallel,
    // then symlinks.
    for a in &plan.actions {
        if let Action::Dir { to } = a {
            out.create_dir(dest(to)?, 0o755)?;
        }
    }
    let next = AtomicUsize::new(0);
    let first_err: Mutex<Option<StageError>> = Mutex::new(None);
    let stripped: Mutex<Vec<Stripped>> = Mutex::new(Vec::new());
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
        Action::Copy { from, .. } => {
            std::cmp::Reverse(fs::symlink_metadata(from).map_or(0, |m| m.len()))
        }
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
                if let Err(e) = copy_one(plan, &out, a, opts, &stripped) {
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
            out.symlink(dest(to)?, target)?;
        }
    }
    let mut list = stripped.into_inner().unwrap_or_default();
    list.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(list)
}

/// Stages the plan and packs it to `output` (see [`PackOptions`]); `opts.name` is set to the
/// plan's name.
pub fn stage_and_pack(
    plan: &Plan,
    output: &Path,
    opts: &PackOptions,
    stage: &StageOptions,
) -> Result<(PackReport, Vec<Stripped>), StageError> {
    if !opts.force && fs::symlink_metadata(output).is_ok() {
        return Err(AtomicError::Exists(output.to_path_buf()).into());
    }
    let staging_name = match output.file_name() {
        Some(n) => format!("{}.flix-tree", n.to_string_lossy()),
        None => return Err(AtomicError::NoFileName(output.to_path_buf()).into()),
    };
    // Never committed: dropping it removes the staged tree.
    let staging = AtomicOutput::dir(&output.with_file_name(staging_name), true)?;
    let stripped = stage_tree(plan, staging.path(), stage)?;
    let mut opts = opts.clone();
    opts.name = Some(plan.name.clone());
    Ok((pack::pack(staging.path(), output, &opts)?, stripped))
}
