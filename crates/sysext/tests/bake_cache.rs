//! The cache limit at the scale issue #17 states, against a real `docker-registry` on
//! 127.0.0.1: with `--cache-max 300M`, pulling three different images of 250 MB each keeps
//! the cache under the limit (older entries evicted, every pulled tree complete), and two
//! `sysext bake` processes sharing that cache, each needing more than the limit, both succeed
//! while they evict.
//!
//! "250 MB" here: each image carries one layer holding a 250 MiB file of incompressible
//! (pseudo-random) bytes, so its blob in the cache and its unpacked tree are both about
//! 250 MiB; 300M is 300 MiB (`--cache-max` counts in powers of 1024). The layers are gzip
//! streams of stored (uncompressed) deflate blocks, as gzip makes of incompressible data,
//! written once by the test: skopeo pushes gzip layers as they are, without compressing them
//! again. Beside it, each image has a small layer with a static busybox, the program the bakes
//! take out of it with flix.
//!
//! A bake unpacks its image into the cache (blob and tree, about 500 MiB at once), and entries
//! in use are never evicted, so while the two bakes run the cache is over the limit (about
//! 900 MiB measured); what is checked is that both succeed with the right images, that they
//! evicted (their log line, and the entries cached before them gone), and that the cache is
//! under the limit once both are done.
//!
//! The test needs ~1.7 GiB in the temporary folder at its peak (checked before it starts) and
//! runs alone: it is the only test of this binary, and `scripts/test.sh` runs the test
//! binaries one after another. The ocirootfs binary must be built (`cargo build --workspace`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest as _, Sha256};

const MIB: u64 = 1 << 20;
/// The cache limit, as given on the command line and in bytes.
const LIMIT_ARG: &str = "300M";
const LIMIT: u64 = 300 * MIB;
/// The big file of each image.
const BIG: usize = 250 << 20;
/// Free space the test needs where it writes, with a margin.
const NEEDED: u64 = 3 << 30;

/// Incompressible bytes from a seed: the AES-128-CTR keystream of a key made of it (fast in
/// a debug build, where a byte loop in the test is not).
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let cipher = openssl::symm::Cipher::aes_128_ctr();
    openssl::symm::encrypt(cipher, &key, Some(&[0u8; 16]), &vec![0u8; len]).unwrap()
}

/// A writer hashing what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hash.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a layer blob into `layout`: a tar of directories and files (name, mode, content),
/// gzip-framed with stored blocks, streamed once to the file. Returns its descriptor and
/// diff_id.
fn layer(
    layout: &Path,
    dirs: &[&str],
    files: &[(&str, u32, &[u8])],
) -> (serde_json::Value, String) {
    let tmp = layout.join("layer.tmp");
    let file = io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp).unwrap());
    let gz = flate2::write::GzEncoder::new(
        Hashing {
            inner: file,
            hash: Sha256::new(),
        },
        flate2::Compression::none(),
    );
    let mut b = tar::Builder::new(Hashing {
        inner: gz,
        hash: Sha256::new(),
    });
    let header = |kind, mode, len| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(len);
        h.set_mtime(1_700_000_000);
        h
    };
    for d in dirs {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, &[][..]).unwrap();
    }
    for (name, mode, data) in files {
        let mut h = header(tar::EntryType::Regular, *mode, data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(tar.hash.finalize()));
    let mut blob = tar.inner.finish().unwrap();
    blob.flush().unwrap();
    let digest = hex::encode(blob.hash.finalize());
    let size = fs::metadata(&tmp).unwrap().len();
    fs::rename(&tmp, layout.join("blobs/sha256").join(&digest)).unwrap();
    let desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "digest": format!("sha256:{digest}"),
        "size": size,
    });
    (desc, diff_id)
}

/// An image in the registry: its reference, layer digests (small, big), and the files it
/// unpacks to (path → sha256).
struct Img {
    reference: String,
    layers: Vec<String>,
    files: BTreeMap<PathBuf, String>,
}

