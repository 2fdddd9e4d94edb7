//! Reading files inside a root without leaving it, and opening host files only when they are
//! regular files.

use super::*;

/// Opens the regular file `path` (relative to `root`, or absolute inside it) for reading,
/// resolving every symlink with `root` as `/` (`RESOLVE_IN_ROOT`): a link in an input tree never
/// sends a read to the build host. FIFOs, devices, sockets and folders are refused (no hang, no
/// endless read).
pub fn open_in_root(root: &Path, path: &Path) -> Result<File, TreeError> {
    let p = bytes(path);
    let err = |op: &'static str| {
        move |e: Errno| TreeError::Io {
            op,
            root: root.to_path_buf(),
            path: PathBuf::from(OsStr::from_bytes(p)),
            source: e.into(),
        }
    };
    let comps = components(p).map_err(|reason| TreeError::Unsafe {
        root: root.to_path_buf(),
        path: String::from_utf8_lossy(p).into_owned(),
        reason,
    })?;
    // The links are resolved first (lstat/readlink under the root, the root as `/`), then
    // the canonical path, which has no link left, is opened with RESOLVE_NO_SYMLINKS: O_PATH
    // first, so nothing is opened for reading before its type is known (a FIFO would block, a
    // device node could act).
    let mut inside = PathBuf::from("/");
    for c in &comps {
        inside.push(OsStr::from_bytes(c));
    }
    let canonical = crate::rootfs::resolve(root, &inside, true).map_err(|e| TreeError::Io {
        op: "resolve",
        root: root.to_path_buf(),
        path: PathBuf::from(OsStr::from_bytes(p)),
        source: io::Error::other(e),
    })?;
    let rel = canonical.strip_prefix("/").unwrap_or(&canonical);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let dir = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err("open the folder of"))?;
    let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS;
    let fd = crate::openat2(
        &dir,
        rel,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        how,
    )
    .map_err(err("open"))?;
    let st = rfs::fstat(&fd).map_err(err("stat"))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(TreeError::Unsafe {
            root: root.to_path_buf(),
            path: String::from_utf8_lossy(p).into_owned(),
            reason: "not a regular file",
        });
    }
    let f = crate::openat2(
        &dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        how,
    )
    .map_err(err("open"))?;
    let st2 = rfs::fstat(&f).map_err(err("stat"))?;
    if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) {
        return Err(TreeError::Unsafe {
            root: root.to_path_buf(),
            path: String::from_utf8_lossy(p).into_owned(),
            reason: "it changed while being opened",
        });
    }
    Ok(File::from(f))
}

/// Reads at most `limit` bytes of the regular file `path` of `root` (see [`open_in_root`]);
/// a longer file is an error naming the limit.
pub fn read_in_root(root: &Path, path: &Path, limit: u64) -> Result<Vec<u8>, TreeError> {
    let f = open_in_root(root, path)?;
    let mut v = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|source| TreeError::Io {
            op: "read",
            root: root.to_path_buf(),
            path: path.to_path_buf(),
            source,
        })?;
    if v.len() as u64 > limit {
        return Err(TreeError::Unsafe {
            root: root.to_path_buf(),
            path: path.display().to_string(),
            reason: "larger than the limit for this kind of file",
        });
    }
    Ok(v)
}

/// Opens `path` on the host for reading without blocking (`O_NONBLOCK`, so a FIFO does not
/// hang the open; a symlink is followed to what it names) and checks that what was opened is
/// a regular file: `Ok(Err(kind))` names what it is otherwise ("a FIFO", "a folder"...).
pub fn open_regular(path: &Path) -> io::Result<Result<File, &'static str>> {
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    Ok(match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(File::from(fd)),
        FileType::Directory => Err("a folder"),
        FileType::Fifo => Err("a FIFO"),
        FileType::CharacterDevice => Err("a character device"),
        FileType::BlockDevice => Err("a block device"),
        FileType::Socket => Err("a socket"),
        _ => Err("not a file"),
    })
}

/// [`open_regular`] for a file the user named (an image, a disk, a tarball, a signature): what
/// is not a regular file is an `InvalidInput` error saying what it is, e.g. "it is a FIFO, not
/// a regular file", for the caller to put after the path.
pub fn open_input(path: &Path) -> io::Result<File> {
    open_regular(path)?.map_err(|kind| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {kind}, not a regular file"),
        )
    })
}

/// Reads the regular file `path` the user named ([`open_input`]), at most `limit` bytes: a
/// longer file is an `InvalidData` error naming the limit.
pub fn read_input(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    open_input(path)?.take(limit + 1).read_to_end(&mut v)?;
    if v.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {limit} bytes"),
        ));
    }
    Ok(v)
}
