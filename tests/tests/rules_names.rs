//! One rule for the names of the images we produce (`sysext_core::release::validate_new_name`),
//! checked before any work by every command that takes a name: flix, flatwrap, `sysext pack`,
//! `sysext bake` (the manifest's names) and `sysext convert-torcx`.
//!
//! The case the old copies disagreed on: flix took a leading-dot name, pulled, staged and
//! rewrote everything, and failed only in pack; flatwrap and pack refused it. Here a leading-dot
//! name and a name with `/` are refused by each command with exit status 2, nothing on stdout,
//! the same message, nothing written, and (for the commands that pull) a source that cannot be
//! reached is never contacted: the name is refused before the source is looked at.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use sysext_core::release::validate_new_name;

const BAD: &[&str] = &[".x", "a/b"];

/// A source no command can open: a registry on a closed port, so a command that pulled before
/// checking the name would fail with a pull error instead of the name's.
const UNREACHABLE: &str = "127.0.0.1:9/none/such:latest";

fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(testkit::workspace_bin(bin))
        .args(args)
        .current_dir(cwd)
        .env_remove("EXTRALIBS")
        .env_remove("CHROOT")
        .env_remove("HOST")
        .output()
        .unwrap()
}

/// Exit 2, nothing on stdout, the rule's message on stderr, nothing written in `work`
/// besides `keep`.
fn assert_refused(what: &str, name: &str, out: &Output, work: &Path, keep: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what} {name:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{what} {name:?}: stdout {:?}",
        out.stdout
    );
    let want = validate_new_name(name).unwrap_err().to_string();
    assert!(
        stderr.contains(&want),
        "{what} {name:?}: stderr {stderr:?} lacks {want:?}"
    );
    assert!(
        !stderr.contains("127.0.0.1:9"),
        "{what}: the source was contacted: {stderr}"
    );
    let mut left: Vec<String> = fs::read_dir(work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    left.sort();
    assert_eq!(left, Vec::<String>::new(), "{what} {name:?}: written");
}

#[test]
fn flix_and_flatwrap_refuse_before_pulling() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    for name in BAD {
        let out = run(
            "flix",
            &[
                UNREACHABLE,
                name,
                "/usr/bin/x",
                "--format",
                "dir",
                "-o",
                "out",
            ],
            w,
        );
        assert_refused("flix", name, &out, w, &[]);
        let out = run(
            "flatwrap",
            &[
                UNREACHABLE,
                name,
                "/usr/bin/x",
                "--format",
                "dir",
                "-o",
                "out",
            ],
            w,
        );
        assert_refused("flatwrap", name, &out, w, &[]);
    }
}

#[test]
fn flix_refuses_a_folder_source_before_staging() {
    // A real rootfs folder: the old flix planned and staged it, then pack refused the name.
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    fs::create_dir_all(w.join("rootfs/usr/bin")).unwrap();
    fs::write(w.join("rootfs/usr/bin/x"), "#!/bin/sh\n").unwrap();
    for name in BAD {
        let out = run(
            "flix",
            &["rootfs", name, "/usr/bin/x", "--format", "dir"],
            w,
        );
        assert_refused("flix", name, &out, w, &["rootfs"]);
        let out = run(
            "flatwrap",
            &["rootfs", name, "/usr/bin/x", "--format", "dir"],
            w,
        );
        assert_refused("flatwrap", name, &out, w, &["rootfs"]);
    }
}

#[test]
fn sysext_pack_bake_and_convert_torcx_refuse() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    fs::create_dir_all(w.join("tree/usr/bin")).unwrap();
    fs::write(w.join("torcx.tgz"), b"not read").unwrap();
    for name in BAD {
        let out = run("sysext", &["pack", "tree", "out", "--name", name], w);
        assert_refused(
            "sysext pack",
            name,
            &out,
            w,
            &["tree", "torcx.tgz", "bake.toml"],
        );

        let out = run(
            "sysext",
            &["convert-torcx", "torcx.tgz", name, "--format", "dir"],
            w,
        );
        assert_refused(
            "sysext convert-torcx",
            name,
            &out,
            w,
            &["tree", "torcx.tgz", "bake.toml"],
        );

        let manifest = format!(
            "[[extension]]\nname = {name:?}\nversion = \"1\"\nsource = {UNREACHABLE:?}\nmode = \"flix\"\npaths = [\"/usr/bin/x\"]\n"
        );
        fs::write(w.join("bake.toml"), manifest).unwrap();
        let out = run("sysext", &["bake", "bake.toml", "--out", "baked"], w);
        assert_refused(
            "sysext bake",
            name,
            &out,
            w,
            &["tree", "torcx.tgz", "bake.toml"],
        );
    }
    // A leading-dot output name (no --name) is the same case for pack.
    let out = run("sysext", &["pack", "tree", ".x.raw"], w);
    assert_refused(
        "sysext pack",
        ".x",
        &out,
        w,
        &["tree", "torcx.tgz", "bake.toml"],
    );
}
