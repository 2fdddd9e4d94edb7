//! `sysext pack` / `sysext inspect` against the real oracles: unsquashfs, the kernel's squashfs
//! driver, getfattr and systemd-sysext 252 on a scratch root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::{random_bytes, tree_paths};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

fn sh(script: &str) -> Output {
    testkit::run_ok(Command::new("sh").args(["-c", script]))
}

/// A tree named `name` holding every kind of entry `pack` must carry over.
fn build_tree(dir: &Path, name: &str) -> PathBuf {
    let t = dir.join("tree");
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(
        rel.join(format!("extension-release.{name}")),
        "ID=_any\nEXTENSION_RELOAD_MANAGER=1\n",
    )
    .unwrap();
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::write(
        t.join("usr/bin/hello"),
        "#!/bin/sh\necho hello from the extension\n",
    )
    .unwrap();
    fs::set_permissions(t.join("usr/bin/hello"), fs::Permissions::from_mode(0o755)).unwrap();
    // A real ELF file, for inspect's architecture.
    fs::copy("/bin/true", t.join("usr/bin/true-copy")).unwrap();
    fs::hard_link(t.join("usr/bin/true-copy"), t.join("usr/bin/true-link")).unwrap();
    std::os::unix::fs::symlink("hello", t.join("usr/bin/hi")).unwrap();
    std::os::unix::fs::symlink("/usr/share/demo/does-not-exist", t.join("usr/bin/dangling"))
        .unwrap();
    let big = t.join("usr/share/demo/big.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    fs::write(&big, random_bytes(1024 * 1024 + 12345, 0x9e3779b97f4a7c15)).unwrap();
    fs::write(t.join("usr/share/demo/zeros"), vec![0u8; 300 * 1024]).unwrap();
    fs::write(t.join("usr/share/demo/empty"), b"").unwrap();
    let many = t.join("usr/share/demo/many");
    fs::create_dir_all(&many).unwrap();
    for i in 0..400 {
        fs::write(
            many.join(format!("small-file-with-a-long-name-{i:04}")),
            format!("small file {i}\n").repeat(i % 7 + 1),
        )
        .unwrap();
    }
    fs::write(many.join("copy-of-0001"), "small file 1\n".repeat(2)).unwrap();
    fs::create_dir_all(t.join("usr/share/demo/private")).unwrap();
    fs::set_permissions(
        t.join("usr/share/demo/private"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    fs::create_dir_all(t.join("usr/share/demo/emptydir")).unwrap();
    fs::create_dir_all(t.join("opt/demo")).unwrap();
    fs::write(t.join("opt/demo/data"), "opt data\n").unwrap();
    // Owned by a user on the build host: the image must say root. (chown clears setuid, so
    // the setuid mode comes after it.)
    sh(&format!(
        "chown -R 1000:1000 {t}/usr/share/demo && chmod 4750 {t}/usr/share/demo/big.bin && \
         setfattr -n user.demo -v hello {t}/usr/bin/hello && \
         setfattr -n user.checksum -v 0x00ff10 {t}/usr/share/demo/big.bin && \
         setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 {t}/usr/bin/true-copy",
        t = t.display()
    ));
    t
}

/// The listing `unsquashfs -lln` should print for `tree`: path → (perms, owner, size, target).
fn expected_listing(
    tree: &Path,
) -> BTreeMap<String, (String, String, Option<u64>, Option<String>)> {
    let mut out = BTreeMap::new();
    for e in tree_paths(tree) {
        let m = fs::symlink_metadata(&e).unwrap();
        let rel = e.strip_prefix(tree).unwrap().to_string_lossy().into_owned();
        let path = if rel.is_empty() {
            "squashfs-root".to_string()
        } else {
            format!("squashfs-root/{rel}")
        };
        let ft = m.file_type();
        let size = if ft.is_file() { Some(m.len()) } else { None };
        let target = ft
            .is_symlink()
            .then(|| fs::read_link(&e).unwrap().to_string_lossy().into_owned());
        out.insert(path, (perms(m.mode()), "0/0".to_string(), size, target));
    }
    out
}

fn perms(mode: u32) -> String {
    let t = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o100000 => '-',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        _ => 's',
    };
    let mut s = String::from(t);
    let bits = [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ];
    for (i, (bit, c)) in bits.iter().enumerate() {
        let set = mode & bit != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        s.push(match (special, set, i) {
            (true, true, 8) => 't',
            (true, false, 8) => 'T',
            (true, true, _) => 's',
            (true, false, _) => 'S',
            (false, true, _) => *c,
            (false, false, _) => '-',
        });
    }
    s
}

fn unsquashfs_listing(
    image: &Path,
) -> BTreeMap<String, (String, String, Option<u64>, Option<String>)> {
    let out = testkit::run_ok(Command::new("unsquashfs").arg("-lln").arg(image));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (path_at, size) = if f[2].ends_with(',') {
            (6, None) // device: "maj, min"
        } else {
            (5, f[2].parse::<u64>().ok())
        };
        let path = f[path_at].to_string();
        let target =
            (f.len() > path_at + 2 && f[path_at + 1] == "->").then(|| f[path_at + 2].to_string());
        let size = if f[0].starts_with('-') { size } else { None };
        map.insert(path, (f[0].to_string(), f[1].to_string(), size, target));
    }
    map
}

/// `sysext pack TREE OUT EXTRA...`.
fn pack_cmd(tree: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = sysext();
    c.arg("pack").arg(tree).arg(out).args(extra);
    c
}

fn pack(tree: &Path, out: &Path, extra: &[&str]) -> Output {
    testkit::run_ok(&mut pack_cmd(tree, out, extra))
}

#[test]
fn packed_images_match_the_tree_for_every_compressor() {
    if !testkit::require_root("mounting squashfs images")
        || !testkit::require_tool("unsquashfs")
        || !testkit::require_tool("getfattr")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    let expected = expected_listing(&tree);
    for comp in ["gzip", "zstd", "xz"] {
        let out_dir = d.path().join(comp);
        fs::create_dir(&out_dir).unwrap();
        let image = out_dir.join("demo.raw");
        pack(&tree, &image, &["--compression", comp]);
        assert_eq!(
            unsquashfs_listing(&image),
            expected,
            "{comp}: unsquashfs -lln"
        );

        // Reproducible: same bytes again, with one thread instead of many.
        let again = out_dir.join("again.raw");
        pack(
            &tree,
            &again,
            &["--compression", comp, "--name", "demo", "--threads", "1"],
        );
        assert_eq!(
            fs::read(&image).unwrap(),
            fs::read(&again).unwrap(),
            "{comp}: packing twice differs"
        );

        // The kernel: same contents, hardlinks share an inode, xattrs kept, root-owned.
        let mnt = d.path().join(format!("mnt-{comp}"));
        fs::create_dir(&mnt).unwrap();
        let script = format!(
            "set -e; mount -t squashfs -o loop,ro {img} {m}; \
             diff -r --no-dereference {t} {m}; \
             stat -c '%i' {m}/usr/bin/true-copy {m}/usr/bin/true-link; \
             stat -c '%h %u:%g' {m}/usr/bin/true-copy {m}/usr/share/demo/big.bin; \
             getfattr --absolute-names -e hex -d -m - {m}/usr/bin/hello {m}/usr/share/demo/big.bin {m}/usr/bin/true-copy",
            img = image.display(),
            m = mnt.display(),
            t = tree.display()
        );
        let out = testkit::in_mount_namespace(&script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{comp}: kernel mount check failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines[0], lines[1], "{comp}: hardlinks must share one inode");
        assert_eq!(
            lines[2], "2 0:0",
            "{comp}: hardlinked file has nlink 2, root-owned"
        );
        assert_eq!(lines[3], "1 0:0", "{comp}: big file root-owned");
        assert!(
            stdout.contains("user.demo=0x68656c6c6f"),
            "{comp}: {stdout}"
        );
        assert!(
            stdout.contains("user.checksum=0x00ff10"),
            "{comp}: {stdout}"
        );
        assert!(
            stdout.contains("security.capability=0x0100000200200000000000000000000000000000"),
            "{comp}: {stdout}"
        );
    }
}

#[test]
fn systemd_sysext_merges_a_packed_image() {
    if !testkit::require_root("systemd-sysext merge") || !testkit::require_tool("systemd-sysext") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    let root = d.path().join("root");
    for p in ["usr/lib", "etc", "var/lib/extensions", "opt"] {
        fs::create_dir_all(root.join(p)).unwrap();
    }
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=debian\nVERSION_ID=12\n",
    )
    .unwrap();
    fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/host-tool"), "host\n").unwrap();
    for comp in ["gzip", "zstd", "xz", "erofs", "erofs-lz4hc", "erofs-zstd"] {
        let image = root.join("var/lib/extensions/demo.raw");
        let how: Vec<&str> = match comp.strip_prefix("erofs") {
            Some("") => vec!["--fs", "erofs"],
            Some(c) => vec!["--fs", "erofs", "--compression", &c[1..]],
            None => vec!["--compression", comp],
        };
        pack(&tree, &image, &[&how[..], &["--force"]].concat());
        let magic = fs::read(&image).unwrap();
        assert_eq!(
            fsimage_is_erofs(&magic),
            comp.starts_with("erofs"),
            "{comp}"
        );
        let script = format!(
            "set -e; mount -t tmpfs tmpfs /run; \
             systemd-sysext --root={r} merge; \
             cat {r}/usr/bin/hello; cat {r}/usr/bin/host-tool; cat {r}/opt/demo/data; \
             ls {r}/usr/share/demo/many | wc -l; cat {r}/usr/.systemd-sysext/extensions 2>/dev/null || true; \
             cmp {r}/usr/share/demo/big.bin {t}/usr/share/demo/big.bin && echo big-identical",
            r = root.display(),
            t = tree.display()
        );
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "shared", "sh", "-c", &script])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{comp}: merge failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("echo hello from the extension"),
            "{comp}: {stdout}"
        );
        assert!(
            stdout.contains("host\n"),
            "{comp}: host files stay visible: {stdout}"
        );
        assert!(stdout.contains("opt data"), "{comp}: {stdout}");
        assert!(stdout.contains("401\n"), "{comp}: {stdout}");
        assert!(stdout.contains("big-identical"), "{comp}: {stdout}");
    }
}

