//! One parser of entries (`sysext_core::entries::parse_entry`) for flix, flatwrap and bake.
//!
//! The cases the old copies disagreed on: a target ending in `/` (bake put the source into
//! that folder, flix and flatwrap took the folder itself as the file's new name) and a target
//! outside `/usr` and `/opt` (three different messages). Here `SRC:/usr/bin/` places the
//! program at `/usr/bin/NAME` in all three, and `SRC:/etc/x` is refused by all three with the
//! same message, nothing written.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use sysext_core::entries::parse_entry;

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

fn ok(what: &str, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("opt/app/bin")).unwrap();
    let f = dir.join("opt/app/bin/tool");
    fs::write(&f, "#!/bin/sh\necho tool\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
}

fn manifest(w: &Path, entry: &str) {
    fs::write(
        w.join("bake.toml"),
        format!("[[extension]]\nname = \"tools\"\nversion = \"1\"\nsource = \"./rootfs\"\nmode = \"static\"\npaths = [{entry:?}]\narchitectures = [\"x86-64\"]\n"),
    )
    .unwrap();
}

#[test]
fn a_folder_target_takes_the_source_name_everywhere() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    rootfs(&w.join("rootfs"));
    let entry = "/opt/app/bin/tool:/usr/bin/";
    for tool in ["flix", "flatwrap"] {
        fs::create_dir(w.join(tool)).unwrap();
        let image = w.join(tool).join("tools");
        let out = run(
            tool,
            &[
                "rootfs",
                "tools",
                entry,
                "--format",
                "dir",
                "-o",
                image.to_str().unwrap(),
            ],
            w,
        );
        ok(tool, &out);
        assert!(
            fs::symlink_metadata(image.join("usr/bin/tool")).is_ok(),
            "{tool}: no usr/bin/tool"
        );
    }
    manifest(w, entry);
    let out = run(
        "sysext",
        &[
            "bake",
            "bake.toml",
            "--out",
            "baked",
            "--base-url",
            "https://example.org/x/",
            "--json",
        ],
        w,
    );
    ok("bake", &out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["entries"][0]["status"], "built", "{v}");
    // The image's listing holds usr/bin/tool.
    let raw = fs::read_dir(w.join("baked"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "raw"))
        .expect("a .raw image");
    let out = run("sysext", &["inspect", raw.to_str().unwrap(), "--json"], w);
    ok("inspect", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("usr/bin/tool"),
        "bake: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_target_outside_usr_and_opt_is_refused_the_same_way() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    rootfs(&w.join("rootfs"));
    let entry = "/opt/app/bin/tool:/etc/tool";
    let want = parse_entry(entry).unwrap_err().to_string();
    for tool in ["flix", "flatwrap"] {
        let out = run(tool, &["rootfs", "tools", entry, "--format", "dir"], w);
        assert_eq!(out.status.code(), Some(2), "{tool}");
        assert!(out.stdout.is_empty(), "{tool}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&want), "{tool}: {stderr}");
        assert!(!w.join("tools").exists(), "{tool}: written");
    }
    manifest(w, entry);
    let out = run(
        "sysext",
        &[
            "bake",
            "bake.toml",
            "--out",
            "baked",
            "--base-url",
            "https://example.org/x/",
            "--json",
        ],
        w,
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(out.status.code(), Some(0), "bake: {all}");
    assert!(
        all.contains(&want.escape_debug().to_string()) || all.contains(&want),
        "bake: {all}"
    );
}
