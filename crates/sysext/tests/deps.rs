//! `sysext deps` against the trixie fixture and a copy of it with libraries left out.

use std::path::Path;
use std::process::{Command, Output};

fn deps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
        .arg("deps")
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn lists_objects_paths_and_reasons() {
    let root = testkit::fixtures::trixie_rootfs();
    let root = root.to_str().unwrap();
    let out = deps(&["--root", root, "/usr/bin/htop"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(
        "libncursesw.so.6 => /lib/x86_64-linux-gnu/libncursesw.so.6 -> /usr/lib/x86_64-linux-gnu/libncursesw.so.6"
    ), "{stdout}");
    assert!(stdout.contains("(ld.so.cache)"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("/lib64/ld-linux-x86-64.so.2") && l.ends_with("(interpreter)")),
        "{stdout}"
    );

    let out = deps(&["--root", root, "--json", "usr/bin/htop", "/usr/bin/b3sum"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let objects = v["objects"].as_array().unwrap();
    let libc = objects.iter().find(|o| o["name"] == "libc.so.6").unwrap();
    assert_eq!(libc["reason"]["kind"], "ld_cache");
    assert_eq!(libc["real_path"], "/usr/lib/x86_64-linux-gnu/libc.so.6");
    assert_eq!(libc["info"]["class64"], true);
    assert!(objects
        .iter()
        .any(|o| o["path"] == "/usr/bin/b3sum" && o["reason"]["kind"] == "requested"));
    // libc is shared by both programs: listed once.
    assert_eq!(
        objects.iter().filter(|o| o["name"] == "libc.so.6").count(),
        1
    );
    assert_eq!(v["missing"].as_array().unwrap().len(), 0);
}

#[test]
fn missing_libraries_exit_1_with_a_hint() {
    let fixture = testkit::fixtures::trixie_rootfs();
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for f in [
        "usr/bin/htop",
        "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "usr/lib/x86_64-linux-gnu/libc.so.6",
        "usr/lib/x86_64-linux-gnu/libm.so.6",
    ] {
        std::fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        std::fs::copy(fixture.join(f), root.join(f)).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/lib64")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", root.join("lib64")).unwrap();
    std::os::unix::fs::symlink(
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        root.join("usr/lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    let out = deps(&["--root", root.to_str().unwrap(), "/usr/bin/htop"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("libncursesw.so.6 => not found  (needed by /usr/bin/htop)"),
        "{stdout}"
    );
    assert!(stdout.contains("libtinfo.so.6 => not found"), "{stdout}");
    assert!(stdout.contains("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 -> /usr/lib/x86_64-linux-gnu/libc.so.6  (system dir)"), "{stdout}");
    assert!(stderr.contains("--extra-lib"), "{stderr}");
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let root = testkit::fixtures::trixie_rootfs();
    let out = deps(&["--root", root.to_str().unwrap(), "/etc/os-release"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/etc/os-release is not an ELF file"),
        "{}",
        text(&out.stderr)
    );
    let out = deps(&["--root", root.to_str().unwrap(), "/usr/bin/no-such-program"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/usr/bin/no-such-program not found"),
        "{}",
        text(&out.stderr)
    );
    let out = deps(&["--root", "/nonexistent-root", "/usr/bin/htop"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent-root"));
    assert!(!Path::new("/nonexistent-root").exists());
}
