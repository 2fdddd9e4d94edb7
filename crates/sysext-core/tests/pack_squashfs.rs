//! The squashfs writer on the shapes that stress the format: huge directories (extended
//! directory inodes, listings over many metadata blocks), deep trees, files beyond the
//! in-memory dedup limit with sparse blocks, duplicate contents; checked by the kernel,
//! unsquashfs, and our reader against mksquashfs' image of the same tree.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use fsimage::EntryKind;
use sysext_core::inspect::Image;
use sysext_core::pack::{pack, Compression, Format, PackOptions};
use testkit::{random_bytes, tree_paths};

fn release(tree: &Path, name: &str) {
    let d = tree.join("usr/lib/extension-release.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("extension-release.{name}")), "ID=_any\n").unwrap();
}

fn opts(compression: Compression, threads: usize) -> PackOptions {
    let mut o = PackOptions::default();
    o.compression = compression;
    o.threads = threads;
    o
}

/// A tree of awkward shapes.
fn stress_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    release(&t, "stress");
    // 3000 entries with long names: a listing far beyond 64 KiB and many metadata blocks.
    let big = t.join("usr/share/big-dir");
    fs::create_dir_all(&big).unwrap();
    let pad = "x".repeat(90);
    for i in 0..3000 {
        let p = big.join(format!("{pad}-{i:05}"));
        if i % 10 == 0 {
            fs::create_dir(&p).unwrap();
            fs::write(p.join("inner"), format!("{i}")).unwrap();
        } else {
            fs::write(&p, format!("entry {i}\n")).unwrap();
        }
    }
    // A deep chain.
    let mut deep = t.join("usr/share/deep");
    for i in 0..60 {
        deep = deep.join(format!("level{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom"), "bottom\n").unwrap();
    // Beyond the in-memory dedup limit (streamed), mostly holes, with a data tail.
    let f = fs::File::create(t.join("usr/share/huge-sparse")).unwrap();
    f.set_len(40 * 1024 * 1024 + 777).unwrap();
    drop(f);
    let mut content = fs::read(t.join("usr/share/huge-sparse")).unwrap();
    let noise = random_bytes(300 * 1024, 7);
    content[35 * 1024 * 1024..35 * 1024 * 1024 + noise.len()].copy_from_slice(&noise);
    let len = content.len();
    content[len - 500..].copy_from_slice(&noise[..500]);
    fs::write(t.join("usr/share/huge-sparse"), &content).unwrap();
    // Duplicates: stored once.
    let dup = random_bytes(1024 * 1024 + 5, 11);
    fs::write(t.join("usr/share/dup-a"), &dup).unwrap();
    fs::write(t.join("usr/share/dup-b"), &dup).unwrap();
    // A block-multiple file (no fragment) and a one-byte file.
    fs::write(t.join("usr/share/exact"), random_bytes(256 * 1024, 13)).unwrap();
    fs::write(t.join("usr/share/one"), "1").unwrap();
    t
}

#[test]
fn stress_tree_survives_the_kernel_and_our_reader() {
    if !testkit::require_root("mounting squashfs images") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = stress_tree(d.path());
    let image = d.path().join("stress.raw");
    let report = pack(&tree, &image, &opts(Compression::Zstd, 0)).unwrap();
    let stats = report.squashfs.unwrap();
    assert_eq!(stats.duplicates, 1, "{stats:?}");
    // 1 MiB of random data is stored once: the image is well under two copies.
    assert!(
        report.bytes < 2 * 1024 * 1024 + 1024 * 1024,
        "image is {} bytes",
        report.bytes
    );

    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let out = testkit::in_mount_namespace(&format!(
        "set -e; mount -t squashfs -o loop,ro {} {m}; diff -r --no-dereference {} {m}; \
         ls {m}/usr/share/big-dir | wc -l",
        image.display(),
        tree.display(),
        m = mnt.display()
    ));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3000");

    if testkit::require_tool("unsquashfs") {
        let ls = testkit::run_ok(Command::new("unsquashfs").arg("-lln").arg(&image));
        let n = String::from_utf8_lossy(&ls.stdout).lines().count();
        // root + every entry of the tree
        let expected = tree_paths(&tree).len();
        assert_eq!(n, expected);
    }

    let img = Image::open(&image).unwrap();
    assert_eq!(img.entries().len(), tree_paths(&tree).len() - 1);
    for rel in [
        "usr/share/huge-sparse",
        "usr/share/dup-b",
        "usr/share/exact",
        "usr/share/one",
    ] {
        assert_eq!(
            img.read_file(rel).unwrap(),
            fs::read(tree.join(rel)).unwrap(),
            "{rel}"
        );
    }
}

/// Files too large to be held in memory while packed (over 32 MiB) are stored once too, as
/// mksquashfs stores them; a file of the same size that differs in its last byte is not taken
/// for a copy.
#[test]
fn large_duplicates_are_stored_once() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    release(&t, "large");
    let dir = t.join("usr/share/large");
    fs::create_dir_all(&dir).unwrap();
    let data = random_bytes(33 << 20, 5);
    fs::write(dir.join("a"), &data).unwrap();
    fs::write(dir.join("b"), &data).unwrap();
    let mut other = data.clone();
    *other.last_mut().unwrap() ^= 1;
    fs::write(dir.join("c"), &other).unwrap();
    let image = d.path().join("large.raw");
    let mut o = opts(Compression::Gzip, 0);
    o.level = Some(1);
    let report = pack(&t, &image, &o).unwrap();
    let stats = report.squashfs.unwrap();
    assert_eq!(stats.duplicates, 1, "{stats:?}");
    assert!(
        report.bytes < (2 * 33 + 2) << 20,
        "random data stored three times: {} bytes",
        report.bytes
    );
    let img = Image::open(&image).unwrap();
    assert!(img.read_file("usr/share/large/b").unwrap() == data);
    assert!(img.read_file("usr/share/large/c").unwrap() == other);
}