/// Pushes `big/imgN:1`: busybox at /usr/bin/busybox, and a 250 MiB file /opt/bigN.
fn push_image(registry: &testkit::registry::Registry, dir: &Path, n: u64, busybox: &[u8]) -> Img {
    let layout = dir.join(format!("layout{n}"));
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let data = random(n + 1, BIG);
    let big_name = format!("opt/big{n}");
    let files = BTreeMap::from([
        (
            PathBuf::from("usr/bin/busybox"),
            testkit::files::sha256_digest(busybox),
        ),
        (
            PathBuf::from(&big_name),
            testkit::files::sha256_digest(&data),
        ),
    ]);
    let (small, small_id) = layer(
        &layout,
        &["usr", "usr/bin"],
        &[("usr/bin/busybox", 0o755, busybox)],
    );
    let (big, big_id) = layer(&layout, &["opt"], &[(&big_name, 0o644, &data)]);
    drop(data);
    let blob = |bytes: &[u8], media_type: &str| {
        let d = testkit::files::sha256_digest(bytes);
        let hex = d.strip_prefix("sha256:").unwrap();
        fs::write(layout.join("blobs/sha256").join(hex), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": d, "size": bytes.len()})
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [small_id, big_id]},
    });
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": blob(
            &serde_json::to_vec(&config).unwrap(),
            "application/vnd.oci.image.config.v1+json"
        ),
        "layers": [small, big],
    });
    let mut m = blob(
        &serde_json::to_vec(&manifest).unwrap(),
        "application/vnd.oci.image.manifest.v1+json",
    );
    m["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [m]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let reference = registry.push_oci_layout(&layout, "1", &format!("big/img{n}:1"));
    fs::remove_dir_all(&layout).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    Img {
        reference,
        layers,
        files,
    }
}

/// Free bytes on the file system holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let out = testkit::run_ok(Command::new("df").args(["-B1", "--output=avail"]).arg(dir));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ocirootfs() -> Command {
    let mut c = Command::new(testkit::workspace_bin("ocirootfs"));
    c.env_remove("OCIROOTFS_CACHE_MAX").env_remove("RUST_LOG");
    c
}

