//! `sysext convert-torcx`: a Torcx-style tarball built here (manifest, a static busybox as
//! `bin/foo`, a unit calling `/run/torcx/bin/foo`, an unmapped file) converted, inspected, and
//! merged by the real systemd-sysext 252 into a scratch root where the binary runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

fn busybox() -> Option<PathBuf> {
    testkit::which("busybox")
}

/// A Torcx package folder under `dir/pkg`, with `manifest` as .torcx/manifest.json.
fn torcx_pkg(dir: &Path, bb: &Path, manifest: &str) -> PathBuf {
    let pkg = dir.join("pkg");
    for d in [".torcx", "bin", "lib/systemd/system", "share/doc"] {
        fs::create_dir_all(pkg.join(d)).unwrap();
    }
    fs::copy(bb, pkg.join("bin/foo")).unwrap();
    fs::set_permissions(pkg.join("bin/foo"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        pkg.join("lib/systemd/system/foo.service"),
        "[Unit]\nDescription=foo\n[Service]\nExecStart=/run/torcx/bin/foo true\n\
         Environment=PATH=/run/torcx/bin:/usr/bin\n\
         ExecStartPost=/run/torcx/unpack/foo/bin/foo true\n",
    )
    .unwrap();
    fs::write(pkg.join("lib/foo.conf"), "d /run/foo 0755 root root -\n").unwrap();
    fs::write(pkg.join("lib/libfoo.so.1"), "not really a library\n").unwrap();
    fs::write(pkg.join("share/doc/README"), "unmapped\n").unwrap();
    fs::write(pkg.join(".torcx/manifest.json"), manifest).unwrap();
    pkg
}

const MANIFEST: &str = r#"{"kind":"image-manifest-v0","value":{
  "bin":["/bin/foo"],"units":["/lib/systemd/system/foo.service"],
  "tmpfiles":["/lib/foo.conf"],"network":["/lib/systemd/network/foo.network"]}}"#;

