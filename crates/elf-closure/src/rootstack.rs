//! A root filesystem seen as an ordered stack of layers.
//!
//! [`RootStack`] is an ordered stack of folders seen as one tree, the way
//! systemd-sysext's overlay shows an image's `usr/` and `opt/` over the host's: each path is
//! looked up in the layers in order and the first layer holding it wins (directories are thus
//! merged, files and symlinks of an upper layer hide the lower ones). A layer is a folder on
//! the build host or a [`TreeView`]: a read-only tree read in place (an image that is never
//! extracted, see `sysext_core::check`). Files are read through the stack ([`RootStack::read`],
//! [`RootStack::scan_elf`]) with a limit and only when they are regular files.
//!
//! Paths resolve with [`safefs::rootfs::resolve_in`] (the stack is the root).

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safefs::rootfs::{self, host_path, Found, Lookup, Missing, RootfsError};

use crate::{ElfError, ElfInfo};

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

/// What [`RootStack::find`] found.
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
}

/// Opens a host file for reading without blocking and only when it is a regular file
/// ([`safefs::tree::open_regular`], as an I/O error otherwise).
fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    safefs::tree::open_regular(path)?.map_err(|kind| {
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
        self.find(inside).is_ok_and(|h| h.is_dir())
    }

    /// At most `limit` bytes of `inside` (resolved), from the first layer holding it; only a
    /// regular file is read (a FIFO or device is an error, never opened for blocking reads).
    pub fn read(&self, inside: &Path, limit: u64) -> io::Result<Vec<u8>> {
        match self.find(inside)? {
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
        match self.find(inside) {
            Ok(Hit::Host(host, _)) => crate::scan_file(&host),
            Ok(Hit::View(v, _)) => v.scan_elf(inside),
            Err(source) => Err(ElfError::Io {
                path: inside.to_path_buf(),
                source,
            }),
        }
    }

    /// See [`resolve`]; the stack is the root.
    pub fn resolve(&self, path: &Path, follow_last: bool) -> Result<PathBuf, RootfsError> {
        rootfs::resolve_in(self, path, follow_last, Missing::Error)
    }

    /// Where the inside-root path `inside` lives on the build host: in the first layer that
    /// holds it (no resolution is done), else where the bottom layer would hold it.
    /// A path held by a [`TreeView`] layer has no host path: the result is then where the
    /// bottom layer would hold it (read files through [`RootStack::read`] instead).
    pub fn host_path(&self, inside: &Path) -> PathBuf {
        match self.find(inside) {
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
    fn find(&self, inside: &Path) -> io::Result<Hit<'_>> {
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

impl Lookup for RootStack {
    fn base(&self) -> &Path {
        RootStack::base(self)
    }
    fn lstat(&self, inside: &Path) -> io::Result<Found> {
        Ok(match self.find(inside)? {
            Hit::Host(_, t) => t.into(),
            Hit::View(_, ViewKind::Dir) => Found::Dir,
            Hit::View(_, ViewKind::Symlink(_)) => Found::Symlink,
            Hit::View(..) => Found::Other,
        })
    }
    fn read_link(&self, inside: &Path) -> io::Result<PathBuf> {
        match self.find(inside)? {
            Hit::Host(host, _) => std::fs::read_link(host),
            Hit::View(_, ViewKind::Symlink(t)) => Ok(t),
            Hit::View(..) => Err(io::Error::from(io::ErrorKind::InvalidInput)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root with `/lib -> usr/lib`, `/usr/bin`, `/etc/passwd` and `/opt/app/etc -> /etc`.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["usr/lib/x86_64-linux-gnu", "usr/bin", "etc", "opt/app"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("usr/lib/x86_64-linux-gnu/libc.so.6"), b"x").unwrap();
        std::fs::write(r.join("etc/passwd"), b"inside").unwrap();
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/etc", r.join("opt/app/etc")).unwrap();
        t
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
        testkit::mkfifo(&fifo);
        let s = RootStack::single(t.path());
        assert!(s.read(Path::new("/etc/fifo"), 10).is_err());
        assert!(matches!(s.scan_elf(Path::new("/etc/fifo")), Ok(None)));
        assert_eq!(s.read(Path::new("/etc/passwd"), 3).unwrap(), b"ins");
    }
}
