//! Hard cases from patchelf's issue tracker, each built here with gcc, rewritten with elf-edit,
//! then run (and read back with readelf where the case is about layout):
//!
//! - patchelf #223: `.dynamic` has to move, and DT_FLAGS_1 (NODEFLIB, NOW, PIE) and DT_FLAGS
//!   come along (`moved_dynamic_keeps_flags_1`).
//! - patchelf #244 and #403: non-PIE programs, also one without separate code and one linked
//!   so low that there is no page below its first PT_LOAD, whose `.interp` and `.dynstr` must
//!   leave the existing PT_LOADs (`non_pie_programs_grow_into_a_consistent_layout`).
//! - patchelf #569 and #619: programs and a library without section headers
//!   (`objects_without_section_headers`); making room for the new PT_LOAD in such a program
//!   needed a fix in crates/elf-edit/src/grow.rs (`block_without_sections`).
//!
//! Elsewhere: `--no-default-lib --set-interpreter --set-rpath` in one flix-patchelf call
//! (patchelf #583) and a shrunk run path that a dlopen() still needs (patchelf #265) are in
//! crates/flix/tests/rewrite_cli.rs, as they go through the command line; arm64's 64 KiB page
//! alignment is in crates/flix/tests/foreign_cpu.rs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_edit::{inspect, rewrite, Edits};
use testkit::{program_headers, ProgramHeader as Ph};

/// A long directory name, so the new interpreter and run path never fit where the old ones were.
const LONG: &str = "an-extension-name-long-enough-that-nothing-fits-in-place";

fn host_x86_64() -> bool {
    cfg!(target_arch = "x86_64")
        && Path::new("/lib64/ld-linux-x86-64.so.2").exists()
        && testkit::require_tool("gcc")
        && testkit::require_tool("readelf")
}

/// The host loader and libc copied under a long path ([`testkit::host_glibc`]).
struct Glibc {
    _tmp: tempfile::TempDir,
    /// Where the sources are built.
    build: PathBuf,
    /// The copied loader.
    interp: String,
    /// The directory holding the copied libc, where rewritten objects go.
    lib: PathBuf,
}

impl Glibc {
    fn new() -> Glibc {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(LONG);
        testkit::host_glibc(&root);
        let build = tmp.path().join("build");
        fs::create_dir(&build).unwrap();
        Glibc {
            interp: root
                .join("lib64/ld-linux-x86-64.so.2")
                .display()
                .to_string(),
            lib: root.join("lib/x86_64-linux-gnu"),
            build,
            _tmp: tmp,
        }
    }

    fn gcc(&self, name: &str, src: &str, args: &[&str]) -> PathBuf {
        let c = self.build.join(format!("{name}.c"));
        fs::write(&c, src).unwrap();
        let out = self.build.join(name);
        testkit::run_ok(
            Command::new("gcc")
                .arg("-o")
                .arg(&out)
                .arg(&c)
                .args(args)
                .current_dir(&self.build),
        );
        out
    }

    /// The run path pointing into the long directory, and for a program the interpreter too.
    fn edits(&self, program: bool) -> Edits {
        let mut e = Edits::default();
        e.interpreter = program.then(|| self.interp.clone());
        e.runpath = Some(vec![self.lib.display().to_string()]);
        e
    }
}

/// Writes `bytes` as an executable file.
fn install(bytes: &[u8], to: &Path) {
    fs::write(to, bytes).unwrap();
    fs::set_permissions(to, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&testkit::run_ok(cmd.env_remove("LD_LIBRARY_PATH")).stdout).into_owned()
}

fn readelf(args: &[&str], file: &Path) -> String {
    text(Command::new("readelf").args(args).arg(file))
}

