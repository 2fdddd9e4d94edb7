//! Scan: the tree read into memory (metadata only), entries sorted by name bytes, hardlinks
//! folded into one inode, xattrs kept.

use super::*;

/// An xattr as stored: (prefix type, name without the prefix, value).
pub(crate) type Xattr = (u16, Vec<u8>, Vec<u8>);

/// The writer thread's result: job placements (offset, size word), end offset, the file.
pub(crate) type Written = (Vec<(u64, u32)>, u64, File);

#[derive(Debug)]
pub(crate) enum Kind {
    Dir { entries: Vec<(Vec<u8>, usize)> },
    File { size: u64, path: PathBuf },
    Symlink(Vec<u8>),
    Char(u32),
    Block(u32),
    Fifo,
    Socket,
}

#[derive(Debug)]
pub(crate) struct Inode {
    pub(crate) mode: u16,
    pub(crate) nlink: u32,
    pub(crate) xattrs: Vec<Xattr>,
    pub(crate) kind: Kind,
}

pub(crate) struct Tree {
    pub(crate) inodes: Vec<Inode>,
}

pub(crate) fn read_err(path: &Path) -> impl FnOnce(io::Error) -> WriteError + '_ {
    move |source| WriteError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Kept xattrs: `user.*`, `trusted.*` and `security.capability`, as (type, name without
/// prefix, value), sorted.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<Xattr>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 8, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let (ty, rest) = if let Some(r) = name.strip_prefix(b"user.") {
            (0u16, r)
        } else if let Some(r) = name.strip_prefix(b"trusted.") {
            (1, r)
        } else if name == b"security.capability" {
            (2, &b"capability"[..])
        } else {
            continue;
        };
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname, &mut value[..]) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 16, 0),
                Err(e) => return Err(e.into()),
            }
        };
        value.truncate(len);
        out.push((ty, rest.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

pub(crate) fn squashfs_dev(rdev: u64, path: &Path) -> Result<u32, WriteError> {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    let enc = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    u32::try_from(enc).map_err(|_| WriteError::Device(path.to_path_buf()))
}

pub(crate) fn scan(root: &Path) -> Result<Tree, WriteError> {
    let meta = fs::metadata(root).map_err(read_err(root))?;
    if !meta.is_dir() {
        return Err(WriteError::NotADirectory(root.to_path_buf()));
    }
    let mut tree = Tree { inodes: Vec::new() };
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    scan_dir(root, &meta, &mut tree, &mut links)?;
    Ok(tree)
}

pub(crate) fn scan_dir(
    dir: &Path,
    meta: &fs::Metadata,
    tree: &mut Tree,
    links: &mut HashMap<(u64, u64), usize>,
) -> Result<usize, WriteError> {
    let idx = tree.inodes.len();
    tree.inodes.push(Inode {
        mode: (meta.mode() & 0o7777) as u16,
        nlink: 1,
        xattrs: read_xattrs(dir).map_err(read_err(dir))?,
        kind: Kind::Dir {
            entries: Vec::new(),
        },
    });
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(read_err(dir))? {
        let e = e.map_err(read_err(dir))?;
        names.push(e.file_name());
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let mut entries = Vec::with_capacity(names.len());
    for name in names {
        if name.len() > 256 {
            return Err(WriteError::NameTooLong {
                dir: dir.to_path_buf(),
                name: name.to_string_lossy().into_owned(),
            });
        }
        let path = dir.join(&name);
        let m = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let ft = m.file_type();
        let child = if ft.is_dir() {
            scan_dir(&path, &m, tree, links)?
        } else {
            if ft.is_file() && m.nlink() > 1 {
                if let Some(&i) = links.get(&(m.dev(), m.ino())) {
                    tree.inodes[i].nlink += 1;
                    entries.push((name.as_bytes().to_vec(), i));
                    continue;
                }
            }
            let kind = if ft.is_file() {
                Kind::File {
                    size: m.len(),
                    path: path.clone(),
                }
            } else if ft.is_symlink() {
                let t = fs::read_link(&path).map_err(read_err(&path))?;
                Kind::Symlink(t.as_os_str().as_bytes().to_vec())
            } else if ft.is_char_device() {
                Kind::Char(squashfs_dev(m.rdev(), &path)?)
            } else if ft.is_block_device() {
                Kind::Block(squashfs_dev(m.rdev(), &path)?)
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            let i = tree.inodes.len();
            tree.inodes.push(Inode {
                mode: (m.mode() & 0o7777) as u16,
                nlink: 1,
                xattrs: read_xattrs(&path).map_err(read_err(&path))?,
                kind,
            });
            if ft.is_file() && m.nlink() > 1 {
                links.insert((m.dev(), m.ino()), i);
            }
            i
        };
        entries.push((name.as_bytes().to_vec(), child));
    }
    if let Kind::Dir { entries: e } = &mut tree.inodes[idx].kind {
        *e = entries;
    }
    Ok(idx)
}
