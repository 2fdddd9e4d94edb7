//! Layer application, as umoci does it, and never outside the root.
//!
//! Every entry goes through the workspace's one safe tree writer ([`safefs::tree::Tree`]):
//! its parent is opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..` and
//! symlinks (absolute or relative, planted by an earlier entry or layer) resolve with the root
//! as `/`; the last component is then created with the `*at` calls and never followed. Paths
//! with `..` components are refused. Opened parents are cached with a bound (an image with any
//! number of folders unpacks under a low `ulimit -n`), and file data is written sparse: all-zero
//! blocks (the holes of GNU sparse entries among them) are left as holes. Rules: `.wh.NAME` removes NAME from lower layers,
//! `.wh..wh..opq` empties its directory of lower-layer content (whatever its position in the
//! tar), whiteouts never appear; an existing entry is replaced unless directory over directory;
//! metadata in the order chown → xattrs → chmod → times; directory mtimes last, deepest first.
//! Layers may be gzip, zstd or plain tar (detected by magic), and are streamed: the compressed
//! stream is hashed against the blob digest and the tar stream against the config's diff_id.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use safefs::tree::{self, times, Tree, TreeError, TreeOptions};
use sha2::{Digest as _, Sha256};

mod stream;

use stream::{decode_stream, ChanReader, Chunk, Tail};

/// Errors from applying a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot {op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("refused layer entry {path:?}: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("cannot read the layer tar stream")]
    Tar(#[source] io::Error),
    #[error(transparent)]
    Tree(Box<TreeError>),
    #[error("layer blob does not match its digest {expected} (got sha256:{actual})")]
    Digest { expected: String, actual: String },
    #[error("uncompressed layer does not match its diff_id {expected} (got sha256:{actual})")]
    DiffId { expected: String, actual: String },
}

impl From<TreeError> for UnpackError {
    fn from(e: TreeError) -> Self {
        UnpackError::Tree(Box::new(e))
    }
}

/// How to unpack.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Apply the image's numeric owners and create device nodes (default: when running as root).
    pub as_root: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            as_root: rustix::process::geteuid().is_root(),
        }
    }
}

/// What one layer did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

fn io_err<'a>(op: &'static str, path: &'a [u8]) -> impl FnOnce(Errno) -> UnpackError + 'a {
    move |e| UnpackError::Io {
        op,
        path: PathBuf::from(OsStr::from_bytes(path)),
        source: e.into(),
    }
}

/// Normalises a tar path into components: leading `/` and `.` dropped, `..` refused.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>, UnpackError> {
    tree::components(raw).map_err(|reason| UnpackError::Unsafe {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason,
    })
}

use safefs::tree::join;

fn as_path(p: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(p))
}

/// Opened root plus the state of one layer application.
struct Applier<'a> {
    tree: Tree,
    opts: &'a UnpackOptions,
    written: HashSet<Vec<u8>>,
    /// Directories' (path, mtime, depth, mode to set at the end when not root).
    dir_times: Vec<(Vec<u8>, i64, u32, Option<u32>)>,
    stats: LayerStats,
    /// File contents pass through here: most files are written with one `write`.
    buf: Vec<u8>,
}

fn open_root(root: &Path) -> Result<Tree, UnpackError> {
    Ok(Tree::open(root, &TreeOptions::default())?)
}

/// Applies one layer blob (gzip, zstd or tar) to `root`, verifying the blob against `digest`
/// and the tar stream against `diff_id` when given.
pub fn apply_layer(
    root: &Path,
    blob: impl Read + Send,
    digest: Option<&str>,
    diff_id: Option<&str>,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    // Three threads: reading, hashing the blob and decompressing on one; hashing the tar
    // stream on another; the tar side (all the file system calls) on this one. On a fast file
    // system decompression and hashing are the longest path, so they do not share a thread.
    let root_fd = open_root(root)?;
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Chunk>>(16);
        let (htx, hrx) = std::sync::mpsc::sync_channel::<Chunk>(16);
        let hasher = scope.spawn(move || {
            let mut inner = Sha256::new();
            for chunk in hrx {
                inner.update(&chunk[..]);
            }
            hex::encode(inner.finalize())
        });
        let producer = scope.spawn(move || {
            let r = decode_stream(blob, &tx, htx);
            if let Err(e) = &r {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            r
        });
        let stats = consume(root_fd, ChanReader::new(rx), opts);
        let outer = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the decompression thread panicked")));
        let inner = hasher
            .join()
            .map_err(|_| io::Error::other("the hashing thread panicked"));
        let hashes = outer.and_then(|o| Ok((o, inner?)));
        let stats = stats?;
        let (actual_outer, actual_inner) = hashes.map_err(UnpackError::Tar)?;
        if let Some(d) = digest {
            if d.strip_prefix("sha256:") != Some(actual_outer.as_str()) {
                return Err(UnpackError::Digest {
                    expected: d.into(),
                    actual: actual_outer,
                });
            }
        }
        if let Some(d) = diff_id {
            if d.strip_prefix("sha256:") != Some(actual_inner.as_str()) {
                return Err(UnpackError::DiffId {
                    expected: d.into(),
                    actual: actual_inner,
                });
            }
        }
        Ok(stats)
    })
}