/// What `ld.so` loads for `prog`, as `name => path` lines.
fn trace(prog: &Path) -> String {
    let out = Command::new(prog)
        .env_remove("LD_LIBRARY_PATH")
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `name` is loaded from `dir` in `trace`.
fn loaded_from(trace: &str, name: &str, dir: &Path) {
    let want = format!("{name} => {}/{name} ", dir.display());
    assert!(trace.contains(&want), "{name} not from {dir:?}:\n{trace}");
}

/// The text after "Flags: " on `readelf -d`'s line for `tag` ("FLAGS_1" or "FLAGS").
fn dyn_flags(file: &Path, tag: &str) -> String {
    let d = readelf(&["-d"], file);
    d.lines()
        .find(|l| l.contains(&format!("({tag})")))
        .map(|l| {
            let v = l.split(')').nth(1).unwrap().trim();
            v.trim_start_matches("Flags:").trim().to_string()
        })
        .unwrap_or_default()
}

/// The program headers of `file`, after checking what the kernel and ld.so rely on: PT_LOADs
/// in address order without overlap, each with `p_offset ≡ p_vaddr (mod p_align)`, and
/// PT_PHDR inside a PT_LOAD at the matching offset.
fn consistent_layout(file: &Path) -> Vec<Ph> {
    let listing = readelf(&["-lW"], file);
    let phs = program_headers(file);
    let loads: Vec<&Ph> = phs.iter().filter(|p| p.kind == "LOAD").collect();
    assert!(!loads.is_empty(), "{listing}");
    for w in loads.windows(2) {
        assert!(w[0].vaddr + w[0].memsz <= w[1].vaddr, "{listing}");
    }
    for l in &loads {
        assert_eq!(l.offset % l.align, l.vaddr % l.align, "{listing}");
    }
    if let Some(ph) = phs.iter().find(|p| p.kind == "PHDR") {
        assert!(
            loads.iter().any(|l| l.vaddr <= ph.vaddr
                && ph.vaddr + ph.filesz <= l.vaddr + l.filesz
                && ph.offset - l.offset == ph.vaddr - l.vaddr),
            "PT_PHDR is not inside a PT_LOAD:\n{listing}"
        );
    }
    assert!(!listing.contains("Warning"), "{listing}");
    phs
}

fn segment(phs: &[Ph], kind: &str) -> Ph {
    phs.iter().find(|p| p.kind == kind).unwrap().clone()
}

fn loads(phs: &[Ph]) -> Vec<Ph> {
    phs.iter().filter(|p| p.kind == "LOAD").cloned().collect()
}

const ANSWER_LIB: &str = "int tracker_answer(void) { return 42; }\n";
const ANSWER_PROG: &str = "#include <stdio.h>\nint tracker_answer(void);\n\
    int main(void) { printf(\"answer %d\\n\", tracker_answer()); return 0; }\n";
const HELLO: &str = "#include <stdio.h>\nint main(void) { puts(\"tracker hello\"); return 0; }\n";

/// patchelf #223: DF_1_NODEFLIB must survive `.dynamic` moving. A library linked with
/// `-z now -z nodefaultlib` (FLAGS_1 NOW NODEFLIB) and a program linked with `-z now`
/// (FLAGS_1 NOW PIE, NODEFLIB set by the edit) get six more DT_NEEDED entries and a run path:
/// more than the four spare slots GNU ld leaves, so `.dynamic` moves (its address changes).
/// Every flag stays, the program runs, and NODEFLIB still works: a copy of the program in a
/// directory without libc does not find the host's.
#[test]
fn moved_dynamic_keeps_flags_1() {
    if !host_x86_64() {
        return;
    }
    let g = Glibc::new();
    let lib = g.gcc(
        "libtracker.so",
        ANSWER_LIB,
        &["-shared", "-fPIC", "-Wl,-z,now", "-Wl,-z,nodefaultlib"],
    );
    let prog = g.gcc("answer", ANSWER_PROG, &["-Wl,-z,now", "-L.", "-ltracker"]);
    assert_eq!(dyn_flags(&lib, "FLAGS_1"), "NOW NODEFLIB");
    assert_eq!(dyn_flags(&prog, "FLAGS_1"), "NOW PIE");
    let pad = g.gcc("libpad.so", "int pad;\n", &["-shared", "-fPIC"]);
    let pads: Vec<String> = (1..=6).map(|i| format!("libpad{i}.so")).collect();
    // The copy without libc: the program, its library and the pads, nothing else.
    let bare = g.build.join("no-libc-here");
    fs::create_dir(&bare).unwrap();
    for dir in [&g.lib, &bare] {
        for p in &pads {
            fs::copy(&pad, dir.join(p)).unwrap();
        }
    }

    for (obj, nodeflib, flags_1) in [
        (&lib, false, "NOW NODEFLIB"),
        (&prog, true, "NOW NODEFLIB PIE"),
    ] {
        let input = fs::read(obj).unwrap();
        let mut e = g.edits(obj == &prog);
        e.runpath = Some(vec!["$ORIGIN".into()]);
        e.add_needed.clone_from(&pads);
        e.nodeflib = nodeflib;
        let out = rewrite(&input, &e).unwrap();
        let name = obj.file_name().unwrap();
        for dir in [&g.lib, &bare] {
            install(&out, &dir.join(name));
        }
        let moved = g.lib.join(name);
        let before = segment(&consistent_layout(obj), "DYNAMIC");
        let after = segment(&consistent_layout(&moved), "DYNAMIC");
        assert_ne!(before.vaddr, after.vaddr, "{name:?}: .dynamic did not move");
        assert!(after.filesz > before.filesz, "{name:?}");
        assert_eq!(dyn_flags(&moved, "FLAGS_1"), flags_1, "{name:?}");
        assert_eq!(dyn_flags(&moved, "FLAGS"), "BIND_NOW", "{name:?}");
        assert_eq!(inspect(&out).unwrap().flags_1 & 0x800, 0x800);
    }

    let prog = g.lib.join("answer");
    assert_eq!(text(&mut Command::new(&prog)), "answer 42\n");
    let t = trace(&prog);
    for name in ["libtracker.so", "libpad6.so", "libc.so.6"] {
        loaded_from(&t, name, &g.lib);
    }
    // Without NODEFLIB the loader would take the host's libc from its cache.
    let t = trace(&bare.join("answer"));
    assert!(t.contains("libc.so.6 => not found"), "{t}");
    loaded_from(&t, "libtracker.so", &bare);
}

/// patchelf #244 and #403: a non-PIE program cannot move its segments, so the longer
/// interpreter and `.dynstr` must go to a new PT_LOAD after them. Three layouts: GNU ld's
/// default (separate code), `-z noseparate-code` (one R+X segment from offset 0) and that at
/// 0x10000, where a tool that makes room by mapping the headers a page lower has nowhere to
/// go (below `vm.mmap_min_addr` on most distributions). The old PT_LOADs keep their offsets,
/// addresses and sizes, one new PT_LOAD after them holds the interpreter and string table, and
/// the programs run with the copied loader and libc.
#[test]
fn non_pie_programs_grow_into_a_consistent_layout() {
    if !host_x86_64() {
        return;
    }
    let g = Glibc::new();
    for (name, flags) in [
        ("no-pie", &["-no-pie"][..]),
        ("no-pie-one-segment", &["-no-pie", "-Wl,-z,noseparate-code"]),
        (
            "no-pie-at-64k",
            &[
                "-no-pie",
                "-Wl,-z,noseparate-code",
                "-Wl,-Ttext-segment=0x10000",
            ],
        ),
    ] {
        let prog = g.gcc(name, HELLO, flags);
        let input = fs::read(&prog).unwrap();
        assert_eq!(inspect(&input).unwrap().e_type, 2, "{name} is not ET_EXEC");
        let old = consistent_layout(&prog);
        let old_loads = loads(&old);
        if name == "no-pie-at-64k" {
            assert_eq!((old_loads[0].offset, old_loads[0].vaddr), (0, 0x10000));
        }
        let old_end = old_loads.iter().map(|l| l.vaddr + l.memsz).max().unwrap();

        let out = rewrite(&input, &g.edits(true)).unwrap();
        let dst = g.lib.join(name);
        install(&out, &dst);
        let new = consistent_layout(&dst);
        let new_loads = loads(&new);
        assert_eq!(new_loads[..old_loads.len()], old_loads[..], "{name}");
        assert_eq!(new_loads.len(), old_loads.len() + 1, "{name}");
        let interp = segment(&new, "INTERP");
        assert!(
            interp.vaddr >= old_end,
            "{name}: PT_INTERP stayed: {interp:?}"
        );
        let strtab = readelf(&["-d"], &dst)
            .lines()
            .find(|l| l.contains("(STRTAB)"))
            .and_then(|l| l.split_whitespace().last())
            .map(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).unwrap())
            .unwrap();
        assert!(strtab >= old_end, "{name}: .dynstr stayed at {strtab:#x}");

        assert_eq!(text(&mut Command::new(&dst)), "tracker hello\n", "{name}");
        let t = trace(&dst);
        loaded_from(&t, "libc.so.6", &g.lib);
        assert!(t.contains(&g.interp), "{name}: not the copied loader:\n{t}");
    }
}

