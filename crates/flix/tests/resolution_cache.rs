//! `flix-patchelf --build-resolution-cache` on programs and libraries built here with gcc:
//! the `.note.nixos.ldcache` note is allocated, covered by a PT_NOTE inside a PT_LOAD, lists
//! what the run path resolves (checked through readelf's dump of the note), the program still
//! runs, `strip` accepts it; rebuilding is a no-op, edits of the run path or the needed list
//! drop it, no-op edits keep it; hints, warnings and refusals.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_flix-patchelf");
const SECTION: &str = ".note.nixos.ldcache";

fn pe(args: &[&str], file: &Path) -> Output {
    Command::new(BIN).args(args).arg(file).output().unwrap()
}

fn pe_ok(args: &[&str], file: &Path) {
    let o = pe(args, file);
    assert!(o.status.success(), "flix-patchelf {args:?}: {o:?}");
}

fn readelf(args: &str, file: &Path) -> String {
    let out = testkit::run_ok(Command::new("readelf").args(args.split(' ')).arg(file));
    assert!(
        out.stderr.is_empty(),
        "readelf {args} warns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cc(dir: &Path, out: &str, src: &str, args: &[&str]) -> PathBuf {
    let c = dir.join(format!("{out}.c"));
    fs::write(&c, src).unwrap();
    let o = dir.join(out);
    testkit::run_ok(
        Command::new("gcc")
            .arg("-o")
            .arg(&o)
            .arg(&c)
            .args(args)
            .current_dir(dir),
    );
    o
}

fn usable() -> bool {
    cfg!(target_arch = "x86_64") && testkit::require_tool("gcc") && testkit::require_tool("readelf")
}

/// `lib/libfoo.so` (needs libbar.so), `lib/libbar.so`, `other/libbar.so` and `main`
/// (needs both, exits 42 when they answer), linked without a run path.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    lib: String,
    other: String,
    main: PathBuf,
    sharedlib: PathBuf,
}

fn fixture(main_args: &[&str]) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    for d in ["lib", "other"] {
        fs::create_dir(dir.join(d)).unwrap();
    }
    cc(
        &dir,
        "lib/libbar.so",
        "int bar(void){return 40;}\n",
        &["-shared", "-fPIC"],
    );
    fs::copy(dir.join("lib/libbar.so"), dir.join("other/libbar.so")).unwrap();
    let sharedlib = cc(
        &dir,
        "lib/libfoo.so",
        "int bar(void);\nint foo(void){return bar()+2;}\n",
        &["-shared", "-fPIC", "-Llib", "-lbar"],
    );
    let mut args = vec!["-Llib", "-lfoo", "-lbar"];
    args.extend_from_slice(main_args);
    let main = cc(
        &dir,
        "main",
        "int foo(void);\nint bar(void);\nint main(void){return foo() + bar() - 40;}\n",
        &args,
    );
    Fixture {
        lib: dir.join("lib").display().to_string(),
        other: dir.join("other").display().to_string(),
        _tmp: tmp,
        dir,
        main,
        sharedlib,
    }
}

