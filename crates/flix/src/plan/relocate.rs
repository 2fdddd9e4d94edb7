//! The relocation: the loader copied to `usr/local/NAME/`, each root's ELF edits (PT_INTERP,
//! RUNPATH, DF_1_NODEFLIB), and the libraries copied flat with their `glibc-hwcaps` copies.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use elf_closure::{self as elf, ElfInfo};
use safefs::rootfs;

use super::closure::Libraries;
use super::{Action, Builder, Diagnostic, ElfEdits, PlanError, Severity};

/// Copies the loader and the libraries into `lib_dir` and sets the ELF edits of every shipped
/// dynamic object; `with_extralibs` adds the extralibs dir to each RUNPATH.
pub(super) fn relocate(
    b: &mut Builder,
    libs: &Libraries,
    lib_dir: &Path,
    with_extralibs: bool,
) -> Result<(), PlanError> {
    let name = b.name.clone();
    let base_runpath = {
        let mut v = vec![format!("/usr/local/{name}")];
        if with_extralibs {
            v.push(format!("/usr/local/{name}/extralibs"));
        }
        v
    };
    let new_interp = libs
        .loader
        .as_ref()
        .map(|(base, _)| format!("/usr/local/{name}/{base}"));
    if let Some((base, real)) = &libs.loader {
        b.parents(&lib_dir.join("x"))?;
        b.push(Action::Copy {
            from: b.host(real),
            to: lib_dir.join(base),
            mode: 0o755,
            elf: None,
        })?;
    }
    let mut diags = Vec::new();
    edit_roots(b, &base_runpath, new_interp.as_deref(), &mut diags);
    copy_libraries(b, libs, lib_dir, &base_runpath, &mut diags)?;
    b.diags.extend(diags);
    Ok(())
}

/// The RUNPATH of a relocated object: `base`, then its own RPATH/RUNPATH dirs translated into
/// the new layout when they are shipped (a dir that is not shipped is noted).
fn runpath_for(
    b: &Builder,
    base: &[String],
    inside: &Path,
    info: &ElfInfo,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let mut rp = base.to_vec();
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
}

/// The ELF edits of the entries and resource ELF files.
fn edit_roots(
    b: &mut Builder,
    base_runpath: &[String],
    new_interp: Option<&str>,
    diags: &mut Vec<Diagnostic>,
) {
    let roots_info: Vec<(usize, PathBuf, ElfInfo)> = b
        .elf_roots
        .iter()
        .map(|(i, p, info, _)| (*i, p.clone(), info.clone()))
        .collect();
    for (i, inside, info) in roots_info {
        // The loader itself (an entry such as /usr/bin/ld.so) is shipped as it is.
        let is_loader = info.interpreter.is_none()
            && inside
                .file_name()
                .is_some_and(|n| elf_edit::is_loader_name(&n.to_string_lossy()));
        if !info.is_dynamic || is_loader {
            continue;
        }
        let edits = ElfEdits {
            interpreter: info
                .interpreter
                .as_ref()
                .and(new_interp.map(str::to_string)),
            runpath: runpath_for(b, base_runpath, &inside, &info, diags),
            nodeflib: true,
            replace_strings: Vec::new(),
        };
        if let Action::Copy { elf, .. } = &mut b.actions[i] {
            *elf = Some(edits);
        }
    }
}

/// The libraries, flat in `lib_dir`, with their ELF edits.
fn copy_libraries(
    b: &mut Builder,
    libs: &Libraries,
    lib_dir: &Path,
    base_runpath: &[String],
    diags: &mut Vec<Diagnostic>,
) -> Result<(), PlanError> {
    if !libs.info.is_empty() {
        b.parents(&lib_dir.join("x"))?;
    }
    for (lname, real, info) in &libs.info {
        // A library with glibc-hwcaps copies: the baseline copy goes flat, each x86-64-vN copy
        // to usr/local/NAME/glibc-hwcaps/x86-64-vN/, where the loader looks first (inside
        // every RUNPATH dir) on a CPU of that level.
        let variants = hwcaps_variants(b, lname, real, info, &libs.by_name, diags);
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
                runpath: runpath_for(b, base_runpath, &real, &info, diags),
                nodeflib: true,
                replace_strings: Vec::new(),
            });
            b.push(Action::Copy {
                from: b.host(&real),
                to,
                mode: 0o755,
                elf: edits,
            })?;
        }
    }
    Ok(())
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
            .filter(|n| !shipped.contains_key(*n) && !elf_edit::is_loader_name(n))
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
