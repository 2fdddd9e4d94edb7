//! Rewriter cases against real toolchains and tools: i386 and arm64 objects (readelf checks),
//! `strip` after a rewrite, appended payloads, `.gnu.version_r` after DT_NEEDED edits, a full
//! `.dynamic`, and corrupt or truncated input (errors, never panics).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_edit::{inspect, rewrite, Edits, RewriteError};
use testkit::{program_headers, ProgramHeader};

const LONG_DIR: &str = "/tmp/xyz/usr/local/a-long-extension-name-for-testing";

fn edits(interp: Option<&str>, runpath: &[&str]) -> Edits {
    let mut e = Edits::default();
    e.interpreter = interp.map(str::to_string);
    e.runpath = Some(runpath.iter().map(|s| s.to_string()).collect());
    e
}

fn readelf(args: &str, file: &Path) -> String {
    let out = testkit::run_ok(Command::new("readelf").args(args.split(' ')).arg(file));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cc(compiler: &str, dir: &Path, name: &str, src: &str, extra: &[&str]) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    fs::write(&c, src).unwrap();
    let out = dir.join(name);
    testkit::run_ok(
        Command::new(compiler)
            .arg("-o")
            .arg(&out)
            .arg(&c)
            .args(extra),
    );
    out
}

const HELLO: &str =
    "#include <stdio.h>\nint main(void){puts(\"hello from a rewritten binary\");return 0;}\n";
const LIB: &str = "int answer(void){return 42;}\n";

/// The layout rules the kernel and glibc rely on, checked from readelf's view.
fn check_layout(file: &Path, expect_align: u64) {
    let segs = program_headers(file);
    let loads: Vec<&ProgramHeader> = segs.iter().filter(|s| s.kind == "LOAD").collect();
    assert!(!loads.is_empty(), "{}: no LOAD", file.display());
    for w in loads.windows(2) {
        assert!(
            w[0].vaddr + w[0].memsz <= w[1].vaddr,
            "{}: LOADs out of order",
            file.display()
        );
    }
    for l in &loads {
        assert_eq!(
            l.offset % l.align,
            l.vaddr % l.align,
            "{}: LOAD not congruent",
            file.display()
        );
    }
    let max_align = loads.iter().map(|l| l.align).max().unwrap();
    assert_eq!(
        max_align,
        expect_align,
        "{}: alignment changed",
        file.display()
    );
    assert_eq!(
        loads.last().unwrap().align,
        max_align,
        "{}: new LOAD not aligned to the largest p_align",
        file.display()
    );
    if let Some(ph) = segs.iter().find(|s| s.kind == "PHDR") {
        assert!(
            loads.iter().any(|l| l.vaddr <= ph.vaddr
                && ph.vaddr + ph.filesz <= l.vaddr + l.filesz
                && l.offset <= ph.offset),
            "{}: PT_PHDR not inside a PT_LOAD",
            file.display()
        );
        assert!(
            ph.offset < 4096,
            "{}: program headers left the first page",
            file.display()
        );
    }
    // RELRO stays one segment.
    assert!(segs.iter().filter(|s| s.kind == "GNU_RELRO").count() <= 1);
}

