//! Hostile inputs, class 1 (writes that follow links planted by the input) and class 4's
//! descriptor and sparse-file bounds for writers: every case asserts the safe outcome (nothing
//! in the sentinel, no leftovers, bounded time and RSS), not an error text.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use testkit::hostile::{leftovers, run_bounded, Sentinel};

const RSS_MIB: u64 = 256;

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

fn add_dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
    let mut h = tar_header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, name, &b""[..]).unwrap();
}

fn add_file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
    let mut h = tar_header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, name, data).unwrap();
}

fn add_link(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut h = tar_header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, name, target).unwrap();
}

fn gz(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `../` enough times to climb from any folder of a test's scratch tree to `/`, then `abs`.
fn climbing(abs: &Path) -> String {
    format!(
        "{}{}",
        "../".repeat(40),
        abs.to_string_lossy().trim_start_matches('/')
    )
}

fn sysext() -> Command {
    Command::new(testkit::workspace_bin("sysext"))
}

/// Names in `dir` that are temp or scratch entries (starting with '.'), bake's state file
/// aside.
fn hidden_leftovers(dir: &Path) -> Vec<String> {
    leftovers(dir, &[".bake-state.json"])
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect()
}

fn bake_static(tarball: Vec<u8>, enable: bool) -> (Sentinel, tempfile::TempDir) {
    let sentinel = Sentinel::new();
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("t.tar.gz"), gz(&tarball)).unwrap();
    let manifest = format!(
        "base_url = \"https://example.org/ext\"\n[[extension]]\nname = \"evil\"\nversion = \"1\"\nsource = \"./t.tar.gz\"\n\
         mode = \"static\"\nunits = [\"hello.service\"]\n{}",
        if enable {
            "enable = [\"hello.service\"]\n"
        } else {
            ""
        }
    );
    fs::write(d.path().join("m.toml"), manifest).unwrap();
    let r = run_bounded(
        sysext()
            .current_dir(d.path())
            .args(["bake", "m.toml", "--out", "out", "--json"]),
        Duration::from_secs(60),
    );
    r.assert_bounded("sysext bake (static, planted link)", RSS_MIB);
    // The job itself ran (and failed on the link, or built without following it).
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_else(|e| {
        panic!("bake --json: {e}; stderr:\n{}", r.stderr_text());
    });
    let status = v["entries"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        status == "failed" || status == "built",
        "the job did not run: {v}\n{}",
        r.stderr_text()
    );
    sentinel.assert_untouched("sysext bake (static, planted link)");
    if d.path().join("out").is_dir() {
        assert_eq!(
            hidden_leftovers(&d.path().join("out")),
            Vec::<String>::new(),
            "scratch left behind"
        );
    }
    (sentinel, d)
}

#[test]
fn bake_static_unit_folder_that_is_an_absolute_link() {
    let sentinel = Sentinel::new();
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, "usr");
    add_dir(&mut b, "usr/bin");
    add_file(&mut b, "usr/bin/tool", b"#!/bin/sh\n", 0o755);
    add_dir(&mut b, "usr/lib");
    add_dir(&mut b, "usr/lib/systemd");
    add_link(
        &mut b,
        "usr/lib/systemd/system",
        sentinel.path().to_str().unwrap(),
    );
    add_file(
        &mut b,
        "hello.service",
        b"[Service]\nExecStart=/usr/bin/tool\n[Install]\nWantedBy=multi-user.target\n",
        0o644,
    );
    let (s2, _d) = bake_static(b.into_inner().unwrap(), true);
    // The link in the tarball pointed at this sentinel: still untouched.
    sentinel.assert_untouched("bake static, absolute link");
    drop(s2);
}

#[test]
fn bake_static_unit_folder_that_is_a_climbing_link() {
    let sentinel = Sentinel::new();
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, "usr");
    add_dir(&mut b, "usr/lib");
    add_link(&mut b, "usr/lib/systemd", &climbing(sentinel.path()));
    add_file(
        &mut b,
        "hello.service",
        b"[Service]\nExecStart=/bin/true\n",
        0o644,
    );
    let (_s2, _d) = bake_static(b.into_inner().unwrap(), false);
    sentinel.assert_untouched("bake static, relative link");
}

