//! The producers' one rule for setuid/setgid bits and file capabilities, what they list and
//! how they print it; the extended attributes an image keeps.

use super::*;

/// How a producer (flix, flatwrap) stages the files of a source: the options of the
/// privilege rule below.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Keep setuid/setgid bits and file capabilities (`security.capability`) of the source's
    /// files; by default they are stripped and listed ([`Stripped`]).
    pub keep_privileges: bool,
    /// Place files that stay as they are as hard links to the source's ([`Tree::link_in`])
    /// where possible, instead of copies: only for a staged tree that is packed and removed,
    /// from a source the tools unpacked themselves (`ocirootfs::Rootfs::unpacked`).
    ///
    /// [`Tree::link_in`]: crate::tree::Tree::link_in
    pub link_source: bool,
}

impl StageOptions {
    /// Options that keep (`true`) or strip (`false`, the default) privileges.
    pub fn new(keep_privileges: bool) -> StageOptions {
        StageOptions {
            keep_privileges,
            link_source: false,
        }
    }

    /// These options for staging from `src_root` into `out`, decided once: linking is dropped
    /// when the two are on different file systems, where every link would fail and each file
    /// would be opened twice.
    pub fn resolved_for(&self, out: &super::Tree, src_root: &Path) -> StageOptions {
        let same_fs = || {
            let tree = rustix::fs::fstat(out.root_fd()).map(|st| st.st_dev);
            let src = rustix::fs::stat(src_root).map(|st| st.st_dev);
            matches!((tree, src), (Ok(a), Ok(b)) if a == b)
        };
        StageOptions {
            keep_privileges: self.keep_privileges,
            link_source: self.link_source && same_fs(),
        }
    }
}

/// What a producer stripped from one file it placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stripped {
    /// The file's path in the image (absolute).
    pub path: String,
    pub setuid: bool,
    pub setgid: bool,
    /// A `security.capability` xattr (file capabilities).
    pub capability: bool,
}

impl Stripped {
    /// `setuid, setgid, file capabilities` as present.
    pub fn what(&self) -> String {
        let mut v = Vec::new();
        if self.setuid {
            v.push("setuid");
        }
        if self.setgid {
            v.push("setgid");
        }
        if self.capability {
            v.push("file capabilities");
        }
        v.join(", ")
    }
}

/// The producers' rule: without `keep`, setuid and setgid bits go. Returns the mode to write
/// and what was stripped (with `capability` false: xattrs are the caller's to drop).
pub fn strip_privilege(path: &str, mode: u32, keep: bool) -> (u32, Option<Stripped>) {
    let special = mode & 0o6000;
    if keep || special == 0 {
        return (mode, None);
    }
    (
        mode & !0o6000,
        Some(Stripped {
            path: path.to_string(),
            setuid: special & 0o4000 != 0,
            setgid: special & 0o2000 != 0,
            capability: false,
        }),
    )
}

/// The xattr holding file capabilities.
pub const CAPABILITY_XATTR: &str = "security.capability";

/// An extended attribute: name and value.
pub type Xattr = (std::ffi::OsString, Vec<u8>);

/// The extended attributes an image carries (`user.*`, `trusted.*`, and
/// `security.capability` only with `keep_capability`) of the open file `from`, and whether
/// `from` had file capabilities. A file system without xattrs has none.
pub fn image_xattrs(from: &File, keep_capability: bool) -> io::Result<(Vec<Xattr>, bool)> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rfs::flistxattr(from, &mut names[..]) {
            Ok(n) => break n,
            Err(Errno::RANGE) if names.len() < 1 << 20 => names.resize(names.len() * 8, 0),
            Err(Errno::NOTSUP) => return Ok((Vec::new(), false)),
            Err(e) => return Err(e.into()),
        }
    };
    names.truncate(n);
    let mut had_cap = false;
    let mut out = Vec::new();
    let mut value = vec![0u8; 256];
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let is_cap = name == CAPABILITY_XATTR.as_bytes();
        had_cap |= is_cap;
        let keep = name.starts_with(b"user.")
            || name.starts_with(b"trusted.")
            || (is_cap && keep_capability);
        if !keep {
            continue;
        }
        let cname = OsStr::from_bytes(name);
        let len = loop {
            match rfs::fgetxattr(from, cname, &mut value[..]) {
                Ok(len) => break len,
                // xattr values are at most 64 KiB.
                Err(Errno::RANGE) if value.len() < 1 << 17 => value.resize(value.len() * 16, 0),
                Err(e) => return Err(e.into()),
            }
        };
        out.push((cname.to_os_string(), value[..len].to_vec()));
    }
    Ok((out, had_cap))
}

/// Copies [`image_xattrs`] of the open file `from` to `to`. Returns whether `from` had file
/// capabilities. One the output's file system cannot hold gets a warning, not an error.
pub fn copy_xattrs_fd(from: &File, to: &File, keep_capability: bool) -> io::Result<bool> {
    let (xattrs, had_cap) = image_xattrs(from, keep_capability)?;
    for (name, value) in xattrs {
        match rfs::fsetxattr(to, &name, &value, rfs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(Errno::NOTSUP | Errno::PERM) => tracing::warn!(
                "cannot keep the extended attribute {}: the output's file system refuses it",
                name.to_string_lossy()
            ),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(had_cap)
}

/// Records in `list` that `path` lost its file capabilities (merging with a mode entry).
pub fn note_capability(list: &mut Vec<Stripped>, path: &str) {
    if let Some(s) = list.iter_mut().find(|s| s.path == path) {
        s.capability = true;
    } else {
        list.push(Stripped {
            path: path.to_string(),
            setuid: false,
            setgid: false,
            capability: true,
        });
    }
}

/// Prints what was stripped on stderr: a count and the first few files, with the flag that
/// keeps them.
pub fn report_stripped(tool: &str, list: &[Stripped], flag: &str) {
    if list.is_empty() {
        return;
    }
    const SHOWN: usize = 10;
    eprintln!(
        "{tool}: warning: stripped privileges of {} file(s) from the image (pass {flag} to keep them):",
        list.len()
    );
    for s in list.iter().take(SHOWN) {
        eprintln!("  {}: {}", gentext::escape(&s.path), s.what());
    }
    if list.len() > SHOWN {
        eprintln!("  ... and {} more", list.len() - SHOWN);
    }
}