#[test]
fn i386_and_arm64_objects_rewrite_and_reparse() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (compiler, loader, align) in [
        ("i686-linux-gnu-gcc", "ld-linux.so.2", 0x1000u64),
        ("aarch64-linux-gnu-gcc", "ld-linux-aarch64.so.1", 0x10000),
    ] {
        if !testkit::require_tool(compiler) {
            continue;
        }
        let dir = tmp.path().join(compiler);
        fs::create_dir_all(&dir).unwrap();
        let exe = cc(compiler, &dir, "hello", HELLO, &[]);
        let lib = cc(
            compiler,
            &dir,
            "libanswer.so",
            LIB,
            &["-shared", "-fPIC", "-Wl,-soname,libanswer.so.1"],
        );
        let interp = format!("{LONG_DIR}/{loader}");
        let before_align = program_headers(&exe)
            .iter()
            .filter(|s| s.kind == "LOAD")
            .map(|s| s.align)
            .max()
            .unwrap();
        assert_eq!(before_align, align);

        let out = rewrite(&fs::read(&exe).unwrap(), &edits(Some(&interp), &[LONG_DIR])).unwrap();
        fs::write(&exe, out).unwrap();
        let l = readelf("-lW", &exe);
        assert!(
            l.contains(&format!("[Requesting program interpreter: {interp}]")),
            "{l}"
        );
        let d = readelf("-d", &exe);
        assert!(d.contains(&format!("Library runpath: [{LONG_DIR}]")), "{d}");
        check_layout(&exe, align);
        // Sections still parse and point where the segments are.
        let s = readelf("-SW", &exe);
        assert!(s.contains(".dynstr") && !s.contains("Warning"), "{s}");

        let mut e = edits(None, &[LONG_DIR, "$ORIGIN/../lib"]);
        e.soname = Some("libanswer-relocated.so.1".into());
        e.add_needed = vec!["libextra.so.9".into()];
        e.force_rpath = true;
        let out = rewrite(&fs::read(&lib).unwrap(), &e).unwrap();
        fs::write(&lib, &out).unwrap();
        let d = readelf("-d", &lib);
        assert!(
            d.contains(&format!("Library rpath: [{LONG_DIR}:$ORIGIN/../lib]")),
            "{d}"
        );
        assert!(
            d.contains("Library soname: [libanswer-relocated.so.1]"),
            "{d}"
        );
        assert!(d.contains("Shared library: [libextra.so.9]"), "{d}");
        assert!(!d.contains("RUNPATH"), "{d}");
        check_layout(&lib, align);
        let info = inspect(&out).unwrap();
        assert_eq!(info.class64, compiler.starts_with("aarch64"));
        checked += 1;

        // i386 programs also run when the host has an i386 loader.
        if compiler.starts_with("i686") && Path::new("/lib/ld-linux.so.2").exists() {
            let out = rewrite(
                &fs::read(&exe).unwrap(),
                &edits(Some("/lib/ld-linux.so.2"), &[LONG_DIR]),
            )
            .unwrap();
            fs::write(&exe, out).unwrap();
            testkit::run_ok(Command::new("chmod").arg("755").arg(&exe));
            testkit::run_ok(&mut Command::new(&exe));
        }
    }
    assert!(
        checked > 0 || std::env::var_os("CI").is_none(),
        "no cross compiler found"
    );
}

/// A program whose interpreter is a copy of the host loader under a long path.
fn relocated_program(tmp: &Path, src: &Path) -> PathBuf {
    let dir = tmp.join("usr/local/a-long-extension-name-for-testing");
    fs::create_dir_all(&dir).unwrap();
    let interp = dir.join("ld-linux-x86-64.so.2");
    if !interp.exists() {
        fs::copy("/lib64/ld-linux-x86-64.so.2", &interp).unwrap();
    }
    let e = edits(
        Some(interp.to_str().unwrap()),
        &[dir.to_str().unwrap(), "/usr/lib/x86_64-linux-gnu"],
    );
    let out = rewrite(&fs::read(src).unwrap(), &e).unwrap();
    let dst = dir.join(src.file_name().unwrap());
    fs::write(&dst, out).unwrap();
    testkit::run_ok(Command::new("chmod").arg("755").arg(&dst));
    dst
}

fn host_x86_64() -> bool {
    cfg!(target_arch = "x86_64") && Path::new("/lib64/ld-linux-x86-64.so.2").exists()
}

