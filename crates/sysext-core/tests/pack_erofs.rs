//! The EROFS writer against the real oracles: the kernel's erofs driver (both images mounted
//! in a private mount namespace), mkfs.erofs' image of the same tree, fsck.erofs; and its
//! reproducibility (threads, mtime).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};
use sysext_core::inspect::Image;
use sysext_core::pack::{pack, ErofsCompression, Format, Fs, PackOptions};
use testkit::random_bytes;

fn opts(threads: usize, mtime: u64) -> PackOptions {
    let mut o = PackOptions::default();
    o.fs = Fs::Erofs;
    o.format = Some(Format::Raw);
    o.threads = threads;
    o.mtime = Some(mtime);
    o.name = Some("ero".into());
    o
}

fn zopts(c: ErofsCompression, level: Option<i32>, threads: usize, mtime: u64) -> PackOptions {
    let mut o = opts(threads, mtime);
    o.erofs_compression = c;
    o.level = level;
    o
}

/// Text-like bytes (words picked by a seeded generator): compressible, not trivially.
fn text(len: usize, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "usr",
        "lib",
        "share",
        "extension",
        "release",
        "erofs",
        "kernel",
        "cluster",
        "block",
        "index",
        "the",
        "of",
        "and",
        "compress",
        "data",
        "\n",
    ];
    let picks = random_bytes(len, seed);
    let mut out = Vec::with_capacity(len + 16);
    for b in picks {
        if out.len() >= len {
            break;
        }
        out.extend_from_slice(WORDS[usize::from(b % 16)].as_bytes());
        out.push(b' ');
    }
    out.truncate(len);
    out
}

/// [`varied_tree`] with compressible files: small ones (stored flat, gaining nothing), ones
/// of many extents, one of several 4 MiB segments, one of zeros and stored bytes between
/// compressible ones.
fn compressible_tree(dir: &Path) -> PathBuf {
    let t = varied_tree(dir);
    let z = t.join("usr/share/ero/z");
    fs::create_dir(&z).unwrap();
    for (i, size) in [100usize, 4096, 4097, 9000, 65536, 300_000, (1 << 20) + 17]
        .into_iter()
        .enumerate()
    {
        fs::write(z.join(format!("text-{size}")), text(size, 100 + i as u64)).unwrap();
    }
    fs::write(z.join("text-5m"), text(5 << 20, 7)).unwrap();
    fs::write(z.join("zeros"), vec![0u8; 5 << 20]).unwrap();
    let mut mixed = text(50_000, 8);
    mixed.extend(random_bytes(20_000, 9));
    mixed.extend(text(50_000, 10));
    fs::write(z.join("mixed"), &mixed).unwrap();
    fs::hard_link(z.join("text-300000"), z.join("hl-text")).unwrap();
    setfattr(&z.join("text-9000"), "user.z", "compressed");
    // Identical bytes, one stored once for both; a third with xattrs large enough to leave
    // less room beside its inode, stored on its own.
    for name in ["copy-a", "copy-b", "copy-c"] {
        fs::write(z.join(name), text(9000, 50)).unwrap();
    }
    setfattr(&z.join("copy-c"), "user.big", &"c".repeat(3000));
    fs::copy("/proc/self/exe", z.join("elf")).unwrap();
    t
}

