//! Hostile inputs, class "unbounded time and memory" (issue #12, item 4): oversized PAX and GNU
//! long-name records in layers and archives, `oci:` layouts whose files are links to
//! `/dev/zero`, FIFOs or 3 GiB sparse files, and `ld.so.conf` files with pathological include
//! globs. Each case runs the release binary with a time limit and asserts the safe outcome:
//! it ends by itself within the limit, its peak RSS stays under 256 MiB, and no output or temp
//! folder is left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use testkit::hostile::{leftovers, run_bounded, Bounded};

/// The RSS bound of every case.
const MAX_RSS_MIB: u64 = 256;
/// The time bound of the `ocirootfs` cases (the honest work is a few milliseconds; a debug
/// build on a loaded 2-core machine is given room).
const OCI_LIMIT: Duration = Duration::from_secs(30);
/// The time bound of the `sysext deps` cases.
const DEPS_LIMIT: Duration = Duration::from_secs(10);

const GIB: u64 = 1 << 30;

fn hex_sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// sha256 of a file, streamed.
fn file_sha256(p: &Path) -> String {
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

fn ustar(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    h
}

/// A tar file at `path` whose first entry is a `kind` record (PAX `x`, GNU `L`) declaring
/// `size` bytes, all of them present as a sparse hole of zeros (cheap on disk, but a reader
/// that holds the record in memory needs `size` bytes), followed by one ordinary file `name`
/// and the end of the archive.
fn tar_with_huge_record(path: &Path, kind: tar::EntryType, size: u64, name: &str, data: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(ustar("././@Huge", kind, size).as_bytes())
        .unwrap();
    let after = 512 + size.next_multiple_of(512);
    f.set_len(after).unwrap();
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(after)).unwrap();
    f.write_all(ustar(name, tar::EntryType::Regular, data.len() as u64).as_bytes())
        .unwrap();
    let mut padded = data.to_vec();
    padded.resize(data.len().next_multiple_of(512), 0);
    f.write_all(&padded).unwrap();
    f.write_all(&[0; 1024]).unwrap();
}

/// A one-layer OCI image layout in `dir` whose layer is the file `layer` (moved in). Returns
/// the paths of the layer, config and manifest blobs.
struct Layout {
    layer: PathBuf,
    config: PathBuf,
}

fn layout(dir: &Path, layer: &Path) -> Layout {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let lhex = file_sha256(layer);
    let lsize = std::fs::metadata(layer).unwrap().len();
    let layer_path = blobs.join(&lhex);
    std::fs::rename(layer, &layer_path).unwrap();
    let put = |b: &[u8]| {
        let h = hex_sha256(b);
        std::fs::write(blobs.join(&h), b).unwrap();
        (h, b.len())
    };
    let cfg = serde_json::json!({
        "os": "linux", "architecture": "amd64",
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string();
    let (ch, cl) = put(cfg.as_bytes());
    let man = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{ch}"), "size": cl},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{lhex}"), "size": lsize}],
    })
    .to_string();
    let (mh, ml) = put(man.as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{mh}"), "size": ml,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    })
    .to_string();
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Layout {
        layer: layer_path,
        config: blobs.join(ch),
    }
}

/// A small ordinary layer: one file `hello`.
fn small_layer(path: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = ustar("hello", tar::EntryType::Regular, 3);
    b.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
    std::fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// Runs `ocirootfs SOURCE WORK/out` with a private cache and temp folder under `work`.
fn ocirootfs(work: &Path, source: &str) -> Bounded {
    let tmp = work.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    run_bounded(
        Command::new(testkit::workspace_bin("ocirootfs"))
            .arg(source)
            .arg(work.join("out/rootfs"))
            .arg("--cache")
            .arg(work.join("cache"))
            .env("TMPDIR", &tmp)
            .env("OCIROOTFS_PLATFORM", "linux/amd64"),
        OCI_LIMIT,
    )
}

/// The safe outcome of a refused pull: bounded, exit 2, no rootfs and nothing else beside it,
/// nothing in the temp folder, no partial blob in the cache.
fn assert_refused(work: &Path, r: &Bounded, what: &str) {
    r.assert_bounded(what, MAX_RSS_MIB);
    assert_eq!(r.code, Some(2), "{what}: stderr:\n{}", r.stderr_text());
    assert_eq!(
        leftovers(&work.join("out"), &[]),
        Vec::<String>::new(),
        "{what}: output or temp folder left"
    );
    assert_eq!(
        leftovers(&work.join("tmp"), &[]),
        Vec::<String>::new(),
        "{what}: temp files left"
    );
    if work.join("cache/blobs/sha256").is_dir() {
        assert_eq!(
            leftovers(&work.join("cache/blobs/sha256"), &[]),
            Vec::<String>::new(),
            "{what}: blobs left in the cache"
        );
    }
}

fn work() -> tempfile::TempDir {
    let w = tempfile::tempdir().unwrap();
    std::fs::create_dir(w.path().join("out")).unwrap();
    w
}

#[test]
fn ordinary_layout_is_unpacked() {
    // The baseline the hostile cases are variations of: it must pass.
    let w = work();
    let layer = w.path().join("layer.tar");
    small_layer(&layer);
    layout(&w.path().join("oci"), &layer);
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    r.assert_bounded("ordinary layout", MAX_RSS_MIB);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_eq!(
        std::fs::read(w.path().join("out/rootfs/hello")).unwrap(),
        b"hi\n"
    );
}

#[test]
fn pax_record_of_1gib_in_a_layer() {
    let w = work();
    let layer = w.path().join("layer.tar");
    tar_with_huge_record(&layer, tar::EntryType::XHeader, GIB, "hello", b"hi\n");
    layout(&w.path().join("oci"), &layer);
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "1 GiB PAX record in a layer");
}

