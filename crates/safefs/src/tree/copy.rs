//! The producers' file copier ([`Tree::copy_in`], [`Tree::copy_in_with`]: the privilege rule
//! applied, what it took listed in [`CopiedFile`]) and the whole-tree copier ([`copy_tree`]).

use super::*;

impl Tree {
    /// The producers' file copier: copies the regular file `rel` of the root `src_root`
    /// (opened inside that root, see [`open_in_root`]) to the new file `path` with `mode`,
    /// applying the producers' privilege rule: unless `keep_privileges`, setuid/setgid bits
    /// and `security.capability` go, and [`CopiedFile::stripped`] lists them (never silently).
    /// Data first (holes kept), mode last (a write by a non-root user would clear setuid),
    /// then the xattrs an image carries ([`copy_xattrs_fd`]). flix, flatwrap and bake place
    /// every file of a source through it; [`Tree::copy_in_with`] lets flix write edited data.
    pub fn copy_in(
        &self,
        path: &Path,
        src_root: &Path,
        rel: &Path,
        mode: u32,
        keep_privileges: bool,
    ) -> Result<CopiedFile, TreeError> {
        self.copy_in_with(path, src_root, rel, mode, keep_privileges, |from, to| {
            copy_sparse(from, to).map_err(|e| TreeError::Io {
                op: "copy data into",
                root: self.root_path.clone(),
                path: path.to_path_buf(),
                source: e,
            })
        })
    }

    /// [`Tree::copy_in`] with the data written by `fill(source, new file)` (which returns the
    /// bytes written), e.g. an edited copy of an ELF file.
    pub fn copy_in_with<E: From<TreeError>>(
        &self,
        path: &Path,
        src_root: &Path,
        rel: &Path,
        mode: u32,
        keep_privileges: bool,
        fill: impl FnOnce(&File, &File) -> Result<u64, E>,
    ) -> Result<CopiedFile, E> {
        let shown = format!("/{}", path.display());
        let (mode, mut stripped) = strip_privilege(&shown, mode & 0o7777, keep_privileges);
        let from = open_in_root(src_root, rel)?;
        let to = self.create_file(path, 0o600)?;
        let written = fill(&from, &to)?;
        rfs::fchmod(&to, Mode::from_raw_mode(mode))
            .map_err(self.io("set the mode of", bytes(path)))?;
        let had_cap = copy_xattrs_fd(&from, &to, keep_privileges).map_err(|e| TreeError::Io {
            op: "copy the extended attributes of",
            root: self.root_path.clone(),
            path: path.to_path_buf(),
            source: e,
        })?;
        if had_cap && !keep_privileges {
            let s = stripped.get_or_insert(Stripped {
                path: shown,
                setuid: false,
                setgid: false,
                capability: false,
            });
            s.capability = true;
        }
        Ok(CopiedFile {
            bytes: written,
            stripped,
        })
    }

    /// Places the regular file `rel` of `src_root` at `path` as a hard link to it instead of a
    /// copy, when that gives the entry [`Tree::copy_in`] would: the same file system, a
    /// source whose permission bits are `mode` and that the privilege rule leaves as it is (no
    /// setuid/setgid bit or capability to strip, or `keep_privileges`). Returns whether it
    /// linked (`false`: a copy is needed). The inode is then shared with the source:
    /// only for a tree that is read and removed (a staged tree that is packed), from a source
    /// the tools own (an unpacked image in the cache), never from a user's folder.
    pub fn link_in(
        &self,
        path: &Path,
        src_root: &Path,
        rel: &Path,
        mode: u32,
        keep_privileges: bool,
    ) -> Result<bool, TreeError> {
        let from = open_in_root(src_root, rel)?;
        let st = rfs::fstat(&from).map_err(self.io("stat the source of", bytes(path)))?;
        let src_mode = st.st_mode & 0o7777;
        // The privilege rule, as the copier applies it: nothing it would strip.
        let (_, stripped) = strip_privilege("", src_mode, keep_privileges);
        if src_mode != mode & 0o7777 || stripped.is_some() {
            return Ok(false);
        }
        if !keep_privileges {
            match rfs::fgetxattr(&from, CAPABILITY_XATTR, &mut [0u8; 0][..]) {
                Err(Errno::NODATA | Errno::NOTSUP) => {}
                _ => return Ok(false),
            }
        }
        let p = bytes(path);
        let (dir, name) = self.parent_required(p)?;
        match rfs::linkat(
            &from,
            c"",
            &dir,
            OsStr::from_bytes(name),
            AtFlags::EMPTY_PATH,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => {
                Err(self.unsafe_path(p, "it already exists (two inputs map to one place)"))
            }
            // Another file system, no CAP_DAC_READ_SEARCH, a link count at its limit: copied.
            Err(_) => Ok(false),
        }
    }
}