fn consume(
    root: Tree,
    tar_stream: ChanReader,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let eof = Rc::new(std::cell::Cell::new(None));
    let tar_stream = Tail::new(tar_stream, eof.clone());
    // PAX and GNU long-name records are bounded before the tar crate reads them whole.
    let mut archive = tar::Archive::new(crate::tarbounds::Bounded::new(tar_stream));
    let mut applier = Applier {
        tree: root,
        opts,
        written: HashSet::new(),
        dir_times: Vec::new(),
        stats: LayerStats::default(),
        buf: vec![0; 1 << 20],
    };
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let data_end = entry.raw_file_position() + entry.size();
        applier.entry(&mut entry)?;
        if eof.get().is_some_and(|e| e < data_end) {
            return Err(UnpackError::Tar(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the layer ends inside the data of {}",
                    String::from_utf8_lossy(&entry.path_bytes())
                ),
            )));
        }
    }
    // Drain what follows the end-of-archive marker so both hashes cover the whole stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Tar)?;
    drop(rest);
    applier.finish_dir_times()?;
    Ok(applier.stats)
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn parse_meta<R: Read>(entry: &mut tar::Entry<R>) -> Meta {
    let h = entry.header();
    let mut m = Meta {
        mode: h.mode().unwrap_or(0o644) & 0o7777,
        uid: h.uid().unwrap_or(0) as u32,
        gid: h.gid().unwrap_or(0) as u32,
        mtime: h.mtime().unwrap_or(0) as i64,
        xattrs: Vec::new(),
    };
    if let Ok(Some(pax)) = entry.pax_extensions() {
        for ext in pax.flatten() {
            let (Ok(k), v) = (ext.key(), ext.value_bytes()) else {
                continue;
            };
            let num = || {
                std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
            };
            match k {
                "uid" => m.uid = num().unwrap_or(m.uid as i64) as u32,
                "gid" => m.gid = num().unwrap_or(m.gid as i64) as u32,
                "mtime" => m.mtime = num().unwrap_or(m.mtime),
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        if name == "security.capability" || name.starts_with("user.") {
                            m.xattrs.push((name.to_string(), v.to_vec()));
                        }
                    }
                }
            }
        }
    }
    m
}

