//! Hostile inputs for the image readers: `sysext inspect`, `sysext check` and the release-file
//! reading of `sysext run` (issue 12, part R). Each case asserts the safe outcome: nothing
//! written outside (sentinel untouched), the image refused (exit 2) or reported (exit 1),
//! bounded time and peak RSS, no raw control bytes in human output.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::hostile::{run_bounded, Bounded, Sentinel};

/// Every case stays under this peak RSS.
const RSS_MIB: u64 = 256;
/// And ends within this time (a loaded 2-core machine; the work itself takes well under 1 s).
const LIMIT: Duration = Duration::from_secs(30);

fn sysext(args: &[&std::ffi::OsStr]) -> Command {
    let mut c = Command::new(testkit::workspace_bin("sysext"));
    c.args(args).env("RUST_LOG", "warn");
    c
}

fn run(what: &str, args: &[&std::ffi::OsStr]) -> Bounded {
    let r = run_bounded(&mut sysext(args), LIMIT);
    r.assert_bounded(what, RSS_MIB);
    r
}

/// `mksquashfs SRC OUT` with uncompressed tables (so names can be patched), root-owned.
fn mksquashfs(src: &Path, out: &Path, extra: &[&str]) -> bool {
    if !testkit::require_tool("mksquashfs") {
        return false;
    }
    let st = Command::new("mksquashfs")
        .arg(src)
        .arg(out)
        .args(["-noappend", "-quiet", "-no-progress", "-all-root"])
        .args(["-noI", "-noD", "-noF", "-noX"])
        .args(extra)
        .status()
        .unwrap();
    assert!(st.success(), "mksquashfs failed");
    true
}

/// Replaces the single occurrence of `from` by `to` (same length) in the file.
fn patch_once(file: &Path, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut b = fs::read(file).unwrap();
    let hits: Vec<usize> = b
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "{from:?} occurs {} times", hits.len());
    b[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    fs::write(file, b).unwrap();
}

fn release(root: &Path, name: &str, text: &str) {
    let d = root.join("usr/lib/extension-release.d");
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(format!("extension-release.{name}")), text).unwrap();
}

/// An ELF file to plant (the test binary's own loader-visible tool).
fn an_elf() -> Vec<u8> {
    fs::read("/usr/bin/true").unwrap()
}

// ---- 1/2. Duplicate names: refused by every reader, nothing written anywhere ----

/// `usr/lib/zzdupa` a symlink to the sentinel and `usr/lib/zzdupb/` a folder with an ELF
/// library, then `zzdupb` renamed `zzdupa` in the directory table: one folder, two entries of
/// the same name. A reader extracting in entry order would write the library into the sentinel.
fn duplicate_symlink_and_dir(t: &Path, sentinel: &Path) -> Option<PathBuf> {
    let src = t.join("src");
    release(&src, "dup", "ID=_any\n");
    fs::create_dir_all(src.join("usr/lib/zzdupb")).unwrap();
    fs::write(src.join("usr/lib/zzdupb/libplanted.so.1"), an_elf()).unwrap();
    symlink(sentinel, src.join("usr/lib/zzdupa")).unwrap();
    let raw = t.join("dup.raw");
    if !mksquashfs(&src, &raw, &[]) {
        return None;
    }
    patch_once(&raw, b"zzdupb", b"zzdupa");
    Some(raw)
}

#[test]
fn duplicate_names_check_refuses_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let sentinel = Sentinel::new();
    let Some(raw) = duplicate_symlink_and_dir(t.path(), sentinel.path()) else {
        return;
    };
    for json in [false, true] {
        let mut args = vec![std::ffi::OsStr::new("check"), raw.as_os_str()];
        if json {
            args.push("--json".as_ref());
        }
        let r = run("check on a duplicate-name image", &args);
        assert_eq!(r.code, Some(2), "refused: {}", r.stderr_text());
        assert!(r.stdout.is_empty(), "no partial report");
        sentinel.assert_untouched("check on a duplicate-name image");
    }
    // No temporary folder left behind either.
    assert_eq!(
        testkit::hostile::leftovers(t.path(), &["src", "dup.raw"]),
        Vec::<String>::new()
    );
}