fn mode(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn setfattr(p: &Path, name: &str, value: &str) {
    testkit::run_ok(
        Command::new("setfattr")
            .args(["-h", "-n", name, "-v", value])
            .arg(p),
    );
}

/// Every shape the writer has a rule for.
fn varied_tree(dir: &Path) -> PathBuf {
    let t = dir.join("tree");
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.ero"), "ID=_any\n").unwrap();
    let s = t.join("usr/share/ero");
    fs::create_dir_all(s.join("nested/a/b/c")).unwrap();
    fs::write(s.join("nested/a/b/c/deep.txt"), "deep\n").unwrap();
    fs::create_dir_all(s.join("empty")).unwrap();
    for (i, size) in [0usize, 1, 4095, 4096, 4097, 8192, (1 << 20) + 3]
        .into_iter()
        .enumerate()
    {
        fs::write(
            s.join(format!("size-{size}")),
            random_bytes(size, i as u64 + 1),
        )
        .unwrap();
    }
    // Mostly zeros (holes in the source), with data in the middle and a tail.
    let mut sparse = vec![0u8; 3 * (1 << 20) + 123];
    sparse[(1 << 20)..(1 << 20) + 5000].copy_from_slice(&random_bytes(5000, 9));
    let n = sparse.len();
    sparse[n - 100..].copy_from_slice(&random_bytes(100, 10));
    fs::write(s.join("sparse"), &sparse).unwrap();
    symlink("size-1", s.join("link-rel")).unwrap();
    symlink("/usr/share/ero/size-4097", s.join("link-abs")).unwrap();
    symlink("x".repeat(1000), s.join("link-long")).unwrap();
    fs::write(s.join("hl-a"), "linked\n").unwrap();
    fs::hard_link(s.join("hl-a"), s.join("hl-b")).unwrap();
    fs::hard_link(s.join("size-4097"), s.join("nested/hl-4097")).unwrap();
    fs::write(s.join("n".repeat(255)), "long name\n").unwrap();
    // Names sorting before "." and ".." (the kernel's lookup is a binary search).
    fs::write(s.join("+plus"), "plus\n").unwrap();
    fs::write(s.join("-dash"), "dash\n").unwrap();
    // 1000 entries with long names: a listing over many blocks.
    let many = s.join("many");
    fs::create_dir(&many).unwrap();
    let pad = "m".repeat(60);
    for i in 0..1000 {
        let p = many.join(format!("{pad}-{i:04}"));
        if i % 100 == 0 {
            fs::create_dir(&p).unwrap();
        } else {
            fs::write(&p, format!("{i}\n")).unwrap();
        }
    }
    // Modes the pack keeps as they are.
    fs::write(s.join("private"), "secret\n").unwrap();
    mode(&s.join("private"), 0o700);
    fs::write(s.join("setuid"), "#!/bin/sh\n").unwrap();
    mode(&s.join("setuid"), 0o4755);
    fs::create_dir(s.join("sticky")).unwrap();
    mode(&s.join("sticky"), 0o1777);
    fs::create_dir(s.join("closed")).unwrap();
    mode(&s.join("closed"), 0o700);
    // Xattrs, one large enough that the file's tail no longer fits beside its inode.
    setfattr(&s.join("size-1"), "user.test", "hello");
    setfattr(&s.join("size-1"), "trusted.x", "0x00ff10");
    setfattr(&s.join("nested"), "user.dir", "on a folder");
    fs::write(s.join("xattr-big"), random_bytes(3000, 12)).unwrap();
    setfattr(&s.join("xattr-big"), "user.big", &"b".repeat(2000));
    fs::write(s.join("capped"), "caps\n").unwrap();
    testkit::run_ok(
        Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(s.join("capped")),
    );
    // Special files, as the squashfs writer keeps them.
    testkit::run_ok(Command::new("mkfifo").arg(s.join("fifo")));
    testkit::run_ok(
        Command::new("mknod")
            .arg(s.join("null"))
            .args(["c", "1", "3"]),
    );
    t
}

/// One entry as the kernel shows it: type, mode, owner, size, links, mtime, link target.
type Row = (String, String, String, String, String, String, String);

/// A mounted image's listing: rows, contents' digests, xattrs, and the paths by inode.
#[derive(Debug, PartialEq)]
struct Listing {
    rows: BTreeMap<String, Row>,
    sums: BTreeMap<String, String>,
    xattrs: BTreeMap<String, BTreeMap<String, String>>,
    links: BTreeSet<Vec<String>>,
}

fn listing(image: &Path, mnt: &Path) -> Listing {
    fs::create_dir_all(mnt).unwrap();
    let out = testkit::in_mount_namespace(&format!(
        "set -e; mount -t erofs -o loop,ro {i} {m}; cd {m}; \
         find . -printf '%p\\t%y\\t%m\\t%U:%G\\t%s\\t%n\\t%T@\\t%l\\t%i\\n'; echo '--'; \
         find . -type f -exec sha256sum {{}} +; echo '--'; \
         find . -exec getfattr -h -d -e hex -m - {{}} + 2>/dev/null",
        i = image.display(),
        m = mnt.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{}: {text}\n{}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut parts = text.split("--\n");
    let (rows_text, sums_text, xattr_text) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap_or(""),
    );
    let mut rows = BTreeMap::new();
    let mut by_inode: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in rows_text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let s = |i: usize| f[i].to_string();
        rows.insert(s(0), (s(1), s(2), s(3), s(4), s(5), s(6), s(7)));
        if f[1] != "d" {
            by_inode.entry(s(8)).or_default().push(s(0));
        }
    }
    let sums = sums_text
        .lines()
        .map(|l| {
            let (h, p) = l.split_once("  ").unwrap();
            (p.to_string(), h.to_string())
        })
        .collect();
    let mut xattrs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut current = String::new();
    for line in xattr_text.lines() {
        if let Some(p) = line.strip_prefix("# file: ") {
            // getfattr drops find's leading "./".
            current = format!("./{p}");
        } else if let Some((k, v)) = line.split_once('=') {
            xattrs
                .entry(current.clone())
                .or_default()
                .insert(k.to_string(), v.to_string());
        }
    }
    let links = by_inode
        .into_values()
        .filter(|v| v.len() > 1)
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    Listing {
        rows,
        sums,
        xattrs,
        links,
    }
}

/// mkfs.erofs' image of `tree` (with `args`) at `dir`/mkfs.raw: its size and time.
/// mkfs.erofs 1.5 (Debian 12) fails on a 255-byte name ("Could not format the device"): its
/// image is made without that file, which [`listed_as_mkfs_image`] checks against the tree
/// alone.
fn mkfs_image(dir: &Path, tree: &Path, args: &[&str]) -> (u64, std::time::Duration) {
    mkfs_image_with(dir, tree, args, false)
}

/// [`mkfs_image`] with trixie's mkfs.erofs (erofs-utils 1.8, which writes zstd) when
/// `trixie`, run in the shared trixie fixture with `dir` (holding `tree`) on `/w`.
fn mkfs_image_with(
    dir: &Path,
    tree: &Path,
    args: &[&str],
    trixie: bool,
) -> (u64, std::time::Duration) {
    let reference = dir.join("mkfs.raw");
    let long = format!("usr/share/ero/{}", "n".repeat(255));
    let aside = dir.join("long-name-aside");
    fs::rename(tree.join(&long), &aside).unwrap();
    let started = Instant::now();
    if trixie {
        let rel = tree.strip_prefix(dir).unwrap().display().to_string();
        let o = testkit::fixtures::in_repart_root(
            dir,
            &format!(
                "mkfs.erofs --quiet -T0 --all-root {} /w/mkfs.raw /w/{rel}",
                args.join(" ")
            ),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    } else {
        testkit::run_ok(
            Command::new("mkfs.erofs")
                .args(["--quiet", "-T0", "--all-root"])
                .args(args)
                .arg(&reference)
                .arg(tree),
        );
    }
    let took = started.elapsed();
    fs::rename(&aside, tree.join(&long)).unwrap();
    (fs::metadata(&reference).unwrap().len(), took)
}

/// Mounts `ours` and `dir`/mkfs.raw ([`mkfs_image`]) and asserts the kernel lists them
/// alike (paths, types, modes, owners, sizes, link targets, contents, xattrs, hardlink
/// groups) and sees every entry of `tree`; returns our listing.
fn listed_as_mkfs_image(dir: &Path, tree: &Path, ours: &Path) -> Listing {
    let long = format!("usr/share/ero/{}", "n".repeat(255));
    let a = listing(ours, &dir.join("mnt-ours"));
    let mut b = listing(&dir.join("mkfs.raw"), &dir.join("mnt-mkfs"));
    let long_row = format!("./{long}");
    let row = a.rows[&long_row].clone();
    assert_eq!((&row.0[..], &row.1[..], &row.3[..]), ("f", "644", "10"));
    // Its folder's size in mkfs.erofs' image lacks the name and its dirent (255 + 12 bytes).
    let folder = b.rows.get_mut("./usr/share/ero").unwrap();
    folder.3 = (folder.3.parse::<u64>().unwrap() + 267).to_string();
    b.rows.insert(long_row.clone(), row);
    b.sums.insert(long_row.clone(), a.sums[&long_row].clone());
    // The kernel sees every entry of the tree, and the same as in mkfs.erofs' image.
    assert_eq!(a.rows.len(), testkit::tree_paths(tree).len());
    for (path, row) in &b.rows {
        assert_eq!(a.rows.get(path), Some(row), "{path}");
    }
    assert_eq!(a.rows.len(), b.rows.len());
    assert_eq!(a.sums, b.sums);
    assert_eq!(a.xattrs, b.xattrs);
    assert_eq!(a.links, b.links);
    // Every file's contents, against the tree itself.
    for (path, sum) in &a.sums {
        let want = format!("{:x}", Sha256::digest(fs::read(tree.join(path)).unwrap()));
        assert_eq!(&want, sum, "{path}");
    }
    a
}

#[test]
fn kernel_sees_our_image_as_mkfs_erofs_image_of_the_same_tree() {
    if !testkit::require_root("mounting EROFS images")
        || !["mkfs.erofs", "fsck.erofs", "setfattr", "getfattr", "setcap"]
            .iter()
            .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = varied_tree(d.path());
    let ours = d.path().join("ours.raw");
    let started = Instant::now();
    let report = pack(&tree, &ours, &opts(0, 0)).unwrap();
    let ours_time = started.elapsed();
    let stats = report.erofs.clone().unwrap();
    assert_eq!(report.fs, Some(Fs::Erofs));
    assert!(report.squashfs.is_none() && report.compression.is_none());
    assert!(stats.inline_tails > 1000, "{stats:?}");

    let (mkfs_bytes, mkfs_time) = mkfs_image(d.path(), &tree, &[]);
    eprintln!(
        "ours {} bytes in {ours_time:?}; mkfs.erofs {mkfs_bytes} bytes in {mkfs_time:?}",
        report.bytes,
    );

    // Packed as tightly as mkfs.erofs packs (its image lacks one 10-byte file).
    assert!(
        report.bytes <= mkfs_bytes + 4096,
        "{} > {mkfs_bytes}",
        report.bytes
    );
    testkit::run_ok(Command::new("fsck.erofs").arg("--extract").arg(&ours));
    let a = listed_as_mkfs_image(d.path(), &tree, &ours);

    // And what that means, spelled out.
    let row = |p: &str| a.rows[&format!("./usr/share/ero/{p}")].clone();
    assert_eq!(row("setuid").1, "4755");
    assert_eq!(row("sticky").1, "1777");
    assert_eq!(row("private").1, "700");
    assert_eq!(row("null").0, "c");
    assert_eq!(row("fifo").0, "p");
    assert_eq!(row("link-abs").6, "/usr/share/ero/size-4097");
    assert!(a
        .rows
        .values()
        .all(|r| r.2 == "0:0" && r.5 == "0.0000000000"));
    assert_eq!(
        a.xattrs["./usr/share/ero/size-1"]["user.test"],
        "0x68656c6c6f"
    );
    assert_eq!(a.xattrs["./usr/share/ero/size-1"]["trusted.x"], "0x00ff10");
    assert_eq!(
        a.xattrs["./usr/share/ero/xattr-big"]["user.big"].len(),
        2 + 4000
    );
    assert!(a.xattrs["./usr/share/ero/nested"].contains_key("user.dir"));
    assert_eq!(a.xattrs.len(), 4);
    assert!(a.links.contains(&vec![
        "./usr/share/ero/hl-a".to_string(),
        "./usr/share/ero/hl-b".to_string()
    ]));
    let many = a
        .rows
        .keys()
        .filter(|p| p.starts_with("./usr/share/ero/many/"))
        .count();
    assert_eq!(many, 1000);
    // 990 files in many/, 7 sizes, 12 others (hardlinks counted by name).
    assert_eq!(a.sums.len(), 990 + 7 + 13);
}

#[test]
fn kernel_sees_our_compressed_images_as_mkfs_erofs_images_of_the_same_tree() {
    if !testkit::require_root("mounting EROFS images")
        || !["mkfs.erofs", "fsck.erofs", "setfattr", "getfattr", "setcap"]
            .iter()
            .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = compressible_tree(d.path());
    let plain = d.path().join("plain.raw");
    let plain_bytes = pack(&tree, &plain, &opts(0, 0)).unwrap().bytes;
    let mut listings = Vec::new();
    // mkfs.erofs 1.5 writes lz4 and lz4hc; zstd is checked against the same listing.
    for (c, level, z) in [
        (ErofsCompression::Lz4hc, Some(12), Some("-zlz4hc,12")),
        (ErofsCompression::Lz4, None, Some("-zlz4")),
        (ErofsCompression::Zstd, None, None),
    ] {
        let ours = d.path().join(format!("ours-{c}.raw"));
        let started = Instant::now();
        let report = pack(&tree, &ours, &zopts(c, level, 0, 0)).unwrap();
        let took = started.elapsed();
        let stats = report.erofs.clone().unwrap();
        assert_eq!(report.erofs_compression, Some(c));
        // Compressed for real: the compressible files are, the small ones stay flat.
        assert!((8..=17).contains(&stats.compressed_files), "{c}: {stats:?}");
        assert_eq!(stats.duplicates, 1, "{c}: {stats:?}");
        assert!(
            report.bytes * 10 < plain_bytes * 6,
            "{c}: {} of {plain_bytes}",
            report.bytes
        );
        let Some(z) = z else {
            listings.push(listing(&ours, &d.path().join(format!("mnt-{c}"))));
            continue;
        };
        testkit::run_ok(Command::new("fsck.erofs").arg("--extract").arg(&ours));
        let (mkfs_bytes, mkfs_time) = mkfs_image(d.path(), &tree, &[z]);
        eprintln!(
            "{c}: ours {} bytes in {took:?}; mkfs.erofs {mkfs_bytes} bytes in {mkfs_time:?}; uncompressed {plain_bytes}",
            report.bytes
        );
        assert!(
            report.bytes <= mkfs_bytes + mkfs_bytes / 50,
            "{c}: {} > {mkfs_bytes}",
            report.bytes
        );
        listings.push(listed_as_mkfs_image(d.path(), &tree, &ours));
    }
    assert_eq!(listings[0], listings[2], "zstd lists as lz4hc");
    assert_eq!(listings[0], listings[1], "lz4 lists as lz4hc");

    // zstd against trixie's erofs-utils 1.8 (Debian 12's 1.5 has no zstd): its fsck.erofs
    // passes on ours, its mkfs.erofs image of the same tree lists as ours, ours is no larger.
    if !testkit::require_tool("mmdebstrap") {
        return;
    }
    let ours = d.path().join("ours-zstd.raw");
    let o = testkit::fixtures::in_repart_root(d.path(), "fsck.erofs --extract /w/ours-zstd.raw");
    assert!(
        o.status.success(),
        "trixie's fsck.erofs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (mkfs_bytes, _) = mkfs_image_with(d.path(), &tree, &["-zzstd,3"], true);
    let ours_bytes = fs::metadata(&ours).unwrap().len();
    assert!(
        ours_bytes <= mkfs_bytes + mkfs_bytes / 50,
        "zstd: {ours_bytes} > {mkfs_bytes}"
    );
    // Asserts that the kernel lists both alike.
    listed_as_mkfs_image(d.path(), &tree, &ours);
}

#[test]
fn output_does_not_depend_on_threads_and_follows_mtime() {
    if !testkit::require_tool("setfattr") || !testkit::require_tool("setcap") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = varied_tree(d.path());
    let mut first: Option<Vec<u8>> = None;
    for threads in [1, 2, 5, 0] {
        let out = d.path().join(format!("t{threads}.raw"));
        pack(&tree, &out, &opts(threads, 1_700_000_000)).unwrap();
        let bytes = fs::read(&out).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(f == &bytes, "{threads} threads differ"),
        }
    }
    let first = first.unwrap();
    // The superblock's epoch is the mtime; another mtime gives another image.
    assert_eq!(&first[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
    assert_eq!(
        u64::from_le_bytes(first[1024 + 24..1024 + 32].try_into().unwrap()),
        1_700_000_000
    );
    let other = d.path().join("other.raw");
    pack(&tree, &other, &opts(2, 86_400)).unwrap();
    let other = fs::read(&other).unwrap();
    assert_eq!(other.len(), first.len());
    assert_ne!(other, first);

    // Compressed: the same bytes for any thread count (segments finish in any order).
    let ztree = compressible_tree(&d.path().join("z"));
    for (c, level) in [
        (ErofsCompression::Lz4hc, None),
        (ErofsCompression::Zstd, None),
    ] {
        let mut zfirst: Option<Vec<u8>> = None;
        for threads in [1, 3] {
            let out = d.path().join(format!("z-{c}-{threads}.raw"));
            pack(&ztree, &out, &zopts(c, level, threads, 1_700_000_000)).unwrap();
            let bytes = fs::read(&out).unwrap();
            match &zfirst {
                None => zfirst = Some(bytes),
                Some(f) => assert!(f == &bytes, "{c}: {threads} threads differ"),
            }
        }
        let zfirst = zfirst.unwrap();
        assert_eq!(
            u64::from_le_bytes(zfirst[1024 + 24..1024 + 32].try_into().unwrap()),
            1_700_000_000
        );
    }

    if !testkit::require_root("mounting EROFS images") {
        return;
    }
    let out = testkit::in_mount_namespace(&format!(
        "set -e; mount -t erofs -o loop,ro {} {m}; find {m} -printf '%T@\\n' | sort -u",
        d.path().join("t1.raw").display(),
        m = {
            let m = d.path().join("mnt");
            fs::create_dir(&m).unwrap();
            m.display().to_string()
        }
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1700000000.0000000000"
    );
}

#[test]
fn our_reader_sees_erofs_images_as_the_squashfs_image_of_the_same_tree() {
    if !["mkfs.erofs", "setfattr", "setcap"]
        .iter()
        .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = varied_tree(d.path());
    let ours = d.path().join("ours.raw");
    pack(&tree, &ours, &opts(0, 0)).unwrap();
    // Our squashfs reader (backhand) refuses symlink targets over 255 bytes (also in
    // mksquashfs' images): the squashfs image is made without that link.
    let link_long = "usr/share/ero/link-long";
    fs::remove_file(tree.join(link_long)).unwrap();
    let squashfs = d.path().join("sq.raw");
    let mut o = opts(0, 0);
    o.fs = Fs::Squashfs;
    pack(&tree, &squashfs, &o).unwrap();
    let e = Image::open(&ours).unwrap();
    let s = Image::open(&squashfs).unwrap();
    let e_without: Vec<_> = e
        .entries()
        .iter()
        .filter(|x| x.path != link_long)
        .cloned()
        .collect();
    assert_eq!(&e_without[..], s.entries());
    assert_eq!(e.entries().len(), testkit::tree_paths(&tree).len());
    let capped = e.entry("usr/share/ero/capped").unwrap();
    assert!(capped.capability);
    assert_eq!(e.entries().iter().filter(|x| x.capability).count(), 1);
    for x in e.entries() {
        if x.kind == fsimage::EntryKind::File {
            let want = fs::read(tree.join(&x.path)).unwrap();
            assert!(e.read_file(&x.path).unwrap() == want, "{}", x.path);
        }
    }
    assert_eq!(e.entry(link_long).unwrap().target, Some("x".repeat(1000)));

    // Compressed images read the same, contents decompressed (the ELF scan too).
    let ztree = compressible_tree(&d.path().join("z"));
    let flat = d.path().join("zflat.raw");
    pack(&ztree, &flat, &opts(0, 0)).unwrap();
    let flat = Image::open(&flat).unwrap();
    for c in [
        ErofsCompression::Lz4hc,
        ErofsCompression::Lz4,
        ErofsCompression::Zstd,
    ] {
        let img = d.path().join(format!("z-{c}.raw"));
        pack(&ztree, &img, &zopts(c, None, 0, 0)).unwrap();
        let z = Image::open(&img).unwrap();
        assert_eq!(z.entries(), flat.entries(), "{c}");
        for x in z.entries() {
            if x.kind == fsimage::EntryKind::File {
                let want = fs::read(ztree.join(&x.path)).unwrap();
                assert!(z.read_file(&x.path).unwrap() == want, "{c}: {}", x.path);
            }
        }
        let elf = z.scan_elf("usr/share/ero/z/elf").unwrap().unwrap();
        assert_eq!(
            Some(elf),
            flat.scan_elf("usr/share/ero/z/elf").unwrap(),
            "{c}"
        );
    }
    // mkfs.erofs' compressed images (compact indexes, its default form; full ones) read the
    // same.
    let long = format!("usr/share/ero/{}", "n".repeat(255));
    let without: Vec<_> = flat
        .entries()
        .iter()
        .filter(|x| x.path != long)
        .cloned()
        .collect();
    for args in [&["-zlz4hc,12"][..], &["-zlz4", "-Elegacy-compress"]] {
        mkfs_image(&d.path().join("z"), &ztree, args);
        let m = Image::open(&d.path().join("z/mkfs.raw")).unwrap();
        assert_eq!(m.entries(), &without[..]);
        for x in m.entries() {
            if x.kind == fsimage::EntryKind::File {
                let want = fs::read(ztree.join(&x.path)).unwrap();
                assert!(
                    m.read_file(&x.path).unwrap() == want,
                    "{args:?}: {}",
                    x.path
                );
            }
        }
    }

    // mkfs.erofs' image (without the name it cannot take, see above) reads the same.
    let long = format!("usr/share/ero/{}", "n".repeat(255));
    fs::remove_file(tree.join(&long)).unwrap();
    let reference = d.path().join("mkfs.raw");
    testkit::run_ok(
        Command::new("mkfs.erofs")
            .args(["--quiet", "-T0", "--all-root"])
            .arg(&reference)
            .arg(&tree),
    );
    let m = Image::open(&reference).unwrap();
    let without: Vec<_> = e_without
        .iter()
        .filter(|x| x.path != long)
        .cloned()
        .collect();
    assert_eq!(m.entries().len(), without.len());
    assert_eq!(m.entries(), &without[..]);
    assert!(
        m.read_file("usr/share/ero/sparse").unwrap()
            == fs::read(tree.join("usr/share/ero/sparse")).unwrap()
    );
}

/// mkfs.erofs options the field uses beyond our writer's: fragments (tails or whole files in
/// the packed inode), tails beside their inode with fragments, shared clusters, big physical
/// clusters; two algorithms in one image (the second, with bigger clusters, for the files
/// `hints` names); the Flatcar sysext-bakery's own line and a zstd line of image builders.
const FIELD_OPTIONS: [&[&str]; 12] = [
    &["-zlz4hc", "-Efragments"],
    &["-zlz4hc", "-Eall-fragments"],
    &["-zlz4", "-Efragments,ztailpacking"],
    &["-zlz4hc", "-Ededupe"],
    &["-zzstd,3", "-Ededupe"],
    &["-zlz4hc", "-C16384"],
    &["-zlz4hc", "-C65536"],
    &["-zzstd,3", "-C16384"],
    &["-zzstd,3", "-C65536"],
    &["-zlz4hc:zstd,3", "--compress-hints=/w/hints"],
    &[
        "-zlz4hc,12",
        "-C65536",
        "-Efragments,ztailpacking",
        "-Uclear",
    ],
    &["-zzstd,3", "-C524288", "-Efragments,ztailpacking,dedupe"],
];

/// [`varied_tree`] with what those options act on: compressible files of many sizes (tails of
/// every length, ones larger than the biggest physical cluster), identical files and one
/// that is the start of another (shared clusters), zeros, compressible and random bytes
/// mixed, a hardlinked and an xattr-carrying compressed file, a small ELF file. Without the
/// megabytes of zeros (`sparse`): mkfs.erofs' `-Ededupe` takes a minute over them.
fn field_tree(dir: &Path) -> PathBuf {
    let t = varied_tree(dir);
    fs::remove_file(t.join("usr/share/ero/sparse")).unwrap();
    let f = t.join("usr/share/ero/f");
    fs::create_dir(&f).unwrap();
    for i in 0..40u64 {
        let size = 3000 + i as usize * 997;
        fs::write(f.join(format!("tail-{i:02}")), text(size, 200 + i)).unwrap();
    }
    for size in [100usize, 4095, 4097, 70_000, 300_000, (3 << 20) + 5] {
        fs::write(f.join(format!("text-{size}")), text(size, 300)).unwrap();
    }
    fs::write(f.join("text-copy"), text(300_000, 300)).unwrap();
    fs::write(f.join("copy-a"), text(9000, 50)).unwrap();
    fs::write(f.join("copy-b"), text(9000, 50)).unwrap();
    fs::write(f.join("zeros"), vec![0u8; 200_017]).unwrap();
    let mut mixed = text(50_000, 8);
    mixed.extend(random_bytes(20_000, 9));
    mixed.extend(text(50_000, 10));
    fs::write(f.join("mixed"), &mixed).unwrap();
    fs::hard_link(f.join("text-70000"), f.join("hl-text")).unwrap();
    setfattr(&f.join("tail-07"), "user.z", "compressed");
    fs::copy("/usr/bin/true", f.join("elf")).unwrap();
    t
}

/// Asserts that our reader lists the image `image` as the kernel does (`kernel`, from
/// [`listing`]): paths, types, modes, owners, sizes, link targets, file contents,
/// capabilities, hardlink groups; and scans its ELF file. A file may instead be refused
/// when it is among `misread` (read by the kernel other than the tree held it) and the
/// kernel reads it from outside the image's block; returns how many were.
fn reader_lists_as_kernel(
    image: &Path,
    kernel: &Listing,
    misread: &BTreeSet<String>,
    what: &str,
) -> usize {
    let mut refused = 0;
    let r = fsimage::erofs::reader::ErofsReader::open(image)
        .unwrap_or_else(|e| panic!("{what}: our reader: {e}"));
    let mut rows = BTreeMap::new();
    let mut by_id: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in r.nodes() {
        let path = if e.path.is_empty() {
            ".".to_string()
        } else {
            format!("./{}", e.path)
        };
        let y = match e.kind {
            fsimage::EntryKind::File => "f",
            fsimage::EntryKind::Dir => "d",
            fsimage::EntryKind::Symlink => "l",
            fsimage::EntryKind::CharDevice => "c",
            fsimage::EntryKind::BlockDevice => "b",
            fsimage::EntryKind::Fifo => "p",
            fsimage::EntryKind::Socket => "s",
        };
        let size = match e.kind {
            fsimage::EntryKind::File | fsimage::EntryKind::Symlink => e.size.to_string(),
            _ => String::new(),
        };
        rows.insert(
            path.clone(),
            (
                y.to_string(),
                format!("{:o}", e.mode),
                format!("{}:{}", e.uid, e.gid),
                size,
                e.target.clone().unwrap_or_default(),
                e.capability,
            ),
        );
        if e.kind == fsimage::EntryKind::File {
            match r.read_file(&e.path, u64::MAX) {
                Ok(bytes) => {
                    let sum = format!("{:x}", Sha256::digest(&bytes));
                    assert_eq!(Some(&sum), kernel.sums.get(&path), "{what}: {path}");
                }
                Err(err) => {
                    assert!(
                        misread.contains(&path) && err.to_string().contains("outside its block"),
                        "{what}: {path}: {err}"
                    );
                    refused += 1;
                }
            }
            by_id
                .entry(r.file_id(&e.path).unwrap())
                .or_default()
                .push(path);
        }
    }
    let want: BTreeMap<_, _> = kernel
        .rows
        .iter()
        .map(|(p, k)| {
            let size = if k.0 == "f" || k.0 == "l" {
                k.3.clone()
            } else {
                String::new()
            };
            let cap = kernel
                .xattrs
                .get(p)
                .is_some_and(|x| x.contains_key("security.capability"));
            let row = (
                k.0.clone(),
                k.1.clone(),
                k.2.clone(),
                size,
                k.6.clone(),
                cap,
            );
            (p.clone(), row)
        })
        .collect();
    for (path, row) in &want {
        assert_eq!(rows.get(path), Some(row), "{what}: {path}");
    }
    assert_eq!(rows.len(), want.len(), "{what}");
    let links: BTreeSet<Vec<String>> = by_id.into_values().filter(|v| v.len() > 1).collect();
    assert_eq!(links, kernel.links, "{what}");
    let elf = r.scan_elf("usr/share/ero/f/elf").unwrap();
    assert!(elf.is_some(), "{what}: the ELF file scans");
    refused
}

#[test]
fn our_reader_reads_trixie_mkfs_erofs_images_with_fragments_dedupe_and_big_clusters() {
    if !testkit::require_root("mounting EROFS images")
        || !["setfattr", "getfattr", "setcap", "mmdebstrap"]
            .iter()
            .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let tree = field_tree(d.path());
    fs::write(d.path().join("hints"), "65536 1 usr/share/ero/f/\n").unwrap();
    // Every image in one run of trixie's mkfs.erofs (erofs-utils 1.8) in the shared fixture.
    let script: Vec<String> = FIELD_OPTIONS
        .iter()
        .enumerate()
        .map(|(i, args)| {
            format!(
                "mkfs.erofs --quiet -T0 --all-root {} /w/field-{i}.raw /w/tree",
                args.join(" ")
            )
        })
        .collect();
    let started = Instant::now();
    let o = testkit::fixtures::in_repart_root(d.path(), &script.join(" && "));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "mkfs.erofs: {:?} for {} images",
        started.elapsed(),
        FIELD_OPTIONS.len()
    );
    for (i, args) in FIELD_OPTIONS.iter().enumerate() {
        let what = args.join(" ");
        let image = d.path().join(format!("field-{i}.raw"));
        let kernel = listing(&image, &d.path().join(format!("mnt-{i}")));
        // The kernel sees every entry of the tree, and reads every file as the tree holds it
        // but with fragments and ztailpacking together: erofs-utils 1.8 may then store the
        // packed inode's tail (small files in it) in a way the kernel reads otherwise.
        assert_eq!(
            kernel.rows.len(),
            testkit::tree_paths(&tree).len(),
            "{what}"
        );
        let misread: BTreeSet<String> = kernel
            .sums
            .iter()
            .filter(|(path, sum)| {
                let want = format!("{:x}", Sha256::digest(fs::read(tree.join(path)).unwrap()));
                &want != *sum
            })
            .map(|(path, _)| path.clone())
            .collect();
        assert!(
            misread.is_empty() || what.contains("fragments,ztailpacking"),
            "{what}: the kernel misreads {misread:?}"
        );
        let started = Instant::now();
        let refused = reader_lists_as_kernel(&image, &kernel, &misread, &what);
        eprintln!(
            "{what}: read in {:?}; the kernel misreads {} files, of which we refuse {refused}",
            started.elapsed(),
            misread.len()
        );
    }
}

#[test]
fn damaged_images_are_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.ero"), "ID=_any\n").unwrap();
    fs::create_dir_all(t.join("usr/share/x/y")).unwrap();
    for i in 0..40 {
        fs::write(
            t.join(format!("usr/share/x/f{i}")),
            random_bytes(i * 300, i as u64),
        )
        .unwrap();
    }
    symlink("f1", t.join("usr/share/x/y/l")).unwrap();
    let image = d.path().join("ero.raw");
    pack(&t, &image, &opts(1, 0)).unwrap();
    let good = fs::read(&image).unwrap();
    let bad = d.path().join("bad.raw");
    let try_image = |bytes: &[u8]| -> bool {
        fs::write(&bad, bytes).unwrap();
        match Image::open(&bad) {
            Ok(img) => {
                for x in img.entries() {
                    let _ = img.read_file(&x.path);
                    let _ = img.scan_elf(&x.path);
                }
                true
            }
            Err(_) => false,
        }
    };
    assert!(try_image(&good));
    // Cut short anywhere: never a panic, and an error once the metadata is cut.
    for cut in (0..good.len()).step_by(97) {
        let opened = try_image(&good[..cut]);
        assert!(!opened || cut > 4096, "cut at {cut} opened");
    }
    // Bytes changed in the superblock and the metadata.
    let meta_end = (3 * 4096).min(good.len());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = good.clone();
        let at = 1024 + (seed as usize % (meta_end - 1024));
        b[at] ^= (seed >> 32) as u8 | 1;
        try_image(&b);
    }
}

#[test]
fn damaged_compressed_images_are_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    let rel = t.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.ero"), "ID=_any\n").unwrap();
    fs::create_dir_all(t.join("usr/share/x")).unwrap();
    for i in 0..12 {
        fs::write(
            t.join(format!("usr/share/x/t{i}")),
            text(i * 7000 + 100, i as u64),
        )
        .unwrap();
    }
    fs::write(t.join("usr/share/x/zeros"), vec![0u8; 1 << 20]).unwrap();
    let bad = d.path().join("bad.raw");
    let try_image = |bytes: &[u8]| -> bool {
        fs::write(&bad, bytes).unwrap();
        match Image::open(&bad) {
            Ok(img) => {
                for x in img.entries() {
                    let _ = img.read_file(&x.path);
                    let _ = img.scan_elf(&x.path);
                }
                true
            }
            Err(_) => false,
        }
    };
    for c in [ErofsCompression::Lz4hc, ErofsCompression::Zstd] {
        let image = d.path().join(format!("{c}.raw"));
        let report = pack(&t, &image, &zopts(c, None, 1, 0)).unwrap();
        assert_eq!(report.erofs.unwrap().compressed_files, 13, "{c}");
        let good = fs::read(&image).unwrap();
        assert!(try_image(&good));
        // Cut short anywhere: never a panic.
        for cut in (0..good.len()).step_by(1009) {
            try_image(&good[..cut]);
        }
        // Bytes changed anywhere (compressed clusters, superblock), and every other time in
        // the metadata area (inodes, map headers, indexes, packed tails).
        let meta = 4096 * u32::from_le_bytes(good[1064..1068].try_into().unwrap()) as usize;
        assert!(meta > 4096 && meta < good.len(), "{meta}");
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for k in 0..600 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = good.clone();
            let from = if k % 2 == 0 { meta } else { 1024 };
            let at = from + (seed as usize % (good.len() - from));
            b[at] ^= (seed >> 32) as u8 | 1;
            try_image(&b);
        }
        // The undamaged image still reads back whole.
        let img = Image::open(&image).unwrap();
        assert!(img.read_file("usr/share/x/t11").unwrap() == text(11 * 7000 + 100, 11));
    }
}

