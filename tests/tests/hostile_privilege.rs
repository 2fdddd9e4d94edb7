//! Hostile inputs, class 2 (privilege carried to the host): a rootfs with a setuid-root
//! script, a setgid file and a file with a `security.capability` xattr. Every producer's image
//! carries none of them by default and all of them when asked (`--keep-privileges`,
//! `keep_privileges = true`). Images are inspected by extracting them with `unsquashfs` (which
//! keeps modes and xattrs when run as root).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::hostile::{assert_no_privilege, privileged_files, run_bounded};

const RSS_MIB: u64 = 256;
const LIMIT: Duration = Duration::from_secs(120);

fn ready() -> bool {
    testkit::require_root("the privilege cases (setcap, root-owned setuid files)")
        && testkit::require_tool("setcap")
        && testkit::require_tool("unsquashfs")
}

/// A rootfs with /usr/bin/tool (setuid root), /usr/bin/capped (cap_net_raw+ep) and
/// /usr/share/tool/sg (setgid).
fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    fs::create_dir_all(r.join("usr/bin")).unwrap();
    fs::create_dir_all(r.join("usr/share/tool")).unwrap();
    let put = |rel: &str, text: &str, mode: u32| {
        fs::write(r.join(rel), text).unwrap();
        fs::set_permissions(r.join(rel), fs::Permissions::from_mode(mode)).unwrap();
    };
    put("usr/bin/tool", "#!/bin/sh\necho tool\n", 0o4755);
    put("usr/bin/capped", "#!/bin/sh\necho capped\n", 0o755);
    put("usr/share/tool/sg", "data\n", 0o2755);
    testkit::run_ok(
        Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(r.join("usr/bin/capped")),
    );
    assert_eq!(
        privileged_files(&r).len(),
        3,
        "the fixture carries privilege"
    );
    r
}

/// Extracts a squashfs image into `dir/name` and returns that folder.
fn extract(image: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    testkit::run_ok(Command::new("unsquashfs").arg("-d").arg(&to).arg(image));
    to
}

fn run(cmd: &mut Command, what: &str) -> serde_json::Value {
    let r = run_bounded(cmd, LIMIT);
    r.assert_bounded(what, RSS_MIB);
    assert_eq!(r.code, Some(0), "{what}: {}", r.stderr_text());
    serde_json::from_slice(&r.stdout).unwrap_or(serde_json::Value::Null)
}

#[test]
fn flatwrap_strips_setuid_setgid_and_capabilities_unless_asked() {
    if !ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = rootfs(d.path());
    let bin = testkit::workspace_bin("flatwrap");
    let v = run(
        Command::new(&bin)
            .arg(&root)
            .args(["wrap", "/usr/bin/tool", "--json", "-o"])
            .arg(d.path().join("wrap.raw")),
        "flatwrap (default)",
    );
    let x = extract(&d.path().join("wrap.raw"), d.path(), "x");
    assert_no_privilege(&x, "flatwrap image");
    assert_eq!(
        v["stage"]["stripped"].as_array().map(Vec::len),
        Some(3),
        "the report lists what was stripped: {v}"
    );
    // Asked for: kept.
    run(
        Command::new(&bin)
            .arg(&root)
            .args(["wrap", "/usr/bin/tool", "--keep-privileges", "-o"])
            .arg(d.path().join("keep.raw")),
        "flatwrap --keep-privileges",
    );
    let k = extract(&d.path().join("keep.raw"), d.path(), "k");
    assert_eq!(privileged_files(&k).len(), 3, "kept with --keep-privileges");
    // The source is untouched.
    assert_eq!(privileged_files(&root).len(), 3);
}

