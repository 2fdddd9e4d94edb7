//! What the plan tells the user and writes last: glibc's data loaded through fixed paths,
//! data paths the shipped objects mention but the entries leave out, and the
//! extension-release file.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use safefs::rootfs;
use sysext_core::release::{self, ExtensionRelease};

use super::{Action, Builder, PlanError, PlanOptions, Severity};

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
/// Notes which of `objects` (inside-root paths) load glibc's data through fixed paths.
pub(super) fn note_glibc_data(b: &mut Builder, objects: &[PathBuf]) {
    // Said only when a shipped object calls into them, naming which and why.
    let users = glibc_data_users(b, objects);
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

/// The data paths `objects` mention that are in the rootfs but not shipped, with a note
/// listing the first ten.
pub(super) fn suggest_data_paths(
    b: &mut Builder,
    objects: &[PathBuf],
) -> Vec<crate::data_paths::DataPath> {
    let suggestions = {
        let shipped = |p: &Path| {
            let real = rootfs::resolve(b.root, p, true).unwrap_or_else(|_| p.to_path_buf());
            b.translate(p).is_some()
                || b.translate(&real).is_some()
                || b.mapping
                    .iter()
                    .any(|(src, _)| src.starts_with(p) || src.starts_with(&real))
        };
        crate::data_paths::suggestions(b.root, objects, shipped)
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
    suggestions
}

/// Writes the extension-release file; returns its text.
pub(super) fn write_release(
    b: &mut Builder,
    opts: &PlanOptions,
    arch: Option<String>,
    reload_manager: bool,
) -> Result<String, PlanError> {
    let release = ExtensionRelease {
        id: opts.os.clone().unwrap_or_else(|| "_any".into()),
        version_id: opts.version_id.clone(),
        sysext_level: opts.sysext_level.clone(),
        architecture: arch.filter(|a| !a.starts_with("machine ")),
        reload_manager,
        ..Default::default()
    };
    let rel_path = release::release_file_path(&b.name);
    b.parents(&rel_path)?;
    let release_text = release.render();
    b.push(Action::Write {
        to: rel_path,
        contents: release_text.clone(),
        mode: 0o644,
    })?;
    Ok(release_text)
}
