//! flix-patchelf's command line: several files, --output (also to a symlink or a FIFO),
//! --shrink-rpath with --allowed-rpath-prefixes, exit codes and messages. Also the command-line
//! cases from patchelf's tracker, #583 and #265 (the others are in
//! crates/elf-edit/tests/rewrite_tracker.rs).

use std::fs;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flix-patchelf");

fn pe(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn host() -> bool {
    Path::new("/usr/bin/ls").exists() && Path::new("/usr/lib/x86_64-linux-gnu/libz.so.1").exists()
}

#[test]
fn several_files_output_and_errors() {
    if !host() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = t.join("a");
    let b = t.join("libz.so.1");
    fs::copy("/usr/bin/ls", &a).unwrap();
    fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &b).unwrap();
    let a_s = a.to_str().unwrap();
    let b_s = b.to_str().unwrap();

    let o = pe(&[
        "--set-rpath",
        "/opt/one:/opt/two",
        "--force-rpath",
        a_s,
        b_s,
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = pe(&["--print-rpath", a_s, b_s]);
    assert_eq!(stdout(&o), "/opt/one:/opt/two\n/opt/one:/opt/two\n");

    // --add-rpath appends; --remove-rpath removes both kinds.
    assert!(pe(&["--add-rpath", "/opt/three", a_s]).status.success());
    assert_eq!(
        stdout(&pe(&["--print-rpath", a_s])),
        "/opt/one:/opt/two:/opt/three\n"
    );
    assert!(pe(&["--remove-rpath", a_s]).status.success());
    assert_eq!(stdout(&pe(&["--print-rpath", a_s])), "\n");

    // --output leaves the input alone; through a symlink the link stays a link.
    let before = fs::read(&b).unwrap();
    let real = t.join("real.so");
    fs::write(&real, b"placeholder").unwrap();
    let link = t.join("link.so");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = pe(&[
        "--set-soname",
        "libzz.so.1",
        "--output",
        link.to_str().unwrap(),
        b_s,
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(fs::read(&b).unwrap(), before);
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        stdout(&pe(&["--print-soname", real.to_str().unwrap()])),
        "libzz.so.1\n"
    );

    // --output to a FIFO writes into it instead of replacing it.
    let fifo = t.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(&fifo).unwrap())
    };
    let o = pe(&[
        "--set-soname",
        "libfifo.so.1",
        "--output",
        fifo.to_str().unwrap(),
        b_s,
    ]);
    assert!(o.status.success(), "{o:?}");
    let got = reader.join().unwrap();
    assert!(got.starts_with(b"\x7fELF") && got.windows(12).any(|w| w == b"libfifo.so.1"));
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    // Errors: exit 1 with patchelf's prefix; other files are still processed.
    let text = t.join("text");
    fs::write(&text, "not an elf\n").unwrap();
    let o = pe(&["--print-needed", text.to_str().unwrap(), b_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("patchelf: "),
        "{o:?}"
    );
    assert!(stdout(&o).contains("libc.so.6"));
    let o = pe(&["--output", "x", a_s, b_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only allowed with single input file"));
    let o = pe(&["--print-interpreter", b_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot find section '.interp'"));
    // Exactly patchelf's line: clients parse what follows "patchelf " as a version number
    // (maturin as semver, auditwheel and cx_Freeze compare it with a minimum).
    let version = stdout(&pe(&["--version"]));
    let number = version
        .strip_prefix("patchelf ")
        .and_then(|v| v.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{version:?}"));
    let parts: Vec<u32> = number
        .split('.')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("{version:?}")))
        .collect();
    assert_eq!(parts.len(), 3, "{version:?}");
    assert!(parts >= vec![0, 14, 5], "{version:?}");
    assert!(stdout(&pe(&["--flix-version"])).starts_with("flix-patchelf "));
}

use std::os::unix::fs::FileTypeExt;

#[test]
fn shrink_rpath_keeps_only_dirs_with_needed_libraries() {
    if !host() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["has-libc", "empty", "other/has-libc-too"] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    fs::copy(
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        t.join("has-libc/libc.so.6"),
    )
    .unwrap();
    fs::copy(
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        t.join("other/has-libc-too/libc.so.6"),
    )
    .unwrap();
    let lib = t.join("libz.so.1");
    fs::copy("/usr/lib/x86_64-linux-gnu/libz.so.1", &lib).unwrap();
    let l = lib.to_str().unwrap();
    let d = |s: &str| t.join(s).to_string_lossy().into_owned();
    let rpath = format!(
        "{}:$ORIGIN/x:{}:{}",
        d("empty"),
        d("has-libc"),
        d("other/has-libc-too")
    );
    assert!(pe(&["--set-rpath", &rpath, l]).status.success());
    assert!(pe(&["--shrink-rpath", l]).status.success());
    assert_eq!(
        stdout(&pe(&["--print-rpath", l])),
        format!("$ORIGIN/x:{}\n", d("has-libc"))
    );

    // With allowed prefixes, a directory outside them goes even when it has the library.
    assert!(pe(&["--set-rpath", &rpath, l]).status.success());
    let o = pe(&["--shrink-rpath", "--allowed-rpath-prefixes", &d("other"), l]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&pe(&["--print-rpath", l])),
        format!("$ORIGIN/x:{}\n", d("other/has-libc-too"))
    );
}

fn gcc(dir: &Path, out: &str, src: &str, extra: &[&str]) -> std::path::PathBuf {
    cc("gcc", dir, out, src, extra)
}

fn cc(compiler: &str, dir: &Path, out: &str, src: &str, extra: &[&str]) -> std::path::PathBuf {
    let c = dir.join(format!("{out}.c"));
    fs::write(&c, src).unwrap();
    let o = dir.join(out);
    testkit::run_ok(
        Command::new(compiler)
            .arg("-o")
            .arg(&o)
            .arg(&c)
            .args(extra)
            .current_dir(dir),
    );
    o
}

fn dynamic_symbols(file: &Path) -> Vec<String> {
    let o = testkit::run_ok(Command::new("nm").arg("-D").arg(file));
    let mut v: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// Symbol names of the dynamic relocations, in table order.
fn relocation_symbols(file: &Path) -> Vec<String> {
    let o = testkit::run_ok(Command::new("readelf").args(["-W", "-r"]).arg(file));
    stdout(&o)
        .lines()
        .filter(|l| l.starts_with("0"))
        .map(|l| l.split_whitespace().nth(4).unwrap_or("").to_string())
        .collect()
}

const MANY: usize = 40;

/// A versioned library with many functions and a variable, and a program using all of them:
/// renaming the library's symbols in both (one call, two files) keeps the program running
/// with every symbol bound at start (LD_BIND_NOW), so both hash tables, the symbol order,
/// `.gnu.version` and the relocations agree; renaming back restores the original names.
#[test]
fn rename_dynamic_symbols_keeps_programs_running() {
    if !host() || !testkit::require_tool("gcc") || !testkit::require_tool("nm") {
        return;
    }
    rename_case("gcc", None);
}

/// The same for i386 (32-bit symbols, relocations and bloom words), run by the i386 loader of
/// the cross toolchain.
#[test]
fn rename_dynamic_symbols_keeps_i386_programs_running() {
    let loader = "/usr/i686-linux-gnu/lib/ld-linux.so.2";
    if !host() || !testkit::require_tool("i686-linux-gnu-gcc") || !Path::new(loader).exists() {
        return;
    }
    rename_case(
        "i686-linux-gnu-gcc",
        Some((loader, "/usr/i686-linux-gnu/lib")),
    );
}

fn rename_case(compiler: &str, loader: Option<(&str, &str)>) {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut lib = String::from("int shared_counter = 7;\n");
    let mut main = String::from("#include <stdio.h>\nextern int shared_counter;\n");
    let mut sum = String::new();
    for i in 0..MANY {
        lib.push_str(&format!(
            "int func_{i}(void) {{ return {i} + shared_counter; }}\n"
        ));
        main.push_str(&format!("int func_{i}(void);\n"));
        sum.push_str(&format!("s += func_{i}();\n"));
    }
    main.push_str(&format!(
        "int main(void) {{ long s = 0;\n{sum} printf(\"sum=%ld\\n\", s); return 0; }}\n"
    ));
    fs::write(t.join("v.map"), "V1 { global: *; };\n").unwrap();
    let so = cc(
        compiler,
        t,
        "libmany.so",
        &lib,
        &[
            "-shared",
            "-fPIC",
            "-Wl,--hash-style=both",
            "-Wl,--version-script=v.map",
        ],
    );
    let prog = cc(
        compiler,
        t,
        "many",
        &main,
        &["-L.", "-lmany", "-Wl,--hash-style=both"],
    );
    let expect: usize = (0..MANY).map(|i| i + 7).sum();
    let run = |dir: &Path| {
        let mut c = match loader {
            Some((ld, libs)) => {
                let mut c = Command::new(ld);
                c.arg("--library-path")
                    .arg(format!("{}:{libs}", dir.display()))
                    .arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        c.env("LD_BIND_NOW", "1")
            .env("LD_LIBRARY_PATH", dir)
            .output()
            .unwrap()
    };
    assert_eq!(stdout(&run(t)), format!("sum={expect}\n"));

    let mut map = String::from("shared_counter shared_counter_renamed\n\n");
    for i in 0..MANY {
        map.push_str(&format!("func_{i}   func_{i}_renamed\n"));
    }
    let map_file = t.join("map");
    fs::write(&map_file, &map).unwrap();
    let orig_syms = dynamic_symbols(&so);
    let orig_rel = relocation_symbols(&prog);

    // The library alone: the program no longer finds its symbols.
    let only = t.join("only");
    fs::create_dir(&only).unwrap();
    let o = pe(&[
        "--rename-dynamic-symbols",
        map_file.to_str().unwrap(),
        "--output",
        only.join("libmany.so").to_str().unwrap(),
        so.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let r = run(&only);
    assert!(!r.status.success(), "{r:?}");
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("undefined symbol"),
        "{r:?}"
    );

    // Both files in one call: it runs again, with the new names.
    let o = pe(&[
        "--rename-dynamic-symbols",
        map_file.to_str().unwrap(),
        so.to_str().unwrap(),
        prog.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&run(t)), format!("sum={expect}\n"));
    let renamed = dynamic_symbols(&so);
    assert!(
        renamed.iter().any(|s| s == "func_17_renamed@@V1"),
        "{renamed:?}"
    );
    assert!(
        !renamed.iter().any(|s| s.starts_with("func_17@")),
        "{renamed:?}"
    );
    let rel: Vec<String> = relocation_symbols(&prog)
        .iter()
        .map(|s| s.replace("_renamed", ""))
        .collect();
    assert_eq!(rel, orig_rel, "relocations refer to other symbols");

    // And back: the original names, still running.
    let back: String = map
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}\n", w[1], w[0])
        })
        .collect();
    let back_file = t.join("back");
    fs::write(&back_file, back).unwrap();
    let o = pe(&[
        "--rename-dynamic-symbols",
        back_file.to_str().unwrap(),
        so.to_str().unwrap(),
        prog.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(dynamic_symbols(&so), orig_syms);
    assert_eq!(relocation_symbols(&prog), orig_rel);
    assert_eq!(stdout(&run(t)), format!("sum={expect}\n"));

    // A map that matches nothing changes nothing and does not stop other options.
    let none = t.join("none");
    fs::write(&none, "no_such_symbol other_name\n").unwrap();
    let before = fs::read(&so).unwrap();
    let o = pe(&[
        "--rename-dynamic-symbols",
        none.to_str().unwrap(),
        so.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(fs::read(&so).unwrap(), before);
    let out = t.join("librp.so");
    let o = pe(&[
        "--set-rpath",
        "changed_rpath",
        "--rename-dynamic-symbols",
        none.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        so.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&pe(&["--print-rpath", out.to_str().unwrap()])),
        "changed_rpath\n"
    );

    // Bad map files are errors naming the file and line.
    for (text, want) in [
        ("func_1\n", "missing the new name"),
        ("func_1 a\nfunc_1 b\n", "appears twice"),
        ("func_1@V1 a\n", "version tag"),
    ] {
        fs::write(&none, text).unwrap();
        let o = pe(&[
            "--rename-dynamic-symbols",
            none.to_str().unwrap(),
            so.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want) && err.contains("none:"), "{err}");
    }
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// The old run path is overwritten with 'X's when nothing else uses its bytes; a string the
/// linker shares with a symbol name is left alone.
#[test]
fn old_run_path_is_tainted_only_when_unshared() {
    if !host() || !testkit::require_tool("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let so = gcc(
        t,
        "libshared.so",
        "int rpath_and_symbol_name;\nint get(void) { return rpath_and_symbol_name; }\n",
        &[
            "-shared",
            "-fPIC",
            "-Wl,--disable-new-dtags",
            "-Wl,-rpath=rpath_and_symbol_name",
        ],
    );
    let orig = fs::read(&so).unwrap();
    let names = count(&orig, b"rpath_and_symbol_name\0");
    let large = t.join("large.so");
    let long = "/opt/a/run/path/longer/than/the/symbol/name";
    for (rpath, out) in [(long, &large), ("/short", &t.join("short.so"))] {
        let o = pe(&[
            "--set-rpath",
            rpath,
            "--output",
            out.to_str().unwrap(),
            so.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{o:?}");
        let b = fs::read(out).unwrap();
        assert_eq!(
            count(&b, b"XXXXXXXX"),
            0,
            "{rpath}: a shared string was tainted"
        );
        assert_eq!(count(&b, b"rpath_and_symbol_name\0"), names, "{rpath}");
        assert!(dynamic_symbols(out)
            .iter()
            .any(|s| s == "rpath_and_symbol_name"));
        assert_eq!(
            stdout(&pe(&["--print-rpath", out.to_str().unwrap()])),
            format!("{rpath}\n")
        );
    }
    // The new run path has its own string: replacing it by a longer one taints the old one.
    let larger = t.join("larger.so");
    let o = pe(&[
        "--set-rpath",
        &format!("{long}/and/even/longer"),
        "--output",
        larger.to_str().unwrap(),
        large.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    let b = fs::read(&larger).unwrap();
    assert_eq!(count(&b, &vec![b'X'; long.len()]), 1);
    assert_eq!(count(&b, format!("{long}\0").as_bytes()), 0);
    // A shorter one reuses the slot: no taint left, no trace of the old path.
    let o = pe(&["--set-rpath", "/s", large.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let b = fs::read(&large).unwrap();
    assert_eq!(count(&b, b"XXXXXXXX"), 0);
    assert_eq!(count(&b, long.as_bytes()), 0);
    assert_eq!(
        stdout(&pe(&["--print-rpath", large.to_str().unwrap()])),
        "/s\n"
    );

    // The linker also shares a run path that is the tail of a longer symbol name.
    let tail = gcc(
        t,
        "libtail.so",
        "int long_prefix_symbol_tail;\nint get(void) { return long_prefix_symbol_tail; }\n",
        &[
            "-shared",
            "-fPIC",
            "-Wl,--disable-new-dtags",
            "-Wl,-rpath=symbol_tail",
        ],
    );
    for rpath in ["/s", long] {
        let out = t.join("tail-out.so");
        let o = pe(&[
            "--set-rpath",
            rpath,
            "--output",
            out.to_str().unwrap(),
            tail.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{o:?}");
        let b = fs::read(&out).unwrap();
        assert_eq!(count(&b, b"XXXX"), 0, "{rpath}");
        assert!(
            dynamic_symbols(&out)
                .iter()
                .any(|s| s == "long_prefix_symbol_tail"),
            "{rpath}"
        );
    }
}

/// Little-endian ELF64 field access for crafting broken inputs.
fn rd(b: &[u8], off: usize, n: usize) -> u64 {
    b[off..off + n]
        .iter()
        .rev()
        .fold(0u64, |v, &c| (v << 8) | u64::from(c))
}

fn wr(b: &mut [u8], off: usize, n: usize, v: u64) {
    for i in 0..n {
        b[off + i] = (v >> (8 * i)) as u8;
    }
}

/// Section header `i`'s file offset, and the index of the first section of `sh_type`.
fn shdr_at(b: &[u8], i: usize) -> usize {
    rd(b, 40, 8) as usize + i * 64
}

fn section_of(b: &[u8], sh_type: u64) -> usize {
    (0..rd(b, 60, 2) as usize)
        .find(|&i| rd(b, shdr_at(b, i) + 4, 4) == sh_type)
        .unwrap()
}

/// patchelf's checks of malformed input, with its wording: an error (exit 1, never a signal)
/// and nothing written to `--output`; a valid oddity (`sh_addralign` 0) is accepted.
#[test]
fn malformed_inputs_get_patchelf_messages() {
    if !host() || !testkit::require_tool("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let prog = gcc(
        t,
        "prog",
        "#include <stdio.h>\nint main(void){puts(\"hi\");return 0;}\n",
        &["-Wl,--hash-style=gnu"],
    );
    let good = fs::read(&prog).unwrap();
    let shstrndx = rd(&good, 62, 2) as usize;
    let dynamic = section_of(&good, 6);
    let dynsym = section_of(&good, 11);
    let dynstr = rd(&good, shdr_at(&good, dynsym) + 40, 4) as usize;
    let gnu_hash = section_of(&good, 0x6fff_fff6);
    let note = section_of(&good, 7);
    let field = |s: usize, at: usize| shdr_at(&good, s) + at;
    let sec_off = |s: usize| rd(&good, field(s, 24), 8) as usize;
    let sec_size = |s: usize| rd(&good, field(s, 32), 8) as usize;
    fs::write(t.join("map"), "puts puts2\n").unwrap();
    let map = t.join("map").to_str().unwrap().to_string();

    type Poke<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
    let cases: Vec<(&str, Vec<&str>, Poke<'_>, &str)> = vec![
        (
            "shstrndx",
            vec![],
            Box::new(|b: &mut Vec<u8>| wr(b, 62, 2, 0xfff0)),
            "string table index out of bounds",
        ),
        (
            "shstrtab-size",
            vec![],
            Box::new(move |b: &mut Vec<u8>| wr(b, field(shstrndx, 32), 8, 1 << 40)),
            "data region extends past file end",
        ),
        (
            "shstrtab-nonterm",
            vec![],
            Box::new(move |b: &mut Vec<u8>| {
                let end = sec_off(shstrndx) + sec_size(shstrndx);
                b[end - 1] = b'A';
            }),
            "string table is not zero terminated",
        ),
        (
            "shdr-name",
            vec![],
            Box::new(move |b: &mut Vec<u8>| wr(b, field(1, 0), 4, 0x7fff_ffff)),
            "section name offset out of bounds",
        ),
        (
            "shentsize",
            vec![],
            Box::new(|b: &mut Vec<u8>| wr(b, 58, 2, 48)),
            "section headers have wrong size",
        ),
        (
            "phoff",
            vec![],
            Box::new(|b: &mut Vec<u8>| wr(b, 32, 8, 1 << 40)),
            "program header table out of bounds",
        ),
        (
            "dynamic-offset",
            vec!["--print-needed"],
            Box::new(move |b: &mut Vec<u8>| wr(b, field(dynamic, 24), 8, 1 << 40)),
            "data offset extends past file end",
        ),
        (
            "dynamic-unaligned",
            vec!["--print-needed"],
            Box::new(move |b: &mut Vec<u8>| wr(b, field(dynamic, 24), 8, 1)),
            "section content is not naturally aligned",
        ),
        (
            "dynstr-noterm",
            vec!["--print-needed"],
            Box::new(move |b: &mut Vec<u8>| {
                let end = sec_off(dynstr) + sec_size(dynstr);
                b[end - 1] = b'A';
            }),
            "string table is not NUL-terminated",
        ),
        (
            "dynstr-index",
            vec!["--print-needed"],
            Box::new(move |b: &mut Vec<u8>| {
                // The first DT_NEEDED entry's value.
                let d = sec_off(dynamic);
                let k = (0..sec_size(dynamic) / 16)
                    .find(|k| rd(b, d + k * 16, 8) == 1)
                    .unwrap();
                wr(b, d + k * 16 + 8, 8, 0x7fff_ffff_ffff);
            }),
            "string table index out of bounds",
        ),
        (
            "dynamic-noterm",
            vec!["--add-debug-tag"],
            Box::new(move |b: &mut Vec<u8>| {
                let d = sec_off(dynamic);
                b[d..d + sec_size(dynamic)].fill(0xff);
            }),
            "write extends past end of section",
        ),
        (
            "gnuhash-buckets",
            vec!["--rename-dynamic-symbols", &map],
            Box::new(move |b: &mut Vec<u8>| wr(b, sec_off(gnu_hash), 4, 0)),
            "hash table header out of range",
        ),
        (
            "gnuhash-maskwords",
            vec!["--rename-dynamic-symbols", &map],
            Box::new(move |b: &mut Vec<u8>| wr(b, sec_off(gnu_hash) + 8, 4, 0x7fff_ffff)),
            "hash table header out of range",
        ),
    ];
    let out = t.join("out");
    for (name, args, poke, want) in &cases {
        let mut b = good.clone();
        poke(&mut b);
        let f = t.join(name);
        fs::write(&f, &b).unwrap();
        let mut argv: Vec<&str> = args.clone();
        argv.extend(["--output", out.to_str().unwrap(), f.to_str().unwrap()]);
        let o = pe(&argv);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {o:?}");
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains(f.to_str().unwrap()), "{name}: {err}");
        assert!(!out.exists(), "{name}: output written");
    }

    // An unnamed section referred to by a symbol: a warning, and the edit goes on.
    let symtab = section_of(&good, 2);
    let shnum = rd(&good, 60, 2);
    let used = (0..sec_size(symtab) / 24)
        .map(|k| rd(&good, sec_off(symtab) + k * 24 + 6, 2))
        .find(|&i| i > 0 && i < shnum)
        .unwrap() as usize;
    let mut b = good.clone();
    wr(&mut b, field(used, 0), 4, 0);
    let f = t.join("unnamed");
    fs::write(&f, &b).unwrap();
    let o = pe(&["--set-rpath", "/x", f.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: ") && err.contains("refers to an unnamed section"),
        "{err}"
    );
    assert_eq!(stdout(&pe(&["--print-rpath", f.to_str().unwrap()])), "/x\n");

    // sh_addralign 0 is valid ("no alignment"): edited, and the result still runs.
    let mut b = good.clone();
    wr(&mut b, field(note, 48), 8, 0);
    let f = t.join("align0");
    fs::write(&f, &b).unwrap();
    let o = pe(&[
        "--set-rpath",
        "/a/long/enough/run/path/to/move/things",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
    let r = Command::new(&f).output().unwrap();
    assert_eq!(stdout(&r), "hi\n");
}

/// Print operations that need `.dynamic` fail on a statically linked program, naming it,
/// as patchelf does; the soname query only needs it in a library.
#[test]
fn print_operations_on_a_static_program_fail_clearly() {
    if !host() || !testkit::require_tool("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let c = t.join("s.c");
    fs::write(&c, "int main(void){return 0;}\n").unwrap();
    let f = t.join("static");
    let built = Command::new("gcc")
        .args(["-static", "-o"])
        .arg(&f)
        .arg(&c)
        .status()
        .unwrap();
    if !built.success() {
        eprintln!("skipping: gcc cannot link statically here");
        return;
    }
    let fs_ = f.to_str().unwrap();
    for op in ["--print-rpath", "--print-needed"] {
        let o = pe(&[op, fs_]);
        assert_eq!(o.status.code(), Some(1), "{op}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("cannot find section '.dynamic'") && err.contains(fs_),
            "{op}: {err}"
        );
    }
    let o = pe(&["--print-soname", fs_]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o), "");
}

/// An object whose `.dynamic` is known only from its section header (no PT_DYNAMIC) is still
/// edited, as patchelf does; its grown program header table moves to the new segment, where
/// PT_PHDR follows it.
#[test]
fn dynamic_section_without_pt_dynamic_is_found_through_sections() {
    if !host() || !testkit::require_tool("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let prog = gcc(t, "prog", "int main(void){return 0;}\n", &["-pie", "-fPIE"]);
    let mut b = fs::read(&prog).unwrap();
    let phoff = rd(&b, 32, 8) as usize;
    let phnum = rd(&b, 56, 2) as usize;
    let dynamic = (0..phnum)
        .map(|i| phoff + i * 56)
        .find(|&at| rd(&b, at, 4) == 2)
        .unwrap();
    wr(&mut b, dynamic, 4, 0); // PT_DYNAMIC -> PT_NULL
    fs::write(&prog, &b).unwrap();
    let p = prog.to_str().unwrap();
    assert_eq!(stdout(&pe(&["--print-needed", p])), "libc.so.6\n");
    let long = format!("{}/a/long/run/path/that/needs/a/new/segment", t.display());
    let o = pe(&["--set-rpath", &long, p]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&pe(&["--print-rpath", p])), format!("{long}\n"));
    let o = testkit::run_ok(Command::new("readelf").args(["-lW"]).arg(&prog));
    let text = stdout(&o) + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(text.matches("PHDR").count(), 1, "{text}");
    assert!(!text.to_lowercase().contains("warning"), "{text}");
}

/// The text after "Flags:" on `readelf -d`'s FLAGS_1 line.
fn flags_1(file: &Path) -> String {
    let d = stdout(&testkit::run_ok(
        Command::new("readelf").arg("-d").arg(file),
    ));
    d.lines()
        .find(|l| l.contains("(FLAGS_1)"))
        .and_then(|l| l.split_once("Flags:"))
        .map(|(_, f)| f.trim().to_string())
        .unwrap_or_default()
}

/// Runs `prog` without LD_LIBRARY_PATH (optionally only tracing what ld.so loads): exit code
/// and standard output.
fn run_clean(prog: &Path, trace: bool) -> (Option<i32>, String) {
    let mut cmd = Command::new(prog);
    cmd.env_remove("LD_LIBRARY_PATH");
    if trace {
        cmd.env("LD_TRACE_LOADED_OBJECTS", "1");
    }
    let o = cmd.output().unwrap();
    (o.status.code(), stdout(&o))
}

const ANSWER_PROG: &str = "#include <stdio.h>\nint tracker_answer(void);\n\
    int main(void) { printf(\"answer %d\\n\", tracker_answer()); return 0; }\n";

/// A library that also runs on its own, as libc.so.6 does: a `.interp` section (so PT_INTERP)
/// and an entry point (linked with `-e tracker_start`).
const RUNNABLE_LIB: &str = r#"#include <stdio.h>
#include <stdlib.h>
const char tracker_interp[] __attribute__((section(".interp"))) = "/lib64/ld-linux-x86-64.so.2";
int tracker_answer(void) { return 42; }
__attribute__((force_align_arg_pointer)) void tracker_start(void) {
    printf("library run as a program: %d\n", tracker_answer());
    exit(0);
}
"#;

/// patchelf #583: `--no-default-lib --set-interpreter X --set-rpath Y`, the flags flix passes,
/// in one invocation (patchelf failed an assertion on it), here in one call for a PIE program
/// and the library it needs (one with PT_INTERP, so it takes the interpreter too). Afterwards
/// both name X, Y and DF_1_NODEFLIB, the program runs with the library, the loader and libc
/// from Y, and the library still runs on its own.
#[test]
fn no_default_lib_interpreter_and_rpath_in_one_call() {
    if !host() || !testkit::require_tool("gcc") || !testkit::require_tool("readelf") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let root = t.join("a-root-directory-long-enough-that-nothing-fits-in-place");
    testkit::host_glibc(&root);
    let interp = root.join("lib64/ld-linux-x86-64.so.2");
    let libdir = root.join("lib/x86_64-linux-gnu");
    gcc(
        t,
        "librunnable.so",
        RUNNABLE_LIB,
        &["-shared", "-fPIC", "-Wl,-e,tracker_start"],
    );
    gcc(
        t,
        "answer",
        ANSWER_PROG,
        &["-pie", "-fPIE", "-L.", "-lrunnable"],
    );
    let (lib, prog) = (libdir.join("librunnable.so"), libdir.join("answer"));
    fs::copy(t.join("librunnable.so"), &lib).unwrap();
    fs::copy(t.join("answer"), &prog).unwrap();
    assert_eq!(flags_1(&prog), "PIE");
    assert_eq!(flags_1(&lib), "");
    let (i, y) = (interp.to_str().unwrap(), libdir.to_str().unwrap());
    let o = pe(&[
        "--no-default-lib",
        "--set-interpreter",
        i,
        "--set-rpath",
        y,
        prog.to_str().unwrap(),
        lib.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{o:?}");
    for (f, flags) in [(&prog, "NODEFLIB PIE"), (&lib, "NODEFLIB")] {
        let l = stdout(&testkit::run_ok(Command::new("readelf").arg("-lW").arg(f)));
        assert!(
            l.contains(&format!("[Requesting program interpreter: {i}]")),
            "{l}"
        );
        assert_eq!(
            stdout(&pe(&["--print-rpath", f.to_str().unwrap()])),
            format!("{y}\n")
        );
        assert_eq!(flags_1(f), flags, "{f:?}");
    }
    assert_eq!(run_clean(&prog, false), (Some(0), "answer 42\n".into()));
    let (_, trace) = run_clean(&prog, true);
    for name in ["librunnable.so", "libc.so.6"] {
        assert!(
            trace.contains(&format!("{name} => {y}/{name} ")),
            "{name}:\n{trace}"
        );
    }
    assert!(trace.contains(i), "{trace}");
    assert_eq!(
        run_clean(&lib, false),
        (Some(0), "library run as a program: 42\n".into())
    );
}

const DLOPEN_PROG: &str = r#"#include <dlfcn.h>
#include <stdio.h>
int tracker_dep(void);
int main(void) {
    void *h = dlopen("libtrackerplug.so", RTLD_NOW);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 3; }
    int (*plug)(void) = (int (*)(void))dlsym(h, "tracker_plug");
    printf("dep %d plug %d\n", tracker_dep(), plug());
    return 0;
}
"#;

/// patchelf #265: a program's run path holds the directory of its DT_NEEDED library and one it
/// only dlopen()s from (plus an unused one). `--set-rpath` to a shorter run path that keeps
/// the plugin directory (written over the old string, in place) keeps the dlopen() working;
/// dropping that directory makes it fail, so the check can fail.
///
/// `--shrink-rpath` keeps an absolute directory only when it holds a DT_NEEDED library, as
/// patchelf's does, so it drops the plugin directory and the dlopen() fails; and
/// `--allowed-rpath-prefixes` only removes more. What a user should do for a directory that
/// only dlopen() needs: set the run path with `--set-rpath`, or write that entry relative to
/// `$ORIGIN`, which `--shrink-rpath` keeps (checked last).
#[test]
fn a_run_path_entry_only_dlopen_needs() {
    if !host() || !testkit::require_tool("gcc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (needed, plugins) = (t.join("needed"), t.join("plugins"));
    fs::create_dir(&needed).unwrap();
    fs::create_dir(&plugins).unwrap();
    gcc(
        &needed,
        "libtrackerdep.so",
        "int tracker_dep(void) { return 7; }\n",
        &["-shared", "-fPIC"],
    );
    gcc(
        &plugins,
        "libtrackerplug.so",
        "int tracker_plug(void) { return 9; }\n",
        &["-shared", "-fPIC"],
    );
    let (n, p) = (needed.to_str().unwrap(), plugins.to_str().unwrap());
    let unused = t.join("a-directory-nothing-is-loaded-from");
    let prog = gcc(
        t,
        "dl",
        DLOPEN_PROG,
        &[
            &format!("-L{n}"),
            "-ltrackerdep",
            "-ldl",
            "-Wl,--enable-new-dtags",
            &format!("-Wl,-rpath,{n}:{p}:{}", unused.display()),
        ],
    );
    let works = (Some(0), "dep 7 plug 9\n".to_string());
    assert_eq!(run_clean(&prog, false), works);
    let variant = |name: &str, args: &[&str]| {
        let f = t.join(name);
        fs::copy(&prog, &f).unwrap();
        let mut argv = args.to_vec();
        argv.push(f.to_str().unwrap());
        let o = pe(&argv);
        assert!(o.status.success(), "{name}: {o:?}");
        let rpath = stdout(&pe(&["--print-rpath", f.to_str().unwrap()]));
        (f, rpath.trim_end().to_string())
    };
    let fails = |f: &Path| {
        let (code, out) = run_clean(f, false);
        code == Some(3) && out.contains("dlopen failed") && out.contains("libtrackerplug.so")
    };

    let keep = format!("{n}:{p}");
    let (f, rpath) = variant("dl-set", &["--set-rpath", &keep]);
    assert_eq!(rpath, keep);
    assert_eq!(
        fs::metadata(&f).unwrap().len(),
        fs::metadata(&prog).unwrap().len()
    );
    assert_eq!(run_clean(&f, false), works);

    let (f, rpath) = variant("dl-dropped", &["--set-rpath", n]);
    assert_eq!(rpath, n);
    assert!(fails(&f), "{:?}", run_clean(&f, false));

    let (f, rpath) = variant("dl-shrunk", &["--shrink-rpath"]);
    assert_eq!(rpath, n);
    assert!(fails(&f), "{:?}", run_clean(&f, false));
    let t_s = t.to_str().unwrap();
    let (f, rpath) = variant(
        "dl-shrunk-prefix",
        &["--shrink-rpath", "--allowed-rpath-prefixes", t_s],
    );
    assert_eq!(rpath, n);
    assert!(fails(&f));

    let (f, _) = variant(
        "dl-origin",
        &["--set-rpath", &format!("{n}:$ORIGIN/plugins")],
    );
    let o = pe(&["--shrink-rpath", f.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        stdout(&pe(&["--print-rpath", f.to_str().unwrap()])),
        format!("{n}:$ORIGIN/plugins\n")
    );
    assert_eq!(run_clean(&f, false), works);
}
