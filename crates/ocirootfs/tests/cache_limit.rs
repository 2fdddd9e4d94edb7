//! The cache's size limit against a real `docker-registry` on 127.0.0.1: least recently used
//! entries go first, a shared base layer in use stays, concurrent pulls sharing a cache that
//! must evict (with a `cache prune --all` running in a loop beside them) give complete trees,
//! and `ocirootfs cache list|prune` do what `--help` says.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MIB: u64 = 1 << 20;

/// Incompressible bytes from a seed (xorshift64*).
fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image pushed to the registry: its reference, its layer digests and sizes, and the
/// files it unpacks to (path → sha256).
struct Pushed {
    image: String,
    layers: Vec<(String, u64)>,
    files: BTreeMap<PathBuf, String>,
}

/// Pushes `name:1`: a base layer shared by every image (1 MiB) and `unique` layers of `each`
/// random bytes.
fn push(
    registry: &testkit::registry::Registry,
    dir: &Path,
    name: &str,
    seed: u64,
    unique: usize,
    each: usize,
) -> Pushed {
    let mut layout = Layout::new(&dir.join(name));
    let mut files = BTreeMap::new();
    let mut tars = Vec::new();
    let mut base = LayerTar::new();
    let base_data = random(1, MIB as usize);
    base.dir("base", 0o755).file("base/data", 0o644, &base_data);
    files.insert(PathBuf::from("base/data"), sha(&base_data));
    tars.push(base.finish());
    for i in 0..unique {
        let data = random(seed * 100 + i as u64, each);
        let path = format!("{name}/layer{i}");
        let mut t = LayerTar::new();
        t.dir(name, 0o755).file(&path, 0o644, &data);
        files.insert(PathBuf::from(path), sha(&data));
        tars.push(t.finish());
    }
    let m = layout.image(&tars, Comp::None, "amd64", None, &[]);
    layout.tag(&m, "1");
    let image = registry.push_oci_layout(&layout.dir, "1", &format!("{name}:1"));
    // The registry's digests: skopeo compresses uncompressed layers on the way.
    let raw = testkit::run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]));
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    Pushed {
        image,
        layers,
        files,
    }
}

fn cache_cmd(cache: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("cache")
        .args(args)
        .arg("--cache")
        .arg(cache)
        .env_remove("OCIROOTFS_CACHE_MAX")
        .output()
        .expect("run ocirootfs cache")
}

fn listing(cache: &Path, max: &str) -> serde_json::Value {
    json(&ok(cache_cmd(
        cache,
        &["list", "--json", "--cache-max", max],
    )))
}

fn listed(l: &serde_json::Value) -> Vec<String> {
    l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect()
}

fn registry_tools() -> bool {
    testkit::require_tool("skopeo") && testkit::require_tool("docker-registry")
}

#[test]
fn least_recently_used_images_go_first() {
    if !registry_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = testkit::registry::Registry::start();
    // Three images of 1 + 2×5 MiB; the limit holds one of them, not two.
    let images: Vec<Pushed> = ["one", "two", "three"]
        .iter()
        .enumerate()
        .map(|(i, n)| push(&registry, tmp.path(), n, i as u64 + 10, 2, 5 * MIB as usize))
        .collect();
    let limit = 16 * MIB;
    let cache = tmp.path().join("cache");
    let base = images[0].layers[0].clone();
    let pull = |img: &Pushed, n: usize, via_env: bool| -> serde_json::Value {
        let folder = tmp.path().join(format!("out-{n}"));
        let mut cmd = Command::new(bin());
        cmd.arg("--cache").arg(&cache).arg("--json");
        if via_env {
            cmd.env("OCIROOTFS_CACHE_MAX", "16M");
        } else {
            cmd.env_remove("OCIROOTFS_CACHE_MAX")
                .args(["--cache-max", &limit.to_string()]);
        }
        let out = ok(cmd.arg(&img.image).arg(&folder).output().unwrap());
        assert_eq!(
            testkit::files::regular_files(&folder),
            img.files,
            "{}",
            img.image
        );
        fs::remove_dir_all(&folder).unwrap();
        json(&out)
    };
    for (n, img) in images.iter().enumerate() {
        let report = pull(img, n, n == 1);
        assert!(report["downloaded_bytes"].as_u64().unwrap() >= 10 * MIB);
        let l = listing(&cache, "16M");
        let have = listed(&l);
        assert!(
            l["total"].as_u64().unwrap() <= limit && testkit::files::bytes_under(&cache) <= limit,
            "after pulling {}: {l:#}",
            img.image
        );
        // The image just pulled is cached whole, the shared base layer included ...
        for (d, _) in &img.layers {
            assert!(have.contains(d), "{d} of {} was evicted: {l:#}", img.image);
        }
        // ... and the one before it is gone, but for the base layer.
        if n > 0 {
            for (d, _) in &images[n - 1].layers[1..] {
                assert!(!have.contains(d), "{d} stayed: {l:#}");
            }
        }
    }
    // Most recent last.
    let l = listing(&cache, "16M");
    let last = l["entries"].as_array().unwrap().last().unwrap().clone();
    assert!(
        images[2].layers.iter().any(|(d, _)| last["digest"] == *d),
        "{l:#}"
    );
    // The first image again: its own layers come from the registry, the base from the cache.
    let report = pull(&images[0], 3, false);
    let own: u64 = images[0].layers[1..].iter().map(|(_, s)| s).sum();
    let got = report["downloaded_bytes"].as_u64().unwrap();
    assert!(got >= own && got < own + base.1, "{got} bytes for {own}");
    assert!(testkit::files::bytes_under(&cache) <= limit);
    // A warm pull under the limit downloads nothing.
    assert_eq!(pull(&images[0], 4, false)["downloaded_bytes"], 0);
}

struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn concurrent_pulls_with_eviction_give_complete_trees() {
    if !registry_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = testkit::registry::Registry::start();
    let images: Vec<Pushed> = ["left", "right"]
        .iter()
        .enumerate()
        .map(|(i, n)| push(&registry, tmp.path(), n, i as u64 + 20, 3, 3 * MIB as usize))
        .collect();
    // Less than one image: every pull must evict, never what the other pull uses.
    let cache = tmp.path().join("cache");
    for round in 0..5 {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Stops the pruner also when an assertion below fails.
            let stopper = StopOnDrop(&stop);
            // `cache prune --all` over and over while the pulls run.
            let pruner = s.spawn(|| {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    ok(cache_cmd(&cache, &["prune", "--all"]));
                    n += 1;
                }
                n
            });
            let pulls: Vec<_> = (0..2)
                .map(|k| {
                    // Odd rounds: both pull the same image.
                    let img = &images[if round % 2 == 1 { 0 } else { k }];
                    let folder = tmp.path().join(format!("out-{round}-{k}"));
                    let child = Command::new(bin())
                        .arg("--cache")
                        .arg(&cache)
                        .args(["--cache-max", "8M"])
                        .arg(&img.image)
                        .arg(&folder)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .unwrap();
                    (img, folder, child)
                })
                .collect();
            for (img, folder, child) in pulls {
                let out = child.wait_with_output().unwrap();
                assert!(
                    out.status.success(),
                    "round {round}: {} failed: {}",
                    img.image,
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    testkit::files::regular_files(&folder),
                    img.files,
                    "round {round}"
                );
                fs::remove_dir_all(&folder).unwrap();
            }
            drop(stopper);
            assert!(pruner.join().unwrap() > 0);
        });
        // Nothing half-written is left, and no partial blob.
        let names: Vec<String> = fs::read_dir(cache.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }
    // Without the pruner, pulls sharing the cache end under the limit.
    std::thread::scope(|s| {
        for img in &images {
            let cache = &cache;
            let folder = tmp.path().join(format!("last-{}", img.layers[1].0));
            s.spawn(move || {
                ok(ocirootfs(
                    cache,
                    &["--cache-max", "8M", &img.image, folder.to_str().unwrap()],
                ))
            });
        }
    });
    assert!(
        testkit::files::bytes_under(&cache) <= 8 * MIB,
        "{:#}",
        listing(&cache, "8M")
    );
}

