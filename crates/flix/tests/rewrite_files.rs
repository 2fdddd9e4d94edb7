//! flix's file operations around the ELF editor: `flix-patchelf`'s print operations against
//! Debian's patchelf, and [`flix::rewrite::rewrite_file`] (atomic replacement, mode kept, the
//! input untouched on failure). The editor's own cases are in crates/elf-edit/tests.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_edit::{inspect, Edits};
use flix::rewrite::rewrite_file;

const LONG_DIR: &str = "/tmp/xyz/usr/local/a-long-extension-name-for-testing";

fn edits(interp: Option<&str>, runpath: &[&str]) -> Edits {
    let mut e = Edits::default();
    e.interpreter = interp.map(str::to_string);
    e.runpath = Some(runpath.iter().map(|s| s.to_string()).collect());
    e
}

fn host_x86_64() -> bool {
    cfg!(target_arch = "x86_64") && Path::new("/lib64/ld-linux-x86-64.so.2").exists()
}

/// Print operations agree with Debian's patchelf on a sample of host binaries.
#[test]
fn print_operations_match_patchelf() {
    if !host_x86_64() || !testkit::require_tool("patchelf") {
        return;
    }
    let ours = env!("CARGO_BIN_EXE_flix-patchelf");
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/bin", "/usr/lib/x86_64-linux-gnu"] {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        v.sort();
        files.extend(v.into_iter().step_by(15));
    }
    let mut compared = 0;
    for f in &files {
        let Ok(bytes) = fs::read(f) else { continue };
        if !bytes.starts_with(b"\x7fELF") {
            continue;
        }
        for op in [
            "--print-interpreter",
            "--print-rpath",
            "--print-needed",
            "--print-soname",
        ] {
            let a = Command::new("patchelf").arg(op).arg(f).output().unwrap();
            let b = Command::new(ours).arg(op).arg(f).output().unwrap();
            assert_eq!(
                a.status.success(),
                b.status.success(),
                "{op} {}: exit status differs",
                f.display()
            );
            if a.status.success() {
                assert_eq!(
                    String::from_utf8_lossy(&a.stdout),
                    String::from_utf8_lossy(&b.stdout),
                    "{op} {}",
                    f.display()
                );
            }
        }
        compared += 1;
    }
    assert!(compared > 20, "only {compared} files compared");
}

#[test]
fn rewrite_file_replaces_atomically_and_keeps_the_mode() {
    use std::os::unix::fs::PermissionsExt;
    if !host_x86_64() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("prog");
    fs::copy("/usr/bin/ls", &f).unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o750)).unwrap();
    rewrite_file(&f, &edits(Some(&format!("{LONG_DIR}/ld.so")), &[LONG_DIR])).unwrap();
    assert_eq!(
        fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    let info = inspect(&fs::read(&f).unwrap()).unwrap();
    assert_eq!(info.runpath.as_deref(), Some(LONG_DIR));
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "temporary file left behind"
    );

    // A failed rewrite leaves the input untouched and names the file.
    let before = fs::read(&f).unwrap();
    let mut e = Edits::default();
    e.interpreter = Some("/x".into());
    let lib = tmp.path().join("libz.so.1");
    fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &lib).unwrap();
    let err = rewrite_file(&lib, &e).unwrap_err();
    assert!(err.to_string().contains("libz.so.1"), "{err}");
    assert_eq!(fs::read(&f).unwrap(), before);
}
