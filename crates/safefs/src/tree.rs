//! The one safe writer for trees built from input.
//!
//! [`Tree`] is a handle on a folder (the tree's root, an open directory descriptor). Every
//! operation takes a path relative to that root (a leading `/` is allowed, `..` is refused) and
//! resolves its parent with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink
//! planted by the input (absolute or relative) resolves with the tree as `/` and never leaves
//! it; with [`TreeOptions::no_symlinks`] a symlink anywhere in a parent is refused instead
//! (`RESOLVE_NO_SYMLINKS`), which is what producers want: they build a fresh tree, so a link
//! where they expect a folder means two inputs collided. The last component is created with the
//! `*at` calls that never follow it (`O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`,
//! `linkat` without `AT_SYMLINK_FOLLOW`), and metadata is set without following links.
//!
//! Opened parent folders are kept in a small cache (at most [`TreeOptions::max_cached_dirs`]
//! descriptors, least recently used evicted), so a tree of any size is written with a bounded
//! number of open descriptors. Removing a folder or a symlink flushes the cache.
//!
//! File data: [`Tree::copy_file`] copies only the data extents of a source file
//! (`SEEK_DATA`/`SEEK_HOLE`) and [`write_sparse`] skips all-zero blocks of a stream, so a sparse
//! input stays sparse in the tree.
//!
//! Privilege: [`strip_privilege`] is the producers' one rule for setuid/setgid bits and file
//! capabilities, [`Stripped`] what they list, [`report_stripped`] how they print it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec};
use rustix::io::Errno;
use serde::Serialize;

mod copy;
mod privilege;
mod read;
mod sparse;

pub use copy::{copy_tree, CopiedFile, CopyTreeError, CopyTreeOptions};
pub use privilege::{
    copy_xattrs_fd, image_xattrs, note_capability, report_stripped, strip_privilege, StageOptions,
    Stripped, Xattr, CAPABILITY_XATTR,
};
pub use read::{open_in_root, open_input, open_regular, read_in_root, read_input};
pub use sparse::{copy_sparse, write_sparse, SparseError};

/// Errors of the tree writer. Paths are relative to the tree's root.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("refused {path:?} in {}: {reason}", root.display())]
    Unsafe {
        root: PathBuf,
        path: String,
        reason: &'static str,
    },
    #[error("cannot {op} /{} in {}", path.display(), root.display())]
    Io {
        op: &'static str,
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A signal is stopping the process: nothing more is written, so the temp trees can be
    /// removed ([`crate::cleanup`]).
    #[error("stopped by a signal")]
    Stopping,
}

impl TreeError {
    /// The underlying I/O error, if this is one.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            TreeError::Io { source, .. } => Some(source),
            TreeError::Unsafe { .. } | TreeError::Stopping => None,
        }
    }
}

/// How a [`Tree`] resolves parents.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// Refuse a symlink anywhere in a parent path (`RESOLVE_NO_SYMLINKS`) instead of resolving
    /// it with the tree as `/`.
    pub no_symlinks: bool,
    /// Most parent folder descriptors kept open (at least 1).
    pub max_cached_dirs: usize,
}

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            no_symlinks: false,
            max_cached_dirs: 64,
        }
    }
}

impl TreeOptions {
    /// Options for producers: no symlink is followed at all.
    pub fn no_symlinks() -> TreeOptions {
        TreeOptions {
            no_symlinks: true,
            ..TreeOptions::default()
        }
    }
}

/// A least-recently-used map of opened folders (`O_PATH`) by their path in the tree.
struct DirCache {
    map: HashMap<Vec<u8>, (OwnedFd, u64)>,
    tick: u64,
    cap: usize,
}

impl DirCache {
    fn get(&mut self, key: &[u8]) -> Option<io::Result<OwnedFd>> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(fd, t)| {
            *t = tick;
            fd.try_clone()
        })
    }

    fn insert(&mut self, key: Vec<u8>, fd: &OwnedFd) -> io::Result<()> {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            // Linear in the cap (64 by default): cheaper than keeping an order list.
            if let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.map.remove(&oldest);
            }
        }
        self.tick += 1;
        self.map.insert(key, (fd.try_clone()?, self.tick));
        Ok(())
    }
}

/// What is at a path in the tree (not followed).
#[derive(Debug, Clone, Copy)]
pub struct EntryStat {
    pub file_type: FileType,
    pub mode: u32,
    pub size: u64,
}

/// A handle on a tree's root; see the module docs.
pub struct Tree {
    root: OwnedFd,
    root_path: PathBuf,
    resolve: ResolveFlags,
    cache: Mutex<DirCache>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree")
            .field("root", &self.root_path)
            .field("resolve", &self.resolve)
            .finish()
    }
}