/// What [`Tree::copy_in`] did for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedFile {
    /// Bytes of data written.
    pub bytes: u64,
    /// What the privilege rule took away, if anything.
    pub stripped: Option<Stripped>,
}

/// Options of [`copy_tree`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyTreeOptions {
    /// Every entry owned by root:root (`pack`); otherwise the source's owners are kept (where
    /// the process may set them).
    pub root_owned: bool,
    /// Every timestamp set to this time (`pack`, reproducible); otherwise the source's
    /// modification times are kept (whole seconds).
    pub mtime: Option<i64>,
}

/// An error of [`copy_tree`]: which entry, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot copy {} to {}", from.display(), to.display())]
pub struct CopyTreeError {
    pub from: PathBuf,
    pub to: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The whole-tree copier: copies the folder `from` (a trusted tree: a staged extension or a
/// rootfs folder the user named) into the root of `out` through the safe writer, keeping
/// modes (setuid and setgid too: nothing is stripped here, the producers strip while
/// staging, see [`Tree::copy_in`]), symlinks as links, hard links as links, devices, FIFOs and
/// sockets, holes ([`copy_sparse`]), the xattrs an image carries ([`image_xattrs`], file
/// capabilities included), owners and times as [`CopyTreeOptions`] says. Walks with a work
/// list (no recursion on the tree's depth); folders get their metadata last, deepest first.
/// Returns the bytes of file data copied. Used by `pack`'s folder output and by `ocirootfs`
/// for a folder source.
pub fn copy_tree(from: &Path, out: &Tree, opts: &CopyTreeOptions) -> Result<u64, CopyTreeError> {
    let mut c = TreeCopier {
        out,
        opts,
        links: HashMap::new(),
        bytes: 0,
    };
    c.copy(from)?;
    Ok(c.bytes)
}

struct TreeCopier<'a> {
    out: &'a Tree,
    opts: &'a CopyTreeOptions,
    /// First copy (relative to the output) of each multiply-linked file.
    links: HashMap<(u64, u64), PathBuf>,
    bytes: u64,
}

impl TreeCopier<'_> {
    /// Owner, the xattrs images carry, the mode (not for links) and the time of the copy `to`
    /// (relative to the output) of `from`, whose metadata is `m`.
    fn finish_entry(&self, from: &Path, to: &Path, m: &fs::Metadata) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let out = self.out;
        let symlink = m.file_type().is_symlink();
        let (uid, gid) = match self.opts.root_owned {
            true => (0, 0),
            false => (m.uid(), m.gid()),
        };
        match out.set_owner(to, uid, gid) {
            Ok(()) => {}
            Err(e) if e.io_error().and_then(|e| e.raw_os_error()) == Some(libc::EPERM) => {}
            Err(e) => return Err(io::Error::other(e)),
        }
        if !symlink {
            copy_xattrs_into(from, out, to)?;
            out.set_mode(to, m.mode() & 0o7777)
                .map_err(io::Error::other)?;
        }
        out.set_times(to, self.opts.mtime.unwrap_or(m.mtime()))
            .map_err(io::Error::other)
    }

    fn copy(&mut self, from: &Path) -> Result<(), CopyTreeError> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
        let out_root = self.out.root_path().to_path_buf();
        let cerr = |from: &Path, to: &Path| {
            let (from, to) = (from.to_path_buf(), out_root.join(to));
            move |source| CopyTreeError { from, to, source }
        };
        let mut todo = vec![PathBuf::new()];
        let mut dirs: Vec<(PathBuf, fs::Metadata)> = Vec::new();
        while let Some(rel) = todo.pop() {
            let dir = from.join(&rel);
            let mut names = Vec::new();
            for e in fs::read_dir(&dir).map_err(cerr(&dir, &rel))? {
                names.push(e.map_err(cerr(&dir, &rel))?.file_name());
            }
            names.sort();
            for name in names {
                let src = dir.join(&name);
                let dst = rel.join(&name);
                let m = fs::symlink_metadata(&src).map_err(cerr(&src, &dst))?;
                let ft = m.file_type();
                if ft.is_dir() {
                    self.out
                        .create_dir(&dst, 0o700)
                        .map_err(|e| cerr(&src, &dst)(io::Error::other(e)))?;
                    dirs.push((dst.clone(), m));
                    todo.push(dst);
                    continue;
                }
                if ft.is_file() && m.nlink() > 1 {
                    if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                        self.out
                            .hardlink(&dst, first)
                            .map_err(|e| cerr(&src, &dst)(io::Error::other(e)))?;
                        continue;
                    }
                }
                let res = (|| -> io::Result<()> {
                    let out = self.out;
                    if ft.is_file() {
                        let f = fs::OpenOptions::new()
                            .read(true)
                            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                            .open(&src)?;
                        let to = out.create_file(&dst, 0o600).map_err(io::Error::other)?;
                        copy_sparse(&f, &to)?;
                        self.bytes += m.len();
                    } else if ft.is_symlink() {
                        out.symlink(&dst, &fs::read_link(&src)?)
                            .map_err(io::Error::other)?;
                    } else {
                        let ty = if ft.is_char_device() {
                            FileType::CharacterDevice
                        } else if ft.is_block_device() {
                            FileType::BlockDevice
                        } else if ft.is_fifo() {
                            FileType::Fifo
                        } else {
                            FileType::Socket
                        };
                        out.mknod(&dst, ty, m.mode() & 0o7777, m.rdev())
                            .map_err(io::Error::other)?;
                    }
                    self.finish_entry(&src, &dst, &m)
                })();
                res.map_err(cerr(&src, &dst))?;
                if ft.is_file() && m.nlink() > 1 {
                    self.links.insert((m.dev(), m.ino()), dst);
                }
            }
        }
        for (dst, m) in dirs.iter().rev() {
            let src = from.join(dst);
            self.finish_entry(&src, dst, m).map_err(cerr(&src, dst))?;
        }
        let dm = fs::symlink_metadata(from).map_err(cerr(from, Path::new("")))?;
        self.finish_entry(from, Path::new(""), &dm)
            .map_err(cerr(from, Path::new("")))
    }
}