#[test]
fn gnu_long_name_of_1gib_in_an_oci_archive() {
    // The archive itself (indexed by its tar headers) carries the record.
    let w = work();
    let archive = w.path().join("image.tar");
    tar_with_huge_record(
        &archive,
        tar::EntryType::GNULongName,
        GIB,
        "index.json",
        b"{}",
    );
    let r = ocirootfs(w.path(), &format!("oci-archive:{}", archive.display()));
    assert_refused(w.path(), &r, "1 GiB GNU long name in an oci-archive");
}

#[test]
fn layout_blob_linked_to_dev_zero() {
    let w = work();
    let layer = w.path().join("layer.tar");
    small_layer(&layer);
    let l = layout(&w.path().join("oci"), &layer);
    // The config and the layer both point at /dev/zero.
    for blob in [&l.config, &l.layer] {
        std::fs::remove_file(blob).unwrap();
        std::os::unix::fs::symlink("/dev/zero", blob).unwrap();
    }
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "layout blob linked to /dev/zero");
    // index.json itself as a link to /dev/zero.
    let index = w.path().join("oci/index.json");
    std::fs::remove_file(&index).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "index.json linked to /dev/zero");
}

fn mkfifo(p: &Path) {
    testkit::mkfifo(p);
}

#[test]
fn layout_blob_is_a_fifo() {
    let w = work();
    let layer = w.path().join("layer.tar");
    small_layer(&layer);
    let l = layout(&w.path().join("oci"), &layer);
    std::fs::remove_file(&l.layer).unwrap();
    mkfifo(&l.layer);
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "layer blob is a FIFO");
    std::fs::remove_file(&l.layer).unwrap();
    std::fs::remove_file(&l.config).unwrap();
    mkfifo(&l.config);
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "config blob is a FIFO");
}

#[test]
fn layout_blob_of_3gib_with_a_wrong_digest() {
    let w = work();
    let layer = w.path().join("layer.tar");
    small_layer(&layer);
    let l = layout(&w.path().join("oci"), &layer);
    // The layer's file grows to a 3 GiB sparse file: its descriptor still says the old size.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&l.layer)
        .unwrap()
        .set_len(3 * GIB)
        .unwrap();
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "3 GiB layer blob");
    // The config blob becomes a 3 GiB sparse file too (its digest is wrong either way).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&l.config)
        .unwrap()
        .set_len(3 * GIB)
        .unwrap();
    let r = ocirootfs(w.path(), &format!("oci:{}", w.path().join("oci").display()));
    assert_refused(w.path(), &r, "3 GiB config blob");
}

/// A root with one dynamically linked program (`/usr/bin/prog`, a copy of the host's `true`),
/// no ld.so.cache (so `ld.so.conf` is read), its libc only in `libdir` (so it is found only
/// when ld.so.conf was read) and `etc/ld.so.conf` as given.
fn deps_root(conf: &str, libdir: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    std::fs::create_dir_all(r.join(libdir)).unwrap();
    std::fs::copy(
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        r.join(libdir).join("libc.so.6"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/ld.so.conf.d")).unwrap();
    std::fs::copy("/usr/bin/true", r.join("usr/bin/prog")).unwrap();
    std::fs::write(r.join("etc/ld.so.conf"), conf).unwrap();
    t
}

fn deps(root: &Path) -> Bounded {
    run_bounded(
        Command::new(testkit::workspace_bin("sysext"))
            .arg("deps")
            .arg("--root")
            .arg(root)
            .arg("/usr/bin/prog"),
        DEPS_LIMIT,
    )
}

/// The conf was read to its end: libc was found through it. The program interpreter is not in
/// the root, so the run still reports missing libraries (exit 1, not a crash).
fn assert_found_via_conf(r: &Bounded) {
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with("libc.so.6 =>") && l.ends_with("(ld.so.conf)")),
        "{out}\n{}",
        r.stderr_text()
    );
    assert_eq!(r.code, Some(1), "{}", r.stderr_text());
}

#[test]
fn ld_so_conf_include_glob_with_many_stars() {
    // 40 stars and a tail that never matches, against long names: exponential for a naive
    // backtracking matcher.
    let pattern = "*a".repeat(40) + "*b";
    let t = deps_root(
        &format!("include /etc/ld.so.conf.d/{pattern}\n/opt/lib\n"),
        "opt/lib",
    );
    for i in 0..8 {
        std::fs::write(
            t.path()
                .join("etc/ld.so.conf.d")
                .join(format!("{}{i}", "a".repeat(120))),
            "/x\n",
        )
        .unwrap();
    }
    let r = deps(t.path());
    r.assert_bounded("pathological ld.so.conf glob", MAX_RSS_MIB);
    assert_found_via_conf(&r);
}

#[test]
fn ld_so_conf_includes_that_include_everything() {
    // Every conf file includes every conf file (and the top one twice), one is a FIFO and
    // one a link to /dev/zero: without bounds on files and depth, 30^8 reads or a hang.
    let t = deps_root(
        "include ld.so.conf.d/*.conf\ninclude /etc/ld.so.conf\n",
        "lib29",
    );
    let d = t.path().join("etc/ld.so.conf.d");
    for i in 0..30 {
        std::fs::write(
            d.join(format!("{i:02}.conf")),
            format!("/lib{i}\ninclude /etc/ld.so.conf.d/*.conf\ninclude /etc/ld.so.conf\n"),
        )
        .unwrap();
    }
    mkfifo(&d.join("fifo.conf"));
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.conf")).unwrap();
    let r = deps(t.path());
    r.assert_bounded("self-including ld.so.conf", MAX_RSS_MIB);
    assert_found_via_conf(&r);
}
