//! Acceptance: every dynamic ELF of the host's /usr/bin and /usr/lib/x86_64-linux-gnu, rewritten
//! with a long interpreter and RUNPATH into a relocated library folder, still loads from there.
//! Also: `strip` after a rewrite, appended payloads, and print operations against patchelf.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use elf_edit::{inspect, rewrite, Edits, ElfSummary, RewriteError};

const LIBDIR: &str = "/usr/lib/x86_64-linux-gnu";
const LOADER: &str = "/lib64/ld-linux-x86-64.so.2";
const LONG: &str = "usr/local/a-long-extension-name-for-testing";

fn host_ok() -> bool {
    cfg!(target_arch = "x86_64") && Path::new(LOADER).exists() && Path::new(LIBDIR).is_dir()
}

fn read_elf(path: &Path) -> Option<(Vec<u8>, ElfSummary)> {
    let bytes = fs::read(path).ok()?;
    let info = inspect(&bytes).ok()?;
    Some((bytes, info))
}

fn elf_files(dir: &Path, recursive: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(dir)
        .max_depth(if recursive { usize::MAX } else { 1 })
        .sort_by_file_name();
    for e in walk.into_iter().filter_map(Result::ok) {
        if e.file_type().is_file() {
            let mut head = [0u8; 4];
            if let Ok(mut f) = fs::File::open(e.path()) {
                if std::io::Read::read_exact(&mut f, &mut head).is_ok() && &head == b"\x7fELF" {
                    out.push(e.path().to_path_buf());
                }
            }
        }
    }
    out
}

fn is_loader(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
        || fs::canonicalize(path).ok() == fs::canonicalize(LOADER).ok()
}

/// Where the host loader would find `name` for `obj` (RPATH/RUNPATH with $ORIGIN, then the
/// system directories).
fn find_lib(obj: &Path, info: &ElfSummary, name: &str) -> Option<PathBuf> {
    let origin = obj
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned();
    let mut dirs: Vec<String> = Vec::new();
    for p in [&info.runpath, &info.rpath].into_iter().flatten() {
        dirs.extend(
            p.split(':')
                .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin)),
        );
    }
    dirs.extend([
        LIBDIR.to_string(),
        "/lib/x86_64-linux-gnu".into(),
        "/usr/lib".into(),
        "/lib".into(),
    ]);
    dirs.into_iter()
        .map(|d| Path::new(&d).join(name))
        .find(|p| p.is_file())
}