/// mkfs.erofs' images with fragments, shared clusters and big physical clusters, damaged:
/// bytes changed in the superblock (the packed inode's nid among them), inodes, map headers,
/// indexes, fragments; cut short. Never a panic or a hang; the packed inode pointed at a
/// folder or at a file of fragments (itself referring to fragments) is an error.
#[test]
fn damaged_field_images_are_errors_not_panics() {
    if !testkit::require_root("running trixie's mkfs.erofs in its chroot")
        || !testkit::require_tool("mmdebstrap")
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    let x = t.join("usr/share/x");
    fs::create_dir_all(&x).unwrap();
    for i in 0..30 {
        fs::write(x.join(format!("t{i}")), text(i * 3000 + 10, i as u64)).unwrap();
    }
    fs::write(x.join("big"), text(400_000, 99)).unwrap();
    fs::write(x.join("big-copy"), text(400_000, 99)).unwrap();
    fs::write(x.join("start"), text(150_000, 99)).unwrap();
    fs::write(x.join("rand"), random_bytes(20_000, 7)).unwrap();
    let options = [
        "-zlz4hc,12 -C65536 -Efragments,ztailpacking -Uclear",
        "-zzstd,3 -C16384 -Ededupe",
        "-zlz4hc -Eall-fragments",
    ];
    let script: Vec<String> = options
        .iter()
        .enumerate()
        .map(|(i, o)| format!("mkfs.erofs --quiet -T0 --all-root {o} /w/d{i}.raw /w/tree"))
        .collect();
    let o = testkit::fixtures::in_repart_root(d.path(), &script.join(" && "));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = d.path().join("bad.raw");
    let try_image = |bytes: &[u8]| -> Result<usize, String> {
        fs::write(&bad, bytes).unwrap();
        let img = Image::open(&bad).map_err(|e| e.to_string())?;
        let mut read = 0;
        for x in img.entries() {
            if img.read_file(&x.path).is_ok() {
                read += 1;
            }
            let _ = img.scan_elf(&x.path);
        }
        Ok(read)
    };
    let nid = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    for (i, o) in options.iter().enumerate() {
        let good = fs::read(d.path().join(format!("d{i}.raw"))).unwrap();
        assert_eq!(try_image(&good), Ok(34), "{o}");
        let started = Instant::now();
        // The packed inode: at the root folder, at the first file stored whole in it.
        let packed = nid(&good, 1024 + 96);
        if packed != 0 {
            let mut b = good.clone();
            let root = u64::from(u16::from_le_bytes([b[1024 + 14], b[1024 + 15]]));
            b[1024 + 96..1024 + 104].copy_from_slice(&root.to_le_bytes());
            let err = try_image(&b).unwrap_err();
            assert!(err.contains("packed inode"), "{o}: {err}");
            // An inode after the root's (small files come first in mkfs.erofs' order) stored
            // whole in the packed inode.
            let meta = 4096 * u32::from_le_bytes(good[1064..1068].try_into().unwrap()) as u64;
            let whole = (root + 1..packed).find(|n| {
                let at = (meta + n * 32) as usize;
                let format = u16::from_le_bytes([good[at], good[at + 1]]);
                let mode = u16::from_le_bytes([good[at + 4], good[at + 5]]);
                let isize = if format & 1 == 1 { 64 } else { 32 };
                let xattrs = u16::from_le_bytes([good[at + 2], good[at + 3]]);
                (format >> 1) & 7 == 1
                    && mode & 0o170000 == 0o100000
                    && xattrs == 0
                    && good[at + isize + 7] & 0x80 != 0
            });
            if let Some(whole) = whole {
                let mut b = good.clone();
                b[1024 + 96..1024 + 104].copy_from_slice(&whole.to_le_bytes());
                let err = try_image(&b).unwrap_err();
                assert!(err.contains("fragments (in itself)"), "{o}: {err}");
            } else {
                assert!(
                    !o.contains("fragments"),
                    "{o}: no file stored whole in fragments"
                );
            }
        }
        for cut in (0..good.len()).step_by(8191) {
            let _ = try_image(&good[..cut]);
        }
        // Bytes changed anywhere, and every other time in the superblock and metadata.
        let meta_end = good.len().min(8 * 4096);
        let mut seed = 0x853c_49e6_748f_ea9bu64 ^ i as u64;
        for k in 0..300 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut b = good.clone();
            let at = if k % 2 == 0 {
                1024 + seed as usize % (meta_end - 1024)
            } else {
                seed as usize % good.len()
            };
            b[at] ^= (seed >> 32) as u8 | 1;
            let _ = try_image(&b);
        }
        eprintln!("{o}: damaged copies read in {:?}", started.elapsed());
    }
}