/// Splits a tree path into components: leading `/`, empty and `.` components dropped, `..`
/// refused (it could only mean leaving a folder the input chose).
pub fn components(raw: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("a '..' component could leave the tree"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Joins components with `/`; the root is `.`.
pub fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            v.push(b'/');
        }
        v.extend_from_slice(c);
    }
    if v.is_empty() {
        v.push(b'.');
    }
    v
}

fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

impl Tree {
    /// Opens the existing folder `root` as a tree.
    pub fn open(root: &Path, opts: &TreeOptions) -> Result<Tree, TreeError> {
        let fd = rfs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| TreeError::Io {
            op: "open the tree's root",
            root: root.to_path_buf(),
            path: PathBuf::new(),
            source: e.into(),
        })?;
        let mut resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        if opts.no_symlinks {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        Ok(Tree {
            root: fd,
            root_path: root.to_path_buf(),
            resolve,
            cache: Mutex::new(DirCache {
                map: HashMap::new(),
                tick: 0,
                cap: opts.max_cached_dirs.max(1),
            }),
        })
    }

    /// The root folder's path (for messages).
    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// The root folder's descriptor (opened read-only).
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    fn io(&self, op: &'static str, path: &[u8]) -> impl FnOnce(Errno) -> TreeError + '_ {
        let path = PathBuf::from(OsStr::from_bytes(path));
        move |e| TreeError::Io {
            op,
            root: self.root_path.clone(),
            path,
            source: e.into(),
        }
    }

    fn unsafe_path(&self, path: &[u8], reason: &'static str) -> TreeError {
        TreeError::Unsafe {
            root: self.root_path.clone(),
            path: String::from_utf8_lossy(path).into_owned(),
            reason,
        }
    }

    fn comps<'p>(&self, path: &'p [u8]) -> Result<Vec<&'p [u8]>, TreeError> {
        components(path).map_err(|r| self.unsafe_path(path, r))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DirCache> {
        // A panic while holding the lock leaves a consistent map; keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every cached folder (after something in the tree changed under its path).
    pub fn flush(&self) {
        self.lock().map.clear();
    }

    /// Opens a folder by path, `O_PATH`, inside the root.
    fn open_path(&self, key: &[u8]) -> Result<OwnedFd, Errno> {
        crate::openat2(
            &self.root,
            OsStr::from_bytes(key),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            self.resolve,
        )
    }

    fn cached(&self, key: &[u8]) -> Result<Option<OwnedFd>, TreeError> {
        match self.lock().get(key) {
            None => Ok(None),
            Some(Ok(fd)) => Ok(Some(fd)),
            Some(Err(e)) => Err(TreeError::Io {
                op: "duplicate the descriptor of",
                root: self.root_path.clone(),
                path: PathBuf::from(OsStr::from_bytes(key)),
                source: e,
            }),
        }
    }

    fn remember(&self, key: Vec<u8>, fd: &OwnedFd) -> Result<(), TreeError> {
        let mut c = self.lock();
        c.insert(key.clone(), fd).map_err(|e| TreeError::Io {
            op: "duplicate the descriptor of",
            root: self.root_path.clone(),
            path: PathBuf::from(OsStr::from_bytes(&key)),
            source: e,
        })
    }

    fn open_err(&self, key: &[u8], e: Errno) -> TreeError {
        match e {
            Errno::LOOP if self.resolve.contains(ResolveFlags::NO_SYMLINKS) => self.unsafe_path(
                key,
                "a parent is a symlink (two inputs map to one place, or the input planted a link)",
            ),
            Errno::NOTDIR => self.unsafe_path(key, "a parent is not a folder"),
            Errno::XDEV | Errno::LOOP => self.unsafe_path(
                key,
                "a parent is a link that cannot be resolved inside the tree",
            ),
            e => self.io("open the folder", key)(e),
        }
    }

    /// The folder at `comps` (an `O_PATH` descriptor), `None` when it does not exist; with
    /// `create`, missing folders are created (mode `0755`) one by one from the top.
    pub fn dir_at(&self, comps: &[&[u8]], create: bool) -> Result<Option<OwnedFd>, TreeError> {
        // Every write finds its folder here: once a signal is being handled, none goes on
        // filling a tree the signal thread is removing.
        if crate::cleanup::stopping() {
            return Err(TreeError::Stopping);
        }
        let key = join(comps);
        if let Some(fd) = self.cached(&key)? {
            return Ok(Some(fd));
        }
        match self.open_path(&key) {
            Ok(fd) => {
                self.remember(key, &fd)?;
                return Ok(Some(fd));
            }
            Err(Errno::NOENT) if create && !comps.is_empty() => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.open_err(&key, e)),
        }
        // Walk down from the root; no recursion, one descriptor held at a time.
        let mut cur = self.root.try_clone().map_err(|e| TreeError::Io {
            op: "duplicate the descriptor of",
            root: self.root_path.clone(),
            path: PathBuf::from("."),
            source: e,
        })?;
        for i in 1..=comps.len() {
            let k = join(&comps[..i]);
            if let Some(fd) = self.cached(&k)? {
                cur = fd;
                continue;
            }
            let fd =
                match self.open_path(&k) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => {
                        match rfs::mkdirat(
                            &cur,
                            OsStr::from_bytes(comps[i - 1]),
                            Mode::from_raw_mode(0o755),
                        ) {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(e) => return Err(self.io("create the folder", &k)(e)),
                        }
                        match self.open_path(&k) {
                            Ok(fd) => fd,
                            // A dangling or looping link: it resolves to nothing we can create.
                            Err(Errno::NOENT) => return Err(self.unsafe_path(
                                &k,
                                "this parent is not a folder inside the tree (a dangling symlink?)",
                            )),
                            Err(e) => return Err(self.open_err(&k, e)),
                        }
                    }
                    Err(e) => return Err(self.open_err(&k, e)),
                };
            self.remember(k, &fd)?;
            cur = fd;
        }
        Ok(Some(cur))
    }

    /// The parent folder (created when `create`) and the last component of `path`.
    fn parent_of<'p>(
        &self,
        path: &'p [u8],
        create: bool,
    ) -> Result<Option<(OwnedFd, &'p [u8])>, TreeError> {
        let comps = self.comps(path)?;
        let Some((&name, parent)) = comps.split_last() else {
            return Err(self.unsafe_path(path, "the tree's root itself"));
        };
        Ok(self.dir_at(parent, create)?.map(|fd| (fd, name)))
    }

    fn parent_required<'p>(&self, path: &'p [u8]) -> Result<(OwnedFd, &'p [u8]), TreeError> {
        self.parent_of(path, true)?
            .ok_or_else(|| self.unsafe_path(path, "its folder could not be created"))
    }

    /// `lstat` of `path` in the tree; `None` when it (or a parent) does not exist.
    pub fn stat(&self, path: &Path) -> Result<Option<EntryStat>, TreeError> {
        let p = bytes(path);
        if self.comps(p)?.is_empty() {
            let st = rfs::fstat(&self.root).map_err(self.io("stat", p))?;
            return Ok(Some(to_stat(&st)));
        }
        let Some((dir, name)) = self.parent_of(p, false)? else {
            return Ok(None);
        };
        match rfs::statat(&dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(to_stat(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io("stat", p)(e)),
        }
    }

    /// `mkdir -p`: `path` and its missing parents become folders (`0755`; then `path` gets
    /// `mode`). An existing folder is fine; anything else in the way is an error.
    pub fn create_dir_all(&self, path: &Path, mode: u32) -> Result<(), TreeError> {
        let p = bytes(path);
        let comps = self.comps(p)?;
        if comps.is_empty() {
            return Ok(());
        }
        self.dir_at(&comps, true)?;
        self.set_mode(path, mode)
    }

    /// Creates the folder `path` with `mode` (parents created `0755`); an existing folder (not
    /// a link to one) is kept and gets `mode`.
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<(), TreeError> {
        let p = bytes(path);
        let (dir, name) = self.parent_required(p)?;
        let cname = OsStr::from_bytes(name);
        match rfs::mkdirat(&dir, cname, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let st = rfs::statat(&dir, cname, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(self.io("stat", p))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                    return Err(self.unsafe_path(p, "something that is not a folder is in the way"));
                }
            }
            Err(e) => return Err(self.io("create the folder", p)(e)),
        }
        rfs::chmodat(&dir, cname, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(self.io("set the mode of", p))
    }

    /// Creates the new regular file `path` (never replacing anything, never following a link)
    /// with `mode`; the returned file is open for writing.
    pub fn create_file(&self, path: &Path, mode: u32) -> Result<File, TreeError> {
        let p = bytes(path);
        let (dir, name) = self.parent_required(p)?;
        let fd = rfs::openat(
            &dir,
            OsStr::from_bytes(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| match e {
            Errno::EXIST => self.unsafe_path(p, "it already exists (two inputs map to one place)"),
            e => self.io("create the file", p)(e),
        })?;
        rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(self.io("set the mode of", p))?;
        Ok(File::from(fd))
    }

    /// Creates `path` holding `data`.
    pub fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> Result<(), TreeError> {
        let f = self.create_file(path, mode)?;
        f.write_all_at(data, 0).map_err(|e| {
            self.io("write", bytes(path))(Errno::from_io_error(&e).unwrap_or(Errno::IO))
        })
    }

    /// Creates `path` with the data of the open regular file `src`, holes kept; returns the
    /// bytes of data copied.
    pub fn copy_file(&self, path: &Path, src: &File, mode: u32) -> Result<u64, TreeError> {
        let f = self.create_file(path, mode)?;
        copy_sparse(src, &f).map_err(|e| TreeError::Io {
            op: "copy data into",
            root: self.root_path.clone(),
            path: path.to_path_buf(),
            source: e,
        })
    }

    /// Creates `path` from `reader`, all-zero blocks left as holes; returns the length.
    pub fn write_from(
        &self,
        path: &Path,
        reader: &mut impl Read,
        mode: u32,
    ) -> Result<u64, TreeError> {
        let f = self.create_file(path, mode)?;
        let mut buf = vec![0u8; 1 << 20];
        write_sparse(reader, &f, &mut buf).map_err(|e| TreeError::Io {
            op: match e {
                SparseError::Read(_) => "read the data for",
                SparseError::Write(_) => "write",
            },
            root: self.root_path.clone(),
            path: path.to_path_buf(),
            source: e.into_io(),
        })
    }

    /// Creates the symlink `path -> target` (the target is stored, never followed here).
    pub fn symlink(&self, path: &Path, target: &Path) -> Result<(), TreeError> {
        let p = bytes(path);
        let (dir, name) = self.parent_required(p)?;
        rfs::symlinkat(target, &dir, OsStr::from_bytes(name)).map_err(|e| match e {
            Errno::EXIST => self.unsafe_path(p, "it already exists (two inputs map to one place)"),
            e => self.io("create the symlink", p)(e),
        })
    }

    /// Creates `path` as a hardlink to the existing entry `existing` (both in the tree; a
    /// symlink at `existing` is linked itself, not followed).
    pub fn hardlink(&self, path: &Path, existing: &Path) -> Result<(), TreeError> {
        let p = bytes(path);
        let e = bytes(existing);
        let Some((edir, ename)) = self.parent_of(e, false)? else {
            return Err(self.io("find the hardlink target", e)(Errno::NOENT));
        };
        let (dir, name) = self.parent_required(p)?;
        rfs::linkat(
            &edir,
            OsStr::from_bytes(ename),
            &dir,
            OsStr::from_bytes(name),
            AtFlags::empty(),
        )
        .map_err(|err| match err {
            Errno::EXIST => self.unsafe_path(p, "it already exists (two inputs map to one place)"),
            err => self.io("create the hardlink", p)(err),
        })
    }

    /// Creates the device node, FIFO or socket `path` (`file_type`) with `mode` and `dev`.
    pub fn mknod(
        &self,
        path: &Path,
        file_type: FileType,
        mode: u32,
        dev: u64,
    ) -> Result<(), TreeError> {
        let p = bytes(path);
        let (dir, name) = self.parent_required(p)?;
        rfs::mknodat(
            &dir,
            OsStr::from_bytes(name),
            file_type,
            Mode::from_raw_mode(mode),
            dev,
        )
        .map_err(self.io("create the node", p))
    }

    /// Removes whatever is at `path` (folders with their content, never following links);
    /// `false` when nothing was there.
    pub fn remove(&self, path: &Path) -> Result<bool, TreeError> {
        let p = bytes(path);
        let Some((dir, name)) = self.parent_of(p, false)? else {
            return Ok(false);
        };
        self.remove_at(&dir, name, p)
    }

    /// Removes `name` in the folder `dir` (opened from this tree), whatever it is; folders are
    /// emptied iteratively (no recursion on the input's depth). `path` is for messages.
    pub fn remove_at(&self, dir: &OwnedFd, name: &[u8], path: &[u8]) -> Result<bool, TreeError> {
        let cname = OsStr::from_bytes(name);
        let st = match rfs::statat(dir, cname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(self.io("stat", path)(e)),
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                self.flush();
                self.remove_dir_contents(dir, name, path)?;
                rfs::unlinkat(dir, cname, AtFlags::REMOVEDIR)
                    .map_err(self.io("remove the folder", path))?;
            }
            ft => {
                if ft == FileType::Symlink {
                    self.flush();
                }
                rfs::unlinkat(dir, cname, AtFlags::empty()).map_err(self.io("remove", path))?;
            }
        }
        Ok(true)
    }

    /// Empties the folder `name` in `dir` without recursion and with two descriptors at most:
    /// each folder is read once (files and empty folders removed, the other folders noted),
    /// then the noted folders are emptied one by one, climbing back with `..` (the folders were
    /// opened without following links, so `..` is their real parent).
    fn remove_dir_contents(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        path: &[u8],
    ) -> Result<(), TreeError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // One level per folder being emptied: its name and its non-empty subfolders to go.
        let mut stack: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
        let full = |stack: &[(Vec<u8>, Vec<Vec<u8>>)], n: &[u8]| {
            let mut p = path.to_vec();
            for c in stack.iter().skip(1).map(|l| l.0.as_slice()).chain(Some(n)) {
                if !c.is_empty() {
                    p.push(b'/');
                    p.extend_from_slice(c);
                }
            }
            p
        };
        let scan =
            |cur: &OwnedFd, stack: &[(Vec<u8>, Vec<Vec<u8>>)]| -> Result<Vec<Vec<u8>>, TreeError> {
                let mut pending = Vec::new();
                let rd = rfs::Dir::read_from(cur)
                    .map_err(|e| self.io("read the folder", &full(stack, b""))(e))?;
                for ent in rd {
                    let ent = ent.map_err(|e| self.io("read the folder", &full(stack, b""))(e))?;
                    let n = ent.file_name().to_bytes();
                    if n == b"." || n == b".." {
                        continue;
                    }
                    let cn = OsStr::from_bytes(n);
                    let ft = match ent.file_type() {
                        FileType::Unknown => {
                            let st = rfs::statat(cur, cn, AtFlags::SYMLINK_NOFOLLOW)
                                .map_err(|e| self.io("stat", &full(stack, n))(e))?;
                            FileType::from_raw_mode(st.st_mode)
                        }
                        ft => ft,
                    };
                    if ft == FileType::Directory {
                        match rfs::unlinkat(cur, cn, AtFlags::REMOVEDIR) {
                            Ok(()) => {}
                            Err(Errno::NOTEMPTY | Errno::EXIST) => pending.push(n.to_vec()),
                            Err(e) => return Err(self.io("remove the folder", &full(stack, n))(e)),
                        }
                    } else {
                        rfs::unlinkat(cur, cn, AtFlags::empty())
                            .map_err(|e| self.io("remove", &full(stack, n))(e))?;
                    }
                }
                Ok(pending)
            };
        let mut cur = rfs::openat(dir, OsStr::from_bytes(name), flags, Mode::empty())
            .map_err(self.io("open the folder", path))?;
        let first = scan(&cur, &stack)?;
        stack.push((name.to_vec(), first));
        loop {
            let next = stack.last_mut().and_then(|l| l.1.pop());
            match next {
                Some(n) => {
                    let fd = rfs::openat(&cur, OsStr::from_bytes(&n), flags, Mode::empty())
                        .map_err(|e| self.io("open the folder", &full(&stack, &n))(e))?;
                    cur = fd;
                    stack.push((n, Vec::new()));
                    let pending = scan(&cur, &stack)?;
                    stack.last_mut().expect("pushed").1 = pending;
                }
                None => {
                    let (done, _) = stack.pop().expect("non-empty");
                    if stack.is_empty() {
                        // The caller removes the folder itself.
                        return Ok(());
                    }
                    let parent = rfs::openat(&cur, "..", flags, Mode::empty())
                        .map_err(|e| self.io("open the folder", &full(&stack, b""))(e))?;
                    rfs::unlinkat(&parent, OsStr::from_bytes(&done), AtFlags::REMOVEDIR)
                        .map_err(|e| self.io("remove the folder", &full(&stack, &done))(e))?;
                    cur = parent;
                }
            }
        }
    }

    /// Sets the numeric owner of `path` (a symlink itself, not its target).
    pub fn set_owner(&self, path: &Path, uid: u32, gid: u32) -> Result<(), TreeError> {
        let p = bytes(path);
        if self.comps(p)?.is_empty() {
            return rfs::fchown(
                &self.root,
                Some(rfs::Uid::from_raw(uid)),
                Some(rfs::Gid::from_raw(gid)),
            )
            .map_err(self.io("change the owner of", p));
        }
        let (dir, name) = self.existing(p)?;
        rfs::chownat(
            &dir,
            OsStr::from_bytes(name),
            Some(rfs::Uid::from_raw(uid)),
            Some(rfs::Gid::from_raw(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.io("change the owner of", p))
    }

    /// Sets the mode of `path`; a symlink (which has no mode of its own) is left alone.
    pub fn set_mode(&self, path: &Path, mode: u32) -> Result<(), TreeError> {
        let p = bytes(path);
        if self.comps(p)?.is_empty() {
            return rfs::fchmod(&self.root, Mode::from_raw_mode(mode))
                .map_err(self.io("set the mode of", p));
        }
        let (dir, name) = self.existing(p)?;
        let cname = OsStr::from_bytes(name);
        let st = rfs::statat(&dir, cname, AtFlags::SYMLINK_NOFOLLOW).map_err(self.io("stat", p))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            return Ok(());
        }
        // Not a link (checked just above, in a folder resolved inside the tree): chmodat
        // cannot be sent elsewhere.
        rfs::chmodat(&dir, cname, Mode::from_raw_mode(mode), AtFlags::empty())
            .map_err(self.io("set the mode of", p))
    }

    /// Sets the access and modification times of `path` (not following a link) to `mtime`.
    pub fn set_times(&self, path: &Path, mtime: i64) -> Result<(), TreeError> {
        let p = bytes(path);
        let ts = times(mtime);
        if self.comps(p)?.is_empty() {
            return rfs::futimens(&self.root, &ts).map_err(self.io("set the times of", p));
        }
        let (dir, name) = self.existing(p)?;
        rfs::utimensat(
            &dir,
            OsStr::from_bytes(name),
            &ts,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(self.io("set the times of", p))
    }

    /// Sets the extended attribute `key` of the regular file or folder `path` (links, devices,
    /// fifos and sockets are refused: they would have to be opened or followed).
    pub fn set_xattr(&self, path: &Path, key: &str, value: &[u8]) -> Result<(), TreeError> {
        let p = bytes(path);
        let fd = self.open_no_follow(p)?;
        rfs::fsetxattr(&fd, key, value, rfs::XattrFlags::empty())
            .map_err(self.io("set an extended attribute of", p))
    }

    /// Opens the regular file or folder at `path` read-only, never following a link.
    pub fn open_no_follow(&self, p: &[u8]) -> Result<OwnedFd, TreeError> {
        if self.comps(p)?.is_empty() {
            return self.root.try_clone().map_err(|e| TreeError::Io {
                op: "duplicate the descriptor of",
                root: self.root_path.clone(),
                path: PathBuf::from("."),
                source: e,
            });
        }
        let (dir, name) = self.existing(p)?;
        let cname = OsStr::from_bytes(name);
        let st = rfs::statat(&dir, cname, AtFlags::SYMLINK_NOFOLLOW).map_err(self.io("stat", p))?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft != FileType::RegularFile && ft != FileType::Directory {
            return Err(self.unsafe_path(p, "not a regular file or folder"));
        }
        rfs::openat(
            &dir,
            cname,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(self.io("open", p))
    }

    fn existing<'p>(&self, p: &'p [u8]) -> Result<(OwnedFd, &'p [u8]), TreeError> {
        self.parent_of(p, false)?
            .ok_or_else(|| self.io("find", p)(Errno::NOENT))
    }
}

fn to_stat(st: &rfs::Stat) -> EntryStat {
    EntryStat {
        file_type: FileType::from_raw_mode(st.st_mode),
        mode: st.st_mode & 0o7777,
        size: st.st_size as u64,
    }
}

/// Access and modification times both `mtime` (seconds).
pub fn times(mtime: i64) -> rfs::Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rfs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}
#[cfg(test)]
mod tests {
    use super::sparse::all_zero;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A scratch folder on tmpfs when there is one (this test writes thousands of entries).
    fn scratch() -> tempfile::TempDir {
        match Path::new("/dev/shm").is_dir() {
            true => {
                tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
            }
            false => tempfile::tempdir().unwrap(),
        }
    }

