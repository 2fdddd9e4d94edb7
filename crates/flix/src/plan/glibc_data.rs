//! glibc's own data for the relocated libc: gconv modules, locales and NSS modules.
//!
//! glibc finds them through paths compiled into libc.so.6 (`/usr/lib/<triplet>/gconv`, its
//! `gconv-modules.cache`, `/usr/lib/locale`, its `locale-archive`) and NSS modules by name
//! with dlopen. Shipped at those paths they would shadow the host glibc's own data, of another
//! version, while the extension is merged; left alone, the relocated libc would read the
//! host's. So:
//! - the data goes to `usr/local/NAME/glibc/` (the gconv folder's modules and configuration,
//!   and the locale folder's contents: both fit in one folder without clashing names);
//! - `/usr/local/XNNN`, a link to `NAME/glibc`, is the short name the libc copy reads it by:
//!   its compiled-in paths are overwritten in place, and code reads some of them with a length
//!   fixed at compile time, so a new path must be exactly as long as the old one (padded with
//!   `/`, which path lookup ignores). `/usr/lib/locale`, 15 bytes, is the shortest; the alias
//!   is 15 bytes too, four characters derived from NAME (a letter, a digit, two more);
//! - the gconv cache is not shipped (it names the original folder): glibc then reads the
//!   configuration files in the folder, as it does with `GCONV_PATH`;
//! - NSS modules (`libnss_*.so.2` beside libc) go to the flat library dir with their own
//!   closure, where libc's dlopen finds them through its RUNPATH;
//! - the paths are redirected whenever libc is shipped, also when no data is, so the relocated
//!   libc never reads the host's data.
//!
//! What is shipped follows what the objects use (`--glibc-data auto`): gconv modules for
//! `iconv_open`, locales for `setlocale`/`newlocale`, NSS modules for the passwd, group and
//! host lookups; `all` ships the three, `none` nothing.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use elf_closure as elf;
use safefs::rootfs;

use super::closure::Libraries;
use super::{Action, Builder, PlanError, Severity};

/// Which of glibc's data flix ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GlibcDataMode {
    /// What the shipped objects use.
    #[default]
    Auto,
    /// gconv modules, locales and NSS modules.
    All,
    /// Nothing (the paths are still redirected).
    None,
}

impl std::str::FromStr for GlibcDataMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(GlibcDataMode::Auto),
            "all" => Ok(GlibcDataMode::All),
            "none" => Ok(GlibcDataMode::None),
            _ => Err(format!(
                "unknown glibc data mode {s:?}: use auto, all or none"
            )),
        }
    }
}

/// One kind of glibc data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataKind {
    Gconv,
    Locales,
    Nss,
}

impl std::fmt::Display for DataKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataKind::Gconv => "gconv modules",
            DataKind::Locales => "locales",
            DataKind::Nss => "NSS modules",
        })
    }
}

/// glibc functions that load data through fixed paths or by module name.
const GLIBC_DATA_FUNCTIONS: [(&str, DataKind); 20] = [
    ("iconv_open", DataKind::Gconv),
    ("setlocale", DataKind::Locales),
    ("newlocale", DataKind::Locales),
    ("getpwnam", DataKind::Nss),
    ("getpwnam_r", DataKind::Nss),
    ("getpwuid", DataKind::Nss),
    ("getpwuid_r", DataKind::Nss),
    ("getpwent", DataKind::Nss),
    ("getgrnam", DataKind::Nss),
    ("getgrnam_r", DataKind::Nss),
    ("getgrgid", DataKind::Nss),
    ("getgrgid_r", DataKind::Nss),
    ("getgrouplist", DataKind::Nss),
    ("initgroups", DataKind::Nss),
    ("getspnam", DataKind::Nss),
    ("getaddrinfo", DataKind::Nss),
    ("gethostbyname", DataKind::Nss),
    ("gethostbyname_r", DataKind::Nss),
    ("gethostbyaddr", DataKind::Nss),
    ("getservbyname", DataKind::Nss),
];

/// glibc's own libraries (libc.so.6 and its siblings), by file name.
pub fn is_glibc_library(path: &Path) -> bool {
    path.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        [
            "libc.so",
            "libm.so",
            "libpthread.so",
            "libdl.so",
            "libresolv.so",
            "librt.so",
            "libnss_",
            "ld-linux",
        ]
        .iter()
        .any(|p| n.starts_with(p))
    })
}