impl Applier<'_> {
    /// Gives `name` in `dir` (not followed) the entry's numeric owner, when running as root.
    fn chown_at(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        meta: &Meta,
        path: &[u8],
    ) -> Result<(), UnpackError> {
        if !self.opts.as_root {
            return Ok(());
        }
        rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(meta.uid)),
            Some(rfs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(io_err("chown", path))
    }

    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.stats.warnings.push(msg);
    }

    fn mark_written(&mut self, comps: &[&[u8]]) {
        for i in 1..=comps.len() {
            let p = join(&comps[..i]);
            if !self.written.insert(p) && i < comps.len() {
                // Ancestors are already in; keep going only for the remaining suffix.
                continue;
            }
        }
    }

    /// Opens the directory `comps` inside the root (symlinks resolved with the root as `/`),
    /// creating missing directories when `create` (through the bounded cache of the tree).
    fn open_dir(&mut self, comps: &[&[u8]], create: bool) -> Result<Option<OwnedFd>, UnpackError> {
        Ok(self.tree.dir_at(comps, create)?)
    }

    /// Removes `name` in `dir` whatever it is, never following links. With `keep_written`
    /// (an opaque directory), what this layer wrote stays: folders it wrote into are emptied
    /// of the rest one by one (a work list, no recursion), everything else goes whole.
    fn remove(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: &[u8],
        keep_written: bool,
    ) -> Result<(), UnpackError> {
        if !keep_written || !self.written.contains(path) {
            self.tree.remove_at(dir, name, path)?;
            return Ok(());
        }
        let st = match rfs::statat(dir, OsStr::from_bytes(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_err("stat", path)(e)),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return Ok(());
        }
        // Folders written by this layer: keep them, sort out their content.
        let mut todo = vec![path.to_vec()];
        while let Some(folder) = todo.pop() {
            let comps = components(&folder)?;
            let Some(fd) = self.open_dir(&comps, false)? else {
                continue;
            };
            let listed = rfs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err("open directory", &folder))?;
            let mut names = Vec::new();
            for ent in rfs::Dir::read_from(&listed).map_err(io_err("read directory", &folder))? {
                let ent = ent.map_err(io_err("read directory", &folder))?;
                let n = ent.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(n.to_vec());
                }
            }
            drop(listed);
            for n in names {
                let mut child = folder.clone();
                child.push(b'/');
                child.extend_from_slice(&n);
                if !self.written.contains(&child) {
                    self.tree.remove_at(&fd, &n, &child)?;
                    continue;
                }
                let is_dir = rfs::statat(&fd, OsStr::from_bytes(&n), AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
                if is_dir {
                    todo.push(child);
                }
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        use tar::EntryType as T;
        let etype = entry.header().entry_type();
        if matches!(
            etype,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        self.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw)?;
        let path = join(&comps);
        let meta = parse_meta(entry);

        let Some((&name, parent_comps)) = comps.split_last() else {
            // The root itself: only a directory may be ".".
            if etype != T::Directory {
                return Err(UnpackError::Unsafe {
                    path: String::from_utf8_lossy(&raw).into(),
                    reason: "'.' may only be a directory",
                });
            }
            let root = self
                .tree
                .root_fd()
                .try_clone_to_owned()
                .map_err(|e| UnpackError::Io {
                    op: "dup",
                    path: ".".into(),
                    source: e,
                })?;
            self.set_meta_fd(&root, &meta, &path, true)?;
            let late_mode = (!self.opts.as_root).then_some(meta.mode);
            self.dir_times.push((path, meta.mtime, 0, late_mode));
            return Ok(());
        };

        // Whiteouts.
        if let Some(target) = name.strip_prefix(b".wh.") {
            let Some(parent) = self.open_dir(parent_comps, false)? else {
                return Ok(());
            };
            let parent_path = join(parent_comps);
            if target == b".wh..opq" {
                let names: Vec<Vec<u8>> = {
                    let d = rfs::openat(
                        &parent,
                        ".",
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(io_err("open directory", &parent_path))?;
                    let mut v = Vec::new();
                    for ent in
                        rfs::Dir::read_from(&d).map_err(io_err("read directory", &parent_path))?
                    {
                        let ent = ent.map_err(io_err("read directory", &parent_path))?;
                        let n = ent.file_name().to_bytes();
                        if n != b"." && n != b".." {
                            v.push(n.to_vec());
                        }
                    }
                    v
                };
                for n in names {
                    let mut child = if parent_comps.is_empty() {
                        Vec::new()
                    } else {
                        let mut p = parent_path.clone();
                        p.push(b'/');
                        p
                    };
                    child.extend_from_slice(&n);
                    self.remove(&parent, &n, &child, true)?;
                }
            } else if !target.is_empty() {
                let mut victim: Vec<&[u8]> = parent_comps.to_vec();
                victim.push(target);
                let vpath = join(&victim);
                if !self.written.contains(&vpath) {
                    self.remove(&parent, target, &vpath, false)?;
                }
            }
            return Ok(());
        }

        let parent = self.open_dir(parent_comps, true)?.expect("created");
        let cname = OsStr::from_bytes(name);
        let existing = match rfs::statat(&parent, cname, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io_err("stat", &path)(e)),
        };
        let replace = |me: &mut Self, parent: &OwnedFd| -> Result<(), UnpackError> {
            if existing.is_some() {
                me.remove(parent, name, &path, false)?;
            }
            Ok(())
        };
        match etype {
            T::Directory => {
                if existing != Some(FileType::Directory) {
                    replace(self, &parent)?;
                    rfs::mkdirat(&parent, cname, Mode::from_raw_mode(0o700))
                        .map_err(io_err("create directory", &path))?;
                }
                let fd = rfs::openat(
                    &parent,
                    cname,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory", &path))?;
                self.set_meta_fd(&fd, &meta, &path, true)?;
                let late_mode = (!self.opts.as_root).then_some(meta.mode);
                self.dir_times
                    .push((path.clone(), meta.mtime, comps.len() as u32, late_mode));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                replace(self, &parent)?;
                let fd = rfs::openat(
                    &parent,
                    cname,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("create file", &path))?;
                let file = std::fs::File::from(fd);
                // All-zero blocks (the holes of a GNU sparse entry among them) stay holes.
                self.stats.bytes += match tree::write_sparse(entry, &file, &mut self.buf) {
                    Ok(n) => n,
                    Err(tree::SparseError::Read(e)) => return Err(UnpackError::Tar(e)),
                    Err(tree::SparseError::Write(source)) => {
                        return Err(UnpackError::Io {
                            op: "write",
                            path: PathBuf::from(OsStr::from_bytes(&path)),
                            source,
                        })
                    }
                };
                let fd = OwnedFd::from(file);
                self.set_meta_fd(&fd, &meta, &path, false)?;
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                // The cache of opened parents needs no flush here: it only holds directories that
                // resolved, and `remove` already flushed it if a directory or symlink stood here.
                replace(self, &parent)?;
                rfs::symlinkat(OsStr::from_bytes(&target), &parent, cname)
                    .map_err(io_err("create symlink", &path))?;
                self.chown_at(&parent, cname, &meta, &path)?;
                let ts = times(meta.mtime);
                rfs::utimensat(&parent, cname, &ts, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err("set times of", &path))?;
            }
            T::Link => {
                let target_raw = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let tcomps = components(&target_raw)?;
                let Some((&tname, tparent_comps)) = tcomps.split_last() else {
                    return Err(UnpackError::Unsafe {
                        path: String::from_utf8_lossy(&raw).into(),
                        reason: "hardlink to the root",
                    });
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tparent =
                    self.open_dir(tparent_comps, false)?
                        .ok_or_else(|| UnpackError::Io {
                            op: "find the hardlink target of",
                            path: PathBuf::from(OsStr::from_bytes(&path)),
                            source: io::ErrorKind::NotFound.into(),
                        })?;
                replace(self, &parent)?;
                rfs::linkat(
                    &tparent,
                    OsStr::from_bytes(tname),
                    &parent,
                    cname,
                    AtFlags::empty(),
                )
                .map_err(io_err("create hardlink", &path))?;
            }
            T::Char | T::Block | T::Fifo => {
                let ft = match etype {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.opts.as_root {
                    self.warn(format!(
                        "skipped device node /{} (needs root)",
                        String::from_utf8_lossy(&path)
                    ));
                    return Ok(());
                }
                replace(self, &parent)?;
                let h = entry.header();
                let dev = rfs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                rfs::mknodat(&parent, cname, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(io_err("create node", &path))?;
                self.chown_at(&parent, cname, &meta, &path)?;
                rfs::chmodat(
                    &parent,
                    cname,
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .map_err(io_err("chmod", &path))?;
                rfs::utimensat(
                    &parent,
                    cname,
                    &times(meta.mtime),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(io_err("set times of", &path))?;
            }
            other => {
                self.warn(format!(
                    "skipped /{}: unsupported tar entry type {other:?}",
                    String::from_utf8_lossy(&path)
                ));
                return Ok(());
            }
        }
        self.mark_written(&comps);
        Ok(())
    }

    fn set_meta_fd(
        &mut self,
        fd: &OwnedFd,
        meta: &Meta,
        path: &[u8],
        is_dir: bool,
    ) -> Result<(), UnpackError> {
        if self.opts.as_root {
            rfs::fchown(
                fd,
                Some(rfs::Uid::from_raw(meta.uid)),
                Some(rfs::Gid::from_raw(meta.gid)),
            )
            .map_err(io_err("chown", path))?;
        }
        for (k, v) in &meta.xattrs {
            if let Err(e) = rfs::fsetxattr(fd, k.as_str(), v, rfs::XattrFlags::empty()) {
                self.warn(format!(
                    "cannot set xattr {k} on /{}: {e}",
                    String::from_utf8_lossy(path)
                ));
            }
        }
        // Without root, a read-only directory would refuse its own children: keep it writable
        // until the layer is done (`finish_dir_times` sets the real mode).
        let mode = if is_dir && !self.opts.as_root {
            meta.mode | 0o700
        } else {
            meta.mode
        };
        rfs::fchmod(fd, Mode::from_raw_mode(mode)).map_err(io_err("chmod", path))?;
        if !is_dir {
            rfs::futimens(fd, &times(meta.mtime)).map_err(io_err("set times of", path))?;
        }
        Ok(())
    }

    fn finish_dir_times(&mut self) -> Result<(), UnpackError> {
        let mut list = std::mem::take(&mut self.dir_times);
        list.sort_by_key(|a| std::cmp::Reverse(a.2));
        let missing = |e: &TreeError| {
            e.io_error()
                .is_some_and(|e| e.kind() == io::ErrorKind::NotFound)
        };
        for (path, mtime, _, late_mode) in list {
            // Set without following links: a folder replaced by a link is left as it is.
            if let Some(mode) = late_mode {
                match self.tree.set_mode(as_path(&path), mode) {
                    Ok(()) => {}
                    Err(e) if missing(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.tree.set_times(as_path(&path), mtime) {
                Ok(()) => {}
                Err(e) if missing(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Whether `dir` is missing or an empty folder.
pub fn is_empty_dir(dir: &Path) -> bool {
    match std::fs::read_dir(dir) {
        Ok(mut it) => it.next().is_none(),
        Err(_) => std::fs::symlink_metadata(dir).is_err(),
    }
}

#[cfg(test)]
mod tests;
