//! Resolving paths inside a foreign root filesystem with that root as `/`.
//!
//! [`resolve`] walks a path component by component the way the kernel would inside a chroot:
//! every symlink is followed (absolute targets restart at the root, relative ones at their own
//! directory), `..` never climbs above the root, and more than [`MAX_SYMLINKS`] links in one
//! resolution is a loop. Only `lstat` and `readlink` are used, always on paths built under the
//! root, so nothing outside the root is ever looked at. [`host_path`] turns a resolved
//! inside-root path into the path on the build host. [`resolve_with`] with [`Missing::Keep`]
//! is the same walk for paths that may not exist yet (where a path would land): components
//! that are not there are kept as they are instead of being an error.
//!
//! [`resolve_in`] is the same walk over any [`Lookup`]: a folder on the build host (what
//! [`resolve`] uses) or a stack of layers seen as one tree (`elf_closure::RootStack`, the way
//! systemd-sysext's overlay shows an image over the host).

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow before it is reported as a loop (Linux: 40).
pub const MAX_SYMLINKS: usize = 40;

/// Errors of [`resolve`].
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path} not found in rootfs {root}")]
    NotFound { root: PathBuf, path: PathBuf },
    #[error("{path} in rootfs {root}: a component is not a directory")]
    NotADirectory { root: PathBuf, path: PathBuf },
    #[error(
        "{path} in rootfs {root}: too many levels of symbolic links (more than {MAX_SYMLINKS})"
    )]
    Loop { root: PathBuf, path: PathBuf },
    #[error("{path} is not an absolute path (paths inside a rootfs start with /)")]
    NotAbsolute { path: PathBuf },
    #[error("reading {path} in rootfs {root}")]
    Io {
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl RootfsError {
    /// True when the path (or one of its parents) does not exist or is not a directory, i.e. the
    /// loader would just try the next candidate.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            RootfsError::NotFound { .. } | RootfsError::NotADirectory { .. }
        )
    }
}

/// Where the inside-root path `inside` lives on the build host (no resolution is done).
pub fn host_path(root: &Path, inside: &Path) -> PathBuf {
    let mut out = root.to_path_buf();
    for c in inside.components() {
        if let Component::Normal(n) = c {
            out.push(n);
        }
    }
    out
}

fn join_inside(parts: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    for c in parts {
        p.push(c);
    }
    p
}

/// What [`resolve_with`] does with a component that does not exist (or that has a non-folder
/// as its parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missing {
    /// Fail with [`RootfsError::NotFound`] or [`RootfsError::NotADirectory`].
    #[default]
    Error,
    /// Keep it (and what follows it) as written: the result is where the path would be. A
    /// later `..` still removes it, and symlinks before it are still followed.
    Keep,
}

/// Resolves the absolute inside-root `path` with `root` as `/` and returns the canonical
/// inside-root path (absolute, no symlinks in it except the last component when `follow_last`
/// is false). Fails with [`RootfsError::NotFound`] when a component does not exist.
pub fn resolve(root: &Path, path: &Path, follow_last: bool) -> Result<PathBuf, RootfsError> {
    resolve_with(root, path, follow_last, Missing::Error)
}

/// [`resolve`], with `missing` saying what a component that does not exist does: with
/// [`Missing::Keep`] only a symlink loop, a relative `path` or an I/O error other than
/// "not found" / "not a directory" fails.
pub fn resolve_with(
    root: &Path,
    path: &Path,
    follow_last: bool,
    missing: Missing,
) -> Result<PathBuf, RootfsError> {
    resolve_in(&HostRoot(root), path, follow_last, missing)
}

/// What [`Lookup::lstat`] found at a path (not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    Dir,
    Symlink,
    /// A regular file, device, FIFO or socket.
    Other,
}

impl From<std::fs::FileType> for Found {
    fn from(t: std::fs::FileType) -> Found {
        if t.is_dir() {
            Found::Dir
        } else if t.is_symlink() {
            Found::Symlink
        } else {
            Found::Other
        }
    }
}

/// A tree [`resolve_in`] walks: absolute inside-tree paths, looked up without following.
pub trait Lookup {
    /// The folder named in errors.
    fn base(&self) -> &Path;
    /// What is at `inside`; an error of kind `NotFound` (or `ENOTDIR`) when nothing is.
    fn lstat(&self, inside: &Path) -> io::Result<Found>;
    /// The target of the symlink at `inside`.
    fn read_link(&self, inside: &Path) -> io::Result<PathBuf>;
}

/// One folder on the build host as the whole root.
struct HostRoot<'a>(&'a Path);

impl Lookup for HostRoot<'_> {
    fn base(&self) -> &Path {
        self.0
    }
    fn lstat(&self, inside: &Path) -> io::Result<Found> {
        Ok(std::fs::symlink_metadata(host_path(self.0, inside))?
            .file_type()
            .into())
    }
    fn read_link(&self, inside: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(host_path(self.0, inside))
    }
}