/// What the plan did with glibc's data (in `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct GlibcData {
    /// The libc.so.6 whose copies read the data through the alias (inside the rootfs).
    pub libc: PathBuf,
    /// The link the libc copy reads its data through (`/usr/local/XNNN` -> `NAME/glibc`).
    pub alias: String,
    /// Compiled-in path of the libc copy → what it reads now (padded to the same length).
    pub redirects: Vec<(String, String)>,
    /// The kinds shipped in `usr/local/NAME/glibc/` or the library dir.
    pub shipped: Vec<DataKind>,
    /// NSS modules shipped in the library dir.
    pub nss_modules: Vec<String>,
    /// Objects that use the data: "OBJECT (FUNCTION: KIND, ...)".
    pub used_by: Vec<String>,
}

/// The alias for extension `name`: `/usr/local/` and four characters (a letter, a digit and
/// two letters or digits) from a hash of the name, as long as `/usr/lib/locale`.
pub fn alias_for(name: &str) -> String {
    // FNV-1a: stable across builds and platforms; collisions only matter between two
    // extensions merged together.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALNUM: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let token = [
        b'a' + (h % 26) as u8,
        b'0' + ((h / 26) % 10) as u8,
        ALNUM[((h / 260) % 36) as usize],
        ALNUM[((h / 9360) % 36) as usize],
    ];
    format!("/usr/local/{}", String::from_utf8_lossy(&token))
}

/// `alias` followed by `rest` ("" or "/file"), padded with `/` after the alias to exactly
/// `len` bytes; `None` when it is longer.
fn padded(alias: &str, rest: &str, len: usize) -> Option<String> {
    let pad = len.checked_sub(alias.len() + rest.len())?;
    Some(format!("{alias}{}{rest}", "/".repeat(pad)))
}

/// The first whole NUL-terminated absolute path in `bytes` that ends with `suffix`.
fn compiled_in_path(bytes: &[u8], suffix: &str) -> Option<String> {
    bytes
        .split(|&c| c == 0)
        .filter(|s| s.len() <= 256 && s.starts_with(b"/") && s.ends_with(suffix.as_bytes()))
        .find_map(|s| std::str::from_utf8(s).ok().map(str::to_string))
}

/// The largest libc.so.6 read for its data paths (glibc's is about 2 MiB).
const LIBC_MAX: u64 = 64 << 20;

