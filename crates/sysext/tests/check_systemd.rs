//! `sysext check --root ROOT NAME.raw` against the real systemd-sysext 252: on images packed
//! by `sysext pack`, check finds nothing exactly when systemd-sysext merges the image into
//! ROOT (in a private mount namespace).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

const HOST: &str = "ID=debian\nVERSION_ID=12\nSYSEXT_LEVEL=1.0\n";

/// Packs a one-file extension with release `release` (for `release_name`) into `out`.
fn packed(dir: &Path, release_name: &str, release: &str, out: &Path) {
    let t = dir.join(format!("tree-{release_name}"));
    let _ = fs::remove_dir_all(&t);
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(
        rel.join(format!("extension-release.{release_name}")),
        release,
    )
    .unwrap();
    fs::create_dir_all(t.join("usr/share/check-probe")).unwrap();
    fs::write(t.join("usr/share/check-probe/marker"), "").unwrap();
    for d in [
        "usr",
        "usr/lib",
        "usr/lib/extension-release.d",
        "usr/share",
        "usr/share/check-probe",
    ] {
        fs::set_permissions(t.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    testkit::run_ok(
        sysext()
            .arg("pack")
            .arg(&t)
            .arg(out)
            .arg("--name")
            .arg(release_name),
    );
}

/// True when systemd-sysext merges `raw` into a scratch root with os-release `HOST`.
fn systemd_merges(dir: &Path, name: &str, raw: &Path) -> bool {
    let root = dir.join(format!("root-{name}"));
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("var/lib/extensions")).unwrap();
    fs::write(root.join("usr/lib/os-release"), HOST).unwrap();
    fs::write(root.join("etc/os-release"), HOST).unwrap();
    fs::copy(raw, root.join(format!("var/lib/extensions/{name}.raw"))).unwrap();
    let script = format!(
        "mount --make-rshared / && mount -t tmpfs tmpfs /run && systemd-sysext --root='{r}' merge; \
         if [ -e '{r}/usr/share/check-probe/marker' ]; then echo VERDICT=merged; else echo VERDICT=skipped; fi",
        r = root.display()
    );
    let out = testkit::in_mount_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("VERDICT="),
        "{name}: the script did not run\n{stdout}{stderr}"
    );
    if !stdout.contains("VERDICT=merged") {
        // Skipped as incompatible, or the merge aborted on unreadable metadata.
        assert!(
            stderr.contains("No suitable extensions found")
                || stderr.contains("Failed to read metadata for image"),
            "{name}: unexpected systemd-sysext failure\n{stderr}"
        );
    }
    stdout.contains("VERDICT=merged")
}

#[test]
fn check_agrees_with_systemd_sysext_on_packed_images() {
    if !testkit::require_root("merging with systemd-sysext")
        || !testkit::require_tool("systemd-sysext")
    {
        return;
    }
    let arch = sysext_core::release::host_architecture().unwrap();
    let wrong = if arch == "arm64" { "x86-64" } else { "arm64" };
    let d = tempfile::tempdir().unwrap();
    let own_arch = format!("ID=_any\nARCHITECTURE={arch}\n");
    let wrong_arch = format!("ID=_any\nARCHITECTURE={wrong}\n");
    // (image name, name in the release file, release text)
    let cases: Vec<(&str, &str, &str)> = vec![
        ("any", "any", "ID=_any\n"),
        ("same", "same", "ID=debian\nVERSION_ID=12\n"),
        ("older", "older", "ID=debian\nVERSION_ID=11\n"),
        ("otheros", "otheros", "ID=fedora\nVERSION_ID=12\n"),
        ("ownarch", "ownarch", &own_arch),
        ("wrongarch", "wrongarch", &wrong_arch),
        ("portable", "portable", "ID=_any\nSYSEXT_SCOPE=portable\n"),
        (
            "level",
            "level",
            "ID=debian\nSYSEXT_LEVEL=1.0\nVERSION_ID=11\n",
        ),
        (
            "newlevel",
            "newlevel",
            "ID=debian\nSYSEXT_LEVEL=2.0\nVERSION_ID=12\n",
        ),
        ("renamed", "original", "ID=_any\n"),
    ];
    let host = d.path().join("host-os-release");
    fs::write(&host, HOST).unwrap();
    let (mut agree, mut merged) = (0, 0);
    for (name, release_name, release) in &cases {
        let raw = d.path().join(format!("{name}.raw"));
        packed(d.path(), release_name, release, &raw);
        let systemd = systemd_merges(d.path(), name, &raw);
        let o = sysext()
            .arg("check")
            .arg(&raw)
            .arg("--host-os-release")
            .arg(&host)
            .output()
            .unwrap();
        let code = o.status.code();
        assert!(
            matches!(code, Some(0 | 1)),
            "{name}: {o:?}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(
            code == Some(0),
            systemd,
            "{name}: systemd-sysext {} it, sysext check said:\n{}",
            if systemd { "merged" } else { "skipped" },
            String::from_utf8_lossy(&o.stdout)
        );
        agree += 1;
        merged += usize::from(systemd);
    }
    eprintln!(
        "{agree}/{} packed images: sysext check agreed with systemd-sysext ({merged} merged)",
        cases.len()
    );
    assert!(merged >= 3 && cases.len() - merged >= 3);
}