    /// The tests that hold a [`Tree`] run one at a time: [`descriptors_stay_bounded`] counts
    /// the process's descriptors, and each tree caches up to 64 folders.
    static TREES: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        TREES.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tree(dir: &Path, no_symlinks: bool) -> Tree {
        let o = TreeOptions {
            no_symlinks,
            ..TreeOptions::default()
        };
        Tree::open(dir, &o).unwrap()
    }

    #[test]
    fn planted_symlink_parent_never_sends_a_write_outside() {
        let _serial = serial();
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../..", d.path().join("up")).unwrap();
        // In-root resolution: the links resolve inside the tree.
        let t = tree(d.path(), false);
        // A link whose in-tree target is missing is refused, not created outside.
        assert!(t.write_file(Path::new("abs/a"), b"x", 0o644).is_err());
        assert!(t.create_dir_all(Path::new("abs/deep/er"), 0o755).is_err());
        std::fs::create_dir_all(d.path().join(outside.path().strip_prefix("/").unwrap())).unwrap();
        t.write_file(Path::new("abs/a"), b"x", 0o644).unwrap();
        t.write_file(Path::new("up/b"), b"x", 0o644).unwrap();
        t.create_dir_all(Path::new("abs/deep/er"), 0o755).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(d
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("a")
            .is_file());
        assert!(d.path().join("b").is_file());
        // No symlinks at all: refused.
        let t = tree(d.path(), true);
        for p in ["abs/c", "up/c", "abs/x/y"] {
            let e = t.write_file(Path::new(p), b"x", 0o644).unwrap_err();
            assert!(matches!(e, TreeError::Unsafe { .. }), "{p}: {e}");
        }
        assert!(t.symlink(Path::new("up/l"), Path::new("/etc")).is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // The final component is never followed: a link there is "already exists".
        let e = t.write_file(Path::new("abs"), b"x", 0o644).unwrap_err();
        assert!(matches!(e, TreeError::Unsafe { .. }), "{e}");
        assert!(t.set_xattr(Path::new("abs"), "user.x", b"1").is_err());
        let before = std::fs::metadata(outside.path()).unwrap().mode();
        t.set_mode(Path::new("abs"), 0o777).unwrap();
        assert_eq!(
            std::fs::metadata(outside.path()).unwrap().mode(),
            before,
            "set_mode never follows the link"
        );
    }

    #[test]
    fn dotdot_is_refused() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let t = tree(d.path(), false);
        for p in ["..", "../x", "a/../../x", "a/.."] {
            assert!(matches!(
                t.write_file(Path::new(p), b"x", 0o644),
                Err(TreeError::Unsafe { .. })
            ));
            assert!(t.create_dir_all(Path::new(p), 0o755).is_err());
        }
        assert!(t.write_file(Path::new("/"), b"x", 0o644).is_err());
        assert_eq!(components(b"/a/./b/").unwrap(), vec![&b"a"[..], b"b"]);
        assert!(components(b".").unwrap().is_empty());
    }

