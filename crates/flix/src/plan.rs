//! What flix will do, decided and validated before anything is written.
//!
//! [`build`] turns the user's entries (`PATH` or `SRC:/usr/TARGET`), extra libraries and units
//! into a [`Plan`]: a list of [`Action`]s (directories, copies with their ELF edits, symlinks,
//! generated files) inside the extension tree, the extension's release metadata and
//! [`Diagnostic`]s with hints. Nothing is written here; the source rootfs is only read.
//!
//! Layout rules:
//! - programs keep their `/usr` path; the libraries they load go flat into `usr/local/NAME/`
//!   under the name they are loaded by (two different files under one name is an error);
//!   libraries given with `--extra-lib` go to `usr/local/NAME/extralibs/`; the loader is
//!   copied to `usr/local/NAME/` and every relocated executable's PT_INTERP points there;
//! - every relocated object with a dynamic section (also ELF files inside resource folders:
//!   plugins, python extension modules) gets its own DT_RUNPATH (`/usr/local/NAME`, the
//!   extralibs dir, then its old RPATH/RUNPATH dirs translated into the new layout when they are
//!   shipped) and DF_1_NODEFLIB, so nothing falls back to the host's libraries;
//! - `usr/sbin` is a symlink to `bin` on Fedora and Arch hosts, and an extension's directory
//!   would hide it: entries from `/usr/sbin` are shipped in `usr/bin` (and `usr/local/sbin` in
//!   `usr/local/bin`), unit `Exec*=` lines follow; `usr/lib64` (a symlink on Arch) is refused,
//!   rename such entries with `SRC:/usr/lib/...`;
//! - a symlinked entry stays a symlink, and what it points to is shipped (and patched) too;
//! - units go to `usr/lib/systemd/system/`, `EXTENSION_RELOAD_MANAGER=1` is set, `--enable`
//!   writes an `Upholds=` drop-in for the unit's `WantedBy=` target.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use walkdir::WalkDir;

use sysext_core::release::{self, ExtensionRelease};

use elf_closure::{self as elf, ElfError, ElfInfo};
use safefs::rootfs::{self, RootfsError};
use sysext_core::units;

/// Errors that stop planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Name(release::ReleaseError),
    #[error("entry {0:?} is not an absolute path inside the rootfs")]
    NotAbsolute(String),
    #[error(transparent)]
    BadTarget(#[from] sysext_core::entries::EntryError),
    #[error("entry {entry} lies outside /usr; give it a target inside /usr, e.g. {entry}:/usr/{suggest}")]
    OutsideUsr { entry: String, suggest: String },
    #[error("entry {entry} would be shipped under usr/lib64, which is a symlink on some hosts (Arch) and would be hidden; rename it, e.g. {entry}:/usr/lib/...")]
    Lib64 { entry: String },
    #[error("{} not found in the rootfs {}", path.display(), root.display())]
    NotFound { path: PathBuf, root: PathBuf },
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Resolve(#[from] RootfsError),
    #[error("cannot read the ELF file {}", path.display())]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("cannot walk the libraries the programs load")]
    Closure(#[source] ElfError),
    #[error("--enable: {0}")]
    UnitText(#[source] gentext::TextError),
    #[error("{} is for {found}, but {} is for {first}: all programs of one extension must be for one architecture", path.display(), first_path.display())]
    MixedArch {
        path: PathBuf,
        found: String,
        first_path: PathBuf,
        first: String,
    },
    #[error("two different files are loaded as {name}: {} and {}; ship only one of the programs needing them, or make them agree", a.display(), b.display())]
    SonameConflict {
        name: String,
        a: PathBuf,
        b: PathBuf,
    },
    #[error("library {name} needed by {} not found in the rootfs; pass it with --extra-lib or add the package to the image", needed_by.display())]
    Missing { name: String, needed_by: PathBuf },
    #[error("--extra-lib {0:?} must be an absolute path inside the rootfs, e.g. /usr/lib/x86_64-linux-gnu/{0}")]
    ExtraLibPath(String),
    #[error("{} starts like ELF but is not a readable ELF file", .0.display())]
    NotElf(PathBuf),
    #[error("--extra-lib {} is not an ELF shared library", .0.display())]
    ExtraLibNotElf(PathBuf),
    #[error("--enable {0}: no such unit among the entries; add the unit file as a PATH")]
    EnableUnknown(String),
    #[error("refusing to write {}: not a path inside the extension tree", .0.display())]
    Escapes(PathBuf),
    #[error("two entries would be shipped at {0}; rename one with SRC:/usr/TARGET")]
    DuplicateTarget(String),
}

/// What the user asked for, already parsed.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Extension name.
    pub name: String,
    /// Entries: `PATH` or `SRC:/usr/TARGET`.
    pub paths: Vec<String>,
    /// Libraries loaded with dlopen (paths inside the rootfs).
    pub extra_libs: Vec<String>,
    /// Units to start with the extension (by file name).
    pub enable: Vec<String>,
    /// `ID` for an OS-bound image (default `_any`).
    pub os: Option<String>,
    pub sysext_level: Option<String>,
    pub version_id: Option<String>,
    /// Libraries named by the objects' dlopen metadata notes that are shipped too (default:
    /// required and recommended ones).
    pub dlopen: elf::dlopen::DlopenFollow,
}

/// How a diagnostic matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
}

/// Something the user should know, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
}

/// ELF edits for a copied file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ElfEdits {
    pub interpreter: Option<String>,
    pub runpath: Vec<String>,
    pub nodeflib: bool,
}