#[test]
fn strip_after_rewrite_still_runs() {
    if !host_x86_64() || !testkit::require_tool("strip") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for prog in ["/usr/bin/ls", "/usr/bin/bash"] {
        let p = relocated_program(tmp.path(), Path::new(prog));
        testkit::run_ok(Command::new("strip").arg(&p));
        let out = testkit::run_ok(Command::new(&p).arg("--version"));
        assert!(!out.stdout.is_empty());
        let l = readelf("-lW", &p);
        assert!(
            l.contains("a-long-extension-name-for-testing/ld-linux-x86-64.so.2"),
            "{l}"
        );
        check_layout(&p, 0x1000);
    }
    // A stripped rewritten library still loads.
    let lib = tmp.path().join("libz.so.1");
    let out = rewrite(
        &fs::read("/usr/lib/x86_64-linux-gnu/libz.so.1").unwrap(),
        &edits(None, &[LONG_DIR]),
    )
    .unwrap();
    fs::write(&lib, out).unwrap();
    testkit::run_ok(Command::new("strip").arg(&lib));
    assert!(readelf("-d", &lib).contains(LONG_DIR));
    let p = relocated_program(tmp.path(), Path::new("/usr/bin/gzip"));
    testkit::run_ok(Command::new(&p).arg("--version").env("LD_PRELOAD", &lib));
}

#[test]
fn appended_payload_survives() {
    if !host_x86_64() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("with-payload");
    let mut bytes = fs::read("/usr/bin/ls").unwrap();
    let elf_len = bytes.len();
    let payload: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    bytes.extend_from_slice(b"PAYLOAD!");
    bytes.extend_from_slice(&payload);
    fs::write(&src, &bytes).unwrap();
    let p = relocated_program(tmp.path(), &src);
    let out = fs::read(&p).unwrap();
    assert_eq!(&out[elf_len..elf_len + 8], b"PAYLOAD!", "payload moved");
    assert_eq!(
        &out[elf_len + 8..elf_len + 8 + payload.len()],
        &payload[..],
        "payload changed"
    );
    testkit::run_ok(Command::new(&p).arg("--version"));
}

const VERSIONED: &str = "#include <math.h>\n#include <stdio.h>\nint main(int argc, char **argv){(void)argv; printf(\"cbrt %g\\n\", cbrt(27.0 * argc));return 0;}\n";

#[test]
fn needed_edits_keep_version_needs_consistent() {
    if !host_x86_64() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exe = cc(
        "cc",
        tmp.path(),
        "usez",
        VERSIONED,
        &["-fno-builtin", "-lm"],
    );
    let bytes = fs::read(&exe).unwrap();
    assert!(readelf("-V", &exe).contains("File: libm.so.6"));

    // Replace: .gnu.version_r follows, and the program runs with the renamed library.
    let libdir = tmp.path().join("libs");
    fs::create_dir_all(&libdir).unwrap();
    fs::copy(
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        libdir.join("libm-renamed.so.6"),
    )
    .unwrap();
    let mut e = edits(None, &[libdir.to_str().unwrap()]);
    e.replace_needed = vec![("libm.so.6".into(), "libm-renamed.so.6".into())];
    let out = rewrite(&bytes, &e).unwrap();
    let renamed = tmp.path().join("usez-renamed");
    fs::write(&renamed, out).unwrap();
    testkit::run_ok(Command::new("chmod").arg("755").arg(&renamed));
    let v = readelf("-V", &renamed);
    assert!(
        v.contains("File: libm-renamed.so.6") && !v.contains("File: libm.so.6"),
        "{v}"
    );
    let run = testkit::run_ok(&mut Command::new(&renamed));
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("cbrt 3"));

    // Remove: the version need goes, its symbols become unversioned; with libm preloaded the
    // program still runs (ld.so would assert on a dangling version index).
    let mut e = Edits::default();
    e.remove_needed = vec!["libm.so.6".into()];
    let out = rewrite(&bytes, &e).unwrap();
    let removed = tmp.path().join("usez-removed");
    fs::write(&removed, &out).unwrap();
    testkit::run_ok(Command::new("chmod").arg("755").arg(&removed));
    let v = readelf("-V", &removed);
    assert!(!v.contains("libm"), "{v}");
    assert!(!inspect(&out)
        .unwrap()
        .needed
        .contains(&"libm.so.6".to_string()));
    let run = testkit::run_ok(
        Command::new(&removed).env("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libm.so.6"),
    );
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("cbrt 3"));

    // Add several: .dynamic runs out of slots and moves; DT_DEBUG and friends stay valid.
    let mut e = Edits::default();
    e.add_needed = vec![
        "libdl.so.2".into(),
        "librt.so.1".into(),
        "libpthread.so.0".into(),
        "libutil.so.1".into(),
        "libresolv.so.2".into(),
        "libanl.so.1".into(),
    ];
    e.runpath = Some(vec![LONG_DIR.into(), "/usr/lib/x86_64-linux-gnu".into()]);
    e.nodeflib = true;
    let out = rewrite(&bytes, &e).unwrap();
    let grown = tmp.path().join("usez-grown");
    fs::write(&grown, &out).unwrap();
    testkit::run_ok(Command::new("chmod").arg("755").arg(&grown));
    let d = readelf("-d", &grown);
    assert!(
        d.contains("(DEBUG)") && d.contains("Shared library: [libanl.so.1]"),
        "{d}"
    );
    let segs = program_headers(&grown);
    let dynamic = segs.iter().find(|s| s.kind == "DYNAMIC").unwrap();
    let last = segs.iter().rfind(|s| s.kind == "LOAD").unwrap();
    assert!(
        dynamic.vaddr >= last.vaddr,
        "PT_DYNAMIC was expected to move into the new segment"
    );
    let run = testkit::run_ok(&mut Command::new(&grown));
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("cbrt 3"));
}