    #[test]
    fn operations_do_what_they_say() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let t = tree(d.path(), true);
        t.create_dir(Path::new("usr/bin"), 0o755).unwrap();
        t.create_dir(Path::new("usr/bin"), 0o700).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("usr/bin")).unwrap().mode() & 0o7777,
            0o700
        );
        t.write_file(Path::new("/usr/bin/x"), b"hi", 0o4755)
            .unwrap();
        let m = std::fs::metadata(d.path().join("usr/bin/x")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert!(t
            .write_file(Path::new("usr/bin/x"), b"again", 0o644)
            .is_err());
        t.hardlink(Path::new("usr/bin/y"), Path::new("usr/bin/x"))
            .unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("usr/bin/y")).unwrap().ino(),
            m.ino()
        );
        t.symlink(Path::new("usr/bin/l"), Path::new("x")).unwrap();
        t.set_times(Path::new("usr/bin/l"), 1234).unwrap();
        assert_eq!(
            std::fs::symlink_metadata(d.path().join("usr/bin/l"))
                .unwrap()
                .mtime(),
            1234
        );
        t.set_mode(Path::new("usr/bin/x"), 0o755).unwrap();
        assert_eq!(
            std::fs::metadata(d.path().join("usr/bin/x"))
                .unwrap()
                .mode()
                & 0o7777,
            0o755
        );
        if t.set_xattr(Path::new("usr/bin/x"), "user.t", b"v").is_ok() {
            let mut v = [0u8; 4];
            let n = rustix::fs::getxattr(d.path().join("usr/bin/x"), "user.t", &mut v[..]).unwrap();
            assert_eq!(&v[..n], b"v");
        }
        let st = t.stat(Path::new("usr/bin/l")).unwrap().unwrap();
        assert_eq!(st.file_type, FileType::Symlink);
        assert!(t.stat(Path::new("nope/x")).unwrap().is_none());
        // Remove: a deep folder, iteratively.
        let mut deep = PathBuf::from("usr/deep");
        for i in 0..300 {
            deep.push(format!("d{i}"));
        }
        t.create_dir_all(&deep, 0o755).unwrap();
        t.write_file(&deep.join("f"), b"x", 0o644).unwrap();
        assert!(t.remove(Path::new("usr")).unwrap());
        assert!(!d.path().join("usr").exists());
        assert!(!t.remove(Path::new("usr")).unwrap());
    }

    #[test]
    fn sparse_data_stays_sparse() {
        let _serial = serial();
        let d = tempfile::tempdir().unwrap();
        let src_path = d.path().join("src");
        let src = File::create(&src_path).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"tail", (256 << 20) - 4).unwrap();
        drop(src);
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let t = tree(&out, true);
        let src = File::open(&src_path).unwrap();
        t.copy_file(Path::new("copy"), &src, 0o644).unwrap();
        let m = std::fs::metadata(out.join("copy")).unwrap();
        assert_eq!(m.len(), 256 << 20);
        assert!(m.blocks() * 512 < 4 << 20, "{} blocks", m.blocks());
        let c = File::open(out.join("copy")).unwrap();
        let mut b = [0u8; 4];
        c.read_exact_at(&mut b, (256 << 20) - 4).unwrap();
        assert_eq!(&b, b"tail");
        // From a stream of zeros with data at both ends.
        let mut stream = io::Cursor::new(b"abc".to_vec())
            .chain(io::repeat(0).take(64 << 20))
            .chain(io::Cursor::new(b"xyz".to_vec()));
        let n = t
            .write_from(Path::new("streamed"), &mut stream, 0o600)
            .unwrap();
        assert_eq!(n, (64 << 20) + 6);
        let m = std::fs::metadata(out.join("streamed")).unwrap();
        assert_eq!(m.len(), n);
        assert!(m.blocks() * 512 < 4 << 20, "{} blocks", m.blocks());
        let data = std::fs::read(out.join("streamed")).unwrap();
        assert_eq!(&data[..3], b"abc");
        assert_eq!(&data[data.len() - 3..], b"xyz");
        assert!(all_zero(&data[3..data.len() - 3]));
        // Trailing zeros: the length is still right.
        let mut z = io::Cursor::new(b"a".to_vec()).chain(io::repeat(0).take(1 << 20));
        assert_eq!(
            t.write_from(Path::new("z"), &mut z, 0o644).unwrap(),
            (1 << 20) + 1
        );
        assert_eq!(
            std::fs::metadata(out.join("z")).unwrap().len(),
            (1 << 20) + 1
        );
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[test]
    fn descriptors_stay_bounded() {
        let _serial = serial();
        let d = scratch();
        let t = tree(d.path(), false);
        let before = open_fds();
        // 5,000 folders: siblings with a subfolder each, and a chain 1,000 deep.
        for i in 0..2000 {
            t.create_dir_all(Path::new(&format!("wide/d{i}/sub")), 0o755)
                .unwrap();
        }
        t.write_file(Path::new("wide/d7/sub/f"), b"x", 0o644)
            .unwrap();
        let mut deep = PathBuf::from("deep");
        for i in 0..1000 {
            deep.push(format!("{i}"));
            t.create_dir(&deep, 0o755).unwrap();
        }
        let cached = t.lock().map.len();
        assert!(cached <= 64, "{cached} cached folders");
        // Other tests run in parallel threads of this process: allow their few descriptors.
        assert!(
            open_fds() <= before + 64 + 16,
            "{} > {before} + 80",
            open_fds()
        );
        t.remove(Path::new("deep")).unwrap();
        assert!(!d.path().join("deep").exists());
    }

    #[test]
    fn reads_resolve_links_inside_the_root() {
        let _serial = serial();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"host").unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(r.join("etc/unit"), b"inside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../../../../etc/unit", r.join("rel")).unwrap();
        std::os::unix::fs::symlink("/etc/unit", r.join("absin")).unwrap();
        testkit::mkfifo(r.join("fifo"));
        assert!(
            open_in_root(r, Path::new("abs")).is_err(),
            "host file not reached"
        );
        assert_eq!(read_in_root(r, Path::new("rel"), 100).unwrap(), b"inside");
        assert_eq!(
            read_in_root(r, Path::new("/absin"), 100).unwrap(),
            b"inside"
        );
        assert!(read_in_root(r, Path::new("etc/unit"), 3).is_err());
        assert!(
            open_in_root(r, Path::new("fifo")).is_err(),
            "no FIFO, no hang"
        );
        assert!(open_in_root(r, Path::new("etc")).is_err());
        assert!(open_in_root(r, Path::new("../x")).is_err());

        // A file the user named (on the host, not in a root): FIFOs and folders are refused.
        assert_eq!(read_input(&r.join("etc/unit"), 100).unwrap(), b"inside");
        let e = read_input(&r.join("etc/unit"), 3).unwrap_err();
        assert!(e.to_string().contains("larger than 3 bytes"), "{e}");
        let e = read_input(&r.join("fifo"), 100).unwrap_err();
        assert!(e.to_string().contains("a FIFO"), "{e}");
        assert!(read_input(&r.join("etc"), 100).is_err());
    }

    #[test]
    fn privilege_rule() {
        assert_eq!(strip_privilege("/a", 0o755, false), (0o755, None));
        let (m, s) = strip_privilege("/a", 0o6755, false);
        assert_eq!(m, 0o755);
        let s = s.unwrap();
        assert!(s.setuid && s.setgid && !s.capability);
        assert_eq!(s.what(), "setuid, setgid");
        assert_eq!(strip_privilege("/a", 0o4755, true), (0o4755, None));
        let mut list = vec![s];
        note_capability(&mut list, "/a");
        note_capability(&mut list, "/b");
        assert_eq!(list.len(), 2);
        assert!(list[0].capability && list[1].capability);
    }
}