fn tgz(pkg: &Path, out: &Path) {
    testkit::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(pkg)
            .arg("-czf")
            .arg(out)
            .arg("."),
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn fails(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn converts_inspects_and_merges() {
    let Some(bb) = busybox() else {
        assert!(!testkit::require_tool("busybox"));
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pkg = torcx_pkg(tmp.path(), &bb, MANIFEST);
    let tarball = tmp.path().join("foo.torcx.tgz");
    tgz(&pkg, &tarball);
    let raw = tmp.path().join("foo.raw");

    let out = testkit::run_ok(
        sysext()
            .arg("convert-torcx")
            .arg(&tarball)
            .arg("foo")
            .arg("-o")
            .arg(&raw)
            .arg("--json"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let unmapped: Vec<&str> = report["unmapped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap())
        .collect();
    assert!(unmapped.contains(&"/share/doc/README"), "{unmapped:?}");
    assert!(
        unmapped.contains(&"/lib/systemd/network/foo.network"),
        "{unmapped:?}"
    );
    assert!(stderr.contains("/share/doc/README"), "{stderr}");
    assert!(stderr.contains("hint"), "{stderr}");

    // A second run without --force refuses and leaves the image alone.
    let before = fs::read(&raw).unwrap();
    let e = fails(
        sysext()
            .arg("convert-torcx")
            .arg(&tarball)
            .arg("foo")
            .arg("-o")
            .arg(&raw),
    );
    assert!(String::from_utf8_lossy(&e.stderr).contains("--force"));
    assert_eq!(fs::read(&raw).unwrap(), before);

    let listing = testkit::run_ok(sysext().arg("inspect").arg(&raw).arg("--list"));
    let listing = String::from_utf8_lossy(&listing.stdout);
    for f in [
        "usr/bin/foo",
        "usr/lib/systemd/system/foo.service",
        "usr/lib/tmpfiles.d/foo.conf",
        "usr/lib/foo/libfoo.so.1",
        "EXTENSION_RELOAD_MANAGER=1",
        "ARCHITECTURE=x86-64",
        "ID=_any",
    ] {
        assert!(listing.contains(f), "{f} missing from:\n{listing}");
    }
    assert!(!listing.contains("README"), "{listing}");

    // The folder format gives the same tree; read the unit there.
    let dir = tmp.path().join("foo");
    testkit::run_ok(
        sysext()
            .arg("convert-torcx")
            .arg(&tarball)
            .arg("foo")
            .arg("-o")
            .arg(&dir)
            .arg("--format")
            .arg("dir"),
    );
    let unit = fs::read_to_string(dir.join("usr/lib/systemd/system/foo.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/foo true\n"), "{unit}");
    assert!(unit.contains("ExecStartPost=/usr/bin/foo true\n"), "{unit}");
    assert!(
        unit.contains("Environment=PATH=/usr/bin:/usr/bin\n"),
        "{unit}"
    );
    assert!(!unit.contains("/run/torcx"), "{unit}");
    // Nothing but the outputs and the inputs beside them (no scratch left).
    assert_eq!(
        entries(tmp.path()),
        ["foo", "foo.raw", "foo.torcx.tgz", "pkg"]
    );

    if !testkit::require_root("merging with systemd-sysext")
        || !testkit::require_tool("systemd-sysext")
    {
        return;
    }
    let root = tmp.path().join("root");
    for d in ["usr/lib", "usr/bin", "etc", "var/lib/extensions"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let osr = "ID=debian\nVERSION_ID=12\n";
    fs::write(root.join("usr/lib/os-release"), osr).unwrap();
    fs::write(root.join("etc/os-release"), osr).unwrap();
    fs::copy(&bb, root.join("usr/bin/busybox")).unwrap();
    fs::copy(&raw, root.join("var/lib/extensions/foo.raw")).unwrap();
    let r = root.display();
    let out = testkit::in_mount_namespace(&format!(
        "set -e; mount --make-rshared /; mount -t tmpfs tmpfs /run; \
         systemd-sysext --root='{r}' merge; \
         chroot '{r}' /usr/bin/busybox sh -c 'exec -a echo /usr/bin/foo merged-ok'; \
         chroot '{r}' /usr/bin/busybox cat /usr/lib/systemd/system/foo.service"
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "merge failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("merged-ok\n"), "{stdout}");
    assert!(stdout.contains("ExecStart=/usr/bin/foo true"), "{stdout}");
}

#[test]
fn bad_tarballs_fail_cleanly() {
    let Some(bb) = busybox() else {
        assert!(!testkit::require_tool("busybox"));
        return;
    };
    let tmp = tempfile::tempdir().unwrap();

    // No manifest.
    let pkg = torcx_pkg(tmp.path(), &bb, MANIFEST);
    fs::remove_file(pkg.join(".torcx/manifest.json")).unwrap();
    let nomani = tmp.path().join("nomani.tgz");
    tgz(&pkg, &nomani);
    fs::remove_dir_all(&pkg).unwrap();

    // A manifest path escaping the archive.
    let pkg = torcx_pkg(
        tmp.path(),
        &bb,
        r#"{"kind":"image-manifest-v0","value":{"bin":["/../../etc/passwd"]}}"#,
    );
    let escmani = tmp.path().join("escmani.tgz");
    tgz(&pkg, &escmani);
    fs::remove_dir_all(&pkg).unwrap();

    // A tar member escaping with ../
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    let esctar = tmp.path().join("esctar.tgz");
    testkit::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-P", "--transform", "s,^f,../evil,", "-czf"])
            .arg(&esctar)
            .arg("f"),
    );
    fs::remove_dir_all(&src).unwrap();

    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    for (tarball, needle) in [
        (&nomani, "no .torcx/manifest.json"),
        (&escmani, "../../etc/passwd"),
        (&esctar, "'..'"),
    ] {
        let e = fails(
            sysext()
                .arg("convert-torcx")
                .arg(tarball)
                .arg("foo")
                .arg("-o")
                .arg(out_dir.join("foo.raw")),
        );
        let msg = String::from_utf8_lossy(&e.stderr);
        assert!(msg.contains(needle), "{}: {msg}", tarball.display());
        assert!(
            entries(&out_dir).is_empty(),
            "{}: left {:?}",
            tarball.display(),
            entries(&out_dir)
        );
    }
    assert!(!tmp.path().join("evil").exists());
}
