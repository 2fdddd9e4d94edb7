//! The closure of every dynamically linked executable of the Debian trixie fixture equals what
//! that rootfs's own loader reports (`chroot ROOT /lib64/ld-linux-x86-64.so.2 --list FILE`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_closure::{self as elf, ClosureOptions, Reason};
use safefs::rootfs;

/// Real paths and missing names the reference loader reports.
fn loader_list(
    root: &Path,
    loader: &str,
    file: &Path,
) -> Result<(BTreeSet<PathBuf>, BTreeSet<String>), String> {
    let out = Command::new("chroot")
        .arg(root)
        .arg(loader)
        .arg("--list")
        .arg(file)
        .output()
        .map_err(|e| format!("chroot: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && !text.contains("not found") {
        return Err(format!(
            "{} --list {} failed: {}{}",
            loader,
            file.display(),
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut paths = BTreeSet::new();
    let mut missing = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.contains("vdso") || line == "statically linked" {
            continue;
        }
        let path = if let Some((name, rest)) = line.split_once(" => ") {
            if rest.trim() == "not found" {
                missing.insert(name.trim().to_string());
                continue;
            }
            rest.rsplit_once(" (").map_or(rest, |(p, _)| p).trim()
        } else {
            line.rsplit_once(" (").map_or(line, |(p, _)| p).trim()
        };
        let real = rootfs::resolve(root, Path::new(path), true)
            .map_err(|e| format!("{}: loader reported {path}: {e}", file.display()))?;
        paths.insert(real);
    }
    // The interpreter is mapped in every process, but glibc lists it only when some DT_NEEDED
    // names it (libc.so.6 does): count it in.
    paths.insert(rootfs::resolve(root, Path::new(loader), true).map_err(|e| e.to_string())?);
    Ok((paths, missing))
}

/// Every regular ELF file with a PT_INTERP under the usual executable dirs.
fn executables(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["usr/bin", "usr/sbin", "usr/libexec", "usr/lib"] {
        for e in walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_map(Result::ok)
        {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(Some(info)) = elf::scan_file(e.path()) else {
                continue;
            };
            if info.interpreter.is_some() {
                let inside = Path::new("/").join(e.path().strip_prefix(root).unwrap());
                out.push(inside);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn closure_matches_the_trixie_loader_for_every_executable() {
    if !testkit::require_root("chroot into the trixie fixture") {
        return;
    }
    let root = testkit::fixtures::trixie_rootfs();
    let exes = executables(&root);
    assert!(
        exes.len() > 100,
        "only {} executables found in {}",
        exes.len(),
        root.display()
    );
    // The loader in the chroot runs on this CPU: compare at this CPU's glibc-hwcaps level.
    let opts = ClosureOptions::for_running_cpu();
    let threads = 4;
    let chunk = exes.len().div_ceil(threads);
    let results: Vec<Vec<(PathBuf, Option<String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = exes
            .chunks(chunk)
            .map(|part| {
                let root = &root;
                let opts = &opts;
                s.spawn(move || {
                    part.iter()
                        .map(|exe| {
                            let loader = elf::scan_file(&rootfs::host_path(root, exe))
                                .ok()
                                .flatten()
                                .and_then(|i| i.interpreter)
                                .unwrap_or_default();
                            let want = match loader_list(root, &loader, exe) {
                                Ok(w) => w,
                                Err(e) => return (exe.clone(), Some(e)),
                            };
                            let c = match elf::closure(root, std::slice::from_ref(exe), opts) {
                                Ok(c) => c,
                                Err(e) => return (exe.clone(), Some(format!("closure: {e}"))),
                            };
                            let got: BTreeSet<PathBuf> = c
                                .objects
                                .iter()
                                .filter(|o| o.reason != Reason::Requested)
                                .map(|o| o.real_path.clone())
                                .collect();
                            let got_missing: BTreeSet<String> =
                                c.missing.iter().map(|m| m.name.clone()).collect();
                            if (got.clone(), got_missing.clone()) == want {
                                (exe.clone(), None)
                            } else {
                                let only_loader: Vec<_> = want.0.difference(&got).collect();
                                let only_ours: Vec<_> = got.difference(&want.0).collect();
                                (
                                    exe.clone(),
                                    Some(format!(
                                        "only the loader: {only_loader:?}; only ours: {only_ours:?}; missing loader {:?} ours {:?}",
                                        want.1, got_missing
                                    )),
                                )
                            }
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let results: Vec<_> = results.into_iter().flatten().collect();
    let failures: Vec<_> = results
        .iter()
        .filter_map(|(e, f)| f.as_ref().map(|f| (e, f)))
        .collect();
    eprintln!(
        "closure vs trixie ld.so --list: {} executables compared, {} matched",
        results.len(),
        results.len() - failures.len()
    );
    for (e, f) in &failures {
        eprintln!("MISMATCH {}: {f}", e.display());
    }
    assert!(
        failures.is_empty(),
        "{} of {} executables differ",
        failures.len(),
        results.len()
    );
}

#[test]
fn the_fixture_ld_so_cache_is_read() {
    let root = testkit::fixtures::trixie_rootfs();
    let cache = elf::LdCache::read(&root.join("etc/ld.so.cache")).unwrap();
    assert!(cache.entries.len() > 50, "{} entries", cache.entries.len());
    assert_eq!(
        cache.lookup("libc.so.6", |f| f == 0x0303, &[]),
        Some("/lib/x86_64-linux-gnu/libc.so.6")
    );
    assert_eq!(cache.lookup("libc.so.6", |f| f == 0x0a03, &[]), None);
}
