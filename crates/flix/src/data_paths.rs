//! Data paths compiled into the relocated objects: absolute paths in their read-only strings
//! that name a file or folder present in the source rootfs but not shipped (a magic database,
//! a helper folder, a configuration file). They are suggested in the plan, never shipped
//! unasked: the user learns them before the program fails.
//!
//! Only `.rodata`-like sections are read, with a size limit per section; strings are
//! NUL-terminated runs of printable bytes starting with `/usr/`, `/etc/` or `/opt/`, without
//! format or glob characters. Library files and the generic folders of a filesystem (`/usr/lib`,
//! `/usr/share`, a multiarch library folder...) are left out: the closure handles libraries,
//! and those folders are no suggestion.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, SectionKind};
use serde::Serialize;

use safefs::rootfs;

/// The largest read-only section read from one object.
const MAX_SECTION: u64 = 64 << 20;
/// The most suggestions one plan makes.
pub const MAX_SUGGESTIONS: usize = 50;

/// A path an object mentions that exists in the rootfs and is not shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataPath {
    /// The path as written in the object (inside the rootfs).
    pub path: PathBuf,
    /// `file`, `folder` or `link`.
    pub kind: &'static str,
    /// The objects (inside-root paths) that mention it.
    pub mentioned_by: Vec<PathBuf>,
}

/// Candidate path strings in the read-only data of the ELF file at `host` (a build-host path).
pub fn path_strings(host: &Path) -> Vec<String> {
    let Ok(file) = std::fs::File::open(host) else {
        return Vec::new();
    };
    let cache = object::ReadCache::new(file);
    let Ok(obj) = object::File::parse(&cache) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for section in obj.sections() {
        if !matches!(
            section.kind(),
            SectionKind::ReadOnlyString | SectionKind::ReadOnlyData
        ) || section.size() > MAX_SECTION
        {
            continue;
        }
        let Ok(data) = section.data() else {
            continue;
        };
        for s in data.split(|&b| b == 0) {
            if let Some(p) = candidate(s) {
                out.push(p);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `s` as a path worth checking: printable, absolute under /usr, /etc or /opt, no `%`, `*`,
/// `?`, `$`, `:` (search lists), whitespace or `//`, not a library.
fn candidate(s: &[u8]) -> Option<String> {
    if s.len() < 6 || s.len() > 4096 {
        return None;
    }
    let s = std::str::from_utf8(s).ok()?;
    if !["/usr/", "/etc/", "/opt/"].iter().any(|p| s.starts_with(p)) {
        return None;
    }
    if s.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '%' | '*' | '?' | '$' | '"' | '\'' | ':')
    }) || s.contains("//")
        || s.contains("/../")
        || s.contains(".so.")
        || s.ends_with(".so")
    {
        return None;
    }
    Some(s.trim_end_matches('/').to_string())
}

/// Files of the host's own configuration: every host has its own, and an extension cannot
/// replace them (extensions cover /usr and /opt only).
const HOST_FILES: [&str; 16] = [
    "/etc/os-release",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/fstab",
    "/etc/mtab",
    "/etc/machine-id",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/shells",
];

/// Folders too generic to suggest (every rootfs has them), and the host's own files.
fn generic(path: &Path) -> bool {
    if HOST_FILES.iter().any(|f| path == Path::new(f)) {
        return true;
    }
    let depth = path.components().count();
    if depth <= 3 {
        // "/", "/usr/x", "/etc/x"... and "/usr/lib/x86_64-linux-gnu"-like multiarch folders
        // come below; a three-component path is generic when it is a top folder of /usr.
        let s = path.to_string_lossy();
        return matches!(
            s.as_ref(),
            "/usr/bin"
                | "/usr/sbin"
                | "/usr/lib"
                | "/usr/lib32"
                | "/usr/lib64"
                | "/usr/libexec"
                | "/usr/share"
                | "/usr/include"
                | "/usr/local"
                | "/usr/src"
                | "/etc/default"
                | "/etc/alternatives"
        ) || depth <= 2;
    }
    let s = path.to_string_lossy();
    (depth == 4 && s.starts_with("/usr/lib/") && s.ends_with("-linux-gnu"))
        || (depth == 4 && s.starts_with("/usr/local/"))
        || s == "/usr/share/doc"
        || s == "/usr/share/locale"
}

/// The suggestions for `objects` (inside-root paths of shipped ELF files) in `root`:
/// every mentioned path that exists there (links resolved inside the root) and for which
/// `shipped(path)` is false; at most [`MAX_SUGGESTIONS`], sorted by path.
pub fn suggestions(
    root: &Path,
    objects: &[PathBuf],
    shipped: impl Fn(&Path) -> bool,
) -> Vec<DataPath> {
    let mut found: BTreeMap<PathBuf, DataPath> = BTreeMap::new();
    for obj in objects {
        // glibc's own libraries name the system's configuration files, which are the host's,
        // and its data, which the glibc note covers.
        if crate::plan::is_glibc_library(obj) {
            continue;
        }
        let host = rootfs::host_path(root, obj);
        for s in path_strings(&host) {
            let path = PathBuf::from(&s);
            if generic(&path) {
                continue;
            }
            if let Some(d) = found.get_mut(&path) {
                if !d.mentioned_by.contains(obj) {
                    d.mentioned_by.push(obj.clone());
                }
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(rootfs::host_path(root, &path)) else {
                continue;
            };
            let kind = if meta.file_type().is_symlink() {
                // Only links whose target exists inside the root.
                match rootfs::resolve(root, &path, true) {
                    Ok(real) if rootfs::host_path(root, &real).exists() => "link",
                    _ => continue,
                }
            } else if meta.is_dir() {
                "folder"
            } else if meta.is_file() {
                "file"
            } else {
                continue;
            };
            if shipped(&path) {
                continue;
            }
            found.insert(
                path.clone(),
                DataPath {
                    path,
                    kind,
                    mentioned_by: vec![obj.clone()],
                },
            );
        }
    }
    found.into_values().take(MAX_SUGGESTIONS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates() {
        for good in [
            "/usr/share/misc/magic.mgc",
            "/etc/nginx/nginx.conf",
            "/opt/x/",
        ] {
            assert!(candidate(good.as_bytes()).is_some(), "{good}");
        }
        for bad in [
            "/usr/share/%s/x",
            "/usr/lib/libfoo.so.1",
            "/usr/lib/libfoo.so",
            "relative/path",
            "/usr/a b",
            "/usr//x",
            "/bin/sh",
            "/usr/x\x1b",
            "/usr/lib/*.conf",
            "/usr/local/bin:/usr/bin",
        ] {
            assert!(candidate(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert_eq!(candidate(b"/opt/x/").as_deref(), Some("/opt/x"));
    }

    #[test]
    fn generic_folders() {
        for g in [
            "/usr/lib",
            "/usr/share",
            "/etc/default",
            "/usr/lib/x86_64-linux-gnu",
            "/usr/local/sbin",
        ] {
            assert!(generic(Path::new(g)), "{g}");
        }
        for s in [
            "/usr/share/misc/magic.mgc",
            "/usr/lib/git-core",
            "/etc/nginx/mime.types",
        ] {
            assert!(!generic(Path::new(s)), "{s}");
        }
    }
}