fn run_parallel<T: Send + Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let n = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let next = Mutex::new(0usize);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..n {
            s.spawn(|| loop {
                let i = {
                    let mut g = next.lock().unwrap();
                    let i = *g;
                    *g += 1;
                    i
                };
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}

/// Run a command; a file another thread has just written may still be open in a child being
/// forked at that moment (ETXTBSY), so retry that case.
fn output_retrying(cmd: &mut Command) -> std::process::Output {
    for _ in 0..50 {
        match cmd.output() {
            Ok(o) => return o,
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("cannot run {cmd:?}: {e}"),
        }
    }
    panic!("cannot run {cmd:?}: text file busy")
}

const DL_HELPER: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
int main(int argc, char **argv) {
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) { printf("FAIL %s\n", dlerror()); return 1; }
    if (argc > 2) {
        FILE *f = fopen("/proc/self/maps", "r");
        char line[8192];
        while (f && fgets(line, sizeof line, f)) {
            char *p = strchr(line, '/');
            if (p && strstr(p, ".so") && strncmp(p, argv[2], strlen(argv[2])) != 0) {
                printf("OUTSIDE %s", p);
                return 2;
            }
        }
    }
    printf("OK\n");
    return 0;
}
"#;

#[test]
fn host_binaries_still_load_after_long_interpreter_and_runpath() {
    if !host_ok() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run on an x86-64 glibc host"
        );
        eprintln!("skipped: not an x86-64 Debian host");
        return;
    }
    assert!(
        testkit::require_tool("cc"),
        "cc is needed to build the dlopen helper"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join(LONG);
    let subjects_dir = d.join("subjects");
    let bin_dir = d.join("bin");
    fs::create_dir_all(&subjects_dir).unwrap();
    fs::create_dir_all(&bin_dir).unwrap();
    let d_str = d.to_string_lossy().into_owned();
    let interp = format!("{d_str}/ld-linux-x86-64.so.2");
    fs::copy(LOADER, &interp).unwrap();

    let lib_edits = {
        let mut e = Edits::default();
        e.runpath = Some(vec![d_str.clone()]);
        e.nodeflib = true;
        e
    };
    let exe_edits = {
        let mut e = lib_edits.clone();
        e.interpreter = Some(interp.clone());
        e
    };

    // Every file (about 15 s in a debug build on 2 cores): no sampling needed.
    let programs: Vec<PathBuf> = elf_files(Path::new("/usr/bin"), false);
    let libraries: Vec<PathBuf> = elf_files(Path::new(LIBDIR), true);

    // Classify and collect the dependency closure into D (copied flat, by name).
    let mut deps: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut queue: Vec<(PathBuf, ElfSummary)> = Vec::new();
    let mut exes = Vec::new();
    let mut libs = Vec::new();
    let mut skipped_static = 0usize;
    for p in programs.iter().chain(libraries.iter()) {
        if is_loader(p) {
            continue;
        }
        let Some((_, info)) = read_elf(p) else {
            continue;
        };
        if !info.has_dynamic || info.machine != 62 {
            skipped_static += 1;
            continue;
        }
        if p.starts_with("/usr/bin") {
            if info.interpreter.is_none() {
                skipped_static += 1;
                continue;
            }
            exes.push((p.clone(), info.clone()));
        } else {
            libs.push((p.clone(), info.clone()));
        }
        queue.push((p.clone(), info));
    }
    while let Some((obj, info)) = queue.pop() {
        for name in &info.needed {
            if deps.contains_key(name) || name.starts_with("ld-linux") {
                continue;
            }
            if let Some(found) = find_lib(&obj, &info, name) {
                if let Some((_, i)) = read_elf(&found) {
                    deps.insert(name.clone(), found.clone());
                    queue.push((found, i));
                }
            }
        }
    }

    // The helper, built with cc; a copy relocated like the programs checks the rewritten libs.
    let helper_src = tmp.path().join("dl.c");
    fs::write(&helper_src, DL_HELPER).unwrap();
    let host_helper = tmp.path().join("dl-host");
    testkit::run_ok(
        Command::new("cc")
            .arg("-o")
            .arg(&host_helper)
            .arg(&helper_src)
            .arg("-ldl"),
    );
    let helper = bin_dir.join("dl-helper");
    let helper_bytes = rewrite(&fs::read(&host_helper).unwrap(), &exe_edits).unwrap();
    fs::write(&helper, helper_bytes).unwrap();
    testkit::run_ok(Command::new("chmod").arg("755").arg(&helper));

    // Rewrite the dependency libraries into D.
    let dep_list: Vec<(String, PathBuf)> = deps.into_iter().collect();
    let dep_results = run_parallel(&dep_list, |(name, src)| {
        let bytes = fs::read(src).unwrap();
        let out = match rewrite(&bytes, &lib_edits) {
            Ok(o) => o,
            Err(RewriteError::Loader(_)) => bytes,
            Err(e) => return Err(format!("{}: {e}", src.display())),
        };
        fs::write(d.join(name), out).unwrap();
        Ok(())
    });
    let dep_errors: Vec<String> = dep_results.into_iter().filter_map(Result::err).collect();

    // Programs: LD_TRACE_LOADED_OBJECTS on the original and on the rewritten copy.
    let exe_results = run_parallel(&exes, |(src, _)| -> Result<bool, String> {
        let trace = |p: &Path| {
            let mut cmd = Command::new(p);
            cmd.env("LD_TRACE_LOADED_OBJECTS", "1");
            String::from_utf8_lossy(&output_retrying(&mut cmd).stdout).into_owned()
        };
        let before = trace(src);
        if before.contains("not found") || !before.contains("=>") {
            return Ok(false); // broken or not traceable on the host already
        }
        let bytes = fs::read(src).unwrap();
        let out = rewrite(&bytes, &exe_edits).map_err(|e| format!("{}: {e}", src.display()))?;
        let dst = bin_dir.join(src.file_name().unwrap());
        fs::write(&dst, out).unwrap();
        fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let after = trace(&dst);
        let mut problems = Vec::new();
        for line in after.lines() {
            if let Some((_, rest)) = line.split_once("=> ") {
                if !rest.starts_with(&d_str) {
                    problems.push(line.trim().to_string());
                }
            }
        }
        if !after.contains(&interp) {
            problems.push("relocated interpreter not used".into());
        }
        if problems.is_empty() {
            Ok(true)
        } else {
            Err(format!(
                "{}: {}\n{after}",
                src.display(),
                problems.join("; ")
            ))
        }
    });

    // Libraries: dlopen(RTLD_NOW) of the original (host helper) and of the rewritten copy
    // (relocated helper, every mapped .so must come from D).
    let lib_items: Vec<(usize, PathBuf)> =
        libs.iter().map(|(p, _)| p.clone()).enumerate().collect();
    let lib_results = run_parallel(&lib_items, |(i, src)| -> Result<Option<bool>, String> {
        let before = Command::new(&host_helper).arg(src).output().unwrap();
        if !before.status.success() {
            return Ok(None);
        }
        let bytes = fs::read(src).unwrap();
        let out = match rewrite(&bytes, &lib_edits) {
            Ok(o) => o,
            Err(RewriteError::Loader(_)) => return Ok(None),
            Err(e @ RewriteError::Unsupported(_)) => {
                return Err(format!("UNSUPPORTED {}: {e}", src.display()))
            }
            Err(e) => return Err(format!("{}: {e}", src.display())),
        };
        let dst = subjects_dir.join(format!(
            "{i}-{}",
            src.file_name().unwrap().to_string_lossy()
        ));
        fs::write(&dst, out).unwrap();
        let after = output_retrying(Command::new(&helper).arg(&dst).arg(&d_str));
        if after.status.success() {
            Ok(Some(true))
        } else {
            Err(format!(
                "{}: {}{}",
                src.display(),
                String::from_utf8_lossy(&after.stdout),
                String::from_utf8_lossy(&after.stderr)
            ))
        }
    });

    let exe_ok = exe_results.iter().filter(|r| matches!(r, Ok(true))).count();
    let exe_base = exe_results
        .iter()
        .filter(|r| matches!(r, Ok(false)))
        .count();
    let lib_ok = lib_results
        .iter()
        .filter(|r| matches!(r, Ok(Some(true))))
        .count();
    let lib_base = lib_results.iter().filter(|r| matches!(r, Ok(None))).count();
    let unsupported: Vec<&String> = lib_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| e.starts_with("UNSUPPORTED"))
        .collect();
    let failures: Vec<&String> = exe_results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .chain(
            lib_results
                .iter()
                .filter_map(|r| r.as_ref().err())
                .filter(|e| !e.starts_with("UNSUPPORTED")),
        )
        .chain(dep_errors.iter())
        .collect();
    eprintln!(
        "programs: {exe_ok} load from the new dir ({exe_base} already broken on the host, {skipped_static} static or foreign skipped); \
         libraries: {lib_ok} dlopen from the new dir ({lib_base} fail dlopen on the host or are the loader); \
         {} dependency libraries rewritten; {} unsupported",
        dep_list.len(),
        unsupported.len()
    );
    for u in &unsupported {
        eprintln!("  {u}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        unsupported.len() * 100 <= lib_items.len().max(1),
        "too many unsupported files"
    );
    assert!(
        exe_ok > 50 && lib_ok > 50,
        "too few files checked: {exe_ok} programs, {lib_ok} libraries"
    );
}