#[test]
fn the_loader_is_refused() {
    if !host_x86_64() {
        return;
    }
    let bytes = fs::read("/lib64/ld-linux-x86-64.so.2").unwrap();
    let err = rewrite(&bytes, &edits(None, &[LONG_DIR])).unwrap_err();
    assert!(matches!(err, RewriteError::Loader(_)), "{err}");
    assert!(err.to_string().contains("dynamic loader"));
}

#[test]
fn static_and_non_elf_inputs_get_clear_errors() {
    let err = rewrite(b"#!/bin/sh\necho hi\n", &edits(None, &["/x"])).unwrap_err();
    assert!(matches!(err, RewriteError::NotElf));
    if Path::new("/bin/busybox").exists() {
        let bytes = fs::read("/bin/busybox").unwrap();
        if inspect(&bytes).map(|i| !i.has_dynamic).unwrap_or(false) {
            let err = rewrite(&bytes, &edits(None, &["/x"])).unwrap_err();
            assert!(err.to_string().contains("no dynamic section"), "{err}");
        }
    }
}

/// Truncations and byte flips of a real binary: every one gives an error or a verified
/// output; none panics.
#[test]
fn corrupt_and_truncated_inputs_are_errors_not_panics() {
    let src = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap();
    let good = fs::read(src).unwrap();
    let e = edits(
        Some(&format!("{LONG_DIR}/ld-linux-x86-64.so.2")),
        &[LONG_DIR],
    );
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for cut in [
        0,
        1,
        4,
        5,
        6,
        16,
        20,
        52,
        63,
        64,
        100,
        0x200,
        0x318,
        0x400,
        0x1000,
        good.len() / 2,
        good.len() - 64,
        good.len() - 1,
    ] {
        if cut <= good.len() {
            cases.push((format!("truncated to {cut}"), good[..cut].to_vec()));
        }
    }
    // Flip bytes in the headers (deterministic positions) and across the file.
    let mut positions: Vec<usize> = (4..64).collect();
    positions.extend((64..64 + 13 * 56).step_by(3));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        positions.push((x % good.len() as u64) as usize);
    }
    for pos in positions {
        for val in [0x00u8, 0xff, 0x80] {
            let mut b = good.clone();
            b[pos] = val;
            cases.push((format!("byte {pos:#x} = {val:#x}"), b));
        }
    }
    // Symbol renames read and rewrite the symbol, hash, version and relocation tables.
    let mut rename = Edits::default();
    rename.rename_symbols = ["free", "malloc", "__cxa_finalize", "getenv", "abort"]
        .iter()
        .map(|s| (s.to_string(), format!("{s}_renamed")))
        .collect();
    let (mut errors, mut ok) = (0, 0);
    for (name, bytes) in &cases {
        let _ = elf_edit::warnings(bytes);
        if let Ok(out) = rewrite(bytes, &rename) {
            inspect(&out)
                .unwrap_or_else(|err| panic!("{name}: renamed output does not parse: {err}"));
        }
        match rewrite(bytes, &e) {
            Ok(out) => {
                inspect(&out)
                    .unwrap_or_else(|err| panic!("{name}: accepted output does not parse: {err}"));
                ok += 1;
            }
            Err(err) => {
                assert!(!err.to_string().is_empty(), "{name}");
                errors += 1;
            }
        }
    }
    eprintln!(
        "{} corrupt inputs: {errors} errors, {ok} rewritten and verified",
        cases.len()
    );
    assert!(errors > 20, "truncations must be errors");
}