fn torcx(files: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, ".torcx");
    add_file(
        &mut b,
        ".torcx/manifest.json",
        br#"{"kind":"image-manifest-v0","value":{"bin":[],"units":[]}}"#,
        0o644,
    );
    files(&mut b);
    gz(&b.into_inner().unwrap())
}

fn convert(tarball: Vec<u8>, sentinel: &Sentinel, what: &str) {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join("p.torcx.tgz"), tarball).unwrap();
    fs::create_dir(d.path().join("out")).unwrap();
    let r = run_bounded(
        sysext().current_dir(d.path()).args([
            "convert-torcx",
            "p.torcx.tgz",
            "evil",
            "-o",
            "out/evil.raw",
        ]),
        Duration::from_secs(60),
    );
    r.assert_bounded(what, RSS_MIB);
    sentinel.assert_untouched(what);
    let left = leftovers(&d.path().join("out"), &["evil.raw"]);
    assert!(left.is_empty(), "{what}: left behind {left:?}");
    if d.path().join("out/evil.raw").exists() {
        let img = fs::read(d.path().join("out/evil.raw")).unwrap();
        assert!(
            !img.windows(7).any(|w| w == b"canary\n"),
            "{what}: the sentinel's canary was read into the image"
        );
    }
}

#[test]
fn torcx_two_library_folders_one_of_them_a_link() {
    let sentinel = Sentinel::new();
    let target = climbing(sentinel.path());
    let tarball = torcx(|b| {
        add_dir(b, "lib");
        add_link(b, "lib/x", &target);
        add_dir(b, "usr");
        add_dir(b, "usr/lib");
        add_dir(b, "usr/lib/x");
        add_file(b, "usr/lib/x/libevil.so.1", b"\x7fELF not really", 0o755);
    });
    convert(
        tarball,
        &sentinel,
        "convert-torcx, lib/x link over usr/lib/x",
    );
    // The other order: the folder first, the link second.
    let tarball = torcx(|b| {
        add_dir(b, "lib");
        add_dir(b, "lib/y");
        add_file(b, "lib/y/libevil.so.1", b"data", 0o644);
        add_dir(b, "usr");
        add_dir(b, "usr/lib");
        add_link(b, "usr/lib/y", &target);
        add_dir(b, "usr/lib/z");
        add_file(b, "usr/lib/z/libok.so.1", b"data", 0o644);
    });
    convert(
        tarball,
        &sentinel,
        "convert-torcx, usr/lib/y link after lib/y",
    );
}

#[test]
fn torcx_listed_binary_that_links_to_a_host_file() {
    let sentinel = Sentinel::new();
    let canary = sentinel.path().join("canary");
    let mut b = tar::Builder::new(Vec::new());
    add_dir(&mut b, ".torcx");
    add_file(
        &mut b,
        ".torcx/manifest.json",
        br#"{"kind":"image-manifest-v0","value":{"bin":["/bin/a","/bin/b"],"units":[]}}"#,
        0o644,
    );
    add_dir(&mut b, "bin");
    add_link(&mut b, "bin/a", canary.to_str().unwrap());
    add_link(&mut b, "bin/b", &climbing(&canary));
    convert(
        gz(&b.into_inner().unwrap()),
        &sentinel,
        "convert-torcx, binaries linking to a host file",
    );
}

/// An OCI layout (one image, `latest`) with `layer` (a plain tar) as its only layer.
fn oci_layout(dir: &Path, layer: &[u8]) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (ldigest, lsize) = put(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [ldigest]},
    });
    let (cdigest, csize) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": cdigest, "size": csize},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": ldigest, "size": lsize}],
    });
    let (mdigest, msize) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": mdigest, "size": msize,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    fs::write(dir.join("index.json"), index.to_string()).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn ocirootfs(layout: &Path, out: &Path, cache: &Path, nofile: Option<u32>) -> Command {
    let bin = testkit::workspace_bin("ocirootfs");
    let mut c = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}")).arg("--").arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.arg(format!("oci:{}:latest", layout.display()))
        .arg(out)
        .arg("--cache")
        .arg(cache);
    c
}