#[test]
fn flix_strips_setuid_setgid_and_capabilities_unless_asked() {
    if !ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = rootfs(d.path());
    let bin = testkit::workspace_bin("flix");
    let entries = ["/usr/bin/tool", "/usr/bin/capped", "/usr/share/tool"];
    let v = run(
        Command::new(&bin)
            .arg(&root)
            .arg("tools")
            .args(entries)
            .args(["--json", "-o"])
            .arg(d.path().join("tools.raw")),
        "flix (default)",
    );
    let x = extract(&d.path().join("tools.raw"), d.path(), "x");
    assert_no_privilege(&x, "flix image");
    assert_eq!(
        v["stripped"].as_array().map(Vec::len),
        Some(3),
        "the report lists what was stripped: {v}"
    );
    run(
        Command::new(&bin)
            .arg(&root)
            .arg("tools")
            .args(entries)
            .args(["--keep-privileges", "-o"])
            .arg(d.path().join("keep.raw")),
        "flix --keep-privileges",
    );
    let k = extract(&d.path().join("keep.raw"), d.path(), "k");
    assert_eq!(privileged_files(&k).len(), 3, "kept with --keep-privileges");
}

fn tarball_with_setuid(path: &Path, torcx: bool) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    if torcx {
        add(
            ".torcx/manifest.json",
            br#"{"kind":"image-manifest-v0","value":{"bin":["/bin/su-ish"],"units":[]}}"#,
            0o644,
        );
        add("bin/su-ish", b"#!/bin/sh\n", 0o4755);
        add("lib/libx.so.1", b"data", 0o2755);
    } else {
        add("usr/bin/su-ish", b"#!/bin/sh\n", 0o4755);
        add("usr/share/x/sg", b"data", 0o2755);
    }
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &tar).unwrap();
    fs::write(path, e.finish().unwrap()).unwrap();
}

#[test]
fn bake_static_strips_setuid_unless_the_manifest_keeps_it() {
    if !ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    tarball_with_setuid(&d.path().join("t.tar.gz"), false);
    let manifest = |keep: bool| {
        format!(
            "base_url = \"https://example.org/ext\"\n[[extension]]\nname = \"s\"\nversion = \"1\"\nsource = \"./t.tar.gz\"\n\
             mode = \"static\"\nkeep_privileges = {keep}\n"
        )
    };
    let sysext = testkit::workspace_bin("sysext");
    fs::write(d.path().join("m.toml"), manifest(false)).unwrap();
    let v = run(
        Command::new(&sysext)
            .current_dir(d.path())
            .args(["bake", "m.toml", "--out", "out", "--json"]),
        "bake static (default)",
    );
    let x = extract(&d.path().join("out/s-1-x86-64.raw"), d.path(), "x");
    assert!(x.join("usr/bin/su-ish").is_file());
    assert_no_privilege(&x, "bake static image");
    let warnings = v["entries"][0]["warnings"].as_array().map(Vec::len);
    assert_eq!(warnings, Some(2), "both files listed: {v}");
    fs::write(d.path().join("m.toml"), manifest(true)).unwrap();
    run(
        Command::new(&sysext)
            .current_dir(d.path())
            .args(["bake", "m.toml", "--out", "out2", "--json"]),
        "bake static, keep_privileges = true",
    );
    let k = extract(&d.path().join("out2/s-1-x86-64.raw"), d.path(), "k");
    assert_eq!(
        privileged_files(&k).len(),
        2,
        "kept when the manifest says so"
    );
}

#[test]
fn convert_torcx_strips_setuid_unless_asked() {
    if !ready() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    tarball_with_setuid(&d.path().join("p.torcx.tgz"), true);
    let sysext = testkit::workspace_bin("sysext");
    let v = run(
        Command::new(&sysext).current_dir(d.path()).args([
            "convert-torcx",
            "p.torcx.tgz",
            "p",
            "--json",
        ]),
        "convert-torcx (default)",
    );
    let x = extract(&d.path().join("p.raw"), d.path(), "x");
    assert!(x.join("usr/bin/su-ish").is_file());
    assert_no_privilege(&x, "convert-torcx image");
    assert_eq!(v["stripped"].as_array().map(Vec::len), Some(2), "{v}");
    run(
        Command::new(&sysext).current_dir(d.path()).args([
            "convert-torcx",
            "p.torcx.tgz",
            "p",
            "-o",
            "keep.raw",
            "--keep-privileges",
        ]),
        "convert-torcx --keep-privileges",
    );
    let k = extract(&d.path().join("keep.raw"), d.path(), "k");
    assert_eq!(privileged_files(&k).len(), 2);
}
