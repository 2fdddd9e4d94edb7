//! The closure step: one architecture for all programs, the libraries the loader would load
//! (missing ones are an error when a program or extra library needs them, a warning when only a
//! plugin does), and the flat library dir keyed by the name each library is loaded by.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use elf_closure::{self as elf, ElfInfo};
use sysext_core::release;

use super::entries::read_all;
use super::{Builder, PlanError, Severity};

/// The libraries of the flat library dir and the loader, found by [`collect_libraries`].
pub(super) struct Libraries {
    /// Loaded name → real inside-root path.
    pub(super) by_name: BTreeMap<String, PathBuf>,
    /// (loaded name, real inside-root path, info), in closure order.
    pub(super) info: Vec<(String, PathBuf, ElfInfo)>,
    /// The loader: file name and real inside-root path.
    pub(super) loader: Option<(String, PathBuf)>,
}

fn arch_of(info: &ElfInfo) -> String {
    release::arch_from_elf(info.machine, info.class64, info.little_endian)
        .map(str::to_string)
        .unwrap_or_else(|| format!("machine {}", info.machine))
}

/// The one architecture of the ELF entries and extra libraries (with the first file of it);
/// two architectures are an error.
pub(super) fn architecture(b: &Builder) -> Result<Option<(String, PathBuf)>, PlanError> {
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
    Ok(architecture)
}

/// The closure of every ELF root, with notes on what dlopen metadata added or names but the
/// rootfs lacks; a missing library is an error when a root that must run needs it.
pub(super) fn walk(
    b: &mut Builder,
    roots: &[PathBuf],
    dlopen: elf::dlopen::DlopenFollow,
) -> Result<elf::Closure, PlanError> {
    let closure_opts = elf::ClosureOptions::default().following_dlopen(dlopen);
    let closure = elf::closure(b.root, roots, &closure_opts).map_err(PlanError::Closure)?;
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
    Ok(closure)
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

/// The flat library dir, keyed by the loaded name; two different files under one name are an
/// error. The roots are shipped at their own place, the extra libraries in extralibs/.
pub(super) fn collect_libraries(
    b: &mut Builder,
    closure: &elf::Closure,
    roots: &[PathBuf],
    extra_roots: &[PathBuf],
) -> Result<Libraries, PlanError> {
    let root_set: BTreeSet<&PathBuf> = roots.iter().collect();
    let mut libraries: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut lib_info: Vec<(String, PathBuf, ElfInfo)> = Vec::new();
    let mut loader: Option<(String, PathBuf)> = None;
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
    Ok(Libraries {
        by_name: libraries,
        info: lib_info,
        loader,
    })
}
