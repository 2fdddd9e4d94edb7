//! ELF dlopen metadata (`.note.dlopen`): notes written by the assembler into libraries built
//! here, and the real ones of Debian trixie's systemd libraries; the closure follows them only
//! as far as asked, with the alternatives and priorities of the spec; flix ships the
//! recommended ones by default.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use elf_closure::dlopen::{self, DlopenFollow, DlopenPriority};
use elf_closure::{self as elf, ClosureOptions, Reason};

fn gcc(args: &[&str]) {
    testkit::run_ok(Command::new("gcc").args(args));
}

/// An assembler file holding one `.note.dlopen` note with `json` (owner FDO, type 0x407c0c0a).
fn note_asm(json: &str) -> String {
    let escaped = json.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        ".pushsection .note.dlopen,\"a\",%note\n.balign 4\n.long 4\n.long 2f - 1f\n.long 0x407c0c0a\n.asciz \"FDO\"\n1: .asciz \"{escaped}\"\n2: .balign 4\n.popsection\n.section .note.GNU-stack,\"\",%progbits\n"
    )
}

fn names(c: &elf::Closure) -> Vec<String> {
    c.objects.iter().map(|o| o.name.clone()).collect()
}

/// A root with the host's glibc, `/opt/bin/prog` needing `libmain.so.1`, whose note names a
/// required, a recommended (two alternative names, the first absent), a suggested and a
/// required-but-absent library; the recommended one needs `libdep.so.1` itself.
fn dlopen_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let src = dir.join("src");
    let lib = root.join("opt/lib");
    for d in [&src, &lib, &root.join("opt/bin")] {
        fs::create_dir_all(d).unwrap();
    }
    testkit::host_glibc(&root);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    fs::write(src.join("f.c"), "int f(void) { return 1; }\n").unwrap();
    for name in ["libreq.so.1", "libsug.so.1", "libdep.so.1"] {
        gcc(&[
            "-shared",
            "-fPIC",
            &format!("-Wl,-soname,{name}"),
            "-o",
            &s(&lib.join(name)),
            &s(&src.join("f.c")),
        ]);
    }
    gcc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,librec.so.1",
        "-o",
        &s(&lib.join("librec.so.1")),
        &s(&src.join("f.c")),
        &format!("-L{}", lib.display()),
        "-Wl,--no-as-needed",
        "-l:libdep.so.1",
        "-Wl,-rpath,/opt/lib",
    ]);
    fs::write(
        src.join("note.S"),
        note_asm(
            r#"[{"feature":"req","priority":"required","soname":["libreq.so.1"]},{"feature":"rec","soname":["librec.so.2","librec.so.1"]},{"feature":"sug","priority":"suggested","soname":["libsug.so.1"]},{"feature":"gone","priority":"required","soname":["libgone.so.1"]}]"#,
        ),
    )
    .unwrap();
    gcc(&[
        "-shared",
        "-fPIC",
        "-Wl,-soname,libmain.so.1",
        "-Wl,-rpath,/opt/lib",
        "-o",
        &s(&lib.join("libmain.so.1")),
        &s(&src.join("f.c")),
        &s(&src.join("note.S")),
    ]);
    fs::write(
        src.join("main.c"),
        "int f(void);\nint main(void) { return f() - 1; }\n",
    )
    .unwrap();
    gcc(&[
        "-o",
        &s(&root.join("opt/bin/prog")),
        &s(&src.join("main.c")),
        &format!("-L{}", lib.display()),
        "-l:libmain.so.1",
        "-Wl,-rpath,/opt/lib",
    ]);
    root
}

#[test]
fn notes_written_by_the_assembler_are_read() {
    if !testkit::require_tool("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dlopen_root(dir.path());
    let notes = dlopen::dlopen_notes_file(&root.join("opt/lib/libmain.so.1")).unwrap();
    let summary: Vec<(Option<&str>, DlopenPriority, usize)> = notes
        .iter()
        .map(|n| (n.feature.as_deref(), n.priority, n.sonames.len()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Some("req"), DlopenPriority::Required, 1),
            (Some("rec"), DlopenPriority::Recommended, 2),
            (Some("sug"), DlopenPriority::Suggested, 1),
            (Some("gone"), DlopenPriority::Required, 1),
        ]
    );
    // Objects without notes, and bytes that are not ELF, have none.
    assert!(dlopen::dlopen_notes_file(&root.join("opt/lib/libreq.so.1"))
        .unwrap()
        .is_empty());
}

