//! `sysext check` on the dynamic ELF files of real images: programs built with `cc` whose
//! library is shipped under their RUNPATH or absent, a copy of the host's `/usr/bin/true`
//! (shipped as `usr/bin/tools-true`, a name the host lacks, so it hides nothing), the
//! trixie fixture's `b3sum` (amd64 and arm64), each as a folder and packed to `.raw` by
//! `sysext pack`, checked against the running host `/` and against a `--root` folder.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

/// An extension folder `DIR/NAME` with `release` as its release file, no other file yet.
fn image(dir: &Path, name: &str, release: &str) -> PathBuf {
    let t = dir.join(name);
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::write(rel.join(format!("extension-release.{name}")), release).unwrap();
    t
}

fn cc(args: &[&str]) {
    testkit::run_ok(Command::new("cc").args(args));
}

fn check(image: &Path, extra: &[&str]) -> Output {
    sysext()
        .arg("check")
        .arg("--json")
        .arg(image)
        .args(extra)
        .output()
        .unwrap()
}

/// Exit code and `(code, path, message)` of every finding, from `--json`.
fn findings(out: &Output) -> (i32, Vec<(String, String, String)>) {
    let code = out.status.code().unwrap();
    assert!(
        code != 2,
        "sysext check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap_or("").to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (code, f)
}

/// Packs the folder to `NAME.raw` beside it.
fn pack(folder: &Path) -> PathBuf {
    let raw = folder.with_extension("raw");
    testkit::run_ok(sysext().arg("pack").arg(folder).arg(&raw));
    raw
}

#[test]
fn libraries_are_looked_for_in_the_image_and_on_the_host() {
    if !testkit::require_tool("cc") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("foo.c"), "int foo(void) { return 0; }\n").unwrap();
    fs::write(src.join("bar.c"), "int bar(void) { return 0; }\n").unwrap();
    fs::write(
        src.join("foo-main.c"),
        "int foo(void);\nint main(void) { return foo(); }\n",
    )
    .unwrap();
    fs::write(
        src.join("bar-main.c"),
        "int bar(void);\nint main(void) { return bar(); }\n",
    )
    .unwrap();
    let s = |f: &str| src.join(f).to_string_lossy().into_owned();

    let t = image(d.path(), "tools", "ID=_any\nARCHITECTURE=x86-64\n");
    let p = |f: &str| t.join(f).to_string_lossy().into_owned();
    fs::copy("/usr/bin/true", t.join("usr/bin/tools-true")).unwrap();
    fs::create_dir_all(t.join("usr/lib/tools")).unwrap();
    // libfoo only in the image, found through the program's RUNPATH.
    cc(&[
        "-shared",
        "-fPIC",
        "-o",
        &p("usr/lib/tools/libfoo.so"),
        &s("foo.c"),
    ]);
    let runpath = "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib/tools";
    cc(&[
        "-o",
        &p("usr/bin/foo"),
        &s("foo-main.c"),
        "-L",
        &p("usr/lib/tools"),
        "-lfoo",
        runpath,
    ]);
    testkit::dirs_0755(&t);
    let (code, f) = findings(&check(&t, &[]));
    assert_eq!((code, &f), (0, &vec![]), "true and foo with libfoo shipped");
    let raw = pack(&t);
    let (code, f) = findings(&check(&raw, &[]));
    assert_eq!((code, &f), (0, &vec![]), "the same image packed");

    // libbar linked from outside the image: nowhere in the merged view.
    cc(&["-shared", "-fPIC", "-o", &s("libbar.so"), &s("bar.c")]);
    cc(&[
        "-o",
        &p("usr/bin/bar"),
        &s("bar-main.c"),
        "-L",
        &src.to_string_lossy(),
        "-lbar",
        runpath,
    ]);
    let (code, f) = findings(&check(&t, &[]));
    assert_eq!(code, 1);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].0.as_str(), f[0].1.as_str()),
        ("missing-library", "usr/bin/bar")
    );
    assert!(f[0].2.contains("libbar.so"), "{}", f[0].2);
    assert!(f[0].2.contains("make sure the host has it"), "{}", f[0].2);
    // Plain output: exit 1 and the finding on stdout.
    let plain = sysext().arg("check").arg(&t).output().unwrap();
    assert_eq!(plain.status.code(), Some(1));
    let text = String::from_utf8_lossy(&plain.stdout);
    assert!(
        text.contains("error[missing-library] usr/bin/bar: library libbar.so"),
        "{text}"
    );
    fs::remove_file(&raw).unwrap();
    let raw = pack(&t);
    let (code, raw_f) = findings(&check(&raw, &[]));
    assert_eq!((code, &raw_f), (1, &f), "the same image packed");

    // With an os-release file alone there is no host tree: skipped, and said so.
    let only = sysext()
        .arg("check")
        .arg(&t)
        .arg("--host-os-release")
        .arg("/etc/os-release")
        .output()
        .unwrap();
    assert_eq!(only.status.code(), Some(0));
    let text = String::from_utf8_lossy(&only.stdout);
    assert!(text.contains("note: the libraries"), "{text}");

    // A host root without a C library: every program misses its interpreter and libc.
    let host = d.path().join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::copy("/etc/os-release", host.join("etc/os-release")).unwrap();
    let (code, f) = findings(&check(&t, &["--root", &host.to_string_lossy()]));
    assert_eq!(code, 1);
    for exe in ["usr/bin/tools-true", "usr/bin/foo", "usr/bin/bar"] {
        let of = |c: &str| f.iter().filter(|x| x.0 == c && x.1 == exe).count();
        assert_eq!(of("missing-interpreter"), 1, "{exe}: {f:?}");
        assert!(
            f.iter()
                .any(|x| x.0 == "missing-library" && x.1 == exe && x.2.contains("libc.so.6")),
            "{exe}: {f:?}"
        );
    }
    // libfoo is in the image: it misses libc too (via the loader's search), but never itself.
    assert!(
        !f.iter().any(|x| x.2.contains("library libfoo.so ")),
        "{f:?}"
    );
}

