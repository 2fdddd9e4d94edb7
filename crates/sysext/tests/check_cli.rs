//! `sysext check` on real folders and on `.raw` images made by `sysext pack` and mksquashfs:
//! a clean image exits 0, each kind of finding exits 1 naming its path, errors exit 2.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

/// A clean extension folder `DIR/NAME` (release `ID=_any`), every directory 0755.
fn tree(dir: &Path, name: &str, release: &str) -> PathBuf {
    let t = dir.join(name);
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join(format!("extension-release.{name}")), release).unwrap();
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::write(t.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    fs::create_dir_all(t.join("opt/tool")).unwrap();
    fs::write(t.join("opt/tool/data"), "data\n").unwrap();
    testkit::dirs_0755(&t);
    t
}

fn host_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("host-os-release");
    fs::write(&p, text).unwrap();
    p
}

fn check(image: &Path, host: &Path, extra: &[&str]) -> Output {
    sysext()
        .arg("check")
        .arg(image)
        .arg("--host-os-release")
        .arg(host)
        .args(extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts exit 1 with a `code` finding naming `path`, and returns the JSON findings.
fn assert_finding(image: &Path, host: &Path, code: &str, path: Option<&str>) {
    let o = check(image, host, &[]);
    assert_eq!(o.status.code(), Some(1), "{code}: {}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("[{code}]")))
        .unwrap_or_else(|| panic!("no {code} finding: {}", text(&o)));
    if let Some(p) = path {
        assert!(line.contains(p), "{code} does not name {p}: {line}");
    }
    let o = check(image, host, &["--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("valid JSON");
    let found = v["findings"].as_array().unwrap().iter().any(|f| {
        f["code"] == code
            && path.is_none_or(|p| f["path"] == p)
            && f["message"].as_str().is_some_and(|m| !m.is_empty())
            && (f["severity"] == "error" || f["severity"] == "warning")
    });
    assert!(found, "{code} missing in JSON: {v}");
}

const DEB: &str = "ID=debian\nVERSION_ID=12\n";

#[test]
fn clean_folder_passes_and_json_says_compatible() {
    let d = tempfile::tempdir().unwrap();
    let host = host_file(d.path(), DEB);
    let t = tree(d.path(), "tool", "ID=_any\n");
    let o = check(&t, &host, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
    let o = check(&t, &host, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "tool");
    assert_eq!(v["verdict"]["verdict"], "compatible");
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    // "." names the folder by its real name.
    let o = sysext()
        .args(["check", ".", "--host-os-release"])
        .arg(&host)
        .current_dir(&t)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn each_finding_kind_in_a_folder() {
    let d = tempfile::tempdir().unwrap();
    let host = host_file(d.path(), DEB);
    let rel = "usr/lib/extension-release.d/extension-release";

    let t = tree(&d.path().join("a"), "tool", "ID=_any\n");
    fs::remove_file(t.join(format!("{rel}.tool"))).unwrap();
    assert_finding(&t, &host, "missing-release", Some(&format!("{rel}.tool")));

    let t = tree(&d.path().join("b"), "tool", "ID=_any\n");
    fs::rename(
        t.join(format!("{rel}.tool")),
        t.join(format!("{rel}.other")),
    )
    .unwrap();
    assert_finding(&t, &host, "misnamed-release", Some(&format!("{rel}.other")));

    let t = tree(&d.path().join("c"), "tool", "ID=_any\n");
    fs::write(t.join("usr/lib/os-release"), DEB).unwrap();
    assert_finding(&t, &host, "os-release-in-image", Some("usr/lib/os-release"));

    let t = tree(&d.path().join("e"), "tool", "ID=_any\n");
    fs::create_dir_all(t.join("etc/tool")).unwrap();
    fs::write(t.join("etc/tool/conf"), "x\n").unwrap();
    testkit::dirs_0755(&t);
    assert_finding(&t, &host, "outside-hierarchy", Some("etc"));

    let t = tree(&d.path().join("f"), "tool", "ID=_any\n");
    fs::set_permissions(t.join("usr/bin"), fs::Permissions::from_mode(0o775)).unwrap();
    assert_finding(&t, &host, "directory-mode", Some("usr/bin"));

    let t = tree(&d.path().join("g"), "tool", "ID=fedora\nVERSION_ID=40\n");
    assert_finding(&t, &host, "incompatible", Some(&format!("{rel}.tool")));
    let o = check(&t, &host, &[]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("'fedora'"),
        "{}",
        text(&o)
    );

    let t = tree(&d.path().join("h"), "to_ol", "ID=_any\n");
    assert_finding(&t, &host, "risky-name", None);

    let t = tree(&d.path().join("i"), "tool", "ID=\u{fffd}\n");
    fs::write(t.join(format!("{rel}.tool")), b"ID=\xff\n").unwrap();
    assert_finding(
        &t,
        &host,
        "unreadable-release",
        Some(&format!("{rel}.tool")),
    );
}

#[test]
fn non_root_owner_is_found() {
    if !testkit::require_root("chown to another user") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let host = host_file(d.path(), DEB);
    let t = tree(d.path(), "tool", "ID=_any\n");
    std::os::unix::fs::chown(t.join("usr/bin/tool"), Some(1000), Some(1000)).unwrap();
    assert_finding(&t, &host, "not-root-owned", Some("usr/bin/tool"));
}

#[test]
fn host_from_root_folder() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=flatcar\nVERSION_ID=4081.2.0\nSYSEXT_LEVEL=1.0\n",
    )
    .unwrap();
    let run = |t: &Path| {
        sysext()
            .arg("check")
            .arg(t)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };
    let ok = tree(
        &d.path().join("a"),
        "tool",
        "ID=flatcar\nSYSEXT_LEVEL=1.0\n",
    );
    let o = run(&ok);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let bad = tree(
        &d.path().join("b"),
        "tool",
        "ID=flatcar\nSYSEXT_LEVEL=2.0\n",
    );
    let o = run(&bad);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("[incompatible]"));
    // etc/os-release wins over usr/lib/os-release, as in systemd.
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(
        root.join("etc/os-release"),
        "ID=flatcar\nSYSEXT_LEVEL=2.0\n",
    )
    .unwrap();
    let o = run(&bad);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // An ARCHITECTURE for another CPU, checked against an explicit host architecture.
    let arm = tree(&d.path().join("c"), "tool", "ID=_any\nARCHITECTURE=arm64\n");
    let o = sysext()
        .arg("check")
        .arg(&arm)
        .arg("--root")
        .arg(&root)
        .args(["--host-arch", "arm64"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&arm);
    let want = if sysext_core::release::host_architecture() == Some("arm64") {
        0
    } else {
        1
    };
    assert_eq!(o.status.code(), Some(want), "{}", text(&o));
}

#[test]
fn errors_exit_2_with_a_clear_message() {
    let d = tempfile::tempdir().unwrap();
    let host = host_file(d.path(), DEB);
    let missing = d.path().join("nope.raw");
    let o = check(&missing, &host, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nope.raw") && err.contains("No such file"),
        "{err}"
    );
    assert!(o.stdout.is_empty());

    let garbage = d.path().join("garbage.raw");
    fs::write(&garbage, "not an image").unwrap();
    let o = check(&garbage, &host, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("garbage.raw"));

    let t = tree(d.path(), "tool", "ID=_any\n");
    let o = check(&t, &d.path().join("no-host-file"), &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-host-file"));
    let o = sysext()
        .arg("check")
        .arg(&t)
        .arg("--root")
        .arg(d.path().join("empty-root"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty-root"));

    // A FIFO where an image is expected: refused at once, naming it, by check and inspect
    // (opening it for reading would wait for a writer forever).
    let fifo = d.path().join("fifo.raw");
    testkit::mkfifo(&fifo);
    for cmd in ["check", "inspect"] {
        let r = testkit::hostile::run_bounded(
            sysext().arg(cmd).arg(&fifo),
            std::time::Duration::from_secs(20),
        );
        r.assert_bounded(&format!("sysext {cmd} on a FIFO"), 512);
        assert_eq!(r.code, Some(2), "{cmd}: {}", r.stderr_text());
        let err = r.stderr_text();
        assert!(
            err.contains("fifo.raw") && err.contains("a FIFO"),
            "{cmd}: {err}"
        );
    }
}

fn pack(tree: &Path, out: &Path) {
    testkit::run_ok(sysext().arg("pack").arg(tree).arg(out));
}

#[test]
fn raw_images_from_sysext_pack_and_mksquashfs() {
    let d = tempfile::tempdir().unwrap();
    let host = host_file(d.path(), DEB);

    // Clean: packed by `sysext pack`.
    let t = tree(&d.path().join("a"), "tool", "ID=debian\nVERSION_ID=12\n");
    let raw = d.path().join("tool.raw");
    pack(&t, &raw);
    let o = check(&raw, &host, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The same image on another release of the host.
    let other = d.path().join("other-host");
    fs::write(&other, "ID=debian\nVERSION_ID=13\n").unwrap();
    assert_finding(
        &raw,
        &other,
        "incompatible",
        Some("usr/lib/extension-release.d/extension-release.tool"),
    );

    // Content outside usr/ and a private directory, packed by `sysext pack`.
    let t = tree(&d.path().join("b"), "bad", "ID=_any\n");
    fs::create_dir_all(t.join("etc")).unwrap();
    fs::write(t.join("etc/bad.conf"), "x\n").unwrap();
    fs::create_dir_all(t.join("usr/share/bad")).unwrap();
    testkit::dirs_0755(&t);
    fs::set_permissions(t.join("usr/share/bad"), fs::Permissions::from_mode(0o700)).unwrap();
    let raw = d.path().join("bad.raw");
    pack(&t, &raw);
    assert_finding(&raw, &host, "outside-hierarchy", Some("etc"));
    assert_finding(&raw, &host, "directory-mode", Some("usr/share/bad"));

    // Renamed after packing: the release file no longer matches the image name.
    let renamed = d.path().join("renamed.raw");
    fs::copy(d.path().join("tool.raw"), &renamed).unwrap();
    assert_finding(
        &renamed,
        &host,
        "misnamed-release",
        Some("usr/lib/extension-release.d/extension-release.tool"),
    );

    // mksquashfs keeping the build user's ownership.
    if testkit::require_root("chown to another user") && testkit::require_tool("mksquashfs") {
        let t = tree(&d.path().join("c"), "owned", "ID=_any\n");
        std::os::unix::fs::chown(t.join("opt/tool/data"), Some(1000), Some(100)).unwrap();
        let raw = d.path().join("owned.raw");
        testkit::run_ok(Command::new("mksquashfs").arg(&t).arg(&raw).args([
            "-noappend",
            "-quiet",
            "-no-progress",
        ]));
        assert_finding(&raw, &host, "not-root-owned", Some("opt/tool/data"));
    }
}

/// With a host root folder, paths of the image that hide the host's own while merged are
/// reported (exit 1): a file over a host file or symlink (warning), a file over a host folder
/// and a folder over a host symlink (errors, naming what is hidden); folders over folders merge
/// and paths the host lacks are fine. An image whose release file is on the host already gets
/// a note instead (its files would look like the host's).
#[test]
fn files_hiding_the_hosts_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    for dir in [
        "usr/lib/os.d",
        "usr/bin",
        "usr/lib/x86_64-linux-gnu",
        "usr/share/tool",
    ] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=debian\nVERSION_ID=13\n",
    )
    .unwrap();
    fs::write(root.join("usr/bin/tool"), "host's tool").unwrap();
    fs::write(root.join("usr/lib/os.d/a"), "a").unwrap();
    fs::write(root.join("usr/lib/os.d/b"), "b").unwrap();
    std::os::unix::fs::symlink("lib", root.join("usr/lib64")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/tool", root.join("usr/bin/tool-link")).unwrap();
    let run = |t: &Path| {
        sysext()
            .args(["check", "--json"])
            .arg(t)
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };
    let findings = |o: &Output| -> Vec<(String, String, String)> {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["code"].as_str().unwrap().to_string(),
                    f["path"].as_str().unwrap_or("").to_string(),
                    f["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    // Nothing the host has: clean (opt/tool and usr/bin/tool-free tree).
    let clean = d.path().join("clean/tool");
    let rel = clean.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.tool"), "ID=_any\n").unwrap();
    fs::create_dir_all(clean.join("usr/local/tool/bin")).unwrap();
    fs::write(clean.join("usr/local/tool/bin/tool"), "x").unwrap();
    fs::create_dir_all(clean.join("usr/share/tool")).unwrap();
    fs::write(clean.join("usr/share/tool/new"), "x").unwrap();
    testkit::dirs_0755(&clean);
    let o = run(&clean);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // The default tree ships usr/bin/tool, which the host has.
    let t = tree(&d.path().join("a"), "tool", "ID=_any\n");
    fs::write(t.join("usr/bin/tool-link"), "x").unwrap();
    fs::write(t.join("usr/lib/os.d"), "a file over the host's folder").unwrap();
    fs::create_dir_all(t.join("usr/lib64")).unwrap();
    fs::write(t.join("usr/lib64/libx.so"), "x").unwrap();
    fs::create_dir_all(t.join("usr/share/tool")).unwrap();
    fs::write(t.join("usr/share/tool/new"), "x").unwrap();
    testkit::dirs_0755(&t);
    let o = run(&t);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let f = findings(&o);
    let has = |code: &str, path: &str, words: &str| {
        assert!(
            f.iter()
                .any(|(c, p, m)| c == code && p == path && m.contains(words)),
            "{code} {path} ({words}) missing: {f:?}"
        )
    };
    has(
        "shadows-host-file",
        "usr/bin/tool",
        "hides the host's own /usr/bin/tool",
    );
    has(
        "shadows-host-file",
        "usr/bin/tool-link",
        "/usr/bin/tool-link",
    );
    has("hides-host-folder", "usr/lib/os.d", "(2 entries)");
    has("hides-host-folder", "usr/lib64", "usr/lib64 -> lib");
    let shadowing = f
        .iter()
        .filter(|(c, _, _)| c.starts_with("shadows-") || c.starts_with("hides-"))
        .count();
    assert_eq!(shadowing, 4, "only the four paths: {f:?}");
    // The human report names them too.
    let o = sysext()
        .arg("check")
        .arg(&t)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("warning[shadows-host-file] usr/bin/tool:"),
        "{out}"
    );
    assert!(
        out.contains("error[hides-host-folder] usr/lib/os.d:"),
        "{out}"
    );

    // Merged already: the release file is on the host, so a note and no shadowing findings.
    fs::create_dir_all(root.join("usr/lib/extension-release.d")).unwrap();
    fs::write(
        root.join("usr/lib/extension-release.d/extension-release.tool"),
        "ID=_any\n",
    )
    .unwrap();
    let o = run(&t);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["notes"].to_string().contains("on the host already"),
        "{}",
        text(&o)
    );
    assert!(findings(&o)
        .iter()
        .all(|(c, _, _)| !c.starts_with("shadows-") && !c.starts_with("hides-")));
}

/// An EROFS image as the Flatcar sysext-bakery builds one (trixie's mkfs.erofs, erofs-utils
/// 1.8, with the bakery's `-zlz4hc,12 -C65536 -Efragments,ztailpacking -Uclear --all-root`:
/// small files and tails in fragments, big physical clusters): `check` passes it (exit 0)
/// and `inspect` reads its release file, files and ELF architecture.
#[test]
fn bakery_erofs_image_checks_and_inspects() {
    if !testkit::require_root("running trixie's mkfs.erofs in its chroot")
        || !testkit::require_tool("mmdebstrap")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let work = d.path().join("w");
    let t = tree(&work, "bakery", "ID=_any\n");
    let share = t.join("usr/share/bakery");
    fs::create_dir_all(&share).unwrap();
    for i in 0..200u64 {
        let line = format!("bakery file {i}\n");
        fs::write(
            share.join(format!("f{i:03}")),
            line.repeat(1 + i as usize * 7),
        )
        .unwrap();
    }
    fs::write(share.join("big"), testkit::random_bytes(300_000, 1)).unwrap();
    fs::copy("/usr/bin/true", t.join("usr/bin/true")).unwrap();
    testkit::dirs_0755(&t);
    let o = testkit::fixtures::in_repart_root(
        &work,
        "mkfs.erofs --quiet -zlz4hc,12 -C65536 -Efragments,ztailpacking -Uclear --all-root \
         /w/bakery.raw /w/bakery",
    );
    assert!(o.status.success(), "{}", text(&o));
    let raw = work.join("bakery.raw");

    let host = host_file(d.path(), DEB);
    let o = check(&raw, &host, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = sysext()
        .arg("inspect")
        .arg(&raw)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["format"], "erofs", "{v}");
    assert_eq!(v["name"], "bakery");
    assert_eq!(
        v["release_file"],
        "usr/lib/extension-release.d/extension-release.bakery"
    );
    assert_eq!(v["release"], "ID=_any\n");
    assert_eq!(v["architectures"], serde_json::json!(["x86-64"]));
    assert_eq!(v["files"], 205, "{v}");
}