/// The digests `ocirootfs cache list` shows.
fn cached(cache: &Path) -> Vec<String> {
    let out = ok(
        "cache list",
        ocirootfs()
            .args([
                "cache",
                "list",
                "--json",
                "--cache-max",
                LIMIT_ARG,
                "--cache",
            ])
            .arg(cache)
            .output()
            .unwrap(),
    );
    let l: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l["limit"], LIMIT);
    l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn cache_of_300m_with_images_of_250m_pulls_and_concurrent_bakes() {
    if !testkit::require_tool("skopeo")
        || !testkit::require_tool("docker-registry")
        || !testkit::require_tool("busybox")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // At its peak the test holds about 1.7 GiB here (the registry's storage, the cache, a
    // pulled tree); refuse to start rather than fill a disk other work shares.
    let free = free_bytes(dir);
    assert!(
        free >= NEEDED,
        "this test writes up to {} GiB in {}, which has {} MiB free; free space or point \
         TMPDIR elsewhere",
        NEEDED >> 30,
        dir.display(),
        free >> 20
    );
    let busybox = fs::read(testkit::which("busybox").unwrap()).unwrap();
    let registry = testkit::registry::Registry::start();
    let images: Vec<Img> = (0..3)
        .map(|n| push_image(&registry, dir, n, &busybox))
        .collect();
    let cache = dir.join("cache");

    // 1. Three pulls one after another (the limit once from the environment): each ends under
    //    the limit with its own layers cached and the image before it evicted.
    for (n, img) in images.iter().enumerate() {
        let folder = dir.join(format!("pull{n}"));
        let mut cmd = ocirootfs();
        cmd.arg("--cache").arg(&cache).arg("--json");
        if n == 1 {
            cmd.env("OCIROOTFS_CACHE_MAX", LIMIT_ARG);
        } else {
            cmd.args(["--cache-max", LIMIT_ARG]);
        }
        let out = ok(
            &img.reference,
            cmd.arg(&img.reference).arg(&folder).output().unwrap(),
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["downloaded_bytes"].as_u64().unwrap() >= BIG as u64);
        let pulled: Vec<&str> = report["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert_eq!(pulled, img.layers, "the registry holds other layers");
        assert_eq!(
            testkit::files::regular_files(&folder),
            img.files,
            "{}",
            img.reference
        );
        fs::remove_dir_all(&folder).unwrap();
        let used = testkit::files::bytes_under(&cache);
        let have = cached(&cache);
        assert!(
            used <= LIMIT,
            "after pulling {}: {used} bytes in the cache: {have:?}",
            img.reference
        );
        for d in &img.layers {
            assert!(have.contains(d), "{d} of {} is not cached", img.reference);
        }
        if n > 0 {
            let before = &images[n - 1].layers[1];
            assert!(!have.contains(before), "{before} was not evicted: {have:?}");
        }
    }

    // 2. Two bakes at once sharing the cache, each taking busybox out of its own image with
    //    flix: each needs the image's blob and its unpacked tree (about 500 MiB), together
    //    about 1000 MiB under a limit of 300 MiB. What the cache held before (the last image
    //    pulled) must make room, and so must what the first bake to finish leaves.
    let before = cached(&cache);
    assert!(before.contains(&images[2].layers[1]), "{before:?}");
    let bakes: Vec<_> = [0usize, 1]
        .iter()
        .map(|&n| {
            let name = format!("box{n}");
            let manifest = dir.join(format!("{name}.toml"));
            fs::write(
                &manifest,
                format!(
                    "base_url = \"https://example.org/ext\"\narchitectures = [\"x86-64\"]\n\n\
                     [[extension]]\nname = \"{name}\"\nversion = \"1\"\nsource = \"{}\"\n\
                     mode = \"flix\"\npaths = [\"/usr/bin/busybox\"]\n",
                    images[n].reference
                ),
            )
            .unwrap();
            let out = dir.join(format!("out{n}"));
            let child = Command::new(env!("CARGO_BIN_EXE_sysext"))
                .arg("bake")
                .arg(&manifest)
                .arg("-o")
                .arg(&out)
                .arg("--json")
                .arg("--cache")
                .arg(&cache)
                .args(["--cache-max", LIMIT_ARG])
                .env_remove("OCIROOTFS_CACHE_MAX")
                // The eviction's own log line.
                .env("RUST_LOG", "warn,ocirootfs::cache=info")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (name, out, child)
        })
        .collect();
    let mut evicted = 0;
    for (name, out, child) in bakes {
        let o = ok(
            &format!("bake of {name}"),
            child.wait_with_output().unwrap(),
        );
        let stderr = String::from_utf8_lossy(&o.stderr);
        if stderr.contains(&format!(
            "not used recently, to stay under {}",
            ocirootfs::cache::human_size(LIMIT)
        )) {
            evicted += 1;
        }
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            report["entries"][0]["status"], "built",
            "{report:#}\n{stderr}"
        );
        // The image holds busybox as it is in the source image, and nothing of the big file.
        let raw = out.join(format!("{name}-1-x86-64.raw"));
        let img = sysext_core::inspect::Image::open(&raw).unwrap();
        assert_eq!(
            testkit::files::sha256_digest(&img.read_file("usr/bin/busybox").unwrap()),
            testkit::files::sha256_digest(&busybox),
            "{name}"
        );
        assert!(
            img.entries().iter().all(|e| !e.path.contains("big")),
            "{name}"
        );
    }
    assert!(evicted > 0, "no bake evicted anything");
    let after = cached(&cache);
    assert!(
        !after.contains(&images[2].layers[1]),
        "the bakes evicted nothing: {after:?}"
    );
    // Both done: the trees they held may go, and the cache is back under its limit.
    let used = testkit::files::bytes_under(&cache);
    assert!(
        used <= LIMIT,
        "{used} bytes in the cache after the bakes: {after:?}"
    );
}
