//! dm-verity images against the real oracles: cryptsetup's `veritysetup verify` (userspace,
//! this kernel has no device-mapper) over the naked form `sysext pack --verity` writes
//! (`NAME.raw`, `NAME.verity`, `NAME.roothash`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

/// A small extension tree named `name` with some data worth hashing.
fn tree(dir: &Path, name: &str) -> PathBuf {
    let t = dir.join("tree");
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join(format!("extension-release.{name}")), "ID=_any\n").unwrap();
    fs::create_dir_all(t.join("usr/share/demo")).unwrap();
    fs::write(
        t.join("usr/share/demo/big.bin"),
        testkit::random_bytes(900 * 1024, 0x5eed),
    )
    .unwrap();
    fs::copy("/bin/true", t.join("usr/share/demo/true")).unwrap();
    t
}

fn verify(dir: &Path, name: &str, root: &str) -> Output {
    Command::new("veritysetup")
        .arg("verify")
        .arg(dir.join(format!("{name}.raw")))
        .arg(dir.join(format!("{name}.verity")))
        .arg(root)
        .output()
        .unwrap()
}

fn flip(path: &Path, at: u64) {
    let mut b = fs::read(path).unwrap();
    b[at as usize] ^= 0x04;
    fs::write(path, b).unwrap();
}

#[test]
fn naked_verity_images_pass_veritysetup_and_a_flipped_bit_fails() {
    if !testkit::require_tool("veritysetup") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path(), "vt");
    for fs_name in ["squashfs", "erofs"] {
        let out = d.path().join(fs_name);
        fs::create_dir_all(&out).unwrap();
        let o = testkit::run_ok(
            sysext()
                .arg("pack")
                .arg(&t)
                .arg(out.join("vt.raw"))
                .args(["--fs", fs_name, "--verity", "--json"]),
        );
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let root = fs::read_to_string(out.join("vt.roothash")).unwrap();
        let root = root.trim_end();
        assert_eq!(report["verity"]["root_hash"], root);
        assert_eq!(root.len(), 64);
        let ok = verify(&out, "vt", root);
        assert!(ok.status.success(), "{fs_name}: {ok:?}");
        // The superblock says what veritysetup reads: format 1, sha256, 4 KiB, our salt.
        let dump = testkit::run_ok(
            Command::new("veritysetup")
                .arg("dump")
                .arg(out.join("vt.verity")),
        );
        let dump = String::from_utf8_lossy(&dump.stdout).into_owned();
        assert!(dump.contains("Hash type:       \t1"), "{dump}");
        assert!(dump.contains("sha256"), "{dump}");
        let salt = report["verity"]["salt"].as_str().unwrap();
        assert!(dump.contains(salt), "{dump}");

        // A flipped bit in a data block, then in a hash block, then in the root hash.
        flip(&out.join("vt.raw"), 4096 * 3 + 100);
        assert!(
            !verify(&out, "vt", root).status.success(),
            "{fs_name}: data"
        );
        flip(&out.join("vt.raw"), 4096 * 3 + 100);
        assert!(verify(&out, "vt", root).status.success());
        flip(&out.join("vt.verity"), 4096 + 40);
        assert!(
            !verify(&out, "vt", root).status.success(),
            "{fs_name}: hash"
        );
        flip(&out.join("vt.verity"), 4096 + 40);
        let mut bad = root.as_bytes().to_vec();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        assert!(!verify(&out, "vt", std::str::from_utf8(&bad).unwrap())
            .status
            .success());
    }
}

#[test]
fn verity_side_files_are_reproducible_and_follow_the_seed() {
    let d = tempfile::tempdir().unwrap();
    let t = tree(d.path(), "vt");
    let pack = |sub: &str, extra: &[&str]| -> (Vec<u8>, String) {
        let out = d.path().join(sub);
        fs::create_dir_all(&out).unwrap();
        testkit::run_ok(
            sysext()
                .arg("pack")
                .arg(&t)
                .arg(out.join("vt.raw"))
                .arg("--verity")
                .args(extra),
        );
        (
            fs::read(out.join("vt.verity")).unwrap(),
            fs::read_to_string(out.join("vt.roothash")).unwrap(),
        )
    };
    let a = pack("a", &[]);
    let b = pack("b", &[]);
    assert_eq!(a, b, "the same tree twice gives the same hash tree");
    let seed = "0123456789abcdef0123456789abcdef";
    let c = pack("c", &["--seed", seed]);
    assert_ne!(a.1, c.1, "another seed, another salt, another root hash");
    // The salt systemd-repart derives from this seed (read from a repart-made superblock).
    let salt = hex_at(&c.0, 88, 32);
    assert_eq!(
        salt,
        "c65b6ab68edf421fcc0cb48ba60f7f14f5186b4d003d21ab3b334b91de16759c"
    );
    // No partial output when the side file exists already, and nothing without --force.
    let out = d.path().join("a");
    let o = sysext()
        .arg("pack")
        .arg(&t)
        .arg(out.join("vt.raw"))
        .arg("--verity")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    // --verity with a folder output is refused before any work.
    let o = sysext()
        .arg("pack")
        .arg(&t)
        .arg(d.path().join("folder"))
        .arg("--verity")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains(".raw"));
    assert!(!d.path().join("folder").exists());
}

fn hex_at(b: &[u8], at: usize, len: usize) -> String {
    b[at..at + len].iter().map(|x| format!("{x:02x}")).collect()
}