#[test]
fn cache_list_and_prune_as_documented() {
    if !registry_tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = testkit::registry::Registry::start();
    let img = push(&registry, tmp.path(), "small", 30, 1, 2 * MIB as usize);
    let cache = tmp.path().join("cache");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    ok(ocirootfs(
        &cache,
        &[&img.image, tmp.path().join("a").to_str().unwrap()],
    ));

    // list: every blob with its size and last use, least recently used first; the total and
    // the limit; JSON on stdout only with --json, the table on stderr.
    let out = ok(cache_cmd(&cache, &["list", "--cache-max", "1G"]));
    assert!(out.stdout.is_empty());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&img.layers[1].0) && text.contains("1.0 GiB"),
        "{text}"
    );
    let l = listing(&cache, "1G");
    assert_eq!(l["limit"], 1 << 30);
    let entries = l["entries"].as_array().unwrap();
    // Two layers and the config.
    assert_eq!(entries.len(), 3, "{l:#}");
    let total: u64 = entries.iter().map(|e| e["bytes"].as_u64().unwrap()).sum();
    assert_eq!(l["total"], total);
    assert_eq!(total, testkit::files::bytes_under(&cache.join("blobs")));
    for (d, size) in &img.layers {
        let e = entries.iter().find(|e| e["digest"] == *d).expect("listed");
        assert_eq!(e["bytes"], *size);
        assert_eq!(e["kind"], "blob");
        assert_eq!(e["in_use"], false);
        let used = e["last_used"].as_u64().unwrap();
        assert!(used + 1 >= before && used <= before + 120, "{e}");
    }
    // The default limit, from the environment variable otherwise.
    let l = json(&ok(cache_cmd(&cache, &["list", "--json"])));
    assert_eq!(l["limit"], 10u64 << 30);
    let out = ok(Command::new(bin())
        .args(["cache", "list", "--json", "--cache"])
        .arg(&cache)
        .env("OCIROOTFS_CACHE_MAX", "300M")
        .output()
        .unwrap());
    assert_eq!(json(&out)["limit"], 300 << 20);
    // A bad size is a usage error.
    assert_eq!(
        cache_cmd(&cache, &["prune", "--max", "lots"]).status.code(),
        Some(2)
    );

    // prune --max: the entries used least recently go until the rest fits. Another image
    // (sharing the base layer) is pulled later; pruning to its size removes exactly the
    // first image's own layer and config.
    let config = listed(&l)
        .into_iter()
        .find(|d| !img.layers.iter().any(|(l, _)| l == d))
        .unwrap();
    let other = push(&registry, tmp.path(), "other", 31, 1, MIB as usize);
    std::thread::sleep(std::time::Duration::from_millis(50));
    ok(ocirootfs(
        &cache,
        &[&other.image, tmp.path().join("b").to_str().unwrap()],
    ));
    let l = listing(&cache, "1G");
    let bytes_of = |d: &str| {
        l["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["digest"] == d)
            .unwrap()["bytes"]
            .as_u64()
            .unwrap()
    };
    let big = &img.layers[1];
    let keep = l["total"].as_u64().unwrap() - big.1 - bytes_of(&config);
    let p = json(&ok(cache_cmd(
        &cache,
        &["prune", "--json", "--max", &keep.to_string()],
    )));
    let mut removed: Vec<String> = p["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect();
    removed.sort();
    let mut want = vec![big.0.clone(), config.clone()];
    want.sort();
    assert_eq!(removed, want, "{p:#}");
    assert_eq!(p["freed"], big.1 + bytes_of(&config));
    assert_eq!(p["total"], keep);
    assert_eq!(keep, testkit::files::bytes_under(&cache.join("blobs")));
    let have = listed(&listing(&cache, "1G"));
    for (d, _) in &other.layers {
        assert!(have.contains(d), "{d}");
    }
    let p = json(&ok(cache_cmd(&cache, &["prune", "--json", "--all"])));
    assert_eq!(p["total"], 0, "{p:#}");
    assert!(listed(&listing(&cache, "1G")).is_empty());
    assert_eq!(fs::read_dir(cache.join("locks")).unwrap().count(), 0);

    // A damaged layer in the cache is still caught while it is unpacked, and evicted.
    ok(ocirootfs(
        &cache,
        &[&img.image, tmp.path().join("c").to_str().unwrap()],
    ));
    let blob = cache.join("blobs/sha256").join(&big.0[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[1000] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let r = ocirootfs(
        &cache,
        &[&img.image, tmp.path().join("d").to_str().unwrap()],
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(!listed(&listing(&cache, "1G")).contains(&big.0));
    ok(ocirootfs(
        &cache,
        &[&img.image, tmp.path().join("d").to_str().unwrap()],
    ));
    assert_eq!(
        testkit::files::regular_files(&tmp.path().join("d")),
        img.files
    );
}

#[test]
fn a_materialized_rootfs_is_an_entry_kept_while_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut t = LayerTar::new();
    t.dir("etc", 0o755)
        .file("etc/a", 0o644, &random(5, 3000))
        .file("etc/b", 0o644, &random(6, 5000))
        .hardlink("etc/c", "etc/b");
    let m = layout.image(&[t.finish()], Comp::Gzip, "amd64", None, &[]);
    layout.tag(&m, "t");
    let cache_dir = tmp.path().join("cache");
    let mut opts = ocirootfs::SourceOptions::default();
    opts.cache_dir = Some(cache_dir.clone());
    let src = format!("oci:{}:t", layout.dir.display());
    let rootfs = ocirootfs::materialize(&src, &opts).unwrap();
    let cache = ocirootfs::cache::Cache::open(&cache_dir).unwrap();
    let l = cache.list();
    assert_eq!(l.entries.len(), 1, "{l:?}");
    let e = &l.entries[0];
    assert_eq!(e.kind, ocirootfs::cache::Kind::Rootfs);
    assert_eq!(Some(&e.digest), rootfs.digest.as_ref());
    // Content bytes, the hardlinked file once.
    assert_eq!(e.bytes, 8000);
    assert!(e.in_use);
    // Walked once, then recorded beside the entry: later scans read the record.
    let hex = e.digest.strip_prefix("sha256:").unwrap();
    let record = cache_dir.join("rootfs").join(format!("{hex}.bytes"));
    assert_eq!(fs::read_to_string(&record).unwrap().trim(), "8000");
    fs::write(&record, "8123\n").unwrap();
    assert_eq!(
        cache.list().entries[0].bytes,
        8123,
        "the record is not read"
    );
    fs::write(&record, "8000\n").unwrap();
    // In use: kept by any prune.
    let p = cache.prune(None, 0).unwrap();
    assert!(p.removed.is_empty() && p.in_use.len() == 1, "{p:?}");
    assert!(rootfs.path.join("etc/b").is_file());
    let path = rootfs.path.clone();
    drop(rootfs);
    // Let go, it goes. A child that another test's thread forks holds a copy of the lease's
    // descriptor, and so its lock, until it runs its program: retry for that moment, as
    // `Cache::make_room_after_release` does (CI once saw it held at the first try).
    let mut p = cache.prune(None, 0).unwrap();
    for _ in 0..50 {
        if p.in_use.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        p = cache.prune(None, 0).unwrap();
    }
    assert_eq!(p.removed.len(), 1, "{p:?}");
    assert!(!path.exists());
    assert!(!record.exists(), "the size record outlived its entry");
    let trash = cache_dir.join("trash");
    assert!(!trash.exists() || fs::read_dir(trash).unwrap().count() == 0);
}

#[test]
fn a_rootfs_let_go_is_trimmed_to_the_limit() {
    // Two images of 8000 bytes under a limit of 10000: each held while in use (the limit is
    // exceeded meanwhile), and the one let go is evicted at once, not at the next pull.
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    for (tag, seed) in [("a", 7), ("b", 8)] {
        let mut t = LayerTar::new();
        t.dir("etc", 0o755)
            .file("etc/x", 0o644, &random(seed, 8000));
        let m = layout.image(&[t.finish()], Comp::Gzip, "amd64", None, &[]);
        layout.tag(&m, tag);
    }
    let cache_dir = tmp.path().join("cache");
    let mut opts = ocirootfs::SourceOptions::default();
    opts.cache_dir = Some(cache_dir.clone());
    opts.cache_max = Some(10_000);
    let get = |tag: &str| {
        ocirootfs::materialize(&format!("oci:{}:{tag}", layout.dir.display()), &opts).unwrap()
    };
    let a = get("a");
    let b = get("b");
    let (pa, pb) = (a.path.clone(), b.path.clone());
    assert!(pa.join("etc/x").is_file() && pb.join("etc/x").is_file());
    let cache = ocirootfs::cache::Cache::open(&cache_dir).unwrap();
    assert_eq!(cache.list().total, 16_000);
    // A child forked by another thread holds copies of our descriptors, the lease's lock
    // among them, until it runs its program (here: 100 ms, then it exits). Letting go of the
    // rootfs meanwhile still evicts it.
    let holder = testkit::hostile::ForkedHolder::new(100);
    drop(a);
    drop(holder);
    assert!(!pa.exists(), "the rootfs let go stayed over the limit");
    assert!(pb.join("etc/x").is_file());
    assert_eq!(cache.list().total, 8000);
    // Under the limit, the last one stays for the next run.
    drop(b);
    assert!(pb.join("etc/x").is_file());
}