/// [`resolve_with`] over any [`Lookup`]: `tree` is the root.
pub fn resolve_in<T: Lookup + ?Sized>(
    tree: &T,
    path: &Path,
    follow_last: bool,
    missing: Missing,
) -> Result<PathBuf, RootfsError> {
    let keep = missing == Missing::Keep;
    let root = tree.base();
    if !path.has_root() {
        return Err(RootfsError::NotAbsolute {
            path: path.to_path_buf(),
        });
    }
    // Remaining components, reversed so the next one is at the end.
    let mut todo: Vec<OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0usize;
    let err_path = || path.to_path_buf();
    while let Some(comp) = todo.pop() {
        if comp == "." || comp.is_empty() {
            continue;
        }
        if comp == ".." {
            done.pop();
            continue;
        }
        let is_last = todo.iter().all(|c| c == "." || c.is_empty());
        done.push(comp);
        let inside = join_inside(&done);
        let hit = match tree.lstat(&inside) {
            Ok(m) => m,
            Err(e)
                if keep
                    && (e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(libc::ENOTDIR)) =>
            {
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RootfsError::NotFound {
                    root: root.to_path_buf(),
                    path: err_path(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(RootfsError::NotADirectory {
                    root: root.to_path_buf(),
                    path: err_path(),
                })
            }
            Err(source) => {
                return Err(RootfsError::Io {
                    root: root.to_path_buf(),
                    path: err_path(),
                    source,
                })
            }
        };
        if hit == Found::Symlink && (follow_last || !is_last) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(RootfsError::Loop {
                    root: root.to_path_buf(),
                    path: err_path(),
                });
            }
            let target = tree.read_link(&inside).map_err(|source| RootfsError::Io {
                root: root.to_path_buf(),
                path: inside.clone(),
                source,
            })?;
            if target.as_os_str().is_empty() {
                return Err(RootfsError::NotFound {
                    root: root.to_path_buf(),
                    path: err_path(),
                });
            }
            done.pop();
            if target.as_os_str().as_bytes().first() == Some(&b'/') {
                done.clear();
            }
            push_components(&mut todo, &target);
            continue;
        }
        if !keep && !is_last && hit == Found::Other {
            return Err(RootfsError::NotADirectory {
                root: root.to_path_buf(),
                path: err_path(),
            });
        }
    }
    Ok(join_inside(&done))
}