/// The descriptor of the note, from `readelf -n`'s hex dump.
fn descriptor(file: &Path) -> Vec<u8> {
    let n = readelf("-nW", file);
    let at = n
        .find("Displaying notes found in: .note.nixos.ldcache")
        .unwrap_or_else(|| panic!("no {SECTION} in readelf -n:\n{n}"));
    let rest = &n[at..];
    assert!(rest.contains("NixOS"), "{rest}");
    assert!(rest.contains("0x63a86cb6"), "{rest}");
    let data = rest
        .lines()
        .find_map(|l| l.split_once("description data:").map(|(_, d)| d))
        .unwrap_or_else(|| panic!("no description data:\n{rest}"));
    data.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

fn has_note(file: &Path) -> bool {
    readelf("-SW", file).contains(SECTION)
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// The note section is allocated, its bytes are mapped by a PT_LOAD at its address and a
/// PT_NOTE covers exactly it.
fn check_placement(file: &Path) {
    let s = readelf("-SW", file);
    let line = s
        .lines()
        .find(|l| l.contains(SECTION))
        .unwrap_or_else(|| panic!("no {SECTION}:\n{s}"));
    assert_eq!(s.matches(SECTION).count(), 1, "{s}");
    let f: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    // name type addr off size es flags ...
    assert_eq!(f[1], "NOTE", "{line}");
    assert!(f[6].contains('A'), "not allocated: {line}");
    let (addr, off, size) = (hex(f[2]), hex(f[3]), hex(f[4]));
    let l = readelf("-lW", file);
    let segs: Vec<Vec<&str>> = l
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 7 && f[1].starts_with("0x") && f[2].starts_with("0x"))
        .collect();
    assert!(
        segs.iter()
            .any(|f| f[0] == "NOTE" && hex(f[1]) == off && hex(f[2]) == addr && hex(f[4]) == size),
        "no PT_NOTE covers the note:\n{l}"
    );
    assert!(
        segs.iter().any(|f| f[0] == "LOAD"
            && hex(f[1]) <= off
            && off + size <= hex(f[1]) + hex(f[4])
            && hex(f[2]) + (off - hex(f[1])) == addr),
        "no PT_LOAD maps the note:\n{l}"
    );
}

fn exit_code(file: &Path) -> i32 {
    Command::new(file).status().unwrap().code().unwrap_or(-1)
}

fn pair(lib: &str, list: &str) -> Vec<u8> {
    let mut v = lib.as_bytes().to_vec();
    v.push(0);
    v.extend_from_slice(list.as_bytes());
    v.push(0);
    v
}

#[test]
fn note_is_allocated_covered_resolves_and_the_program_runs() {
    if !usable() {
        return;
    }
    let fx = fixture(&[]);
    let main = &fx.main;
    let rp = format!("{}:{}", fx.lib, fx.other);
    pe_ok(&["--set-rpath", &rp], main);
    assert_eq!(exit_code(main), 42);
    pe_ok(&["--build-resolution-cache"], main);
    check_placement(main);
    // Sorted by name, every run-path candidate in order; libc.so.6 is found in neither.
    let mut want = pair(
        "libbar.so",
        &format!("={}/libbar.so:={}/libbar.so", fx.lib, fx.other),
    );
    want.extend(pair("libfoo.so", &format!("={}/libfoo.so", fx.lib)));
    want.push(0);
    assert_eq!(
        String::from_utf8_lossy(&descriptor(main)),
        String::from_utf8_lossy(&want)
    );
    assert_eq!(exit_code(main), 42);
    assert!(readelf("-d", main).contains(&rp));
    // The library's own reader agrees.
    let read = flix::resolution_cache::read(&fs::read(main).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(
        read.keys().map(String::as_str).collect::<Vec<_>>(),
        ["libbar.so", "libfoo.so"]
    );
    assert_eq!(read["libfoo.so"], [format!("={}/libfoo.so", fx.lib)]);

    // Building again changes nothing.
    let before = fs::read(main).unwrap();
    pe_ok(&["--build-resolution-cache"], main);
    assert_eq!(fs::read(main).unwrap(), before);

    // strip keeps the note (it is allocated) and the program still runs.
    if testkit::require_tool("strip") {
        let stripped = fx.dir.join("main-stripped");
        testkit::run_ok(Command::new("strip").arg("-o").arg(&stripped).arg(main));
        check_placement(&stripped);
        assert_eq!(descriptor(&stripped), want);
        assert_eq!(exit_code(&stripped), 42);
    }

    // A shared library gets one too, and still loads.
    let lib = &fx.sharedlib;
    pe_ok(&["--set-rpath", &format!("$ORIGIN:{}", fx.other)], lib);
    pe_ok(&["--build-resolution-cache"], lib);
    check_placement(lib);
    let mut want = pair("libbar.so", &format!("?$ORIGIN:={}/libbar.so", fx.other));
    want.push(0);
    assert_eq!(descriptor(lib), want);
    assert_eq!(exit_code(main), 42);
}

#[test]
fn non_pie_program_gets_a_note_and_runs() {
    if !usable() {
        return;
    }
    let fx = fixture(&["-no-pie"]);
    let main = &fx.main;
    assert!(readelf("-h", main).contains("EXEC"));
    pe_ok(&["--set-rpath", &fx.lib], main);
    pe_ok(&["--build-resolution-cache"], main);
    check_placement(main);
    let mut want = pair("libbar.so", &format!("={}/libbar.so", fx.lib));
    want.extend(pair("libfoo.so", &format!("={}/libfoo.so", fx.lib)));
    want.push(0);
    assert_eq!(descriptor(main), want);
    assert_eq!(exit_code(main), 42);
}

#[test]
fn edits_of_run_path_or_needed_drop_the_note_no_op_edits_keep_it() {
    if !usable() {
        return;
    }
    let fx = fixture(&["-Wl,--emit-relocs"]);
    let cached = fx.dir.join("cached");
    fs::copy(&fx.main, &cached).unwrap();
    pe_ok(&["--set-rpath", &fx.lib], &cached);
    pe_ok(&["--build-resolution-cache"], &cached);
    let section_syms = |f: &Path| {
        let mut v: Vec<String> = readelf("-sW", f)
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|f| f.len() >= 8 && f[3] == "SECTION")
            .map(|f| f[7].clone())
            .collect();
        v.sort();
        v
    };
    let syms = section_syms(&cached);
    assert!(syms.len() > 5, "{syms:?}");

    let grown = format!(
        "{}:{}:/a/long/directory/to/grow/the/string/table",
        fx.other, fx.lib
    );
    for (args, dropped) in [
        (vec!["--set-rpath", grown.as_str()], true),
        (vec!["--add-rpath", fx.other.as_str()], true),
        (vec!["--remove-rpath"], true),
        (vec!["--add-needed", "libm.so.6"], true),
        (vec!["--remove-needed", "libbar.so"], true),
        (vec!["--replace-needed", "libbar.so", "libbar.so"], true),
        (vec!["--remove-needed", "libabsent.so"], false),
        (vec!["--replace-needed", "libabsent.so", "libx.so"], false),
        (vec!["--set-rpath", fx.lib.as_str()], false),
        (vec!["--set-soname", "libmain.so"], false),
    ] {
        let f = fx.dir.join("edited");
        fs::copy(&cached, &f).unwrap();
        pe_ok(&args, &f);
        assert_eq!(has_note(&f), !dropped, "{args:?}");
        if !dropped {
            check_placement(&f);
        } else {
            // The dropped note's descriptor is not left in the file.
            let bytes = fs::read(&f).unwrap();
            let needle = format!("={}/libfoo.so", fx.lib);
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{args:?}: stale descriptor bytes remain"
            );
        }
        assert_eq!(section_syms(&f), syms, "{args:?}");
        let code = Command::new(&f)
            .env("LD_LIBRARY_PATH", &fx.lib)
            .status()
            .unwrap()
            .code();
        assert_eq!(code, Some(42), "{args:?}");
    }

    // Rebuilding after a run-path change resolves against the new path.
    pe_ok(&["--set-rpath", &fx.other], &cached);
    assert!(!has_note(&cached));
    pe_ok(&["--build-resolution-cache"], &cached);
    let mut want = pair("libbar.so", &format!("={}/libbar.so", fx.other));
    want.push(0);
    assert_eq!(descriptor(&cached), want);
    // Both in one run: the old note goes, the new one is built last.
    pe_ok(
        &["--set-rpath", &fx.lib, "--build-resolution-cache"],
        &cached,
    );
    let mut want = pair("libbar.so", &format!("={}/libbar.so", fx.lib));
    want.extend(pair("libfoo.so", &format!("={}/libfoo.so", fx.lib)));
    want.push(0);
    assert_eq!(descriptor(&cached), want);
    assert_eq!(section_syms(&cached), syms);
    assert_eq!(exit_code(&cached), 42);
}