#[test]
fn trixie_usr_packs_compressed_and_mounts() {
    if !testkit::require_root("mounting EROFS images") || !testkit::require_tool("fsck.erofs") {
        return;
    }
    let rootfs = testkit::fixtures::trixie_rootfs();
    // The fixture's /usr, linked (not copied) beside it, with a release file of its own.
    let d = tempfile::tempdir_in(rootfs.parent().unwrap()).unwrap();
    let tree = d.path().join("tree");
    fs::create_dir(&tree).unwrap();
    testkit::run_ok(
        Command::new("cp")
            .arg("-al")
            .arg(rootfs.join("usr"))
            .arg(&tree),
    );
    let rel = tree.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.ero"), "ID=_any\n").unwrap();
    let image = d.path().join("usr.raw");
    let report = pack(&tree, &image, &zopts(ErofsCompression::Lz4hc, None, 0, 0)).unwrap();
    let stats = report.erofs.unwrap();
    assert!(stats.compressed_files > 1000, "{stats:?}");
    assert!(
        report.bytes < stats.data_bytes / 4 * 3,
        "{} of {}",
        report.bytes,
        stats.data_bytes
    );
    let mnt = d.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // Every path, type, mode, size, link target and content, as the kernel reads them.
    let list = "find . -type d -printf '%p %m\\n' | sort; \
                find . ! -type d -printf '%p %y %m %s %l\\n' | sort; \
                find . -type f -print0 | sort -z | xargs -0 sha256sum";
    let out = testkit::in_mount_namespace(&format!(
        "set -e; mount -t erofs -o loop,ro {i} {m}; cd {m}; {list}; cd /; umount {m}; cd {t}; {list}",
        i = image.display(),
        m = mnt.display(),
        t = tree.display(),
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = lines.split_at(lines.len() / 2);
    assert!(a.len() > 10_000, "{}", a.len());
    assert!(a == b, "the mounted image lists differently from the tree");
}