/// Pushes the components of `p` onto the stack `todo` so that the first component is popped first.
fn push_components(todo: &mut Vec<OsString>, p: &Path) {
    let bytes = p.as_os_str().as_bytes();
    let parts: Vec<&[u8]> = bytes
        .split(|b| *b == b'/')
        .filter(|s| !s.is_empty())
        .collect();
    for part in parts.into_iter().rev() {
        todo.push(std::ffi::OsStr::from_bytes(part).to_os_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["usr/lib/x86_64-linux-gnu", "usr/bin", "etc", "opt/app/lib"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"x").unwrap();
        std::fs::write(r.join("etc/passwd"), b"inside").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("usr/lib", r.join("lib64")).unwrap();
        symlink("/", r.join("usr/bin/rootlink")).unwrap();
        symlink("..", r.join("usr/bin/up")).unwrap();
        symlink("../../..", r.join("usr/bin/upupup")).unwrap();
        symlink("../../../../../../etc/passwd", r.join("usr/bin/escape")).unwrap();
        symlink("/etc", r.join("opt/app/etc")).unwrap();
        symlink(
            "/lib/x86_64-linux-gnu/libc.so.6",
            r.join("opt/app/lib/libc.so"),
        )
        .unwrap();
        symlink("loop2", r.join("opt/loop1")).unwrap();
        symlink("loop1", r.join("opt/loop2")).unwrap();
        symlink("self", r.join("opt/self")).unwrap();
        symlink("/missing/x", r.join("opt/dangling")).unwrap();
        t
    }

    #[test]
    fn table() {
        let t = tree();
        let r = t.path();
        let ok: &[(&str, bool, &str)] = &[
            ("/", true, "/"),
            ("/lib", true, "/usr/lib"),
            ("/lib", false, "/lib"),
            (
                "/lib64/x86_64-linux-gnu/libc.so.6",
                true,
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            ("/usr/bin/rootlink", true, "/"),
            ("/usr/bin/rootlink/etc/passwd", true, "/etc/passwd"),
            ("/usr/bin/up", true, "/usr"),
            ("/usr/bin/upupup", true, "/"),
            ("/usr/bin/upupup/etc", true, "/etc"),
            ("/usr/bin/escape", true, "/etc/passwd"),
            ("/../../../etc/passwd", true, "/etc/passwd"),
            ("/opt/app/etc/passwd", true, "/etc/passwd"),
            (
                "/opt/app/lib/libc.so",
                true,
                "/usr/lib/x86_64-linux-gnu/libc.so.6",
            ),
            ("/opt/app/lib/libc.so", false, "/opt/app/lib/libc.so"),
            (
                "/usr/bin/../lib/./x86_64-linux-gnu",
                true,
                "/usr/lib/x86_64-linux-gnu",
            ),
            ("/lib/../bin", true, "/usr/bin"),
            ("/opt/dangling", false, "/opt/dangling"),
        ];
        for (p, follow, want) in ok {
            let got = resolve(r, Path::new(p), *follow).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(got, Path::new(want), "{p} follow={follow}");
            assert!(host_path(r, &got).starts_with(r));
        }
        let bad: &[(&str, &str)] = &[
            ("/opt/loop1", "loop"),
            ("/opt/self/x", "loop"),
            ("/opt/dangling", "notfound"),
            ("/usr/nothing", "notfound"),
            ("/etc/passwd/x", "notdir"),
            ("relative/path", "notabs"),
        ];
        for (p, kind) in bad {
            let e = resolve(r, Path::new(p), true).unwrap_err();
            let matches = match *kind {
                "loop" => matches!(e, RootfsError::Loop { .. }),
                "notfound" => matches!(e, RootfsError::NotFound { .. }),
                "notdir" => matches!(e, RootfsError::NotADirectory { .. }),
                _ => matches!(e, RootfsError::NotAbsolute { .. }),
            };
            assert!(matches, "{p}: {e:?}");
        }
    }

    #[test]
    fn keep_missing_resolves_where_a_path_would_be() {
        let t = tree();
        let r = t.path();
        symlink("chain2", r.join("opt/chain1")).unwrap();
        symlink("/lib", r.join("opt/chain2")).unwrap();
        let keep = |p: &str, follow: bool| resolve_with(r, Path::new(p), follow, Missing::Keep);
        let ok: &[(&str, bool, &str)] = &[
            // Missing tails are kept, below folders, files and other missing components.
            ("/usr/nothing", true, "/usr/nothing"),
            ("/usr/nothing/deeper/x", true, "/usr/nothing/deeper/x"),
            ("/etc/passwd/x", true, "/etc/passwd/x"),
            // A later `..` removes a kept component.
            ("/usr/nothing/../bin", true, "/usr/bin"),
            (
                "/usr/nothing/../lib/x86_64-linux-gnu",
                true,
                "/usr/lib/x86_64-linux-gnu",
            ),
            // Symlink chains before the missing part are followed (relative, then absolute).
            ("/opt/chain1/new/file", true, "/usr/lib/new/file"),
            (
                "/lib64/x86_64-linux-gnu/libnew.so",
                true,
                "/usr/lib/x86_64-linux-gnu/libnew.so",
            ),
            // `..` is clamped at the root, through symlinks too.
            ("/../../nope/x", true, "/nope/x"),
            ("/usr/bin/upupup/missing", true, "/missing"),
            ("/usr/bin/upupup/../../x", true, "/x"),
            // Absolute targets restart at the root; a dangling one lands on its target.
            ("/opt/app/etc/new.conf", true, "/etc/new.conf"),
            ("/opt/dangling", true, "/missing/x"),
            ("/opt/dangling/y", true, "/missing/x/y"),
            ("/opt/dangling", false, "/opt/dangling"),
        ];
        for (p, follow, want) in ok {
            let got = keep(p, *follow).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert_eq!(got, Path::new(want), "{p} follow={follow}");
            assert!(host_path(r, &got).starts_with(r));
        }
        // Where every component exists, keeping changes nothing.
        for p in ["/lib", "/opt/app/lib/libc.so", "/usr/bin/upupup/etc", "/"] {
            for follow in [true, false] {
                assert_eq!(
                    keep(p, follow).unwrap(),
                    resolve(r, Path::new(p), follow).unwrap(),
                    "{p} follow={follow}"
                );
            }
        }
        for p in ["/opt/loop1", "/opt/self/x", "/opt/loop2/missing"] {
            let e = keep(p, true).unwrap_err();
            assert!(matches!(e, RootfsError::Loop { .. }), "{p}: {e:?}");
        }
        let e = keep("relative/path", true).unwrap_err();
        assert!(matches!(e, RootfsError::NotAbsolute { .. }), "{e:?}");
        // Missing::Error is plain resolve.
        let e = resolve_with(r, Path::new("/usr/nothing"), true, Missing::Error).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
    }

    #[test]
    fn host_path_stays_inside() {
        let root = Path::new("/srv/root");
        assert_eq!(
            host_path(root, Path::new("/etc/x")),
            Path::new("/srv/root/etc/x")
        );
        assert_eq!(host_path(root, Path::new("/")), Path::new("/srv/root"));
        assert_eq!(
            host_path(root, Path::new("/../x")),
            Path::new("/srv/root/x")
        );
    }
}