#[test]
fn hints_warnings_and_refusals() {
    if !usable() {
        return;
    }
    let fx = fixture(&[]);
    let main = &fx.main;
    let hw = fx.dir.join("hw");
    fs::create_dir_all(hw.join("glibc-hwcaps")).unwrap();
    fs::copy(fx.dir.join("lib/libfoo.so"), hw.join("libfoo.so")).unwrap();
    let hw = hw.display().to_string();

    // Empty, relative, $ORIGIN and glibc-hwcaps directories are searched at run time.
    let f = fx.dir.join("hints");
    fs::copy(main, &f).unwrap();
    pe_ok(
        &[
            "--set-rpath",
            &format!(":rel/dir:$ORIGIN/x:{hw}:{}", fx.lib),
        ],
        &f,
    );
    pe_ok(&["--build-resolution-cache"], &f);
    let hints = format!("?:?rel/dir:?$ORIGIN/x:?{hw}");
    // libc.so.6 is found in no absolute directory: it keeps the hints only.
    let mut want = pair("libbar.so", &format!("{hints}:={}/libbar.so", fx.lib));
    want.extend(pair("libc.so.6", &hints));
    want.extend(pair("libfoo.so", &format!("{hints}:={}/libfoo.so", fx.lib)));
    want.push(0);
    assert_eq!(
        String::from_utf8_lossy(&descriptor(&f)),
        String::from_utf8_lossy(&want)
    );

    // No run path: a warning, the file is left alone.
    let before = fs::read(main).unwrap();
    let o = pe(&["--build-resolution-cache"], main);
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no DT_NEEDED entries or run path"),
        "{o:?}"
    );
    assert_eq!(fs::read(main).unwrap(), before);

    // Nothing found: a warning too.
    pe_ok(
        &["--set-rpath", &fx.dir.join("nowhere").display().to_string()],
        main,
    );
    let before = fs::read(main).unwrap();
    let o = pe(&["--build-resolution-cache"], main);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no libraries resolved"),
        "{o:?}"
    );
    assert_eq!(fs::read(main).unwrap(), before);

    // Not with --force-rpath.
    let o = pe(&["--force-rpath", "--build-resolution-cache"], main);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force-rpath"));
    assert_eq!(fs::read(main).unwrap(), before);

    // A note that no longer matches what the run path resolves to is refused.
    pe_ok(&["--set-rpath", &fx.other], main);
    pe_ok(&["--build-resolution-cache"], main);
    fs::copy(fx.dir.join("lib/libbar.so"), fx.dir.join("other/libfoo.so")).unwrap();
    let before = fs::read(main).unwrap();
    let o = pe(&["--build-resolution-cache"], main);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already present"), "{err}");
    assert_eq!(fs::read(main).unwrap(), before);

    // A statically linked program: a warning, nothing written.
    if Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists() {
        let st = cc(
            &fx.dir,
            "static",
            "int main(void){return 0;}\n",
            &["-static"],
        );
        let before = fs::read(&st).unwrap();
        let o = pe(&["--build-resolution-cache"], &st);
        assert!(o.status.success(), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("statically linked"));
        assert_eq!(fs::read(&st).unwrap(), before);
    }
}