#[test]
fn duplicate_names_inspect_refuses_both_kinds() {
    let t = tempfile::tempdir().unwrap();
    let sentinel = Sentinel::new();
    let Some(raw) = duplicate_symlink_and_dir(t.path(), sentinel.path()) else {
        return;
    };
    // Two regular files of the same name with different contents: which one the host sees
    // decides the verdict, so the image is refused rather than judged on either.
    let src2 = t.path().join("src2");
    release(&src2, "dup2", "ID=_any\n");
    fs::create_dir_all(src2.join("usr/bin")).unwrap();
    fs::write(src2.join("usr/bin/zzfilea"), "first").unwrap();
    fs::write(src2.join("usr/bin/zzfileb"), "second, longer").unwrap();
    let raw2 = t.path().join("dup2.raw");
    assert!(mksquashfs(&src2, &raw2, &[]));
    patch_once(&raw2, b"zzfileb", b"zzfilea");
    for img in [&raw, &raw2] {
        for extra in [&["--list"][..], &["--json"][..]] {
            let mut args = vec![std::ffi::OsStr::new("inspect"), img.as_os_str()];
            args.extend(extra.iter().map(std::ffi::OsStr::new));
            let r = run("inspect on a duplicate-name image", &args);
            assert_eq!(r.code, Some(2), "refused: {}", r.stderr_text());
            assert!(r.stdout.is_empty(), "no partial output");
        }
        let r = run("check", &["check".as_ref(), img.as_os_str()]);
        assert_eq!(r.code, Some(2));
    }
    sentinel.assert_untouched("inspect on duplicate-name images");
}

// ---- 3. Privilege: setuid/setgid and file capabilities are findings ----

fn findings(r: &Bounded) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&r.stdout));
    });
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// A valid `security.capability` value (VFS_CAP_REVISION_2, CAP_NET_RAW permitted).
fn set_cap(p: &Path) {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0000u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 13).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    rustix::fs::setxattr(
        p,
        "security.capability",
        &v,
        rustix::fs::XattrFlags::empty(),
    )
    .expect("setting security.capability (needs root)");
}