#[test]
fn trixie_b3sum_against_the_host_and_a_foreign_architecture() {
    if !testkit::require_root("the trixie fixtures") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let amd64 = testkit::fixtures::trixie_rootfs();
    let t = image(d.path(), "b3", "ID=_any\nARCHITECTURE=x86-64\n");
    fs::copy(amd64.join("usr/bin/b3sum"), t.join("usr/bin/b3sum")).unwrap();
    testkit::dirs_0755(&t);
    // libc.so.6 and libgcc_s.so.1 are on this host by name (only presence is checked, not
    // the symbol versions trixie's b3sum asks for).
    let (code, f) = findings(&check(&t, &[]));
    assert_eq!((code, &f), (0, &vec![]), "trixie b3sum on this host");
    let raw = pack(&t);
    let (code, f) = findings(&check(&raw, &[]));
    assert_eq!((code, &f), (0, &vec![]), "packed");

    // The arm64 build in an x86-64 image: wrong architecture, and its loader is nowhere.
    let arm64 = testkit::fixtures::trixie_arm64_rootfs();
    let t = image(d.path(), "b3arm", "ID=_any\nARCHITECTURE=x86-64\n");
    fs::copy(arm64.join("usr/bin/b3sum"), t.join("usr/bin/b3sum")).unwrap();
    testkit::dirs_0755(&t);
    let (code, f) = findings(&check(&t, &[]));
    assert_eq!(code, 1);
    let codes: Vec<&str> = f.iter().map(|x| x.0.as_str()).collect();
    assert!(codes.contains(&"wrong-architecture"), "{f:?}");
    let interp = f
        .iter()
        .find(|x| x.0 == "missing-interpreter")
        .unwrap_or_else(|| panic!("{f:?}"));
    assert!(
        interp.2.contains("/lib/ld-linux-aarch64.so.1"),
        "{}",
        interp.2
    );
    let raw = pack(&t);
    let (code, raw_f) = findings(&check(&raw, &[]));
    assert_eq!((code, &raw_f), (1, &f), "packed");
}

/// A wrapped root filesystem (flatwrap's `usr/local/NAME` with `.flatwrap/launch`) runs with
/// that folder as `/`: its programs are checked against it, not against the host. A library
/// that only the host has does not count there, and one the wrapped root has does.
#[test]
fn wrapped_rootfs_is_checked_as_its_own_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let t = image(dir, "wrap", "ID=_any\nARCHITECTURE=x86-64\n");
    let w = t.join("usr/local/wrap");
    let libdir = w.join("usr/lib/x86_64-linux-gnu");
    fs::create_dir_all(&libdir).unwrap();
    fs::create_dir_all(w.join("usr/bin")).unwrap();
    fs::create_dir_all(w.join(".flatwrap")).unwrap();
    fs::write(w.join(".flatwrap/launch"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("usr/lib", w.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", w.join("lib64")).unwrap();
    fs::create_dir_all(w.join("usr/lib64")).unwrap();
    // The host's loader and libc, copied into the wrapped root.
    let loader = fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();
    fs::copy(&loader, w.join("usr/lib64/ld-linux-x86-64.so.2")).unwrap();
    let libc = fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    fs::copy(&libc, libdir.join("libc.so.6")).unwrap();
    // A program needing libwrapfoo.so, which the wrapped root has, and one needing libz,
    // which only the host has.
    let src = dir.join("foo.c");
    fs::write(&src, "int foo(void){return 1;}\n").unwrap();
    let main = dir.join("main.c");
    fs::write(&main, "int foo(void);\nint main(void){return foo();}\n").unwrap();
    let lib = libdir.join("libwrapfoo.so");
    cc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libwrapfoo.so",
        "-o",
        lib.to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let prog = w.join("usr/bin/prog");
    cc(&[
        "-o",
        prog.to_str().unwrap(),
        main.to_str().unwrap(),
        "-L",
        libdir.to_str().unwrap(),
        "-lwrapfoo",
    ]);
    testkit::dirs_0755(&t);
    let (code, f) = findings(&check(&t, &[]));
    assert_eq!((code, &f), (0, &vec![]), "a complete wrapped root is clean");

    let zmain = dir.join("z.c");
    fs::write(
        &zmain,
        "const char *zlibVersion(void);\nint main(void){return zlibVersion()[0] == 0;}\n",
    )
    .unwrap();
    let zprog = w.join("usr/bin/zprog");
    cc(&[
        "-o",
        zprog.to_str().unwrap(),
        zmain.to_str().unwrap(),
        "-l:libz.so.1",
    ]);
    let (code, f) = findings(&check(&t, &[]));
    assert_eq!(code, 1, "{f:?}");
    assert!(
        f.iter().any(|(c, p, m)| c == "missing-library"
            && p == "usr/local/wrap/usr/bin/zprog"
            && m.contains("libz.so.1")),
        "{f:?}"
    );
    assert!(!f.iter().any(|(_, p, _)| p.ends_with("/prog")), "{f:?}");
}
