//! Confexts through the command line: `sysext pack --confext`, `inspect` and `check` see the
//! class, and `sysext run` merges the confext over /etc (nosuid, nodev, noexec, as
//! systemd-confext 257 does) in a private namespace, beside a sysext over /usr, leaving the
//! host's /etc untouched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SYSEXT: &str = env!("CARGO_BIN_EXE_sysext");

fn sysext(args: &[&str], dir: &Path) -> Output {
    Command::new(SYSEXT)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A confext tree for `name`: its release file and `etc/sysext-confext-test/NAME.conf`.
fn confext_tree(dir: &Path, name: &str, release: &str) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    let rel = tree.join(format!("etc/extension-release.d/extension-release.{name}"));
    fs::create_dir_all(rel.parent().unwrap()).unwrap();
    fs::write(&rel, release).unwrap();
    let conf = tree.join(format!("etc/sysext-confext-test/{name}.conf"));
    fs::create_dir_all(conf.parent().unwrap()).unwrap();
    fs::write(&conf, format!("setting from {name}\n")).unwrap();
    for d in ["etc", "etc/extension-release.d", "etc/sysext-confext-test"] {
        fs::set_permissions(tree.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    tree
}

#[test]
fn pack_inspect_check_a_confext() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tree = confext_tree(d, "conf", "ID=_any\n");
    let o = sysext(
        &[
            "pack",
            "--confext",
            tree.to_str().unwrap(),
            "conf.confext.raw",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("conf (confext):"), "{}", text(&o));

    let o = sysext(&["inspect", "--json", "conf.confext.raw"], d);
    assert!(o.status.success(), "{}", text(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["name"], "conf");
    assert_eq!(info["class"], "confext");
    assert_eq!(
        info["release_file"],
        "etc/extension-release.d/extension-release.conf"
    );

    let host = d.join("os-release");
    fs::write(&host, "ID=debian\nVERSION_ID=12\nCONFEXT_LEVEL=1\n").unwrap();
    let check = |image: &str| {
        sysext(
            &[
                "check",
                "--json",
                "--host-os-release",
                host.to_str().unwrap(),
                image,
            ],
            d,
        )
    };
    let o = check("conf.confext.raw");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // CONFEXT_LEVEL is compared, SYSEXT_LEVEL is not: a confext for level 2 is skipped.
    let tree2 = confext_tree(d, "lvl", "ID=debian\nCONFEXT_LEVEL=2\nSYSEXT_LEVEL=1\n");
    let o = sysext(
        &["pack", "--confext", tree2.to_str().unwrap(), "lvl.raw"],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = check("lvl.raw");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let codes: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["incompatible"], "{report:#}");
    let msg = report["findings"][0]["message"].as_str().unwrap();
    assert!(
        msg.contains("systemd-confext would skip") && msg.contains("confext API level '2'"),
        "{msg}"
    );

    // A confext folder with content outside etc/ is flagged; pack --confext refuses it.
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::set_permissions(tree.join("usr"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(tree.join("usr/bin"), fs::Permissions::from_mode(0o755)).unwrap();
    let o = sysext(
        &[
            "pack",
            "--confext",
            tree.to_str().unwrap(),
            "bad.confext.raw",
        ],
        d,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("\"usr\" outside etc/"), "{}", text(&o));
    assert!(!d.join("bad.confext.raw").exists());
    fs::rename(&tree, d.join("conf")).unwrap();
    let o = check("conf");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let outside: Vec<&serde_json::Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == "outside-hierarchy")
        .collect();
    assert_eq!(outside.len(), 1, "{report:#}");
    assert_eq!(outside[0]["path"], "usr");
}

#[test]
fn run_merges_a_confext_over_etc() {
    if !testkit::require_root("sysext run with a confext")
        || !testkit::require_tool("mksquashfs")
        || !testkit::require_tool("busybox")
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    // A sysext carrying busybox, so the command comes from an image and the host's /etc is
    // read through the merged view.
    let bb = "/usr/libexec/sysext-confext-test/busybox";
    let st = d.join("tools.tree");
    fs::create_dir_all(st.join("usr/libexec/sysext-confext-test")).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), st.join(&bb[1..])).unwrap();
    fs::create_dir_all(st.join("usr/lib/extension-release.d")).unwrap();
    fs::write(
        st.join("usr/lib/extension-release.d/extension-release.tools"),
        "ID=_any\n",
    )
    .unwrap();
    testkit::mksquashfs(&st, &d.join("tools.raw"), &[]);
    let tree = confext_tree(d, "conf", "ID=_any\n");
    let o = sysext(
        &[
            "pack",
            "--confext",
            tree.to_str().unwrap(),
            "conf.confext.raw",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!Path::new("/etc/sysext-confext-test").exists());
    let before = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let script = "cat /etc/sysext-confext-test/conf.conf; cat /etc/.systemd-confext/confexts; \
                  cat /usr/.systemd-sysext/extensions; test -e /etc/os-release && echo host-etc; \
                  grep ' /etc ' /proc/self/mountinfo";
    let o = Command::new(SYSEXT)
        .current_dir(d)
        .args([
            "run",
            "conf.confext.raw",
            "tools.raw",
            "--",
            bb,
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["setting from conf", "conf", "tools", "host-etc"],
        "{}",
        text(&o)
    );
    let etc_mount = lines[4];
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            etc_mount.split([' ', ',']).any(|w| w == flag),
            "/etc not {flag}: {etc_mount}"
        );
    }
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Using extensions 'tools'.\nUsing extensions 'conf'.\n"),
        "{}",
        text(&o)
    );
    assert!(!Path::new("/etc/sysext-confext-test").exists());
    assert_eq!(fs::read_to_string("/proc/self/mountinfo").unwrap(), before);
}

/// `sysext bake` with a `confext = true` entry: a confext image (release file under etc/,
/// files placed under /etc), a transfer file linking it from /var/lib/confexts.
#[test]
fn bake_builds_a_confext() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let src = d.join("src");
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::write(src.join("conf/app.conf"), "key=value\n").unwrap();
    fs::write(
        d.join("m.toml"),
        "[[extension]]\nname = \"appconf\"\nversion = \"1.0\"\nsource = \"./src\"\n\
         mode = \"static\"\nconfext = true\npaths = [\"conf/app.conf:/etc/app/\"]\n",
    )
    .unwrap();
    let o = sysext(
        &[
            "bake",
            "m.toml",
            "--out",
            "out",
            "--base-url",
            "https://h/x/",
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let raw = d.join("out/appconf-1.0-x86-64.raw");
    let o = sysext(&["inspect", "--json", "--list", raw.to_str().unwrap()], d);
    assert!(o.status.success(), "{}", text(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["class"], "confext");
    let paths: Vec<&str> = info["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"etc/app/app.conf"), "{paths:?}");
    assert!(paths.iter().all(|p| p.starts_with("etc")), "{paths:?}");
    let release = info["release"].as_str().unwrap();
    assert_eq!(release, "ID=_any\nARCHITECTURE=x86-64\n");
    let conf = fs::read_to_string(d.join("out/appconf.transfer")).unwrap();
    assert!(
        conf.contains("CurrentSymlink=/var/lib/confexts/appconf.raw\n"),
        "{conf}"
    );
    let bu = fs::read_to_string(d.join("out/appconf-x86-64.bu")).unwrap();
    assert!(
        bu.contains("systemctl restart systemd-confext")
            && bu.contains("/var/lib/confexts/appconf.raw"),
        "{bu}"
    );
    // A target outside /etc is refused for a confext.
    fs::write(
        d.join("m.toml"),
        "[[extension]]\nname = \"bad\"\nversion = \"1\"\nsource = \"./src\"\n\
         mode = \"static\"\nconfext = true\npaths = [\"conf/app.conf:/usr/share/\"]\n",
    )
    .unwrap();
    let o = sysext(
        &[
            "bake",
            "m.toml",
            "--out",
            "out2",
            "--json",
            "--base-url",
            "https://h/x/",
        ],
        d,
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("under /etc/"), "{}", text(&o));
}

/// `sysext merge --root` merges a confext over ROOT/etc until `sysext unmerge`; `status` lists
/// it under /etc (run in a private mount namespace, so nothing reaches the host).
#[test]
fn merge_status_unmerge_a_confext_on_a_root() {
    if !testkit::require_root("sysext merge with a confext") || !testkit::require_tool("unshare") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let root = d.join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=debian\nVERSION_ID=12\n",
    )
    .unwrap();
    let tree = confext_tree(d, "conf", "ID=debian\nVERSION_ID=12\n");
    fs::create_dir_all(root.join("var/lib/confexts")).unwrap();
    let o = sysext(
        &[
            "pack",
            "--confext",
            tree.to_str().unwrap(),
            root.join("var/lib/confexts/conf.raw").to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", text(&o));
    let r = root.display();
    let script = format!(
        "'{SYSEXT}' merge --root '{r}' 2>&1 || exit 1; cat '{r}/etc/sysext-confext-test/conf.conf'; \
         '{SYSEXT}' status --root '{r}' --json; '{SYSEXT}' unmerge --root '{r}' 2>&1; \
         test -e '{r}/etc/sysext-confext-test' && echo STILL-MERGED; exit 0"
    );
    let o = testkit::in_mount_namespace(&script);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.contains("Using extensions 'conf'."), "{out}");
    assert!(out.contains("setting from conf\n"), "{out}");
    let json_start = out.find('[').unwrap();
    let json_end = out.rfind(']').unwrap();
    let st: serde_json::Value = serde_json::from_str(&out[json_start..=json_end]).unwrap();
    let etc = st
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hierarchy"] == "/etc")
        .unwrap();
    assert_eq!(etc["extensions"], serde_json::json!(["conf"]), "{st:#}");
    assert!(out.contains(&format!("Unmerged '{r}/etc'.")), "{out}");
    assert!(!out.contains("STILL-MERGED"), "{out}");
}