/// One step of staging, paths relative to the extension tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// A directory, 0755.
    Dir { to: PathBuf },
    /// Copy `from` (a path on the build host) to `to` with `mode`, rewriting ELF if `elf`.
    Copy {
        from: PathBuf,
        to: PathBuf,
        mode: u32,
        elf: Option<ElfEdits>,
    },
    /// A symlink `to -> target`.
    Symlink { to: PathBuf, target: PathBuf },
    /// A generated file.
    Write {
        to: PathBuf,
        contents: String,
        mode: u32,
    },
}

impl Action {
    /// The path inside the tree this action creates.
    pub fn to(&self) -> &Path {
        match self {
            Action::Dir { to }
            | Action::Copy { to, .. }
            | Action::Symlink { to, .. }
            | Action::Write { to, .. } => to,
        }
    }
}

/// The validated plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub name: String,
    pub root: PathBuf,
    pub architecture: Option<String>,
    /// Tree actions, parents before children.
    pub actions: Vec<Action>,
    /// Libraries in `usr/local/NAME/`: loaded name → file in the rootfs.
    pub libraries: BTreeMap<String, PathBuf>,
    pub units: Vec<String>,
    pub release: String,
    pub diagnostics: Vec<Diagnostic>,
    /// Paths compiled into the shipped objects that exist in the rootfs but are not shipped
    /// (data files, helper folders, configuration): candidates for more entries.
    pub suggestions: Vec<crate::data_paths::DataPath>,
}

/// A user entry split into source and target (both absolute inside-root paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    pub source: PathBuf,
    pub target: Option<PathBuf>,
}

/// Splits `SRC[:TARGET]` with the one entry parser ([`sysext_core::entries::parse_entry`]); flix wants the
/// source absolute. A target ending in `/` is the folder the source goes into.
pub fn parse_entry(s: &str) -> Result<EntrySpec, PlanError> {
    let e = sysext_core::entries::parse_entry(s)?;
    if !e.source.starts_with('/') {
        return Err(PlanError::NotAbsolute(s.to_string()));
    }
    let source = PathBuf::from(e.source);
    let target = e.target.map(|t| match (t.into_dir, source.file_name()) {
        (true, Some(n)) => t.path.join(n),
        _ => t.path,
    });
    Ok(EntrySpec { source, target })
}

/// Validates the extension name with the one rule for new images
/// ([`release::validate_new_name`]); returns warnings (e.g. '_' or '+' in it).
pub fn check_name(name: &str) -> Result<Vec<String>, PlanError> {
    release::validate_new_name(name).map_err(PlanError::Name)
}

