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
//! [`RootStack`] is the same walk over an ordered stack of folders seen as one tree, the way
//! systemd-sysext's overlay shows an image's `usr/` and `opt/` over the host's: each path is
//! looked up in the layers in order and the first layer holding it wins (directories are thus
//! merged, files and symlinks of an upper layer hide the lower ones). A layer is a folder on
//! the build host or a [`TreeView`]: a read-only tree read in place (an image that is never
//! extracted, see [`crate::check`]). Files are read through the stack ([`RootStack::read`],
//! [`RootStack::scan_elf`]) with a limit and only when they are regular files.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::elf::{ElfError, ElfInfo};

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
    resolve_in(&RootStack::single(root), path, follow_last, missing)
}

/// What a [`TreeView`] holds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewKind {
    Dir,
    File,
    Symlink(PathBuf),
    /// A device, FIFO or socket.
    Other,
}

/// A read-only tree that is not a folder on the build host, e.g. an image read in place.
/// Paths are absolute inside-tree paths whose parents are already resolved.
pub trait TreeView: Send + Sync + std::fmt::Debug {
    /// Where the tree comes from (for messages).
    fn origin(&self) -> &Path;
    /// The entry at `inside`, not followed; `None` when absent.
    fn entry(&self, inside: &Path) -> Option<ViewKind>;
    /// The names in the folder `inside`.
    fn names(&self, inside: &Path) -> Vec<OsString>;
    /// At most `limit` bytes of the regular file at `inside`.
    fn read(&self, inside: &Path, limit: u64) -> io::Result<Vec<u8>>;
    /// The ELF scan of the regular file at `inside` (`Ok(None)`: not ELF).
    fn scan_elf(&self, inside: &Path) -> Result<Option<ElfInfo>, ElfError>;
}

#[derive(Debug, Clone)]
enum Source {
    Dir(PathBuf),
    View(Arc<dyn TreeView>),
}

/// One layer of a [`RootStack`].
#[derive(Debug, Clone)]
struct Layer {
    source: Source,
    /// Absolute inside-root folders this layer shows (all paths when empty).
    only_under: Vec<PathBuf>,
}

impl Layer {
    fn shows(&self, inside: &Path) -> bool {
        self.only_under.is_empty() || self.only_under.iter().any(|u| inside.starts_with(u))
    }
}

/// What [`RootStack::lstat`] found.
enum Hit<'a> {
    Host(PathBuf, std::fs::FileType),
    View(&'a Arc<dyn TreeView>, ViewKind),
}

impl Hit<'_> {
    fn is_dir(&self) -> bool {
        match self {
            Hit::Host(_, t) => t.is_dir(),
            Hit::View(_, k) => *k == ViewKind::Dir,
        }
    }
    fn is_symlink(&self) -> bool {
        match self {
            Hit::Host(_, t) => t.is_symlink(),
            Hit::View(_, k) => matches!(k, ViewKind::Symlink(_)),
        }
    }
}

/// Opens a host file for reading without blocking and only when it is a regular file
/// ([`crate::tree::open_regular`], as an I/O error otherwise).
fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    crate::tree::open_regular(path)?.map_err(|kind| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is {kind}, not a regular file", path.display()),
        )
    })
}

/// An ordered stack of folders seen as one root filesystem: the first layer (that shows the
/// path) holding a path wins. Built with [`RootStack::single`] or [`RootStack::new`] and
/// [`RootStack::push`] (upper layers first).
#[derive(Debug, Clone, Default)]
pub struct RootStack {
    layers: Vec<Layer>,
}

impl RootStack {
    /// No layers: every path is absent until layers are pushed.
    pub fn new() -> RootStack {
        RootStack::default()
    }

    /// One folder as the whole root.
    pub fn single(root: &Path) -> RootStack {
        let mut s = RootStack::new();
        s.push(root, &[]);
        s
    }

    /// Adds `dir` below the layers already there. `only_under` (absolute inside-root folders,
    /// e.g. `/usr` and `/opt` for an extension image) limits which paths it shows; empty:
    /// all of them.
    pub fn push(&mut self, dir: &Path, only_under: &[&str]) -> &mut RootStack {
        self.layers.push(Layer {
            source: Source::Dir(dir.to_path_buf()),
            only_under: only_under.iter().map(PathBuf::from).collect(),
        });
        self
    }

    /// Adds the read-only tree `view` below the layers already there; `only_under` as in
    /// [`RootStack::push`].
    pub fn push_view(&mut self, view: Arc<dyn TreeView>, only_under: &[&str]) -> &mut RootStack {
        self.layers.push(Layer {
            source: Source::View(view),
            only_under: only_under.iter().map(PathBuf::from).collect(),
        });
        self
    }

    /// The bottom folder (the one named in errors), or `/` for an empty stack.
    pub fn base(&self) -> &Path {
        match self.layers.last().map(|l| &l.source) {
            Some(Source::Dir(d)) => d,
            Some(Source::View(v)) => v.origin(),
            None => Path::new("/"),
        }
    }

