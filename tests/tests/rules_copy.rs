//! One producers' file copier (`safefs::tree::Tree::copy_in`) for flix, flatwrap and bake.
//!
//! The case the copies disagreed on: bake's static mode copied file data only, so a file's
//! capabilities went without a word (and `keep_privileges` could not keep them), while flatwrap
//! and flix stripped and listed them. Here a setuid file with file capabilities goes through
//! bake's static mode and through flatwrap: both strip the setuid bit and the capabilities and
//! list both, and `sysext check` finds neither in the images.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `security.capability` v2 granting cap_net_raw (13), effective.
fn capability() -> Vec<u8> {
    let mut v = Vec::new();
    for word in [0x0200_0001u32, 1 << 13, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

fn source(dir: &Path) -> bool {
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    let f = dir.join("usr/bin/su");
    fs::write(&f, "#!/bin/sh\necho su\n").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::setxattr(
        &f,
        "security.capability",
        &capability(),
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok()
}

fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(testkit::workspace_bin(bin))
        .args(args)
        .current_dir(cwd)
        .env_remove("CHROOT")
        .env_remove("HOST")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The codes `sysext check` finds in `image`.
fn check_codes(w: &Path, image: &Path) -> Vec<String> {
    let out = Command::new(testkit::workspace_bin("sysext"))
        .args(["check", image.to_str().unwrap(), "--json"])
        .args(["--host-os-release", "os-release", "--host-arch", "x86-64"])
        .current_dir(w)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

fn only_raw(dir: &Path) -> PathBuf {
    let raws: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "raw"))
        .collect();
    assert_eq!(raws.len(), 1, "{raws:?}");
    raws[0].clone()
}

#[test]
fn bake_static_and_flatwrap_strip_and_list_setuid_and_capabilities() {
    if !testkit::require_root("setting security.capability") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    fs::write(w.join("os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    assert!(
        source(&w.join("src")),
        "cannot set security.capability here"
    );

    // bake, static mode.
    fs::write(
        w.join("bake.toml"),
        "[[extension]]\nname = \"su\"\nversion = \"1\"\nsource = \"./src\"\nmode = \"static\"\npaths = [\"usr/bin/su:/usr/bin/\"]\narchitectures = [\"x86-64\"]\n",
    )
    .unwrap();
    let out = run(
        "sysext",
        &[
            "bake",
            "bake.toml",
            "--out",
            "baked",
            "--json",
            "--base-url",
            "https://example.org/x/",
        ],
        w,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings: Vec<&str> = v["entries"][0]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("stripped setuid, file capabilities from /usr/bin/su")),
        "{warnings:?}"
    );
    let codes = check_codes(w, &only_raw(&w.join("baked")));
    for bad in ["setuid-setgid", "file-capability"] {
        assert!(!codes.iter().any(|c| c == bad), "bake: {codes:?}");
    }

    // flatwrap: the same file, the same rule.
    fs::create_dir(w.join("fw")).unwrap();
    let out = run(
        "flatwrap",
        &["src", "su", "/usr/bin/su", "-o", "fw/su.raw", "--json"],
        w,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stripped = v["stage"]["stripped"].as_array().unwrap();
    let su = stripped
        .iter()
        .find(|s| s["path"] == "/usr/local/su/usr/bin/su")
        .unwrap_or_else(|| panic!("{stripped:?}"));
    assert_eq!(su["setuid"], true);
    assert_eq!(su["capability"], true);
    let codes = check_codes(w, &w.join("fw/su.raw"));
    for bad in ["setuid-setgid", "file-capability"] {
        assert!(!codes.iter().any(|c| c == bad), "flatwrap: {codes:?}");
    }
}

/// ocirootfs copies a folder source with the one whole-tree copier (it shelled out to
/// `cp -a` and dropped its stderr): holes stay holes, modes (setuid too: a rootfs is not an
/// image), links and hard links are kept.
#[test]
fn ocirootfs_folder_copy_keeps_sparse_files_sparse() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let src = w.join("src");
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    let big = fs::File::create(src.join("usr/sparse.img")).unwrap();
    big.set_len(64 << 20).unwrap();
    big.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    fs::write(src.join("usr/bin/su"), "x").unwrap();
    fs::set_permissions(src.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(src.join("usr/bin/su"), src.join("usr/bin/su2")).unwrap();
    std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();

    let out = Command::new(testkit::workspace_bin("ocirootfs"))
        .args(["src", "out"])
        .current_dir(w)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = fs::metadata(w.join("out/usr/sparse.img")).unwrap();
    assert_eq!(m.len(), 64 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        m.blocks()
    );
    let mut tail = [0u8; 4];
    fs::File::open(w.join("out/usr/sparse.img"))
        .unwrap()
        .read_exact_at(&mut tail, (64 << 20) - 4)
        .unwrap();
    assert_eq!(&tail, b"tail");
    let su = fs::metadata(w.join("out/usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(
        su.ino(),
        fs::metadata(w.join("out/usr/bin/su2")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(w.join("out/bin")).unwrap(),
        Path::new("usr/bin")
    );
}