#[test]
fn inspect_reports_release_files_and_architecture() {
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    let image = d.path().join("demo.raw");
    pack(&tree, &image, &[]);
    let out = testkit::run_ok(sysext().arg("inspect").arg(&image).arg("--json"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "demo");
    assert_eq!(v["format"], "squashfs");
    assert_eq!(
        v["release_file"],
        "usr/lib/extension-release.d/extension-release.demo"
    );
    assert_eq!(v["release"], "ID=_any\nEXTENSION_RELOAD_MANAGER=1\n");
    assert_eq!(v["architectures"], serde_json::json!(["x86-64"]));
    let files = tree_paths(&tree)
        .iter()
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .count();
    assert_eq!(v["files"], files as u64);
    let entries = v["entries"].as_array().unwrap();
    let big = entries
        .iter()
        .find(|e| e["path"] == "usr/share/demo/big.bin")
        .unwrap();
    assert_eq!(big["size"], 1024 * 1024 + 12345);
    assert_eq!(big["mode"], 0o4750);
    assert_eq!(big["uid"], 0);
    let link = entries.iter().find(|e| e["path"] == "usr/bin/hi").unwrap();
    assert_eq!(link["kind"], "symlink");
    assert_eq!(link["target"], "hello");

    let out = testkit::run_ok(sysext().arg("inspect").arg(&image).arg("--list"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("-4750 0/0    1060921 usr/share/demo/big.bin"),
        "{text}"
    );
    assert!(text.contains("usr/bin/hi -> hello"), "{text}");

    // The same tree as a folder output inspects the same (modes and contents).
    let folder = d.path().join("demo");
    pack(&tree, &folder, &[]);
    let out = testkit::run_ok(sysext().arg("inspect").arg(&folder).arg("--json"));
    let f: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(f["format"], "dir");
    assert_eq!(f["release"], v["release"]);
    assert_eq!(f["files"], v["files"]);
    assert_eq!(f["total_size"], v["total_size"]);
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn fails(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "expected exit 2: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_input_is_a_clear_error_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();

    let e = fails(&mut pack_cmd(
        &d.path().join("nope"),
        &out_dir.join("demo.raw"),
        &[],
    ));
    assert!(
        e.contains("nope") && e.contains("not a readable folder"),
        "{e}"
    );

    let e = fails(&mut pack_cmd(
        &tree,
        &out_dir.join("x.raw"),
        &["--name", "a/b"],
    ));
    assert!(e.contains("invalid extension name \"a/b\""), "{e}");

    let e = fails(&mut pack_cmd(&tree, &out_dir.join("other.raw"), &[]));
    assert!(
        e.contains("usr/lib/extension-release.d/extension-release.other"),
        "{e}"
    );

    let e = fails(&mut pack_cmd(
        &tree,
        &out_dir.join("demo.raw"),
        &["--compression", "zstd", "--level", "99"],
    ));
    assert!(e.contains("level 99"), "{e}");
    assert!(listing(&out_dir).is_empty(), "{:?}", listing(&out_dir));

    // Existing output: refused without --force, untouched.
    fs::write(out_dir.join("demo.raw"), b"precious").unwrap();
    let e = fails(&mut pack_cmd(&tree, &out_dir.join("demo.raw"), &[]));
    assert!(e.contains("--force"), "{e}");
    assert_eq!(fs::read(out_dir.join("demo.raw")).unwrap(), b"precious");
    assert_eq!(listing(&out_dir), ["demo.raw"]);
    pack(&tree, &out_dir.join("demo.raw"), &["--force"]);
    assert_eq!(&fs::read(out_dir.join("demo.raw")).unwrap()[..4], b"hsqs");
    assert_eq!(listing(&out_dir), ["demo.raw"]);

    // Corrupt images: a clear error, never a panic.
    let good = fs::read(out_dir.join("demo.raw")).unwrap();
    let bad = out_dir.join("bad.raw");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not squashfs", b"definitely not an image".to_vec()),
        ("truncated", good[..good.len() / 3].to_vec()),
        ("superblock only", good[..96].to_vec()),
        ("tables overwritten", {
            let mut g = good.clone();
            let inode_table = u64::from_le_bytes(g[64..72].try_into().unwrap()) as usize;
            for b in &mut g[inode_table..] {
                *b = 0x5a;
            }
            g
        }),
    ];
    for (what, bytes) in cases {
        fs::write(&bad, bytes).unwrap();
        let e = fails(sysext().arg("inspect").arg(&bad));
        assert!(e.contains("bad.raw"), "{what}: {e}");
    }
}

#[test]
fn an_unreadable_tree_fails_without_leaving_output() {
    if !testkit::require_root("switching to an unprivileged user")
        || !testkit::require_tool("setpriv")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    fs::set_permissions(
        tree.join("usr/bin/hello"),
        fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    sh(&format!(
        "chmod -R a+rX {}/usr/share {}/opt",
        tree.display(),
        tree.display()
    ));
    let out_dir = d.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::set_permissions(&out_dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for output in ["demo.raw", "demo"] {
        let e = fails(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_sysext"))
                .arg("pack")
                .arg(&tree)
                .arg(out_dir.join(output)),
        );
        assert!(e.contains("usr/bin/hello"), "{output}: {e}");
        assert!(
            listing(&out_dir).is_empty(),
            "{output}: {:?}",
            listing(&out_dir)
        );
    }
}

#[test]
fn source_date_epoch_sets_every_timestamp() {
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    let image = d.path().join("demo.raw");
    testkit::run_ok(pack_cmd(&tree, &image, &[]).env("SOURCE_DATE_EPOCH", "86400"));
    let bytes = fs::read(&image).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 86400);
    if testkit::require_tool("unsquashfs") {
        let out = testkit::run_ok(
            Command::new("unsquashfs")
                .env("TZ", "UTC")
                .arg("-lln")
                .arg(&image),
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.lines().all(|l| l.contains(" 1970-01-02 00:00 ")),
            "{text}"
        );
    }
    let other = d.path().join("other/demo.raw");
    let e = fails(pack_cmd(&tree, &other, &[]).env("SOURCE_DATE_EPOCH", "yesterday"));
    assert!(e.contains("SOURCE_DATE_EPOCH"), "{e}");
}

fn fsimage_is_erofs(image: &[u8]) -> bool {
    image.get(1024..1028) == Some(&0xE0F5_E1E2u32.to_le_bytes()[..])
}

#[test]
fn erofs_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let tree = build_tree(d.path(), "demo");
    let image = d.path().join("demo.raw");
    fs::create_dir(d.path().join("h")).unwrap();
    let out = testkit::run_ok(
        pack_cmd(&tree, &image, &["--fs", "erofs", "--json"]).env("SOURCE_DATE_EPOCH", "86400"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["fs"], "erofs");
    assert!(report["compression"].is_null() && report["squashfs"].is_null());
    assert!(report["erofs"]["inodes"].as_u64().unwrap() > 10, "{report}");
    let bytes = fs::read(&image).unwrap();
    assert!(fsimage_is_erofs(&bytes));
    // The superblock's epoch: every compact inode's time.
    assert_eq!(
        u64::from_le_bytes(bytes[1048..1056].try_into().unwrap()),
        86400
    );
    let out = testkit::run_ok(&mut pack_cmd(
        &tree,
        &d.path().join("h/demo.raw"),
        &["--fs", "erofs"],
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains(", erofs, uncompressed"));
    // The same again with --compression none, and with other threads.
    let again = d.path().join("again.raw");
    testkit::run_ok(
        pack_cmd(
            &tree,
            &again,
            &[
                "--fs",
                "erofs",
                "--compression",
                "none",
                "--threads",
                "3",
                "--name",
                "demo",
            ],
        )
        .env("SOURCE_DATE_EPOCH", "86400"),
    );
    assert!(fs::read(&again).unwrap() == bytes);

    // Compressed: COMP:LEVEL or --level, said in the report and the summary, the epoch
    // from SOURCE_DATE_EPOCH, read back by inspect below like the uncompressed image.
    let z = d.path().join("z/demo.raw");
    fs::create_dir(d.path().join("z")).unwrap();
    let out = testkit::run_ok(
        pack_cmd(
            &tree,
            &z,
            &["--fs", "erofs", "--compression", "lz4hc:12", "--json"],
        )
        .env("SOURCE_DATE_EPOCH", "86400"),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&report["erofs_compression"], &report["level"]),
        (&serde_json::json!("lz4hc"), &serde_json::json!(12))
    );
    let zbytes = fs::read(&z).unwrap();
    assert_eq!(
        u64::from_le_bytes(zbytes[1048..1056].try_into().unwrap()),
        86400
    );
    let zstd = d.path().join("z/zstd.raw");
    let out = testkit::run_ok(&mut pack_cmd(
        &tree,
        &zstd,
        &[
            "--fs",
            "erofs",
            "--compression",
            "zstd",
            "--level",
            "5",
            "--name",
            "demo",
        ],
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains(", erofs, zstd level 5"));

    // What cannot be done is refused, naming the way out, and leaves nothing.
    let other = d.path().join("other.raw");
    let e = fails(&mut pack_cmd(
        &tree,
        &other,
        &["--fs", "erofs", "--compression", "xz"],
    ));
    assert!(e.contains("lz4hc") && e.contains("--fs squashfs"), "{e}");
    let e = fails(&mut pack_cmd(&tree, &other, &["--compression", "none"]));
    assert!(e.contains("--fs erofs"), "{e}");
    let e = fails(&mut pack_cmd(
        &tree,
        &other,
        &["--fs", "erofs", "--level", "3", "--name", "demo"],
    ));
    assert!(e.contains("none takes no level"), "{e}");
    let e = fails(&mut pack_cmd(
        &tree,
        &other,
        &["--fs", "erofs", "--compression", "lz4hc:13"],
    ));
    assert!(e.contains("from 1 to 12"), "{e}");
    assert!(!other.exists());

    // inspect and check read it as they read the squashfs image of the same tree.
    let squashfs = d.path().join("sq/demo.raw");
    fs::create_dir(d.path().join("sq")).unwrap();
    pack(&tree, &squashfs, &[]);
    let json = |img: &Path| -> serde_json::Value {
        let out = testkit::run_ok(sysext().arg("inspect").arg("--json").arg(img));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (e, s) = (json(&image), json(&squashfs));
    assert_eq!(e["format"], "erofs");
    assert_eq!(s["format"], "squashfs");
    for key in [
        "entries",
        "release",
        "release_file",
        "architectures",
        "files",
        "total_size",
    ] {
        assert_eq!(e[key], s[key], "{key}");
        assert_eq!(json(&z)[key], s[key], "lz4hc: {key}");
        assert_eq!(json(&zstd)[key], s[key], "zstd: {key}");
    }
    let check = |img: &Path| {
        let out = sysext().arg("check").arg(img).output().unwrap();
        let text = String::from_utf8_lossy(&out.stderr).replace(&img.display().to_string(), "IMG");
        (out.status.code(), text)
    };
    assert_eq!(check(&image), check(&squashfs));
    assert_eq!(check(&z), check(&squashfs));
}