/// The section header table of a little-endian ELF64 file removed, as `sstrip` does:
/// `e_shoff`, `e_shnum` and `e_shstrndx` zeroed, the table (at the end of the file) cut off.
fn without_section_headers(mut b: Vec<u8>) -> Vec<u8> {
    let field = |b: &[u8], at: usize, n: usize| {
        b[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |v, &c| (v << 8) | u64::from(c))
    };
    assert_eq!(&b[..6], b"\x7fELF\x02\x01");
    let shoff = field(&b, 0x28, 8) as usize;
    let table = field(&b, 0x3a, 2) as usize * field(&b, 0x3c, 2) as usize;
    assert_eq!(
        shoff + table,
        b.len(),
        "the section headers do not end the file"
    );
    b.truncate(shoff);
    b[0x28..0x30].fill(0);
    b[0x3c..0x40].fill(0);
    b
}

/// patchelf #569 and #619: objects without section headers. PIE programs (from GNU ld and,
/// when installed, lld) and a non-PIE one get a long interpreter and run path (the program
/// header table has no room, and the interpreter string and notes after it are found through
/// the program headers alone), a library a long run path; the programs run with the library
/// loaded from the new place, and the outputs still have no section headers.
#[test]
fn objects_without_section_headers() {
    if !host_x86_64() {
        return;
    }
    let g = Glibc::new();
    let mut objects = vec![
        g.gcc("libtracker.so", ANSWER_LIB, &["-shared", "-fPIC"]),
        g.gcc("answer", ANSWER_PROG, &["-L.", "-ltracker"]),
        g.gcc("hello-no-pie", HELLO, &["-no-pie"]),
    ];
    if testkit::require_tool("ld.lld") {
        objects.push(g.gcc(
            "answer-lld",
            ANSWER_PROG,
            &["-fuse-ld=lld", "-L.", "-ltracker"],
        ));
    }
    for obj in &objects {
        let input = without_section_headers(fs::read(obj).unwrap());
        let name = obj.file_name().unwrap();
        let stripped = obj.with_extension("stripped");
        fs::write(&stripped, &input).unwrap();
        let no_sections = "Number of section headers:         0\n";
        assert!(readelf(&["-h"], &stripped).contains(no_sections));
        let is_program = inspect(&input).unwrap().interpreter.is_some();
        let out = rewrite(&input, &g.edits(is_program)).unwrap();
        let dst = g.lib.join(name);
        install(&out, &dst);
        assert!(readelf(&["-h"], &dst).contains(no_sections), "{name:?}");
        let before = loads(&consistent_layout(&stripped));
        let after = loads(&consistent_layout(&dst));
        assert_eq!(after[..before.len()], before[..], "{name:?}");
        assert_eq!(after.len(), before.len() + 1, "{name:?}");
        let d = readelf(&["-d"], &dst);
        let runpath = format!("Library runpath: [{}]", g.lib.display());
        assert!(d.contains(&runpath), "{name:?}: {d}");
        if name == "hello-no-pie" {
            assert_eq!(text(&mut Command::new(&dst)), "tracker hello\n");
        } else if is_program {
            assert_eq!(text(&mut Command::new(&dst)), "answer 42\n", "{name:?}");
            let t = trace(&dst);
            loaded_from(&t, "libtracker.so", &g.lib);
            loaded_from(&t, "libc.so.6", &g.lib);
            assert!(t.contains(&g.interp), "{name:?}: {t}");
        }
    }
}
