//! Binaries from other linkers than GNU ld: LLVM's lld and Go's internal linker. Their
//! `.dynamic` has no spare slots (one DT_NULL, nothing after it), Go's layout has no section
//! gap to grow into, and Go binaries carry their own `.note.go.buildid` and non-PIE layout.
//! Each one is rewritten with a long interpreter and RUNPATH (loader and libc copied there),
//! with and without an added DT_NEEDED, then run, traced and stripped.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_edit::{inspect, rewrite, Edits};

/// The loader and libraries the rewritten binaries load, copied under a long path.
struct LibDir {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl LibDir {
    fn new() -> LibDir {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp
            .path()
            .join("usr/local/an-extension-name-long-enough-to-move-things/lib");
        fs::create_dir_all(&dir).unwrap();
        for lib in [
            "/lib64/ld-linux-x86-64.so.2",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib/x86_64-linux-gnu/libm.so.6",
        ] {
            let name = Path::new(lib).file_name().unwrap();
            fs::copy(fs::canonicalize(lib).unwrap(), dir.join(name)).unwrap();
        }
        LibDir { _tmp: tmp, dir }
    }

    fn edits(&self, add_needed: bool) -> Edits {
        let mut e = Edits::default();
        e.interpreter = Some(self.dir.join("ld-linux-x86-64.so.2").display().to_string());
        e.runpath = Some(vec![self.dir.display().to_string()]);
        if add_needed {
            e.add_needed = vec!["libm.so.6".into()];
        }
        e
    }
}

fn host_x86_64() -> bool {
    cfg!(target_arch = "x86_64") && Path::new("/lib64/ld-linux-x86-64.so.2").exists()
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&testkit::run_ok(cmd).stdout).into_owned()
}

/// `.dynamic` holds exactly the entries it uses up to and including one DT_NULL: no slot to
/// spare (readelf counts the entries up to the first DT_NULL; the section header gives the size).
fn assert_no_spare_dynamic_slots(file: &Path) {
    let dynamic = stdout_of(Command::new("readelf").arg("-dW").arg(file));
    let entries: u64 = dynamic
        .lines()
        .find(|l| l.contains("contains") && l.contains("entries"))
        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no dynamic section in {}:\n{dynamic}", file.display()));
    let sections = stdout_of(Command::new("readelf").arg("-SW").arg(file));
    let line = sections
        .lines()
        .find(|l| l.contains(" .dynamic "))
        .unwrap_or_else(|| panic!("no .dynamic section header in {}", file.display()));
    // [Nr] Name Type Address Off Size ES ...: the fields after the name.
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    let size = u64::from_str_radix(fields[4], 16).unwrap();
    let entsize = u64::from_str_radix(fields[5], 16).unwrap();
    assert_eq!(
        size / entsize,
        entries,
        "{} was expected to have a full .dynamic:\n{line}\n{dynamic}",
        file.display()
    );
}