#[test]
fn ocirootfs_unpacks_5000_folders_under_ulimit_n_256() {
    if !testkit::require_tool("prlimit") {
        return;
    }
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..1000 {
        add_dir(&mut b, &format!("d{i:04}"));
        for j in 0..4 {
            add_dir(&mut b, &format!("d{i:04}/s{j}"));
        }
    }
    add_file(&mut b, "d0999/s3/last", b"ok\n", 0o644);
    let d = tempfile::tempdir().unwrap();
    oci_layout(&d.path().join("layout"), &b.into_inner().unwrap());
    let out = d.path().join("rootfs");
    let r = run_bounded(
        &mut ocirootfs(
            &d.path().join("layout"),
            &out,
            &d.path().join("cache"),
            Some(256),
        ),
        Duration::from_secs(120),
    );
    r.assert_bounded("ocirootfs, 5,000 folders, ulimit -n 256", RSS_MIB);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let dirs = walk_dirs(&out);
    assert_eq!(dirs, 5001, "folders unpacked (with the root)");
    assert_eq!(fs::read(out.join("d0999/s3/last")).unwrap(), b"ok\n");
}

/// Folders under `root`, `root` included (links not followed).
fn walk_dirs(root: &Path) -> usize {
    testkit::tree_paths(root)
        .iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()))
        .count()
}

/// A GNU sparse entry `name` of `real` bytes: 512 bytes of data at each end, holes between.
fn sparse_entry(name: &str, real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(1024);
    {
        let g = h.as_gnu_mut().unwrap();
        g.sparse[0].set_offset(0);
        g.sparse[0].set_length(512);
        g.sparse[1].set_offset(real - 512);
        g.sparse[1].set_length(512);
        g.set_real_size(real);
    }
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    let mut data = b"head".to_vec();
    data.resize(1020, 0);
    data.extend_from_slice(b"tail");
    out.extend_from_slice(&data);
    out
}

#[test]
fn ocirootfs_writes_gnu_sparse_entries_sparse() {
    let real = 2u64 << 30;
    let mut layer = sparse_entry("big", real);
    layer.extend_from_slice(&sparse_entry("big2", real));
    layer.extend_from_slice(&[0u8; 1024]);
    let d = tempfile::tempdir().unwrap();
    oci_layout(&d.path().join("layout"), &layer);
    let out = d.path().join("rootfs");
    let r = run_bounded(
        &mut ocirootfs(
            &d.path().join("layout"),
            &out,
            &d.path().join("cache"),
            None,
        ),
        Duration::from_secs(120),
    );
    r.assert_bounded("ocirootfs, 2 GiB GNU sparse entries", RSS_MIB);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    for n in ["big", "big2"] {
        let m = fs::metadata(out.join(n)).unwrap();
        assert_eq!(m.len(), real);
        assert!(
            m.blocks() * 512 < 1 << 20,
            "{n}: {} KiB allocated for a layer of 3 KiB",
            m.blocks() / 2
        );
    }
}

#[test]
fn ocirootfs_layer_links_never_send_writes_outside() {
    let sentinel = Sentinel::new();
    let mut b = tar::Builder::new(Vec::new());
    add_link(&mut b, "abs", sentinel.path().to_str().unwrap());
    add_link(&mut b, "rel", &climbing(sentinel.path()));
    add_file(&mut b, "abs/planted", b"x", 0o644);
    add_file(&mut b, "rel/planted", b"x", 0o644);
    add_file(&mut b, "abs/canary", b"overwritten\n", 0o644);
    let d = tempfile::tempdir().unwrap();
    oci_layout(&d.path().join("layout"), &b.into_inner().unwrap());
    let r = run_bounded(
        &mut ocirootfs(
            &d.path().join("layout"),
            &d.path().join("rootfs"),
            &d.path().join("cache"),
            None,
        ),
        Duration::from_secs(60),
    );
    r.assert_bounded("ocirootfs, links planted by a layer", RSS_MIB);
    sentinel.assert_untouched("ocirootfs, links planted by a layer");
}
