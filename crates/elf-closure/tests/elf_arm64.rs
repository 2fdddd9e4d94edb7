//! The closure of arm64 programs is computed on this x86-64 host from the files alone: every
//! object is an aarch64 ELF found in the aarch64 directories.

use std::path::{Path, PathBuf};
use std::process::Command;

use elf_closure::{self as elf, ClosureOptions, Reason};

const EM_AARCH64: u16 = object::elf::EM_AARCH64.0;

fn check_arm64(c: &elf::Closure, exe: &str, wants: &[&str]) {
    for o in &c.objects {
        assert!(
            o.info.machine == EM_AARCH64 && o.info.class64 && o.info.little_endian,
            "{} ({}) is not an arm64 object",
            o.path.display(),
            o.real_path.display()
        );
        if o.reason != Reason::Requested {
            assert!(
                o.real_path.starts_with("/usr/lib/aarch64-linux-gnu"),
                "{} resolved outside the aarch64 dir: {}",
                o.name,
                o.real_path.display()
            );
        }
    }
    for w in wants {
        assert!(
            c.objects.iter().any(|o| o.name == *w),
            "{exe}: {w} not in the closure: {c:#?}"
        );
    }
}

#[test]
fn arm64_closure_from_the_files_alone() {
    let root = testkit::fixtures::trixie_arm64_rootfs();
    let cases = [
        ("/usr/bin/b3sum", &["libc.so.6"][..]),
        (
            "/usr/bin/htop",
            &["libncursesw.so.6", "libtinfo.so.6", "libc.so.6"][..],
        ),
    ];
    // The extract-variant tree has no `/lib -> usr/lib` link, so PT_INTERP
    // (/lib/ld-linux-aarch64.so.1) cannot be found there: it is reported, nothing else is.
    for (exe, wants) in cases {
        let c = elf::closure(&root, &[PathBuf::from(exe)], &ClosureOptions::default()).unwrap();
        check_arm64(&c, exe, wants);
        let missing: Vec<_> = c.missing.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(missing, ["/lib/ld-linux-aarch64.so.1"], "{exe}: {c:#?}");
    }
    // The same tree completed with the merged-/usr links of a booted system (hardlinked copy,
    // the fixture stays untouched): the interpreter is found and libc's DT_NEEDED on it is the
    // same object.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let merged = tmp.path();
    let cp = |args: &[&str]| {
        Command::new("cp")
            .args(args)
            .arg(root.join("usr"))
            .arg(merged)
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        cp(&["-al"]) || cp(&["-a"]),
        "copying {}/usr",
        root.display()
    );
    std::os::unix::fs::symlink("usr/lib", merged.join("lib")).unwrap();
    for (exe, wants) in cases {
        let c = elf::closure(merged, &[PathBuf::from(exe)], &ClosureOptions::default()).unwrap();
        check_arm64(&c, exe, wants);
        assert!(c.missing.is_empty(), "{exe}: {:?}", c.missing);
        let interp: Vec<_> = c.objects.iter().filter(|o| o.is_interpreter).collect();
        assert_eq!(interp.len(), 1);
        assert_eq!(interp[0].path, Path::new("/lib/ld-linux-aarch64.so.1"));
        assert_eq!(
            interp[0].real_path,
            Path::new("/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")
        );
        assert_eq!(
            c.objects
                .iter()
                .filter(|o| o.real_path == interp[0].real_path)
                .count(),
            1
        );
        let libc = c.objects.iter().find(|o| o.name == "libc.so.6").unwrap();
        assert_eq!(libc.reason.to_string(), "system dir");
    }
}