/// The bytes of the libc file `host`, at most [`LIBC_MAX`] of them.
fn read_libc(host: &Path) -> Result<Vec<u8>, PlanError> {
    use std::io::Read;
    let io = |source| PlanError::Io {
        path: host.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    fs::File::open(host)
        .map_err(io)?
        .take(LIBC_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > LIBC_MAX {
        return Err(io(std::io::Error::other(format!(
            "larger than {} MiB: not a C library flix relocates",
            LIBC_MAX >> 20
        ))));
    }
    Ok(bytes)
}

/// "OBJECT (FUNCTION: KIND, ...)" for each object in `objects` (inside-root paths) that
/// imports one of [`GLIBC_DATA_FUNCTIONS`], and the kinds they use. glibc's own libraries are
/// not counted: they implement these functions.
fn users(b: &Builder, objects: &[PathBuf]) -> (Vec<String>, BTreeSet<DataKind>) {
    use object::{Object, ObjectSymbol};
    let mut out = Vec::new();
    let mut kinds = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for inside in objects {
        if !seen.insert(inside.clone()) || is_glibc_library(inside) {
            continue;
        }
        let Ok(file) = fs::File::open(b.host(inside)) else {
            continue;
        };
        let cache = object::ReadCache::new(file);
        let Ok(obj) = object::File::parse(&cache) else {
            continue;
        };
        let used: BTreeSet<(&str, DataKind)> = obj
            .dynamic_symbols()
            .filter(|s| s.is_undefined())
            .filter_map(|s| {
                let name = s.name().ok()?;
                GLIBC_DATA_FUNCTIONS
                    .iter()
                    .find(|(f, _)| *f == name)
                    .copied()
            })
            .collect();
        if !used.is_empty() {
            kinds.extend(used.iter().map(|u| u.1));
            let list: Vec<String> = used.iter().map(|(f, k)| format!("{f}: {k}")).collect();
            out.push(format!("{} ({})", inside.display(), list.join(", ")));
        }
    }
    (out, kinds)
}

/// Decides glibc's data for the plan: ships what `mode` asks for into `lib_dir/glibc` (NSS
/// modules into `libs`, before they are relocated) and returns the redirects for the libc
/// copy; `None` when no glibc libc.so.6 is shipped.
pub(super) fn plan(
    b: &mut Builder,
    mode: GlibcDataMode,
    objects: &[PathBuf],
    libs: &mut Libraries,
    lib_dir: &Path,
) -> Result<Option<GlibcData>, PlanError> {
    let Some(libc) = libs
        .info
        .iter()
        .find(|(n, _, _)| n == "libc.so.6")
        .map(|l| l.1.clone())
    else {
        return Ok(None);
    };
    let bytes = read_libc(&b.host(&libc))?;
    let (used_by, used) = users(b, objects);
    let kinds: BTreeSet<DataKind> = match mode {
        GlibcDataMode::Auto => used,
        GlibcDataMode::All => [DataKind::Gconv, DataKind::Locales, DataKind::Nss].into(),
        GlibcDataMode::None => BTreeSet::new(),
    };
    let alias = alias_for(&b.name);
    let gconv_cache = compiled_in_path(&bytes, "/gconv-modules.cache");
    let archive = compiled_in_path(&bytes, "/locale-archive");
    let parent = |p: &Option<String>| {
        p.as_deref()
            .and_then(|p| Path::new(p).parent())
            .map(|d| d.to_string_lossy().into_owned())
    };
    let (gconv_dir, locale_dir) = (parent(&gconv_cache), parent(&archive));
    let wanted = [
        (gconv_dir.clone(), ""),
        (gconv_cache, "/gconv-modules.cache"),
        (locale_dir.clone(), ""),
        (archive, "/locale-archive"),
    ];
    let mut redirects = Vec::new();
    for (old, rest) in wanted {
        let Some(old) = old else { continue };
        match padded(&alias, rest, old.len()) {
            Some(new) => redirects.push((old, new)),
            None => b.note(
                Severity::Warning,
                format!(
                    "libc.so.6's compiled-in path {old} is shorter than {alias}{rest}: it is not \
                     redirected, and the relocated libc reads the host's data there"
                ),
                None,
            ),
        }
    }
    // Keep the redirects the libc copy really holds in its read-only data.
    let mut probe = bytes;
    let counts = elf_edit::replace_data_strings(&mut probe, &redirects).map_err(|source| {
        PlanError::Redirect {
            path: libc.clone(),
            source,
        }
    })?;
    let redirects: Vec<(String, String)> = redirects
        .into_iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(r, _)| r)
        .collect();
    if redirects.is_empty() {
        b.note(
            Severity::Note,
            format!(
                "{} holds none of glibc's data paths; its gconv modules, locales and NSS modules \
                 are not shipped",
                libc.display()
            ),
            None,
        );
        return Ok(None);
    }

    let data_dir = lib_dir.join("glibc");
    let mut shipped = Vec::new();
    let mut sizes = Vec::new();
    for (kind, dir) in [
        (DataKind::Gconv, &gconv_dir),
        (DataKind::Locales, &locale_dir),
    ] {
        if !kinds.contains(&kind) {
            continue;
        }
        let Some(dir) = dir else { continue };
        let real = rootfs::resolve(b.root, Path::new(dir), true).ok();
        match real.filter(|r| b.host(r).is_dir()) {
            Some(real) => {
                let (files, bytes) = b.data_dir(&real, &data_dir, &["gconv-modules.cache"])?;
                b.mapping.push((PathBuf::from(dir), data_dir.clone()));
                shipped.push(kind);
                sizes.push(format!("{kind}: {files} files, {} KiB", bytes / 1024));
            }
            None => b.note(
                Severity::Note,
                format!("the rootfs has no {dir}: no {kind} to ship"),
                None,
            ),
        }
    }
    let mut nss_modules = Vec::new();
    if kinds.contains(&DataKind::Nss) {
        nss_modules = add_nss_modules(b, &libc, libs)?;
        if !nss_modules.is_empty() {
            shipped.push(DataKind::Nss);
            sizes.push(format!("NSS modules: {}", nss_modules.join(", ")));
        }
    }
    if shipped.iter().any(|k| *k != DataKind::Nss) {
        let link = Path::new(alias.trim_start_matches('/')).to_path_buf();
        b.parents(&link)?;
        b.push(Action::Symlink {
            to: link,
            target: Path::new(&b.name).join("glibc"),
        })?;
    }
    // Quiet when no object uses the data and none is shipped: the redirect alone is silent.
    if !used_by.is_empty() || !shipped.is_empty() {
        let lead = if shipped.is_empty() {
            "glibc's data is not shipped".to_string()
        } else {
            format!("glibc's data is shipped ({})", sizes.join("; "))
        };
        b.note(
            Severity::Note,
            format!(
                "{lead}; the relocated libc reads it through {alias} -> {}/glibc, never the host's{}",
                b.name,
                match used_by.len() {
                    0 => String::new(),
                    n if n <= 5 => format!("; used by {}", used_by.join("; ")),
                    n => format!(
                        "; used by {} and {} more objects (--json lists them)",
                        used_by[..5].join("; "),
                        n - 5
                    ),
                }
            ),
            match mode {
                GlibcDataMode::Auto => Some(
                    "--glibc-data all ships gconv modules, locales and NSS modules whatever the \
                     objects import (for plugins loaded later); --glibc-data none ships none"
                        .into(),
                ),
                _ => None,
            },
        );
    }
    Ok(Some(GlibcData {
        libc,
        alias,
        redirects,
        shipped,
        nss_modules,
        used_by,
    }))
}

/// Adds the NSS modules beside `libc` (inside-root path) and their closures to `libs`; a
/// module whose closure is incomplete is left out with a note. Returns the modules' names.
fn add_nss_modules(
    b: &mut Builder,
    libc: &Path,
    libs: &mut Libraries,
) -> Result<Vec<String>, PlanError> {
    let dir = libc.parent().unwrap_or(Path::new("/"));
    let host_dir = b.host(dir);
    let mut modules: Vec<String> = fs::read_dir(&host_dir)
        .map_err(|source| PlanError::Io {
            path: host_dir.clone(),
            source,
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("libnss_") && n.ends_with(".so.2"))
        .collect();
    modules.sort();
    let mut shipped = Vec::new();
    for m in modules {
        let inside = dir.join(&m);
        let closure = elf::closure(
            b.root,
            std::slice::from_ref(&inside),
            &elf::ClosureOptions::default(),
        )
        .map_err(PlanError::Closure)?;
        if let Some(missing) = closure.missing.first() {
            b.note(
                Severity::Note,
                format!(
                    "NSS module {m} is not shipped: {} needs {}, which is not in the rootfs",
                    missing.needed_by.display(),
                    missing.name
                ),
                None,
            );
            continue;
        }
        for o in &closure.objects {
            // The loader is shipped as the loader (some libc.so.6 list it as needed).
            let loader = libs.loader.as_ref().map(|l| &l.1);
            if o.is_interpreter || loader == Some(&o.real_path) {
                continue;
            }
            let name = if o.needed_by.is_none() {
                m.clone()
            } else {
                o.name.clone()
            };
            if !libs.by_name.contains_key(&name) {
                libs.by_name.insert(name.clone(), o.real_path.clone());
                libs.info.push((name, o.real_path.clone(), o.info.clone()));
            }
        }
        shipped.push(m);
    }
    Ok(shipped)
}

/// Sets the redirects on every copy of the data's libc among the actions.
pub(super) fn redirect_libc(b: &mut Builder, data: &GlibcData) {
    let libc_host = b.host(&data.libc);
    for a in &mut b.actions {
        if let Action::Copy {
            from, elf: Some(e), ..
        } = a
        {
            if *from == libc_host {
                e.replace_strings.clone_from(&data.redirects);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_is_as_long_as_the_locale_folder_and_stable() {
        for name in [
            "tools",
            "a",
            "python-with-a-very-long-extension-name",
            "x.y",
        ] {
            let a = alias_for(name);
            assert_eq!(a.len(), "/usr/lib/locale".len(), "{a}");
            let token = a.trim_start_matches("/usr/local/").as_bytes();
            assert!(
                token[0].is_ascii_lowercase() && token[1].is_ascii_digit(),
                "{a}"
            );
            assert_eq!(a, alias_for(name));
        }
        assert_ne!(alias_for("tools"), alias_for("tool"));
    }

    #[test]
    fn paths_are_padded_after_the_alias() {
        let a = "/usr/local/k3xy";
        assert_eq!(padded(a, "", 15).as_deref(), Some(a));
        assert_eq!(
            padded(a, "", "/usr/lib/x86_64-linux-gnu/gconv".len()).as_deref(),
            Some("/usr/local/k3xy////////////////")
        );
        assert_eq!(
            padded(a, "/locale-archive", 30).as_deref(),
            Some("/usr/local/k3xy/locale-archive")
        );
        assert_eq!(padded(a, "/gconv-modules.cache", 20), None);
        assert_eq!(
            compiled_in_path(
                b"x\0/a/gconv-modules.cache.x\0/usr/lib/gconv/gconv-modules.cache\0",
                "/gconv-modules.cache"
            )
            .as_deref(),
            Some("/usr/lib/gconv/gconv-modules.cache")
        );
    }
}