/// Maps a target (relative, e.g. `usr/sbin/nginx`) to where it is shipped, per the module rules.
pub fn place(target: &Path, entry: &str) -> Result<PathBuf, PlanError> {
    let s = target.to_string_lossy();
    for (from, to) in [("usr/sbin", "usr/bin"), ("usr/local/sbin", "usr/local/bin")] {
        if s == from {
            return Ok(PathBuf::from(to));
        }
        if let Some(rest) = s.strip_prefix(&format!("{from}/")) {
            return Ok(Path::new(to).join(rest));
        }
    }
    if s == "usr/lib64" || s.starts_with("usr/lib64/") {
        return Err(PlanError::Lib64 {
            entry: entry.to_string(),
        });
    }
    Ok(target.to_path_buf())
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

fn head(path: &Path, n: usize) -> Result<Vec<u8>, PlanError> {
    let mut f = fs::File::open(path).map_err(|source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buf = vec![0; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(source) => {
                return Err(PlanError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn read_all(path: &Path) -> Result<Vec<u8>, PlanError> {
    fs::read(path).map_err(|source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn scan_file(path: &Path) -> Result<Option<ElfInfo>, PlanError> {
    let bytes = read_all(path)?;
    elf::scan(&bytes).map_err(|source| PlanError::Elf {
        path: path.to_path_buf(),
        source,
    })
}

/// A shebang line: interpreter and its first argument.
pub fn shebang(bytes: &[u8]) -> Option<(String, Option<String>)> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interp = words.next()?.to_string();
    Some((interp, words.next().map(str::to_string)))
}

struct Builder<'a> {
    root: &'a Path,
    name: String,
    actions: Vec<Action>,
    /// target (relative) → index in actions, to catch duplicates
    targets: HashMap<PathBuf, usize>,
    /// inside-root source prefix → shipped target (relative), for path translation
    mapping: Vec<(PathBuf, PathBuf)>,
    /// ELF files to patch: action index → inside-root path and info
    elf_roots: Vec<(usize, PathBuf, ElfInfo, bool /* required deps */)>,
    scripts: Vec<(PathBuf, String, Option<String>)>,
    units: Vec<(usize, String)>,
    diags: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn host(&self, inside: &Path) -> PathBuf {
        rootfs::host_path(self.root, inside)
    }

    fn push(&mut self, a: Action) -> Result<usize, PlanError> {
        let to = a.to().to_path_buf();
        if !is_inside_tree(&to) {
            return Err(PlanError::Escapes(to));
        }
        if let Some(&i) = self.targets.get(&to) {
            if self.actions[i] == a || matches!(a, Action::Dir { .. }) {
                return Ok(i);
            }
            return Err(PlanError::DuplicateTarget(to.display().to_string()));
        }
        self.targets.insert(to, self.actions.len());
        self.actions.push(a);
        Ok(self.actions.len() - 1)
    }

    fn note(&mut self, severity: Severity, message: String, hint: Option<String>) {
        self.diags.push(Diagnostic {
            severity,
            message,
            hint,
        });
    }

    /// Adds one entry: `src` inside the rootfs (parents resolved), `target` relative.
    fn entry(
        &mut self,
        spec: &str,
        src: &Path,
        target: &Path,
        depth: usize,
    ) -> Result<(), PlanError> {
        let host = self.host(src);
        let meta = fs::symlink_metadata(&host).map_err(|_| PlanError::NotFound {
            path: src.to_path_buf(),
            root: self.root.to_path_buf(),
        })?;
        let to = place(target, spec)?;
        if to != target {
            self.note(
                Severity::Note,
                format!("{} is shipped as /{}", src.display(), to.display()),
                Some("usr/sbin is a symlink to bin on Fedora and Arch hosts; /usr/bin is on every PATH".into()),
            );
        }
        if meta.file_type().is_symlink() {
            let real = rootfs::resolve(self.root, src, true)?;
            if !self.host(&real).exists() || depth > 8 {
                return Err(PlanError::NotFound {
                    path: real,
                    root: self.root.to_path_buf(),
                });
            }
            if real.starts_with("/usr") || real.starts_with("/opt") {
                let real_target = place(&rel(&real), spec)?;
                // The link stays; what it points to is shipped at its own place.
                let link_dir = to.parent().unwrap_or(Path::new(""));
                let target_link = relative_link(link_dir, &real_target);
                self.parents(&to)?;
                self.push(Action::Symlink {
                    to: to.clone(),
                    target: target_link,
                })?;
                if !self.targets.contains_key(&real_target) {
                    self.entry(spec, &real, &rel(&real), depth + 1)?;
                }
            } else {
                self.note(
                    Severity::Note,
                    format!(
                        "{} points outside /usr ({}); its target is shipped in its place",
                        src.display(),
                        real.display()
                    ),
                    None,
                );
                self.file_entry(spec, &real, &to)?;
            }
            self.mapping.push((src.to_path_buf(), to));
            return Ok(());
        }
        if meta.is_dir() {
            self.mapping.push((src.to_path_buf(), to.clone()));
            return self.dir_entry(src, &to);
        }
        self.file_entry(spec, src, &to)?;
        self.mapping.push((src.to_path_buf(), to));
        Ok(())
    }

    fn file_entry(&mut self, _spec: &str, src: &Path, to: &Path) -> Result<(), PlanError> {
        let host = self.host(src);
        let meta = fs::metadata(&host).map_err(|source| PlanError::Io {
            path: host.clone(),
            source,
        })?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let first = head(&host, 512)?;
        let scope = units::unit_scope(src);
        let is_unit = scope.is_some();
        let to = match scope {
            Some(scope) if !to.starts_with(scope.shipped_dir()) => {
                scope.shipped_dir().join(to.file_name().unwrap_or_default())
            }
            _ => to.to_path_buf(),
        };
        self.parents(&to)?;
        if first.starts_with(b"\x7fELF") {
            let Some(info) = scan_file(&host)? else {
                return Err(PlanError::NotElf(src.to_path_buf()));
            };
            let i = self.push(Action::Copy {
                from: host,
                to,
                mode,
                elf: None,
            })?;
            self.elf_roots.push((i, src.to_path_buf(), info, true));
        } else if is_unit {
            let text = String::from_utf8_lossy(&read_all(&host)?).into_owned();
            let i = self.push(Action::Write {
                to,
                contents: text,
                mode: 0o644,
            })?;
            self.units.push((i, src.display().to_string()));
        } else {
            if let Some((interp, arg)) = shebang(&first) {
                self.scripts.push((src.to_path_buf(), interp, arg));
            }
            self.push(Action::Copy {
                from: host,
                to,
                mode,
                elf: None,
            })?;
        }
        Ok(())
    }

    fn parents(&mut self, to: &Path) -> Result<(), PlanError> {
        let mut acc = PathBuf::new();
        let comps: Vec<_> = to.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            acc.push(c);
            self.push(Action::Dir { to: acc.clone() })?;
        }
        Ok(())
    }

    fn dir_entry(&mut self, src: &Path, to: &Path) -> Result<(), PlanError> {
        let host = self.host(src);
        self.parents(to)?;
        self.push(Action::Dir {
            to: to.to_path_buf(),
        })?;
        for e in WalkDir::new(&host).min_depth(1).sort_by_file_name() {
            let e = e.map_err(|e| PlanError::Io {
                path: host.clone(),
                source: e.into(),
            })?;
            let relp = e.path().strip_prefix(&host).unwrap_or(e.path());
            let dest = to.join(relp);
            let inside = src.join(relp);
            let ft = e.file_type();
            if ft.is_dir() {
                self.push(Action::Dir { to: dest })?;
            } else if ft.is_symlink() {
                let t = fs::read_link(e.path()).map_err(|source| PlanError::Io {
                    path: e.path().to_path_buf(),
                    source,
                })?;
                self.push(Action::Symlink {
                    to: dest,
                    target: t,
                })?;
            } else if ft.is_file() {
                let meta = e.metadata().map_err(|err| PlanError::Io {
                    path: e.path().to_path_buf(),
                    source: err.into(),
                })?;
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
                let first = head(e.path(), 4)?;
                let is_elf = first.starts_with(b"\x7fELF");
                let i = self.push(Action::Copy {
                    from: e.path().to_path_buf(),
                    to: dest,
                    mode,
                    elf: None,
                })?;
                if is_elf {
                    match scan_file(e.path()) {
                        Ok(Some(info)) if info.is_dynamic => {
                            self.elf_roots.push((i, inside, info, false));
                        }
                        Ok(_) => {}
                        Err(err) => {
                            self.note(Severity::Warning, format!("{err}; copied unchanged"), None)
                        }
                    }
                }
            }
            // Devices, fifos and sockets have no place in an extension.
        }
        Ok(())
    }

    /// Where an inside-root path is shipped, if it is (longest mapped prefix).
    fn translate(&self, inside: &Path) -> Option<PathBuf> {
        self.mapping
            .iter()
            .filter(|(src, _)| inside.starts_with(src))
            .max_by_key(|(src, _)| src.as_os_str().len())
            .map(|(src, to)| {
                let rest = inside.strip_prefix(src).unwrap_or(Path::new(""));
                if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                }
            })
    }
}

/// glibc functions that load data through fixed paths: gconv modules, locales, NSS modules.
const GLIBC_DATA_FUNCTIONS: [(&str, &str); 20] = [
    ("iconv_open", "gconv modules"),
    ("setlocale", "locales"),
    ("newlocale", "locales"),
    ("getpwnam", "NSS"),
    ("getpwnam_r", "NSS"),
    ("getpwuid", "NSS"),
    ("getpwuid_r", "NSS"),
    ("getpwent", "NSS"),
    ("getgrnam", "NSS"),
    ("getgrnam_r", "NSS"),
    ("getgrgid", "NSS"),
    ("getgrgid_r", "NSS"),
    ("getgrouplist", "NSS"),
    ("initgroups", "NSS"),
    ("getspnam", "NSS"),
    ("getaddrinfo", "NSS"),
    ("gethostbyname", "NSS"),
    ("gethostbyname_r", "NSS"),
    ("gethostbyaddr", "NSS"),
    ("getservbyname", "NSS"),
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

/// "OBJECT (FUNCTION: WHAT, ...)" for each object in `objects` (inside-root paths) that
/// imports one of [`GLIBC_DATA_FUNCTIONS`]. glibc's own libraries (libc.so.6 and its
/// siblings) are not counted: they implement these functions.
fn glibc_data_users(b: &Builder, objects: &[PathBuf]) -> Vec<String> {
    use object::{Object, ObjectSymbol};
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for inside in objects {
        if !seen.insert(inside.clone()) {
            continue;
        }
        if is_glibc_library(inside) {
            continue;
        }
        let Ok(file) = fs::File::open(b.host(inside)) else {
            continue;
        };
        let cache = object::ReadCache::new(file);
        let Ok(obj) = object::File::parse(&cache) else {
            continue;
        };
        let used: BTreeSet<String> = obj
            .dynamic_symbols()
            .filter(|s| s.is_undefined())
            .filter_map(|s| {
                let name = s.name().ok()?;
                GLIBC_DATA_FUNCTIONS
                    .iter()
                    .find(|(f, _)| *f == name)
                    .map(|(f, what)| format!("{f}: {what}"))
            })
            .collect();
        if !used.is_empty() {
            let list: Vec<String> = used.into_iter().collect();
            out.push(format!("{} ({})", inside.display(), list.join(", ")));
        }
    }
    out
}

/// The `glibc-hwcaps` levels whose copies of a library are shipped beside the baseline copy.
const HWCAPS_LEVELS: [&str; 3] = ["x86-64-v2", "x86-64-v3", "x86-64-v4"];

/// The copies of x86-64 library `lname` (loaded from `real`) in its search dir: the baseline
/// (`None`) and each `glibc-hwcaps/x86-64-vN` subdirectory (`Some(sub)`), as (subdir, real
/// path inside the root, info). Empty when the library has no hwcaps copies, or is not x86-64.
/// A copy of another class or machine, or one that needs a library the closure did not ship,
/// is left out with a note.
fn hwcaps_variants(
    b: &Builder,
    lname: &str,
    real: &Path,
    info: &ElfInfo,
    shipped: &BTreeMap<String, PathBuf>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(Option<&'static str>, PathBuf, ElfInfo)> {
    if info.machine != object::elf::EM_X86_64.0 || !info.class64 {
        return Vec::new();
    }
    let Some(parent) = real.parent() else {
        return Vec::new();
    };
    // The search dir: the parent, or three levels up for .../glibc-hwcaps/x86-64-vN/lib.
    let in_hwcaps = parent
        .parent()
        .is_some_and(|g| g.file_name().is_some_and(|n| n == "glibc-hwcaps"))
        && parent
            .file_name()
            .is_some_and(|n| HWCAPS_LEVELS.iter().any(|l| n == *l));
    let dir = if in_hwcaps {
        parent.parent().and_then(Path::parent).unwrap_or(parent)
    } else {
        parent
    };
    let candidates = std::iter::once((None, dir.join(lname))).chain(
        HWCAPS_LEVELS
            .iter()
            .map(|l| (Some(*l), dir.join("glibc-hwcaps").join(l).join(lname))),
    );
    let mut found = Vec::new();
    for (sub, path) in candidates {
        let Ok(vreal) = rootfs::resolve(b.root, &path, true) else {
            continue;
        };
        let Ok(Some(vinfo)) = elf::scan_file(&b.host(&vreal)) else {
            continue;
        };
        let unshipped: Vec<&String> = vinfo
            .needed
            .iter()
            .filter(|n| !shipped.contains_key(*n) && !n.starts_with("ld-linux"))
            .collect();
        if vinfo.machine != info.machine || vinfo.class64 != info.class64 || !unshipped.is_empty() {
            diags.push(Diagnostic {
                severity: Severity::Note,
                message: format!(
                    "{} is not shipped beside {}: it is for another machine or needs {:?}",
                    path.display(),
                    real.display(),
                    unshipped
                ),
                hint: None,
            });
            continue;
        }
        found.push((sub, vreal, vinfo));
    }
    if found.iter().all(|v| v.0.is_none()) {
        return Vec::new();
    }
    found
}

/// True for a non-empty relative path made of plain names only (no `/`, `..` or `.`).
pub fn is_inside_tree(p: &Path) -> bool {
    !p.as_os_str().is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// A relative symlink target from directory `from_dir` to `to` (both tree-relative).
pub fn relative_link(from_dir: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c);
    }
    out
}

fn arch_of(info: &ElfInfo) -> String {
    release::arch_from_elf(info.machine, info.class64, info.little_endian)
        .map(str::to_string)
        .unwrap_or_else(|| format!("machine {}", info.machine))
}

/// Resolves the options against the rootfs `root` into a validated plan.
pub fn build(root: &Path, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let name_warnings = check_name(&opts.name)?;
    let name = opts.name.clone();
    let mut b = Builder {
        root,
        name: name.clone(),
        actions: Vec::new(),
        targets: HashMap::new(),
        mapping: Vec::new(),
        elf_roots: Vec::new(),
        scripts: Vec::new(),
        units: Vec::new(),
        diags: Vec::new(),
    };
    for w in name_warnings {
        b.note(Severity::Warning, w, None);
    }
    b.push(Action::Dir { to: "usr".into() })?;

    for spec in &opts.paths {
        let e = parse_entry(spec)?;
        let src = rootfs::resolve(root, &e.source, false)?;
        let target = match &e.target {
            Some(t) => rel(t),
            None if src.starts_with("/usr/") || src.starts_with("/opt/") => rel(&src),
            None => match units::unit_scope(&src) {
                // A unit outside /usr (e.g. /etc/systemd/system/x.service): shipped where
                // units of its scope go.
                Some(scope) => scope
                    .shipped_dir()
                    .join(src.file_name().unwrap_or_default()),
                None => {
                    return Err(PlanError::OutsideUsr {
                        entry: spec.clone(),
                        suggest: rel(&e.source).display().to_string(),
                    })
                }
            },
        };
        b.entry(spec, &src, &target, 0)?;
    }

    // Extra libraries.
    let lib_dir = Path::new("usr/local").join(&name);
    let extra_dir = lib_dir.join("extralibs");
    let mut extra_roots = Vec::new();
    for x in &opts.extra_libs {
        if !x.starts_with('/') {
            return Err(PlanError::ExtraLibPath(x.clone()));
        }
        let p = PathBuf::from(x);
        let real = rootfs::resolve(root, &p, true)?;
        let host = b.host(&real);
        if !host.is_file() {
            return Err(PlanError::NotFound {
                path: p,
                root: root.to_path_buf(),
            });
        }
        let info = scan_file(&host)?.ok_or_else(|| PlanError::ExtraLibNotElf(p.clone()))?;
        b.parents(&extra_dir.join("x"))?;
        let mode = fs::metadata(&host)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o644);
        let i = b.push(Action::Copy {
            from: host,
            to: extra_dir.join(p.file_name().unwrap_or_default()),
            mode,
            elf: None,
        })?;
        b.elf_roots.push((i, real.clone(), info, true));
        extra_roots.push(real);
    }

    // Architecture: one for all.
    let mut architecture: Option<(String, PathBuf)> = None;
    for (_, p, info, _) in &b.elf_roots {
        let a = arch_of(info);
        match &architecture {
            None => architecture = Some((a, p.clone())),
            Some((first, fp)) if *first != a && info.e_type != 1 => {
                return Err(PlanError::MixedArch {
                    path: p.clone(),
                    found: a,
                    first_path: fp.clone(),
                    first: first.clone(),
                })
            }
            _ => {}
        }
    }

    // The closure of every ELF root.
    let roots: Vec<PathBuf> = b.elf_roots.iter().map(|(_, p, _, _)| p.clone()).collect();
    let closure_opts = elf::ClosureOptions::default().following_dlopen(opts.dlopen);
    let closure = elf::closure(root, &roots, &closure_opts).map_err(PlanError::Closure)?;
    for o in &closure.objects {
        if let elf::Reason::Dlopen { .. } = &o.reason {
            b.note(
                Severity::Note,
                format!("{} is shipped: {}", o.name, o.reason),
                None,
            );
        }
    }
    for d in &closure.dlopen_missing {
        let severity = if d.priority == elf::dlopen::DlopenPriority::Suggested {
            Severity::Note
        } else {
            Severity::Warning
        };
        b.note(
            severity,
            format!(
                "{} may dlopen {} ({}{}), which is not in the rootfs",
                d.needed_by.display(),
                d.sonames.join(" or "),
                d.priority,
                d.feature
                    .as_deref()
                    .map(|f| format!(", feature {f}"))
                    .unwrap_or_default()
            ),
            Some(
                "add the package that provides it to the image, or pass it with --extra-lib".into(),
            ),
        );
    }
    let required: BTreeSet<PathBuf> = b
        .elf_roots
        .iter()
        .filter(|r| r.3)
        .map(|r| r.1.clone())
        .collect();
    let mut optional_missing = BTreeSet::new();
    for m in &closure.missing {
        // A dependency is required when its chain starts at a program or extra library.
        if required.contains(&m.needed_by) || closure_required(&closure, &required, &m.needed_by) {
            return Err(PlanError::Missing {
                name: m.name.clone(),
                needed_by: m.needed_by.clone(),
            });
        }
        optional_missing.insert(format!("{} (needed by {})", m.name, m.needed_by.display()));
    }
    for m in optional_missing {
        b.note(
            Severity::Warning,
            format!("library {m} not found in the rootfs; that plugin will not load"),
            Some("pass the library with --extra-lib or add its package to the image".into()),
        );
    }

    // Flat library dir, keyed by the loaded name.
    let root_set: BTreeSet<&PathBuf> = roots.iter().collect();
    let mut libraries: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut lib_info: Vec<(String, PathBuf, ElfInfo)> = Vec::new();
    let mut loader: Option<(String, PathBuf)> = None;
    let mut glibc = false;
    for o in &closure.objects {
        if o.is_interpreter {
            let base = o
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| o.name.clone());
            loader = Some((base, o.real_path.clone()));
            continue;
        }
        if o.name.starts_with("libc.so.6") {
            glibc = true;
        }
        // Requested files are shipped at their own place; extra libraries in extralibs/.
        if o.needed_by.is_none()
            || (root_set.contains(&o.real_path) && extra_roots.contains(&o.real_path))
        {
            continue;
        }
        if o.name.contains('/') {
            b.note(
                Severity::Warning,
                format!(
                    "{} loads {} by path; it is not relocated",
                    o.needed_by.as_deref().unwrap_or(Path::new("?")).display(),
                    o.name
                ),
                Some("ship that file as a PATH at the same place".into()),
            );
            continue;
        }
        match libraries.get(&o.name) {
            Some(prev) if *prev != o.real_path => {
                let same = read_all(&b.host(prev))? == read_all(&b.host(&o.real_path))?;
                if !same {
                    return Err(PlanError::SonameConflict {
                        name: o.name.clone(),
                        a: prev.clone(),
                        b: o.real_path.clone(),
                    });
                }
            }
            Some(_) => {}
            None => {
                tracing::debug!(
                    "library {} from {} ({})",
                    o.name,
                    o.real_path.display(),
                    o.reason
                );
                libraries.insert(o.name.clone(), o.real_path.clone());
                lib_info.push((o.name.clone(), o.real_path.clone(), o.info.clone()));
            }
        }
    }

    let base_runpath = {
        let mut v = vec![format!("/usr/local/{name}")];
        if !opts.extra_libs.is_empty() {
            v.push(format!("/usr/local/{name}/extralibs"));
        }
        v
    };
    let new_interp = loader
        .as_ref()
        .map(|(base, _)| format!("/usr/local/{name}/{base}"));
    if let Some((base, real)) = &loader {
        b.parents(&lib_dir.join("x"))?;
        b.push(Action::Copy {
            from: b.host(real),
            to: lib_dir.join(base),
            mode: 0o755,
            elf: None,
        })?;
    }
    let runpath_for = |b: &Builder, inside: &Path, info: &ElfInfo, diags: &mut Vec<Diagnostic>| {
        let mut rp = base_runpath.clone();
        let origin = inside.parent().unwrap_or(Path::new("/"));
        for d in info.runpath.iter().chain(&info.rpath) {
            let expanded = d
                .replace("${ORIGIN}", &origin.to_string_lossy())
                .replace("$ORIGIN", &origin.to_string_lossy());
            if !expanded.starts_with('/') {
                continue;
            }
            let resolved = rootfs::resolve(b.root, Path::new(&expanded), true)
                .unwrap_or_else(|_| PathBuf::from(&expanded));
            if let Some(t) = b.translate(&resolved) {
                let s = format!("/{}", t.display());
                if !rp.contains(&s) {
                    rp.push(s);
                }
            } else if b.host(&resolved).is_dir() {
                diags.push(Diagnostic {
                    severity: Severity::Note,
                    message: format!(
                        "search dir {d} of {} is not shipped; the libraries it needs are in /usr/local/{}",
                        inside.display(),
                        b.name
                    ),
                    hint: Some(format!(
                        "if it loads plugins from {} with dlopen, add that folder as a PATH",
                        resolved.display()
                    )),
                });
            }
        }
        rp
    };

    let mut diags = Vec::new();
    // Entries and resource ELF files.
    let roots_info: Vec<(usize, PathBuf, ElfInfo)> = b
        .elf_roots
        .iter()
        .map(|(i, p, info, _)| (*i, p.clone(), info.clone()))
        .collect();
    for (i, inside, info) in roots_info {
        if !info.is_dynamic {
            continue;
        }
        let edits = ElfEdits {
            interpreter: info.interpreter.as_ref().and(new_interp.clone()),
            runpath: runpath_for(&b, &inside, &info, &mut diags),
            nodeflib: true,
        };
        if let Action::Copy { elf, .. } = &mut b.actions[i] {
            *elf = Some(edits);
        }
    }
    // Libraries.
    if !lib_info.is_empty() {
        b.parents(&lib_dir.join("x"))?;
    }
    for (lname, real, info) in &lib_info {
        // A library with glibc-hwcaps copies: the baseline copy goes flat, each x86-64-vN copy
        // to usr/local/NAME/glibc-hwcaps/x86-64-vN/, where the loader looks first (inside
        // every RUNPATH dir) on a CPU of that level.
        let variants = hwcaps_variants(&b, lname, real, info, &libraries, &mut diags);
        let flat = variants
            .iter()
            .find(|v| v.0.is_none())
            .map(|v| (v.1.clone(), v.2.clone()));
        let (flat_real, flat_info) = flat.unwrap_or_else(|| (real.clone(), info.clone()));
        let mut copies = vec![(lib_dir.join(lname), flat_real, flat_info)];
        for (sub, vreal, vinfo) in variants {
            if let Some(sub) = sub {
                let to = lib_dir.join("glibc-hwcaps").join(sub).join(lname);
                b.parents(&to)?;
                copies.push((to, vreal, vinfo));
            }
        }
        for (to, real, info) in copies {
            let edits = info.is_dynamic.then(|| ElfEdits {
                interpreter: None,
                runpath: runpath_for(&b, &real, &info, &mut diags),
                nodeflib: true,
            });
            b.push(Action::Copy {
                from: b.host(&real),
                to,
                mode: 0o755,
                elf: edits,
            })?;
        }
    }
    b.diags.extend(diags);

    // Scripts.
    let scripts = std::mem::take(&mut b.scripts);
    for (src, interp, arg) in scripts {
        let wanted = if interp.ends_with("/env") {
            arg.map(|a| format!("/usr/bin/{a}"))
        } else {
            Some(interp.clone())
        };
        let Some(wanted) = wanted else { continue };
        let inside = rootfs::resolve(root, Path::new(&wanted), true).ok();
        let shipped = inside
            .as_ref()
            .and_then(|p| b.translate(p))
            .or_else(|| b.translate(Path::new(&wanted)));
        if shipped.is_none() {
            let in_image = inside.is_some_and(|p| b.host(&p).is_file());
            b.note(
                Severity::Warning,
                format!(
                    "script {} runs {wanted}, which is {}; the host's {wanted} will run it, if there is one",
                    src.display(),
                    if in_image { "not among the entries" } else { "not in the image" }
                ),
                Some(format!("add {wanted} (and its resource folders) as a PATH")),
            );
        }
    }

    // Units.
    let units = std::mem::take(&mut b.units);
    let mut unit_names = Vec::new();
    for (i, src) in &units {
        let (to, text) = match &b.actions[*i] {
            Action::Write { to, contents, .. } => (to.clone(), contents.clone()),
            _ => continue,
        };
        let mut new_text = text.clone();
        for p in units::exec_paths(&text) {
            let inside =
                rootfs::resolve(root, Path::new(&p), false).unwrap_or_else(|_| PathBuf::from(&p));
            match b.translate(&inside) {
                Some(t) => {
                    let shipped = format!("/{}", t.display());
                    if shipped != p {
                        // Escaped for the unit line; a path no unit line can hold is left alone.
                        let line_path = match gentext::unit_path("path", &shipped) {
                            Ok(l) => l,
                            Err(e) => {
                                b.note(
                                    Severity::Warning,
                                    format!("unit {src}: {p} is shipped as {shipped:?}, which cannot be written into the unit: {e}"),
                                    Some("ship the program under a plain name with SRC:/usr/bin/NAME".into()),
                                );
                                continue;
                            }
                        };
                        new_text = replace_exec(&new_text, &p, &line_path);
                        b.note(
                            Severity::Note,
                            format!("unit {src}: {p} is shipped as {shipped}; the unit is changed to match"),
                            None,
                        );
                    }
                }
                None => b.note(
                    Severity::Warning,
                    format!("unit {src} runs {p}, which is not in the extension; the host must provide it"),
                    Some(format!("add {p} as a PATH if it comes from the image")),
                ),
            }
        }
        if let Action::Write { contents, .. } = &mut b.actions[*i] {
            *contents = new_text;
        }
        unit_names.push((
            to.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            text,
        ));
    }
    for en in &opts.enable {
        let Some((unit, text)) = unit_names.iter().find(|(n, _)| n == en) else {
            return Err(PlanError::EnableUnknown(en.clone()));
        };
        let mut targets = units::wanted_by(text);
        if targets.is_empty() {
            targets.push("multi-user.target".into());
        }
        let unit_line = gentext::unit_word("unit name", unit).map_err(PlanError::UnitText)?;
        for t in targets {
            let dir = Path::new("usr/lib/systemd/system").join(format!("{t}.d"));
            b.parents(&dir.join("x"))?;
            b.push(Action::Write {
                to: dir.join(format!("10-{name}-{unit}.conf")),
                contents: format!(
                    "# Written by flix: start {unit_line} with the extension.\n[Unit]\nUpholds={unit_line}\n"
                ),
                mode: 0o644,
            })?;
        }
    }

    if glibc {
        // Said only when a shipped object calls into them, naming which and why.
        let mut objects: Vec<PathBuf> = b.elf_roots.iter().map(|r| r.1.clone()).collect();
        objects.extend(lib_info.iter().map(|l| l.1.clone()));
        let users = glibc_data_users(&b, &objects);
        if !users.is_empty() {
            b.note(
                Severity::Note,
                format!(
                    "glibc finds its gconv modules, locales and NSS modules through fixed paths, \
                     which are not relocated; these objects use them: {}",
                    users.join("; ")
                ),
                Some(
                    "ship what the programs need as PATHs and point to it from a unit drop-in \
                     (GCONV_PATH=, LOCPATH=); NSS modules other than files and dns go with \
                     --extra-lib (e.g. /usr/lib/x86_64-linux-gnu/libnss_systemd.so.2)"
                        .into(),
                ),
            );
        }
    }

    // Data paths the shipped objects mention: suggested, not shipped.
    let suggestions = {
        let mut objects: Vec<PathBuf> = b.elf_roots.iter().map(|r| r.1.clone()).collect();
        objects.extend(lib_info.iter().map(|l| l.1.clone()));
        let shipped = |p: &Path| {
            let real = rootfs::resolve(b.root, p, true).unwrap_or_else(|_| p.to_path_buf());
            b.translate(p).is_some()
                || b.translate(&real).is_some()
                || b.mapping
                    .iter()
                    .any(|(src, _)| src.starts_with(p) || src.starts_with(&real))
        };
        crate::data_paths::suggestions(b.root, &objects, shipped)
    };
    if !suggestions.is_empty() {
        let list: Vec<String> = suggestions
            .iter()
            .take(10)
            .map(|s| {
                format!(
                    "{} ({}, in {})",
                    s.path.display(),
                    s.kind,
                    s.mentioned_by
                        .iter()
                        .map(|m| m.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        let more = suggestions.len().saturating_sub(10);
        b.note(
            Severity::Note,
            format!(
                "the shipped programs mention paths that are in the rootfs but not shipped: {}{}",
                list.join("; "),
                if more > 0 {
                    format!("; and {more} more (--json lists them)")
                } else {
                    String::new()
                }
            ),
            Some(
                "add the ones the programs need as entries (SRC:/usr/TARGET for paths outside \
                 /usr)"
                    .into(),
            ),
        );
    }

    let arch = architecture.map(|a| a.0);
    let release = ExtensionRelease {
        id: opts.os.clone().unwrap_or_else(|| "_any".into()),
        version_id: opts.version_id.clone(),
        sysext_level: opts.sysext_level.clone(),
        architecture: arch.clone().filter(|a| !a.starts_with("machine ")),
        reload_manager: !unit_names.is_empty(),
        ..Default::default()
    };
    let rel_path = release::release_file_path(&name);
    b.parents(&rel_path)?;
    let release_text = release.render();
    b.push(Action::Write {
        to: rel_path,
        contents: release_text.clone(),
        mode: 0o644,
    })?;

    Ok(Plan {
        name,
        root: root.to_path_buf(),
        architecture: arch,
        actions: b.actions,
        libraries,
        units: unit_names.into_iter().map(|u| u.0).collect(),
        release: release_text,
        diagnostics: b.diags,
        suggestions,
    })
}

fn closure_required(c: &elf::Closure, required: &BTreeSet<PathBuf>, who: &Path) -> bool {
    // Walk up needed_by links (bounded).
    let mut cur = who.to_path_buf();
    for _ in 0..64 {
        if required.contains(&cur) {
            return true;
        }
        match c.objects.iter().find(|o| o.path == cur) {
            Some(o) => match &o.needed_by {
                Some(n) => cur = n.clone(),
                None => return false,
            },
            None => return false,
        }
    }
    false
}

/// Replaces the command path `from` by `to` on `Exec*=` lines.
fn replace_exec(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with("Exec") {
            if let Some((k, v)) = line.split_once('=') {
                let v2 = replace_word(v, from, to);
                out.push_str(k);
                out.push('=');
                out.push_str(&v2);
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

fn replace_word(v: &str, from: &str, to: &str) -> String {
    let prefix_len = v.len() - v.trim_start_matches([' ', '-', '@', ':', '+', '!']).len();
    let (prefix, rest) = v.split_at(prefix_len);
    match rest.strip_prefix(from) {
        Some(tail) if tail.is_empty() || tail.starts_with(char::is_whitespace) => {
            format!("{prefix}{to}{tail}")
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse() {
        assert_eq!(
            parse_entry("/usr/bin/x").unwrap(),
            EntrySpec {
                source: "/usr/bin/x".into(),
                target: None
            }
        );
        assert_eq!(
            parse_entry("/etc/terminfo:/usr/share/terminfo")
                .unwrap()
                .target,
            Some(PathBuf::from("/usr/share/terminfo"))
        );
        for bad in ["usr/bin/x", "/x:/etc/y", "/x:/usr/../etc", "/x:usr/y"] {
            assert!(parse_entry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placement_avoids_host_symlinks() {
        let cases = [
            ("usr/sbin/nginx", Some("usr/bin/nginx")),
            ("usr/sbin", Some("usr/bin")),
            ("usr/local/sbin/x", Some("usr/local/bin/x")),
            ("usr/bin/b3sum", Some("usr/bin/b3sum")),
            ("usr/sbinx/y", Some("usr/sbinx/y")),
            ("usr/lib64/libfoo.so", None),
            ("usr/lib64", None),
            ("usr/lib/python3.13", Some("usr/lib/python3.13")),
        ];
        for (input, want) in cases {
            let got = place(Path::new(input), input).ok();
            assert_eq!(got, want.map(PathBuf::from), "{input}");
        }
    }

    #[test]
    fn relative_links() {
        assert_eq!(
            relative_link(Path::new("usr/bin"), Path::new("usr/bin/python3.13")),
            PathBuf::from("python3.13")
        );
        assert_eq!(
            relative_link(Path::new("usr/bin"), Path::new("usr/lib/x/y")),
            PathBuf::from("../lib/x/y")
        );
    }

    #[test]
    fn shebangs() {
        assert_eq!(shebang(b"#!/bin/sh\n"), Some(("/bin/sh".into(), None)));
        assert_eq!(
            shebang(b"#! /usr/bin/env python3 -u\nx"),
            Some(("/usr/bin/env".into(), Some("python3".into())))
        );
        assert_eq!(shebang(b"\x7fELF"), None);
    }

    #[test]
    fn unit_lines() {
        let u = "[Service]\nExecStartPre=-/usr/sbin/nginx -t\nExecStart=/usr/sbin/nginx\nExecReload=@/bin/kill kill -HUP $MAINPID\nExecStop=true\n[Install]\nWantedBy=multi-user.target graphical.target\n";
        let r = replace_exec(u, "/usr/sbin/nginx", "/usr/bin/nginx");
        assert!(r.contains("ExecStartPre=-/usr/bin/nginx -t\n"));
        assert!(r.contains("ExecStart=/usr/bin/nginx\n"));
        assert!(r.contains("@/bin/kill"));
        assert_eq!(
            replace_word("/usr/sbin/nginxx", "/usr/sbin/nginx", "/a"),
            "/usr/sbin/nginxx"
        );
    }

    #[test]
    fn tree_paths() {
        for good in ["usr", "usr/bin/x", "usr/local/n/libc.so.6"] {
            assert!(is_inside_tree(Path::new(good)), "{good}");
        }
        for bad in ["", "/usr/bin/x", "usr/../etc", "./usr", "usr/./x/../../.."] {
            assert!(!is_inside_tree(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(check_name("tools").unwrap(), Vec::<String>::new());
        assert!(
            !check_name("my_tools").unwrap().is_empty(),
            "'_' is warned about"
        );
        for bad in ["", "a/b", "..", ".x", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
