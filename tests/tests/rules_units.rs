//! One rule for which files are systemd units (`sysext_core::units`), for flix and flatwrap.
//!
//! The cases the old copies disagreed on: flix knew six suffixes (no `.slice`, `.scope`,
//! `.swap`, `.automount`); flatwrap took any `*.target` or `*.path` file anywhere for a unit.
//! Here both commands get a `.slice` and an `.automount` unit in a unit folder (both are
//! units: the extension asks for a manager reload) and a `foo.target` data file outside one
//! (not a unit: shipped or linked as a plain file).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const ENTRIES: &[&str] = &[
    "/usr/lib/systemd/system/tools.slice",
    "/usr/lib/systemd/system/proc-tools.automount",
    "/usr/share/tools/foo.target",
];

fn rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("usr/lib/systemd/system")).unwrap();
    fs::create_dir_all(dir.join("usr/share/tools")).unwrap();
    fs::write(
        dir.join("usr/lib/systemd/system/tools.slice"),
        "[Slice]\nCPUWeight=10\n",
    )
    .unwrap();
    fs::write(
        dir.join("usr/lib/systemd/system/proc-tools.automount"),
        "[Automount]\nWhere=/proc/tools\n",
    )
    .unwrap();
    fs::write(dir.join("usr/share/tools/foo.target"), "a data file\n").unwrap();
}

fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(testkit::workspace_bin(bin))
        .args(args)
        .current_dir(cwd)
        .env_remove("EXTRALIBS")
        .env_remove("CHROOT")
        .env_remove("HOST")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{bin}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn reload_manager(image: &Path) -> bool {
    fs::read_to_string(image.join("usr/lib/extension-release.d/extension-release.tools"))
        .unwrap()
        .lines()
        .any(|l| l == "EXTENSION_RELOAD_MANAGER=1")
}

fn args(image: &str) -> Vec<&str> {
    let mut v = vec!["rootfs", "tools"];
    v.extend_from_slice(ENTRIES);
    v.extend_from_slice(&["--format", "dir", "-o", image, "--json"]);
    v
}

#[test]
fn flix_takes_slice_and_automount_units_and_not_a_target_data_file() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    rootfs(&w.join("rootfs"));
    fs::create_dir(w.join("out")).unwrap();
    let image = w.join("out/tools");
    let out = run("flix", &args(image.to_str().unwrap()), w);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let units: Vec<&str> = v["plan"]["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert_eq!(units, ["tools.slice", "proc-tools.automount"]);
    assert!(reload_manager(&image));
    for u in ["tools.slice", "proc-tools.automount"] {
        assert!(
            image.join("usr/lib/systemd/system").join(u).is_file(),
            "{u}"
        );
    }
    // The data file stays where it was, a plain file.
    assert_eq!(
        fs::read_to_string(image.join("usr/share/tools/foo.target")).unwrap(),
        "a data file\n"
    );
    assert!(!image.join("usr/lib/systemd/system/foo.target").exists());
}

#[test]
fn flatwrap_takes_slice_and_automount_units_and_not_a_target_data_file() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    rootfs(&w.join("rootfs"));
    fs::create_dir(w.join("out")).unwrap();
    let image = w.join("out/tools");
    let out = run("flatwrap", &args(image.to_str().unwrap()), w);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<(&str, bool)> = v["plan"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["source"].as_str().unwrap(), e["unit"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        got,
        [(ENTRIES[0], true), (ENTRIES[1], true), (ENTRIES[2], false)]
    );
    assert!(reload_manager(&image));
}

/// Without the units, the data file alone makes no unit: no manager reload (flatwrap's copy
/// set `EXTENSION_RELOAD_MANAGER=1` for it).
#[test]
fn a_target_data_file_alone_asks_for_no_reload() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    rootfs(&w.join("rootfs"));
    for tool in ["flix", "flatwrap"] {
        let dir = w.join(tool);
        fs::create_dir(&dir).unwrap();
        let image = dir.join("tools");
        run(
            tool,
            &[
                "rootfs",
                "tools",
                ENTRIES[2],
                "--format",
                "dir",
                "-o",
                image.to_str().unwrap(),
            ],
            w,
        );
        assert!(!reload_manager(&image), "{tool}");
    }
}