fn privileged_tree(root: &Path) {
    release(root, "priv", "ID=_any\n");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sgid", 0o2755), ("plain", 0o755)] {
        let p = root.join("usr/bin").join(name);
        fs::write(&p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    let capped = root.join("usr/bin/capped");
    fs::write(&capped, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&capped, fs::Permissions::from_mode(0o755)).unwrap();
    set_cap(&capped);
}

fn assert_privilege_findings(r: &Bounded, what: &str) {
    assert_eq!(r.code, Some(1), "{what}: {}", r.stderr_text());
    let f = findings(r);
    for (code, path) in [
        ("setuid-setgid", "usr/bin/suid"),
        ("setuid-setgid", "usr/bin/sgid"),
        ("file-capability", "usr/bin/capped"),
    ] {
        assert!(
            f.iter().any(|(c, p)| c == code && p == path),
            "{what}: no {code} for {path} in {f:?}"
        );
    }
    assert!(
        !f.iter().any(|(_, p)| p == "usr/bin/plain"),
        "{what}: {f:?}"
    );
}

#[test]
fn setuid_and_capabilities_are_reported_in_a_raw_image() {
    if !testkit::require_root("file capabilities") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    privileged_tree(&src);
    let raw = t.path().join("priv.raw");
    if !mksquashfs(&src, &raw, &["-xattrs"]) {
        return;
    }
    let host = t.path().join("os-release");
    fs::write(&host, "ID=debian\nVERSION_ID=12\n").unwrap();
    let r = run(
        "check a privileged .raw",
        &[
            "check".as_ref(),
            raw.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert_privilege_findings(&r, "raw image");
    // The human report lists them too.
    let r = run(
        "check a privileged .raw (text)",
        &[
            "check".as_ref(),
            raw.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(1));
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("[setuid-setgid] usr/bin/suid"), "{text}");
    assert!(text.contains("[file-capability] usr/bin/capped"), "{text}");
}

#[test]
fn setuid_and_capabilities_are_reported_in_a_folder_image() {
    if !testkit::require_root("file capabilities") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("priv");
    privileged_tree(&img);
    let host = t.path().join("os-release");
    fs::write(&host, "ID=debian\nVERSION_ID=12\n").unwrap();
    let r = run(
        "check a privileged folder",
        &[
            "check".as_ref(),
            img.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert_privilege_findings(&r, "folder image");
}

// ---- 4. Bounds: sparse release files, deep trees ----

fn sparse_release_tree(root: &Path, name: &str) {
    release(root, name, "");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(root.join(format!(
            "usr/lib/extension-release.d/extension-release.{name}"
        )))
        .unwrap();
    f.set_len(2 << 30).unwrap();
}

#[test]
fn sparse_2gib_release_file_in_a_raw_image_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    sparse_release_tree(&src, "sparse");
    let raw = t.path().join("sparse.raw");
    if !mksquashfs(&src, &raw, &[]) {
        return;
    }
    assert!(
        fs::metadata(&raw).unwrap().len() < 1 << 20,
        "the image stays small"
    );
    let host = t.path().join("os-release");
    fs::write(&host, "ID=debian\n").unwrap();
    let r = run("inspect", &["inspect".as_ref(), raw.as_os_str()]);
    assert_eq!(r.code, Some(2), "{}", r.stderr_text());
    let r = run(
        "check",
        &[
            "check".as_ref(),
            raw.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr_text());
}

#[test]
fn sparse_2gib_release_file_in_a_folder_image_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("sparse");
    sparse_release_tree(&img, "sparse");
    let host = t.path().join("os-release");
    fs::write(&host, "ID=debian\n").unwrap();
    let r = run(
        "inspect",
        &["inspect".as_ref(), img.as_os_str(), "--json".as_ref()],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr_text());
    let r = run(
        "check",
        &[
            "check".as_ref(),
            img.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
        ],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr_text());
}

/// A squashfs image (uncompressed metadata) of `depth` nested folders `d/d/d/...`, written
/// here byte by byte: no tool makes such a tree (paths exceed PATH_MAX).
fn deep_image(depth: u32) -> Vec<u8> {
    const BLOCK: usize = 8192;
    // Metadata stream → blocks, each behind a 2-byte "uncompressed" header.
    fn blocks(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in stream.chunks(BLOCK) {
            out.extend_from_slice(&(c.len() as u16 | 0x8000).to_le_bytes());
            out.extend_from_slice(c);
        }
        out
    }
    let at = |pos: usize| (((pos / BLOCK) * (BLOCK + 2)) as u32, (pos % BLOCK) as u16);
    let n = depth + 1; // folders, the root included; folder k has inode number k + 1
    let (inode_size, listing_size) = (32usize, 21usize);
    let mut inodes = Vec::new();
    let mut dirs = Vec::new();
    for k in 0..n {
        let (dblock, doff) = at(k as usize * listing_size);
        let last = k == depth;
        inodes.extend_from_slice(&1u16.to_le_bytes()); // basic directory
        inodes.extend_from_slice(&0o755u16.to_le_bytes());
        inodes.extend_from_slice(&0u16.to_le_bytes()); // uid index
        inodes.extend_from_slice(&0u16.to_le_bytes()); // gid index
        inodes.extend_from_slice(&0u32.to_le_bytes()); // mtime
        inodes.extend_from_slice(&(k + 1).to_le_bytes());
        inodes.extend_from_slice(&(if last { 0 } else { dblock }).to_le_bytes());
        inodes.extend_from_slice(&(if last { 2u32 } else { 3 }).to_le_bytes()); // links
        let size: u16 = if last { 3 } else { listing_size as u16 + 3 };
        inodes.extend_from_slice(&size.to_le_bytes());
        inodes.extend_from_slice(&(if last { 0 } else { doff }).to_le_bytes());
        let parent = if k == 0 { n + 1 } else { k };
        inodes.extend_from_slice(&parent.to_le_bytes());
        if !last {
            let (iblock, ioff) = at((k as usize + 1) * inode_size);
            dirs.extend_from_slice(&0u32.to_le_bytes()); // one entry
            dirs.extend_from_slice(&iblock.to_le_bytes());
            dirs.extend_from_slice(&(k + 2).to_le_bytes());
            dirs.extend_from_slice(&ioff.to_le_bytes());
            dirs.extend_from_slice(&0i16.to_le_bytes());
            dirs.extend_from_slice(&1u16.to_le_bytes());
            dirs.extend_from_slice(&0u16.to_le_bytes()); // name length - 1
            dirs.push(b'd');
        }
    }
    let inode_table = blocks(&inodes);
    let dir_table = blocks(&dirs);
    let ids = blocks(&0u32.to_le_bytes());
    let inode_start = 96u64;
    let dir_start = inode_start + inode_table.len() as u64;
    let id_block = dir_start + dir_table.len() as u64;
    let id_table = id_block + ids.len() as u64;
    let bytes_used = id_table + 8;
    let mut sb = Vec::new();
    sb.extend_from_slice(b"hsqs");
    sb.extend_from_slice(&n.to_le_bytes());
    sb.extend_from_slice(&0u32.to_le_bytes()); // mtime
    sb.extend_from_slice(&131_072u32.to_le_bytes());
    sb.extend_from_slice(&0u32.to_le_bytes()); // fragments
    sb.extend_from_slice(&1u16.to_le_bytes()); // gzip
    sb.extend_from_slice(&17u16.to_le_bytes());
    sb.extend_from_slice(&(0x0001u16 | 0x0002 | 0x0008 | 0x0010 | 0x0200).to_le_bytes());
    sb.extend_from_slice(&1u16.to_le_bytes()); // ids
    sb.extend_from_slice(&4u16.to_le_bytes());
    sb.extend_from_slice(&0u16.to_le_bytes());
    sb.extend_from_slice(&0u64.to_le_bytes()); // root inode at block 0, offset 0
    sb.extend_from_slice(&bytes_used.to_le_bytes());
    sb.extend_from_slice(&id_table.to_le_bytes());
    sb.extend_from_slice(&u64::MAX.to_le_bytes()); // no xattrs
    sb.extend_from_slice(&inode_start.to_le_bytes());
    sb.extend_from_slice(&dir_start.to_le_bytes());
    sb.extend_from_slice(&u64::MAX.to_le_bytes()); // no fragment table
    sb.extend_from_slice(&u64::MAX.to_le_bytes()); // no export table
    assert_eq!(sb.len(), 96);
    let mut img = sb;
    img.extend_from_slice(&inode_table);
    img.extend_from_slice(&dir_table);
    img.extend_from_slice(&ids);
    img.extend_from_slice(&id_block.to_le_bytes());
    img
}

#[test]
fn deep_squashfs_tree_is_bounded() {
    let t = tempfile::tempdir().unwrap();
    // A shallow one reads fine (the builder makes valid images) ...
    let ok = t.path().join("shallow.raw");
    fs::write(&ok, deep_image(100)).unwrap();
    let r = run(
        "inspect a 100-deep image",
        &["inspect".as_ref(), ok.as_os_str(), "--list".as_ref()],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_eq!(
        String::from_utf8_lossy(&r.stdout)
            .matches("\nd0755")
            .count(),
        100
    );
    // ... and 20,000 levels end without a signal (no stack overflow), refused.
    let deep = t.path().join("deep.raw");
    fs::write(&deep, deep_image(20_000)).unwrap();
    for cmd in ["inspect", "check"] {
        let r = run(
            &format!("{cmd} on a 20,000-deep image"),
            &[cmd.as_ref(), deep.as_os_str(), "--json".as_ref()],
        );
        assert_eq!(r.code, Some(2), "{cmd}: {}", r.stderr_text());
    }
}

/// `depth` nested folders `d` under `root`, made with directory descriptors (the full path
/// exceeds PATH_MAX).
fn deep_folder(root: &Path, depth: usize) {
    use rustix::fs::{Mode, OFlags};
    let mut fd = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rustix::fs::mkdirat(&fd, "d", Mode::from_raw_mode(0o755)).unwrap();
        fd = rustix::fs::openat(&fd, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())
            .unwrap();
    }
}

/// Removes what [`deep_folder`] made, one level per step, with short paths only.
fn remove_deep_folder(root: &Path) {
    while root.join("d/d").exists() {
        fs::rename(root.join("d/d"), root.join("x")).unwrap();
        fs::remove_dir(root.join("d")).unwrap();
        fs::rename(root.join("x"), root.join("d")).unwrap();
    }
    let _ = fs::remove_dir(root.join("d"));
}

#[test]
fn deep_folder_image_is_bounded() {
    // Deeper than MAX_DEPTH (4096) and than PATH_MAX allows to name.
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("deep");
    release(&img, "deep", "ID=_any\n");
    deep_folder(&img.join("usr"), 5_000);
    for cmd in ["inspect", "check"] {
        let r = run(
            &format!("{cmd} on a 5,000-deep folder"),
            &[cmd.as_ref(), img.as_os_str()],
        );
        assert_eq!(r.code, Some(2), "{cmd}: {}", r.stderr_text());
    }
    remove_deep_folder(&img.join("usr"));
}

// ---- 5. Release files: many keys, FIFOs ----

fn many_keys() -> String {
    let mut s = String::from("ID=_any\n");
    for i in 0..300_000 {
        s.push_str(&format!("K{i}=v\n"));
    }
    s
}

#[test]
fn release_file_with_300k_keys_is_quick() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("keys");
    release(&img, "keys", &many_keys());
    let host = t.path().join("os-release");
    fs::write(&host, many_keys()).unwrap();
    let quick = Duration::from_secs(15);
    for (what, args) in [
        ("inspect", vec!["inspect".as_ref(), img.as_os_str()]),
        (
            "check",
            vec![
                "check".as_ref(),
                img.as_os_str(),
                "--host-os-release".as_ref(),
                host.as_os_str(),
            ],
        ),
    ] {
        let r = run(what, &args);
        assert!(r.elapsed < quick, "{what}: {:?}", r.elapsed);
        assert_eq!(
            r.code,
            Some(2),
            "{what}: refused as too large: {}",
            r.stderr_text()
        );
    }
}

fn fifo_release_image(t: &Path) -> PathBuf {
    let img = t.join("fifo");
    let d = img.join("usr/lib/extension-release.d");
    fs::create_dir_all(&d).unwrap();
    fs::create_dir_all(img.join("usr/bin")).unwrap();
    testkit::mkfifo(d.join("extension-release.fifo"));
    img
}

#[test]
fn fifo_release_file_inspect_and_check_end() {
    let t = tempfile::tempdir().unwrap();
    let img = fifo_release_image(t.path());
    let host = t.path().join("os-release");
    fs::write(&host, "ID=debian\n").unwrap();
    // Not a regular file: never opened for reading, so nothing blocks; no release shown.
    let r = run(
        "inspect",
        &["inspect".as_ref(), img.as_os_str(), "--json".as_ref()],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert!(v["release"].is_null(), "{v}");
    let r = run(
        "check",
        &[
            "check".as_ref(),
            img.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
            "--json".as_ref(),
        ],
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr_text());
    let f = findings(&r);
    assert!(
        f.iter()
            .any(|(c, p)| c == "unreadable-release" && p.ends_with("extension-release.fifo")),
        "{f:?}"
    );
}

#[test]
fn fifo_release_file_sysext_run_ends() {
    if !testkit::require_root("sysext run") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let img = fifo_release_image(t.path());
    let marker = t.path().join("ran");
    let r = run(
        "sysext run with a FIFO release file",
        &[
            "run".as_ref(),
            img.as_os_str(),
            "--".as_ref(),
            "/bin/sh".as_ref(),
            "-c".as_ref(),
            format!("touch {}", marker.display()).as_ref(),
        ],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr_text());
    assert!(!marker.exists(), "the command ran on a refused image");
}

// ---- 6. Human output escapes control characters ----

const NASTY: [&str; 3] = ["esc\x1b[2Jcleared", "new\nFAKE-LINE", "bell\x07\r"];

fn assert_no_control_bytes(out: &[u8], what: &str) {
    for (i, b) in out.iter().enumerate() {
        assert!(
            *b == b'\n' || (*b >= 0x20 && *b != 0x7f),
            "{what}: raw control byte {b:#04x} at {i}: {:?}",
            String::from_utf8_lossy(out)
        );
    }
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.lines().any(|l| l.starts_with("FAKE-LINE")),
        "{what}: a name forged a line: {text}"
    );
}

fn nasty_tree(root: &Path) {
    release(root, "nasty", "ID=_any\nVERSION_ID=\"1\x1b[31m\"\n");
    fs::create_dir_all(root.join("usr/share")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    for n in NASTY {
        fs::write(root.join("usr/share").join(n), "x").unwrap();
        fs::write(root.join("etc").join(n), "x").unwrap();
        symlink(n, root.join("usr/share").join(format!("link-{}", n.len()))).unwrap();
    }
}

#[test]
fn control_characters_in_names_are_escaped_folder() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("nasty");
    nasty_tree(&img);
    let r = run(
        "inspect --list",
        &["inspect".as_ref(), img.as_os_str(), "--list".as_ref()],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_no_control_bytes(&r.stdout, "inspect --list of a folder");
    let host = t.path().join("os-release");
    fs::write(&host, "ID=debian\n").unwrap();
    let r = run(
        "check",
        &[
            "check".as_ref(),
            img.as_os_str(),
            "--host-os-release".as_ref(),
            host.as_os_str(),
        ],
    );
    assert_eq!(
        r.code,
        Some(1),
        "etc/ is outside the hierarchy: {}",
        r.stderr_text()
    );
    assert_no_control_bytes(&r.stdout, "check of a folder");
    // JSON keeps the names exactly.
    let r = run(
        "inspect --json",
        &["inspect".as_ref(), img.as_os_str(), "--json".as_ref()],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    let paths: Vec<&str> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"usr/share/new\nFAKE-LINE"), "{paths:?}");
}

#[test]
fn control_characters_in_names_are_escaped_raw() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    nasty_tree(&src);
    let raw = t.path().join("nasty.raw");
    if !mksquashfs(&src, &raw, &[]) {
        return;
    }
    let r = run(
        "inspect --list",
        &["inspect".as_ref(), raw.as_os_str(), "--list".as_ref()],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_no_control_bytes(&r.stdout, "inspect --list of a .raw");
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("usr/share/esc\\x1b[2Jcleared"), "{text}");
}