    /// True when `inside` (resolved) is a folder in the first layer holding it.
    pub fn is_dir(&self, inside: &Path) -> bool {
        self.lstat(inside).is_ok_and(|h| h.is_dir())
    }

    /// At most `limit` bytes of `inside` (resolved), from the first layer holding it; only a
    /// regular file is read (a FIFO or device is an error, never opened for blocking reads).
    pub fn read(&self, inside: &Path, limit: u64) -> io::Result<Vec<u8>> {
        match self.lstat(inside)? {
            Hit::Host(host, _) => {
                let mut out = Vec::new();
                open_regular(&host)?.take(limit).read_to_end(&mut out)?;
                Ok(out)
            }
            Hit::View(v, _) => v.read(inside, limit),
        }
    }

    /// The ELF scan of `inside` (resolved), from the first layer holding it; `Ok(None)` when
    /// it is not an ELF regular file.
    pub fn scan_elf(&self, inside: &Path) -> Result<Option<ElfInfo>, ElfError> {
        match self.lstat(inside) {
            Ok(Hit::Host(host, _)) => crate::elf::scan_file(&host),
            Ok(Hit::View(v, _)) => v.scan_elf(inside),
            Err(source) => Err(ElfError::Io {
                path: inside.to_path_buf(),
                source,
            }),
        }
    }

    /// See [`resolve`]; the stack is the root.
    pub fn resolve(&self, path: &Path, follow_last: bool) -> Result<PathBuf, RootfsError> {
        resolve_in(self, path, follow_last, Missing::Error)
    }

