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
//!
//! [`build`] runs these steps in order, each in its own module:
//! - `entries`: the entries and extra libraries become copy actions (folders walked, symlinks
//!   followed, ELF files and scripts noted);
//! - `closure`: one architecture for all, the libraries the loader would load, the flat
//!   library dir keyed by loaded name;
//! - `glibc_data`: glibc's gconv modules, locales and NSS modules, and the libc copy pointed
//!   at them;
//! - `relocate`: the loader and libraries copied (with their `glibc-hwcaps` copies), and the
//!   ELF edits (PT_INTERP, RUNPATH, DF_1_NODEFLIB);
//! - `units`: what scripts and units run, unit `Exec*=` lines rewritten, `--enable` drop-ins;
//! - `report`: data paths to suggest, the extension-release file.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use sysext_core::release;

use elf_closure::{self as elf, ElfError, ElfInfo};
use safefs::rootfs::{self, RootfsError};

mod closure;
mod entries;
mod glibc_data;
mod relocate;
mod report;
mod units;

#[cfg(test)]
mod tests;

pub use entries::{
    check_name, is_inside_tree, parse_entry, place, relative_link, shebang, EntrySpec,
};
pub use glibc_data::{alias_for, is_glibc_library, DataKind, GlibcData, GlibcDataMode};

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
    #[error("cannot point {} at the glibc data flix ships", path.display())]
    Redirect {
        path: PathBuf,
        #[source]
        source: elf_edit::RewriteError,
    },
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
    /// Which of glibc's data (gconv modules, locales, NSS modules) is shipped.
    pub glibc_data: glibc_data::GlibcDataMode,
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
    /// Compiled-in strings overwritten in place (same length): the libc copy's data paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replace_strings: Vec<(String, String)>,
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
    /// glibc's data for the libc copy, when glibc's libc.so.6 is shipped.
    pub glibc_data: Option<GlibcData>,
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

impl<'a> Builder<'a> {
    fn new(root: &'a Path, name: &str) -> Self {
        Builder {
            root,
            name: name.to_string(),
            actions: Vec::new(),
            targets: HashMap::new(),
            mapping: Vec::new(),
            elf_roots: Vec::new(),
            scripts: Vec::new(),
            units: Vec::new(),
            diags: Vec::new(),
        }
    }
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
    fn parents(&mut self, to: &Path) -> Result<(), PlanError> {
        let mut acc = PathBuf::new();
        let comps: Vec<_> = to.components().collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            acc.push(c);
            self.push(Action::Dir { to: acc.clone() })?;
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
    /// The inside-root paths of the entries' and extra libraries' ELF files.
    fn elf_root_paths(&self) -> Vec<PathBuf> {
        self.elf_roots.iter().map(|r| r.1.clone()).collect()
    }
}

/// Resolves the options against the rootfs `root` into a validated plan.
pub fn build(root: &Path, opts: &PlanOptions) -> Result<Plan, PlanError> {
    let name_warnings = check_name(&opts.name)?;
    let name = opts.name.clone();
    let mut b = Builder::new(root, &name);
    for w in name_warnings {
        b.note(Severity::Warning, w, None);
    }
    b.push(Action::Dir { to: "usr".into() })?;
    entries::add_entries(&mut b, &opts.paths)?;
    let lib_dir = Path::new("usr/local").join(&name);
    let extra_roots =
        entries::add_extra_libs(&mut b, &opts.extra_libs, &lib_dir.join("extralibs"))?;

    let architecture = closure::architecture(&b)?;
    let roots = b.elf_root_paths();
    let found = closure::walk(&mut b, &roots, opts.dlopen)?;
    let mut libs = closure::collect_libraries(&mut b, &found, &roots, &extra_roots)?;
    let mut objects = b.elf_root_paths();
    objects.extend(libs.info.iter().map(|l| l.1.clone()));
    let glibc_data = glibc_data::plan(&mut b, opts.glibc_data, &objects, &mut libs, &lib_dir)?;
    relocate::relocate(&mut b, &libs, &lib_dir, !opts.extra_libs.is_empty())?;
    if let Some(data) = &glibc_data {
        glibc_data::redirect_libc(&mut b, data);
    }

    units::check_scripts(&mut b);
    let unit_names = units::rewrite_units(&mut b);
    units::enable(&mut b, &opts.enable, &unit_names)?;

    let suggestions = report::suggest_data_paths(&mut b, &objects);
    let arch = architecture.map(|a| a.0);
    let release = report::write_release(&mut b, opts, arch.clone(), !unit_names.is_empty())?;

    Ok(Plan {
        name,
        root: root.to_path_buf(),
        architecture: arch,
        actions: b.actions,
        libraries: libs.by_name,
        units: unit_names.into_iter().map(|u| u.0).collect(),
        release,
        diagnostics: b.diags,
        suggestions,
        glibc_data,
    })
}