/// The xattrs an image carries ([`image_xattrs`], file capabilities included) of `from`, a
/// regular file or folder, set on `to` in the output tree. A symlink (which holds none of
/// those) is passed over.
fn copy_xattrs_into(from: &Path, out: &Tree, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let (xattrs, _) = image_xattrs(&file, true)?;
    for (name, value) in xattrs {
        out.set_xattr(to, &name.to_string_lossy(), &value)
            .map_err(io::Error::other)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The producers' copier: setuid/setgid and file capabilities stripped and listed, kept
    /// with `keep`; holes kept; `user.*` xattrs carried; a link as the last component of the
    /// source is not followed out of the source root.
    #[test]
    fn copy_in_strips_and_lists() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let f = src.join("su");
        std::fs::write(&f, b"data").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o6755)).unwrap();
        let sparse = src.join("sparse");
        let sf = File::create(&sparse).unwrap();
        sf.set_len(8 << 20).unwrap();
        sf.write_all_at(b"end", (8 << 20) - 3).unwrap();
        let has_user_xattr =
            rfs::setxattr(&sparse, "user.k", b"v", rfs::XattrFlags::empty()).is_ok();
        let out_dir = d.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = Tree::open(&out_dir, &TreeOptions::no_symlinks()).unwrap();

        // Copies `from` to `to` with `mode`; the result and the mode the copy has.
        let copied = |to: &str, from: &str, mode: u32, keep: bool| {
            let c = out
                .copy_in(Path::new(to), &src, Path::new(from), mode, keep)
                .unwrap();
            let m = std::fs::metadata(out_dir.join(to)).unwrap();
            (c, m)
        };
        let (c, m) = copied("su", "su", 0o6755, false);
        assert_eq!(c.bytes, 4);
        let s = c.stripped.expect("listed");
        assert_eq!((s.path.as_str(), s.setuid, s.setgid), ("/su", true, true));
        assert_eq!(m.mode() & 0o7777, 0o755);

        let (c, m) = copied("kept", "su", 0o6755, true);
        assert_eq!(c.stripped, None);
        assert_eq!(m.mode() & 0o7777, 0o6755);

        let (c, m) = copied("sparse", "sparse", 0o644, false);
        assert_eq!(c.stripped, None);
        assert_eq!(m.len(), 8 << 20);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "holes kept: {} blocks",
            m.blocks()
        );
        if has_user_xattr {
            let mut v = [0u8; 8];
            let n = rfs::getxattr(out_dir.join("sparse").as_path(), "user.k", &mut v[..]).unwrap();
            assert_eq!(&v[..n], b"v");
        }

        // A source link to a host file resolves inside the source root (and is missing there).
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        assert!(out
            .copy_in(Path::new("link"), &src, Path::new("link"), 0o644, false)
            .is_err());
        assert!(!out_dir.join("link").exists());
    }

    /// A file that the privilege rule leaves as it is becomes a link to the source's inode;
    /// one the rule would change (setuid, a capability), or whose mode differs, is left to the
    /// copier; a link planted as the last component is not followed out of the source root.
    #[test]
    fn link_in_links_only_what_a_copy_would_not_change() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("lib")).unwrap();
        let plain = src.join("lib/plain");
        std::fs::write(&plain, b"plain").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let su = src.join("su");
        std::fs::write(&su, b"su").unwrap();
        std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let capped = src.join("capped");
        std::fs::write(&capped, b"cap").unwrap();
        // VFS_CAP_REVISION_2 with CAP_NET_RAW permitted (only root may set it).
        let cap: [u8; 20] = [
            0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let has_cap =
            rfs::setxattr(&capped, CAPABILITY_XATTR, &cap, rfs::XattrFlags::empty()).is_ok();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let out_dir = d.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = Tree::open(&out_dir, &TreeOptions::no_symlinks()).unwrap();
        let link = |to: &str, from: &str, mode: u32, keep: bool| {
            out.link_in(Path::new(to), &src, Path::new(from), mode, keep)
        };

        let root = rustix::process::geteuid().is_root();
        // Linking from a descriptor needs CAP_DAC_READ_SEARCH; without it the copier is used.
        assert_eq!(link("usr/plain", "lib/plain", 0o644, false).unwrap(), root);
        if root {
            let (a, b) = (
                std::fs::metadata(&plain).unwrap(),
                std::fs::metadata(out_dir.join("usr/plain")).unwrap(),
            );
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "one inode");
            // Two inputs at one place are refused, as with the copier.
            assert!(link("usr/plain", "lib/plain", 0o644, false).is_err());
        }
        assert!(!link("other-mode", "lib/plain", 0o755, false).unwrap());
        assert!(!link("su", "su", 0o4755, false).unwrap(), "setuid to strip");
        assert_eq!(link("su-kept", "su", 0o4755, true).unwrap(), root);
        if has_cap {
            assert!(
                !link("capped", "capped", 0o644, false).unwrap(),
                "capability to strip"
            );
        }
        assert!(link("link", "link", 0o644, false).is_err());
        for n in ["other-mode", "su", "capped", "link"] {
            assert!(
                std::fs::symlink_metadata(out_dir.join(n)).is_err(),
                "{n} not placed"
            );
        }
        assert_eq!(std::fs::read(&plain).unwrap(), b"plain", "source unchanged");

        // A source on another file system (a tmpfs, when /dev/shm is one) is left to the copier.
        let shm = Path::new("/dev/shm");
        let other_fs = |p: &Path| {
            std::fs::metadata(p)
                .is_ok_and(|m| m.dev() != std::fs::metadata(&out_dir).unwrap().dev())
        };
        if other_fs(shm) {
            let far = tempfile::tempdir_in(shm).unwrap();
            std::fs::write(far.path().join("f"), b"far").unwrap();
            std::fs::set_permissions(far.path().join("f"), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            assert!(out
                .link_in(Path::new("far"), far.path(), Path::new("f"), 0o644, false)
                .is_ok_and(|l| !l));
            assert!(std::fs::symlink_metadata(out_dir.join("far")).is_err());
        }
    }
}