#[test]
fn output_does_not_depend_on_threads_and_follows_mtime() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    release(&t, "det");
    fs::create_dir_all(t.join("usr/lib/det")).unwrap();
    for i in 0..40 {
        fs::write(
            t.join(format!("usr/lib/det/f{i}")),
            random_bytes(50_000 + i * 7919, i as u64 + 1),
        )
        .unwrap();
    }
    for c in [Compression::Gzip, Compression::Xz] {
        let mut first: Option<Vec<u8>> = None;
        for threads in [1, 2, 5] {
            let out = d.path().join(format!("det-{c}-{threads}.raw"));
            let mut o = opts(c, threads);
            o.name = Some("det".into());
            pack(&t, &out, &o).unwrap();
            let bytes = fs::read(&out).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(f == &bytes, "{c}: {threads} threads differ"),
            }
        }
    }
    let out = d.path().join("det.raw");
    let mut o = opts(Compression::Gzip, 0);
    o.mtime = Some(1_700_000_000);
    pack(&t, &out, &o).unwrap();
    let b = fs::read(&out).unwrap();
    assert_eq!(
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        1_700_000_000
    );
    if testkit::require_tool("unsquashfs") {
        let ls = testkit::run_ok(
            Command::new("unsquashfs")
                .env("TZ", "UTC")
                .arg("-lln")
                .arg(&out),
        );
        let text = String::from_utf8_lossy(&ls.stdout);
        assert!(
            text.lines().all(|l| l.contains("2023-11-14 22:13")),
            "{text}"
        );
    }
}