#[test]
fn the_closure_follows_dlopen_notes_as_far_as_asked() {
    if !testkit::require_tool("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dlopen_root(dir.path());
    let prog = [PathBuf::from("/opt/bin/prog")];
    let closure = |follow| {
        elf::closure(
            &root,
            &prog,
            &ClosureOptions::default().following_dlopen(follow),
        )
        .unwrap()
    };

    // The default is what the loader loads at start-up, nothing else.
    let plain = elf::closure(&root, &prog, &ClosureOptions::default()).unwrap();
    for n in ["libreq.so.1", "librec.so.1", "libdep.so.1", "libsug.so.1"] {
        assert!(!names(&plain).contains(&n.to_string()), "{n}: {plain:#?}");
    }
    assert!(plain.dlopen_missing.is_empty());
    assert_eq!(
        names(&closure(DlopenFollow::None)),
        names(&plain),
        "none is the default"
    );

    let req = closure(DlopenFollow::Required);
    assert!(names(&req).contains(&"libreq.so.1".to_string()));
    assert!(!names(&req).contains(&"librec.so.1".to_string()));
    assert_eq!(req.dlopen_missing.len(), 1);
    assert_eq!(req.dlopen_missing[0].sonames, vec!["libgone.so.1"]);
    assert_eq!(
        req.dlopen_missing[0].needed_by,
        Path::new("/opt/lib/libmain.so.1")
    );

    let rec = closure(DlopenFollow::Recommended);
    let got = names(&rec);
    // The first alternative present is taken, with its own DT_NEEDED.
    for n in ["libreq.so.1", "librec.so.1", "libdep.so.1"] {
        assert!(got.contains(&n.to_string()), "{n} not in {got:?}");
    }
    assert!(!got.contains(&"libsug.so.1".to_string()));
    let recobj = rec
        .objects
        .iter()
        .find(|o| o.name == "librec.so.1")
        .unwrap();
    assert_eq!(
        recobj.reason,
        Reason::Dlopen {
            of: PathBuf::from("/opt/lib/libmain.so.1"),
            feature: Some("rec".into()),
            priority: DlopenPriority::Recommended,
        }
    );
    assert_eq!(recobj.real_path, Path::new("/opt/lib/librec.so.1"));
    let dep = rec
        .objects
        .iter()
        .find(|o| o.name == "libdep.so.1")
        .unwrap();
    assert!(matches!(
        dep.reason,
        Reason::Runpath { .. } | Reason::Rpath { .. }
    ));
    assert!(rec.missing.is_empty(), "{:?}", rec.missing);

    let sug = closure(DlopenFollow::Suggested);
    assert!(names(&sug).contains(&"libsug.so.1".to_string()));
}

/// Debian trixie's libsystemd carries dlopen notes (compression libraries, gcrypt): read them,
/// and `flix` of a program that links libsystemd ships the recommended ones by default and
/// none with `--dlopen=none`.
#[test]
fn trixie_libsystemd_notes_and_flix_ships_recommended_ones() {
    if !testkit::require_root("the trixie fixture (mmdebstrap)") {
        return;
    }
    let root = testkit::fixtures::trixie_rootfs();
    let libsystemd = safefs::rootfs::resolve(
        &root,
        Path::new("/usr/lib/x86_64-linux-gnu/libsystemd.so.0"),
        true,
    )
    .unwrap();
    let notes = dlopen::dlopen_notes_file(&safefs::rootfs::host_path(&root, &libsystemd)).unwrap();
    let all: Vec<&String> = notes.iter().flat_map(|n| &n.sonames).collect();
    eprintln!("libsystemd dlopen notes: {notes:#?}");
    assert!(notes.len() >= 3, "{notes:#?}");
    assert!(all.iter().any(|s| s.starts_with("libzstd.so")), "{all:?}");

    let flix = testkit::workspace_bin("flix");
    let tmp = tempfile::tempdir().unwrap();
    let plan = |level: &str| -> serde_json::Value {
        let out = testkit::run_ok(
            Command::new(&flix)
                .arg(&root)
                .args(["logger", "/usr/bin/logger", "--json", "--format", "dir"])
                .arg(format!("--dlopen={level}"))
                .arg("--output")
                .arg(tmp.path().join(format!("out-{level}"))),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let libraries = |v: &serde_json::Value| -> Vec<String> {
        v["plan"]["libraries"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let default = libraries(&plan("recommended"));
    let none = libraries(&plan("none"));
    let zstd = |v: &[String]| v.iter().any(|l| l.starts_with("libzstd.so"));
    assert!(zstd(&default), "{default:?}");
    assert!(!zstd(&none), "{none:?}");
    assert!(tmp
        .path()
        .join("out-recommended/usr/local/logger/libzstd.so.1")
        .exists());
}