/// A real library (the host's zlib, versioned, built by its distribution): every symbol it
/// defines is renamed in a copy of it and in a program using it, through the library API; the
/// program still runs with every symbol bound at start.
#[test]
fn renaming_all_symbols_of_host_zlib_keeps_its_users_running() {
    let zlib = Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1");
    if !host_x86_64()
        || !zlib.exists()
        || !Path::new("/usr/include/zlib.h").exists()
        || !testkit::require_tool("gcc")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = r#"#include <stdio.h>
#include <string.h>
#include <zlib.h>
int main(void) {
    const char *msg = "hello hello hello hello hello";
    unsigned char packed[256], plain[256];
    uLongf plen = sizeof packed, ulen = sizeof plain;
    if (compress(packed, &plen, (const Bytef *)msg, strlen(msg)) != Z_OK) return 1;
    if (uncompress(plain, &ulen, packed, plen) != Z_OK) return 2;
    printf("%s %.*s %lu\n", zlibVersion(), (int)ulen, plain, crc32(0L, Z_NULL, 0));
    return 0;
}
"#;
    let prog = cc("gcc", t, "zuser", src, &["-lz"]);
    let lib = t.join("libz.so.1");
    fs::copy(zlib, &lib).unwrap();
    let run = || {
        let o = Command::new(&prog)
            .env("LD_BIND_NOW", "1")
            .env("LD_LIBRARY_PATH", t)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (ok, before) = run();
    assert!(ok && before.contains("hello hello"), "{before}");

    let nm = testkit::run_ok(Command::new("nm").args(["-D", "--defined-only"]).arg(&lib));
    let mut e = Edits::default();
    for line in String::from_utf8_lossy(&nm.stdout).lines() {
        let Some(name) = line.split_whitespace().last() else {
            continue;
        };
        let name = name.split('@').next().unwrap_or("");
        if !name.is_empty() && !e.rename_symbols.iter().any(|(o, _)| o == name) {
            e.rename_symbols
                .push((name.to_string(), format!("{name}_zz")));
        }
    }
    assert!(e.rename_symbols.len() > 50, "{:?}", e.rename_symbols);
    for f in [&lib, &prog] {
        let out = rewrite(&fs::read(f).unwrap(), &e).unwrap();
        fs::write(f, out).unwrap();
    }
    let syms = readelf("--dyn-syms -W", &lib);
    assert!(syms.contains(" compressBound_zz@@ZLIB_1.2.0\n"), "{syms}");
    assert!(syms.contains(" compress_zz\n"), "{syms}");
    assert!(!syms.contains(" compress\n"), "{syms}");
    assert_eq!(run(), (true, before));
}