    /// Where the inside-root path `inside` lives on the build host: in the first layer that
    /// holds it (no resolution is done), else where the bottom layer would hold it.
    /// A path held by a [`TreeView`] layer has no host path: the result is then where the
    /// bottom layer would hold it (read files through [`RootStack::read`] instead).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        match self.lstat(inside) {
            Ok(Hit::Host(host, _)) => host,
            _ => host_path(self.base(), inside),
        }
    }

    /// The names in the inside-root folder `inside` (already resolved), merged over the
    /// layers, sorted; entries of a layer are hidden when an upper layer holds a non-folder
    /// at `inside`.
    pub fn read_dir(&self, inside: &Path) -> Vec<std::ffi::OsString> {
        let mut out = Vec::new();
        for l in self.layers.iter().filter(|l| l.shows(inside)) {
            let dir = match &l.source {
                Source::Dir(d) => d,
                Source::View(v) => match v.entry(inside) {
                    Some(ViewKind::Dir) => {
                        out.extend(v.names(inside));
                        continue;
                    }
                    Some(_) => break,
                    None => continue,
                },
            };
            let host = host_path(dir, inside);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => break,
                Err(_) => continue,
            }
            if let Ok(rd) = std::fs::read_dir(&host) {
                out.extend(rd.filter_map(|e| e.ok()).map(|e| e.file_name()));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// `lstat` of `inside` in the first layer that holds it; `NotFound` when none does (an
    /// error other than "not found" in a layer stops the search, as the overlay would).
    fn lstat(&self, inside: &Path) -> io::Result<Hit<'_>> {
        for l in self.layers.iter().filter(|l| l.shows(inside)) {
            let dir = match &l.source {
                Source::Dir(d) => d,
                Source::View(v) => match v.entry(inside) {
                    Some(k) => return Ok(Hit::View(v, k)),
                    None => continue,
                },
            };
            let host = host_path(dir, inside);
            match std::fs::symlink_metadata(&host) {
                Ok(m) => return Ok(Hit::Host(host, m.file_type())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::from(io::ErrorKind::NotFound))
    }
}

fn resolve_in(
    stack: &RootStack,
    path: &Path,
    follow_last: bool,
    missing: Missing,
) -> Result<PathBuf, RootfsError> {
    let keep = missing == Missing::Keep;
    let root = stack.base();
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
        let hit = match stack.lstat(&inside) {
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
        if hit.is_symlink() && (follow_last || !is_last) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(RootfsError::Loop {
                    root: root.to_path_buf(),
                    path: err_path(),
                });
            }
            let target = match &hit {
                Hit::Host(host, _) => {
                    std::fs::read_link(host).map_err(|source| RootfsError::Io {
                        root: root.to_path_buf(),
                        path: inside.clone(),
                        source,
                    })?
                }
                Hit::View(_, ViewKind::Symlink(t)) => t.clone(),
                Hit::View(..) => unreachable!("is_symlink"),
            };
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
        if !keep && !is_last && !hit.is_dir() && !hit.is_symlink() {
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

    #[test]
    fn stack_upper_wins_and_only_shows_its_folders() {
        let upper = tempfile::tempdir().unwrap();
        let lower = tree();
        let (u, l) = (upper.path(), lower.path());
        std::fs::create_dir_all(u.join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(u.join("etc")).unwrap();
        std::fs::write(u.join("usr/lib/x86_64-linux-gnu/libfoo.so"), b"up").unwrap();
        std::fs::write(u.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"up").unwrap();
        std::fs::write(u.join("etc/passwd"), b"up").unwrap();
        let mut s = RootStack::new();
        s.push(u, &["/usr", "/opt"]).push(l, &[]);
        assert_eq!(s.base(), l);
        // The lower layer's /lib symlink leads into the merged /usr/lib.
        let p = s
            .resolve(Path::new("/lib/x86_64-linux-gnu/libfoo.so"), true)
            .unwrap();
        assert_eq!(p, Path::new("/usr/lib/x86_64-linux-gnu/libfoo.so"));
        assert_eq!(std::fs::read(s.host_path(&p)).unwrap(), b"up");
        // The upper file hides the lower one; outside /usr and /opt the upper one is not seen.
        let libc = Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(std::fs::read(s.host_path(libc)).unwrap(), b"up");
        assert_eq!(
            std::fs::read(s.host_path(Path::new("/etc/passwd"))).unwrap(),
            b"inside"
        );
        // Lower-only paths still resolve.
        assert_eq!(
            s.resolve(Path::new("/opt/app/etc/passwd"), true).unwrap(),
            Path::new("/etc/passwd")
        );
        let names = s.read_dir(Path::new("/usr/lib/x86_64-linux-gnu"));
        assert_eq!(names, ["libc.so.6", "libfoo.so"]);
        assert!(s
            .resolve(Path::new("/usr/nothing"), true)
            .unwrap_err()
            .is_not_found());
    }

    /// A view of fixed entries: `/usr/lib/libx.so` (a file), links out of the view.
    #[derive(Debug)]
    struct Fake;

    impl TreeView for Fake {
        fn origin(&self) -> &Path {
            Path::new("fake.raw")
        }
        fn entry(&self, inside: &Path) -> Option<ViewKind> {
            Some(match inside.to_str()? {
                "/usr" | "/usr/lib" => ViewKind::Dir,
                "/usr/lib/libx.so" => ViewKind::File,
                "/usr/lib/up" => ViewKind::Symlink("../../etc/passwd".into()),
                "/usr/lib/abs" => ViewKind::Symlink("/etc/passwd".into()),
                "/usr/lib/fifo" => ViewKind::Other,
                _ => return None,
            })
        }
        fn names(&self, inside: &Path) -> Vec<OsString> {
            match inside.to_str() {
                Some("/usr/lib") => ["libx.so", "up", "abs", "fifo"]
                    .map(OsString::from)
                    .to_vec(),
                _ => Vec::new(),
            }
        }
        fn read(&self, inside: &Path, limit: u64) -> io::Result<Vec<u8>> {
            match self.entry(inside) {
                Some(ViewKind::File) => Ok(b"view bytes"[..limit.min(10) as usize].to_vec()),
                _ => Err(io::Error::from(io::ErrorKind::InvalidInput)),
            }
        }
        fn scan_elf(&self, _inside: &Path) -> Result<Option<ElfInfo>, ElfError> {
            Ok(None)
        }
    }

    #[test]
    fn view_layers_resolve_inside_the_stack() {
        let t = tree();
        let mut s = RootStack::new();
        s.push_view(Arc::new(Fake), &["/usr"]).push(t.path(), &[]);
        // The view's links land in the stack, not on the build host.
        for link in ["/usr/lib/up", "/usr/lib/abs"] {
            let real = s.resolve(Path::new(link), true).unwrap();
            assert_eq!(real, Path::new("/etc/passwd"));
            assert_eq!(s.read(&real, 100).unwrap(), b"inside");
        }
        // Folders merge, as in the overlay: the lower /usr/bin shows through.
        assert!(s.resolve(Path::new("/usr/bin"), true).is_ok());
        assert_eq!(s.read(Path::new("/usr/lib/libx.so"), 4).unwrap(), b"view");
        assert!(s.is_dir(Path::new("/usr/lib")));
        assert!(!s.is_dir(Path::new("/usr/lib/libx.so")));
        assert!(s.read(Path::new("/usr/lib/fifo"), 4).is_err());
        let names = s.read_dir(Path::new("/usr/lib"));
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(names.contains(&OsString::from("x86_64-linux-gnu")));
        assert!(s
            .read_dir(Path::new("/etc"))
            .contains(&OsString::from("passwd")));
    }

    #[test]
    fn host_reads_are_regular_files_only() {
        let t = tree();
        let fifo = t.path().join("etc/fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let s = RootStack::single(t.path());
        assert!(s.read(Path::new("/etc/fifo"), 10).is_err());
        assert!(matches!(s.scan_elf(Path::new("/etc/fifo")), Ok(None)));
        assert_eq!(s.read(Path::new("/etc/passwd"), 3).unwrap(), b"ins");
    }
}