/// Rewrites `bin`, checks that the loader and libc now come from the long directory, that it
/// prints what the original printed, and that it still does so after `strip`.
fn rewrite_run_strip(bin: &Path, libs: &LibDir, add_needed: bool, label: &str) {
    let expected = stdout_of(&mut Command::new(bin));
    let out_path = bin.with_extension(if add_needed { "needed" } else { "moved" });
    let bytes = fs::read(bin).unwrap();
    let out = rewrite(&bytes, &libs.edits(add_needed))
        .unwrap_or_else(|e| panic!("{label}: rewrite failed: {e:#}"));
    let summary = inspect(&out).unwrap();
    assert_eq!(
        summary.interpreter.as_deref(),
        Some(libs.dir.join("ld-linux-x86-64.so.2").to_str().unwrap())
    );
    assert_eq!(summary.runpath.as_deref(), Some(libs.dir.to_str().unwrap()));
    fs::write(&out_path, &out).unwrap();
    fs::set_permissions(
        &out_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let trace = stdout_of(Command::new(&out_path).env("LD_TRACE_LOADED_OBJECTS", "1"));
    let libc_line = trace
        .lines()
        .find(|l| l.contains("libc.so.6"))
        .unwrap_or_else(|| panic!("{label}: libc not loaded:\n{trace}"));
    assert!(
        libc_line.contains(libs.dir.to_str().unwrap()),
        "{label}: libc from the wrong place:\n{trace}"
    );
    assert!(
        trace.contains(&format!("{}/ld-linux-x86-64.so.2", libs.dir.display())),
        "{label}: loader from the wrong place:\n{trace}"
    );
    if add_needed {
        assert!(
            trace
                .lines()
                .any(|l| l.contains("libm.so.6") && l.contains(libs.dir.to_str().unwrap())),
            "{label}: the added libm.so.6 is not loaded from the long directory:\n{trace}"
        );
    }
    assert_eq!(
        stdout_of(&mut Command::new(&out_path)),
        expected,
        "{label}: output changed"
    );

    let stripped = out_path.with_extension("stripped");
    testkit::run_ok(
        Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(&out_path),
    );
    assert_eq!(
        stdout_of(&mut Command::new(&stripped)),
        expected,
        "{label}: output changed after strip"
    );
}

const C_PROGRAM: &str = "#include <stdio.h>\n#include <math.h>\n\
    int main(int c, char **v){ (void)v; printf(\"lld program %d %.1f\\n\", c, sqrt(16.0)); return 0; }\n";

#[test]
fn lld_binaries_without_spare_dynamic_slots() {
    if !host_x86_64() || !testkit::require_tool("ld.lld") || !testkit::require_tool("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("p.c");
    fs::write(&src, C_PROGRAM).unwrap();
    let libs = LibDir::new();
    for (name, flags) in [("lld-pie", &["-pie"][..]), ("lld-nopie", &["-no-pie"][..])] {
        let bin = tmp.path().join(name);
        testkit::run_ok(
            Command::new("gcc")
                .arg("-fuse-ld=lld")
                .args(flags)
                .arg("-o")
                .arg(&bin)
                .arg(&src)
                .arg("-lm"),
        );
        let comment = stdout_of(Command::new("readelf").args(["-p", ".comment"]).arg(&bin));
        assert!(
            comment.contains("LLD "),
            "{name} not linked by lld:\n{comment}"
        );
        assert_no_spare_dynamic_slots(&bin);
        rewrite_run_strip(&bin, &libs, false, name);
        rewrite_run_strip(&bin, &libs, true, name);
    }
}

const GO_PROGRAM: &str = r#"package main

import (
	"fmt"
	"net"
	"os/user"
)

// net and os/user make the Go linker produce a dynamically linked binary on its own
// (internal linking: no gcc, no ld).
func main() {
	u, err := user.Current()
	if err != nil {
		panic(err)
	}
	addrs, _ := net.LookupHost("localhost")
	fmt.Printf("go program uid=%s localhost=%v\n", u.Uid, len(addrs) > 0)
}
"#;

#[test]
fn go_internal_linker_binaries() {
    if !host_x86_64() || !testkit::require_tool("go") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("main.go"), GO_PROGRAM).unwrap();
    fs::write(src.join("go.mod"), "module flixtest\n\ngo 1.19\n").unwrap();
    let libs = LibDir::new();
    for (name, mode) in [("go-exe", "exe"), ("go-pie", "pie")] {
        let bin = tmp.path().join(name);
        testkit::run_ok(
            Command::new("go")
                .current_dir(&src)
                .env("HOME", tmp.path())
                .env("GOCACHE", tmp.path().join("gocache"))
                .env("GOPATH", tmp.path().join("gopath"))
                .env("GOPROXY", "off")
                .env("GOFLAGS", "-mod=mod")
                .env("CGO_ENABLED", "1")
                .args([
                    "build",
                    "-ldflags=-linkmode=internal",
                    "-buildmode",
                    mode,
                    "-o",
                ])
                .arg(&bin)
                .arg("."),
        );
        let hdr = stdout_of(Command::new("readelf").arg("-lW").arg(&bin));
        assert!(
            hdr.contains("Requesting program interpreter"),
            "{name} is not dynamically linked:\n{hdr}"
        );
        assert!(
            fs::read(&bin)
                .unwrap()
                .windows(b"Go build".len())
                .any(|w| w == b"Go build"),
            "{name}: no Go build note"
        );
        assert_no_spare_dynamic_slots(&bin);
        rewrite_run_strip(&bin, &libs, false, name);
        rewrite_run_strip(&bin, &libs, true, name);
    }
}