#[test]
fn our_reader_sees_a_mksquashfs_image_as_the_tree() {
    if !testkit::require_tool("mksquashfs") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    release(&t, "ref");
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::copy("/bin/true", t.join("usr/bin/true")).unwrap();
    std::os::unix::fs::symlink("true", t.join("usr/bin/yes-true")).unwrap();
    fs::write(t.join("usr/bin/data"), random_bytes(400_000, 3)).unwrap();
    let reference = d.path().join("ref-mk.raw");
    testkit::mksquashfs(&t, &reference, &[]);
    let ours = d.path().join("ref.raw");
    pack(&t, &ours, &PackOptions::default()).unwrap();
    let a = Image::open(&reference).unwrap();
    let b = Image::open(&ours).unwrap();
    let strip = |img: &Image| {
        img.entries()
            .iter()
            .map(|e| {
                let mut e = e.clone();
                if e.kind == EntryKind::Dir {
                    e.size = 0;
                }
                e
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(
        a.read_file("usr/bin/data").unwrap(),
        b.read_file("usr/bin/data").unwrap()
    );
    let info = b.info().unwrap();
    assert_eq!(info.architectures, ["x86-64"]);
    assert_eq!(info.release.as_deref(), Some("ID=_any\n"));
    assert_eq!(info.files, 3);
}

#[test]
fn folder_output_is_root_owned_with_fixed_times_and_links() {
    if !testkit::require_root("chown to root") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    release(&t, "fold");
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::write(t.join("usr/bin/a"), "a").unwrap();
    fs::hard_link(t.join("usr/bin/a"), t.join("usr/bin/b")).unwrap();
    std::os::unix::fs::symlink("a", t.join("usr/bin/c")).unwrap();
    testkit::run_ok(
        Command::new("chown")
            .args(["-R", "1234:1234"])
            .arg(t.join("usr")),
    );
    testkit::run_ok(
        Command::new("setfattr")
            .args(["-n", "user.k", "-v", "v"])
            .arg(t.join("usr/bin/a")),
    );
    let out = d.path().join("fold");
    let mut o = PackOptions::default();
    o.mtime = Some(86400);
    let r = pack(&t, &out, &o).unwrap();
    assert_eq!(r.format, Format::Dir);
    for p in tree_paths(&out) {
        let m = fs::symlink_metadata(&p).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, 0), "{}", p.display());
        assert_eq!(m.mtime(), 86400, "{}", p.display());
    }
    let a = fs::metadata(out.join("usr/bin/a")).unwrap();
    let b = fs::metadata(out.join("usr/bin/b")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        fs::read_link(out.join("usr/bin/c")).unwrap(),
        Path::new("a")
    );
    let x = Command::new("getfattr")
        .args(["-n", "user.k", "--only-values"])
        .arg(out.join("usr/bin/a"))
        .output()
        .unwrap();
    assert_eq!(x.stdout, b"v");
    // The source was not touched.
    assert_eq!(fs::metadata(t.join("usr/bin/a")).unwrap().uid(), 1234);
}

/// A fixed tree (explicit modes, no randomness) packs to pinned bytes: any change to the
/// layout the writer produces is noticed here. If a change is intended, check the new image
/// with unsquashfs and the kernel, then update the digest.
#[test]
fn image_bytes_are_pinned() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    release(&t, "pinned");
    fs::create_dir_all(t.join("usr/bin")).unwrap();
    fs::create_dir_all(t.join("usr/share/pinned")).unwrap();
    fs::write(t.join("usr/bin/tool"), "#!/bin/sh\necho pinned\n").unwrap();
    fs::hard_link(t.join("usr/bin/tool"), t.join("usr/bin/tool2")).unwrap();
    std::os::unix::fs::symlink("tool", t.join("usr/bin/alias")).unwrap();
    let text: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    fs::write(t.join("usr/share/pinned/text"), text).unwrap();
    for p in tree_paths(&t) {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = if m.is_dir() || p.ends_with("tool") {
            0o755
        } else {
            0o644
        };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    let digests: Vec<String> = [Compression::Gzip, Compression::Zstd, Compression::Xz]
        .into_iter()
        .map(|c| {
            let out = d.path().join(format!("{c}/pinned.raw"));
            fs::create_dir_all(out.parent().unwrap()).unwrap();
            let mut o = opts(c, 0);
            o.mtime = Some(0);
            pack(&t, &out, &o).unwrap();
            format!("{c} {:x}", Sha256::digest(fs::read(&out).unwrap()))
        })
        .collect();
    assert_eq!(digests, PINNED, "image bytes changed");
}

const PINNED: [&str; 3] = [
    "gzip 1422b7307b501aa0e11a2da9beda5329521e9d7314afbd3dfe351fc4dcf1f6b0",
    "zstd 9af81576f2742f64762fc8d5c68f9860b65c624fbe46a5c6d132e66e6a708ea6",
    "xz 99e9b957501522cc99f9247037f09a73f2724efed36009e3941fd27a6b7ea409",
];