#[test]
fn cross_compiled_32_bit_and_64k_page_objects() {
    let mut checked = 0;
    for compiler in ["i686-linux-gnu-gcc", "aarch64-linux-gnu-gcc"] {
        if testkit::which(compiler).is_none() || testkit::which("readelf").is_none() {
            continue;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("lib")).unwrap();
        fs::write(dir.join("b.c"), "int bar(void){return 42;}\n").unwrap();
        fs::write(
            dir.join("m.c"),
            "int bar(void);\nint main(void){return bar();}\n",
        )
        .unwrap();
        testkit::run_ok(
            Command::new(compiler)
                .args(["-shared", "-fPIC", "-o", "lib/libbar.so", "b.c"])
                .current_dir(dir),
        );
        testkit::run_ok(
            Command::new(compiler)
                .args(["-o", "m", "m.c", "-Llib", "-lbar"])
                .current_dir(dir),
        );
        let m = dir.join("m");
        let lib = dir.join("lib").display().to_string();
        pe_ok(&["--set-rpath", &lib], &m);
        pe_ok(&["--build-resolution-cache"], &m);
        check_placement(&m);
        let mut want = pair("libbar.so", &format!("={lib}/libbar.so"));
        want.push(0);
        assert_eq!(descriptor(&m), want, "{compiler}");
        // And away again with the run path.
        pe_ok(&["--remove-rpath"], &m);
        assert!(!has_note(&m), "{compiler}");
        readelf("-aW", &m);
        checked += 1;
    }
    assert!(
        checked > 0 || std::env::var_os("CI").is_none(),
        "no cross compiler found"
    );
}

/// Corrupt headers, section tables and notes give errors from the note functions, never
/// panics, and whatever they accept parses again.
#[test]
fn corrupt_inputs_are_errors_not_panics() {
    use elf_edit::{add_note_section, find_note_section, inspect, remove_note_section, Note};
    let Some(src) = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        return;
    };
    let note = Note {
        section: SECTION,
        owner: "NixOS",
        n_type: 0x63a8_6cb6,
        desc: b"libc.so.6\0=/lib/libc.so.6\0\0",
    };
    let plain = fs::read(src).unwrap();
    let noted = add_note_section(&plain, &note).unwrap();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    for good in [&plain, &noted] {
        let len = good.len();
        let mut positions: Vec<usize> = (4..64).collect();
        // The section header table sits at the end of both.
        positions.extend((len.saturating_sub(40 * 64)..len).step_by(7));
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            positions.push((x % len as u64) as usize);
        }
        for pos in positions {
            for val in [0x00u8, 0xff, 0x80] {
                let mut b = good.clone();
                b[pos] = val;
                cases.push(b);
            }
        }
        for cut in [0, 5, 64, len / 2, len - 64, len - 1] {
            cases.push(good[..cut].to_vec());
        }
    }
    let mut accepted = 0;
    for b in &cases {
        let _ = find_note_section(b, SECTION);
        if let Ok(Some(out)) = remove_note_section(b, SECTION) {
            inspect(&out).unwrap();
            accepted += 1;
        }
        if let Ok(out) = add_note_section(b, &note) {
            inspect(&out).unwrap();
            assert!(find_note_section(&out, SECTION).unwrap().is_some());
            accepted += 1;
        }
    }
    assert!(accepted > 100, "only {accepted} accepted");
}
