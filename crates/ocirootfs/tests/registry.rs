//! Pulls from a real `docker-registry` on 127.0.0.1, compared with `umoci raw unpack`; the
//! `oci:` and `docker-archive:` forms of the same Debian image; multi-platform indexes; corrupt
//! blobs; `--run`.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::Command;

#[test]
fn debian_from_registry_oci_and_docker_archive_match_umoci() {
    if !testkit::require_root("unpacking a Debian rootfs with its owners")
        || !testkit::require_tool("umoci")
        || !testkit::require_tool("skopeo")
        || !testkit::require_tool("docker-registry")
    {
        return;
    }
    let layout = testkit::fixtures::trixie_oci_layout();
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("umoci");
    umoci_unpack(&layout, "trixie", &reference);
    let want = snapshot(&reference);
    let cache = tmp.path().join("cache");

    let registry = testkit::registry::Registry::start();
    let image = registry.push_oci_layout(&layout, "trixie", "debian:trixie");
    let first = tmp.path().join("from-registry");
    let out = ok(ocirootfs(
        &cache,
        &["--json", &image, first.to_str().unwrap()],
    ));
    let report = json(&out);
    assert_eq!(report["platform"], "linux/amd64");
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        report["downloaded_bytes"].as_u64().unwrap() > 10 << 20,
        "{report}"
    );
    assert_matches_snapshot(&first, &want, &reference);
    fs::remove_dir_all(&first).unwrap();

    // Interrupted (SIGKILL while unpacking): no FOLDER; the next run cleans the leftover.
    let folder = tmp.path().join("interrupted");
    let mut child = Command::new(bin())
        .arg("--cache")
        .arg(&cache)
        .arg(&image)
        .arg(&folder)
        .spawn()
        .unwrap();
    let temps = || -> Vec<std::path::PathBuf> {
        fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".interrupted.tmp-")
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !temps().iter().any(|t| t.join("usr").exists()) {
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no unpack in progress seen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!folder.exists(), "an interrupted pull left FOLDER");

    // Warm cache: nothing is downloaded again, same tree, and the leftover is gone.
    let out = ok(ocirootfs(
        &cache,
        &["--json", &image, folder.to_str().unwrap()],
    ));
    assert_eq!(json(&out)["downloaded_bytes"], 0);
    assert_eq!(json(&out)["digest"], report["digest"]);
    assert!(
        temps().is_empty(),
        "the interrupted run's temporary folder was not cleaned"
    );
    assert_matches_snapshot(&folder, &want, &reference);
    fs::remove_dir_all(&folder).unwrap();

    let from_oci = tmp.path().join("from-oci");
    ok(ocirootfs(
        &cache,
        &[
            &format!("oci:{}:trixie", layout.display()),
            from_oci.to_str().unwrap(),
        ],
    ));
    assert_matches_snapshot(&from_oci, &want, &reference);
    fs::remove_dir_all(&from_oci).unwrap();

    let archive = tmp.path().join("debian.tar");
    testkit::run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:trixie", layout.display()),
        &format!("docker-archive:{}:debian:trixie", archive.display()),
    ]));
    let from_archive = tmp.path().join("from-archive");
    ok(ocirootfs(
        &cache,
        &[
            &format!("docker-archive:{}", archive.display()),
            from_archive.to_str().unwrap(),
        ],
    ));
    assert_matches_snapshot(&from_archive, &want, &reference);
}

fn two_platform_layout(dir: &Path) -> Layout {
    let mut layout = Layout::new(dir);
    let mut amd = LayerTar::new();
    amd.dir("etc", 0o755)
        .file("etc/arch", 0o644, b"amd64")
        .symlink("lib64", "usr/lib");
    let mut arm = LayerTar::new();
    arm.dir("etc", 0o755)
        .file("etc/arch", 0o644, b"arm64")
        .file("usr/lib/ld-linux-aarch64.so.1", 0o755, b"\x7fELF");
    let m_amd = layout.image(&[amd.finish()], Comp::Gzip, "amd64", None, &[]);
    let m_arm = layout.image(&[arm.finish()], Comp::None, "arm64", Some("v8"), &[]);
    let idx = layout.index(&[m_amd.clone(), m_arm.clone()]);
    layout.tag(&idx, "multi");
    layout.tag(&m_arm, "arm64");
    layout.tag(&m_amd, "amd64");
    layout
}

#[test]
fn multi_platform_index_picks_the_platform() {
    if !testkit::require_tool("skopeo")
        || !testkit::require_tool("docker-registry")
        || !testkit::require_tool("umoci")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = two_platform_layout(&tmp.path().join("layout"));
    let registry = testkit::registry::Registry::start();
    // Pushes every image of the layout's `multi` to `name` (skopeo's own format, or `v2s2`).
    let push = |name: &str, format: &[&str]| {
        let image = format!("{}/{name}", registry.addr());
        testkit::run_ok(
            Command::new("skopeo")
                .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
                .args(format)
                .arg(format!("oci:{}:multi", layout.dir.display()))
                .arg(format!("docker://{image}")),
        );
        image
    };
    let image = push("multi:1", &[]);
    // The same images as a Docker manifest list over Docker schema 2 manifests.
    let docker = push("multi-docker:1", &["--format", "v2s2"]);
    let list = testkit::run_ok(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{docker}"),
    ]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        list["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let cache = tmp.path().join("cache");
    let reference = tmp.path().join("umoci-arm64");
    umoci_unpack(&layout.dir, "arm64", &reference);
    for (src, what) in [
        (image.clone(), "registry"),
        (docker.clone(), "registry-docker"),
        (format!("oci:{}:multi", layout.dir.display()), "oci"),
    ] {
        let arm = tmp.path().join(format!("arm-{what}"));
        let out = ok(ocirootfs(
            &cache,
            &[
                "--json",
                "--platform",
                "linux/arm64",
                &src,
                arm.to_str().unwrap(),
            ],
        ));
        assert_eq!(json(&out)["platform"], "linux/arm64/v8", "{what}");
        assert_eq!(fs::read(arm.join("etc/arch")).unwrap(), b"arm64", "{what}");
        if testkit::require_root("comparing owners with umoci") {
            assert_same_tree(&arm, &reference);
        }
        let host = tmp.path().join(format!("host-{what}"));
        ok(ocirootfs(&cache, &[&src, host.to_str().unwrap()]));
        assert_eq!(fs::read(host.join("etc/arch")).unwrap(), b"amd64", "{what}");
        let bad = ocirootfs(
            &cache,
            &[
                "--platform",
                "linux/s390x",
                &src,
                tmp.path().join("none").to_str().unwrap(),
            ],
        );
        assert_eq!(bad.status.code(), Some(2));
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(
            err.contains("linux/s390x") && err.contains("linux/amd64, linux/arm64/v8"),
            "{what}: {err}"
        );
        assert!(!tmp.path().join("none").exists());
    }
}

#[test]
fn registry_errors_and_corrupt_blobs() {
    if !testkit::require_tool("skopeo") || !testkit::require_tool("docker-registry") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut t = LayerTar::new();
    t.file("data", 0o644, &vec![7u8; 1 << 20]);
    let m = layout.image(&[t.finish()], Comp::Gzip, "amd64", None, &[]);
    layout.tag(&m, "t");
    let registry = testkit::registry::Registry::start();
    let image = registry.push_oci_layout(&layout.dir, "t", "small:t");
    let cache = tmp.path().join("cache");

    // Unknown tag and unknown repository: a clear "not found".
    for missing in [
        format!("{}/small:nope", registry.addr()),
        format!("{}/other:t", registry.addr()),
    ] {
        let r = ocirootfs(&cache, &[&missing, tmp.path().join("x").to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(2));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(err.contains("not found"), "{err}");
    }

    // Corrupt the layer blob in the registry's storage: refused, not cached, no FOLDER.
    let manifest = layout.read_json(&m);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let data = registry.data_dir().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &layer[7..9],
        &layer[7..]
    ));
    let mut bytes = fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&data, bytes).unwrap();
    let folder = tmp.path().join("out");
    let r = ocirootfs(&cache, &[&image, folder.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains(&layer), "{err}");
    assert!(!folder.exists());
    let cached: Vec<String> = fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !cached.iter().any(|c| c.contains(&layer[7..])),
        "{cached:?}"
    );
}

#[test]
fn run_creates_a_file_and_reports_the_status() {
    if !testkit::require_root("--run needs a mount namespace and chroot")
        || !testkit::require_tool("busybox")
    {
        return;
    }
    let busybox = fs::read(testkit::which("busybox").unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut t = LayerTar::new();
    t.dir("bin", 0o755)
        .file("bin/busybox", 0o755, &busybox)
        .symlink("bin/sh", "busybox")
        .dir("etc", 0o755)
        .dir("work", 0o755);
    let m = layout.image(
        &[t.finish()],
        Comp::Gzip,
        "amd64",
        None,
        &["FOO=bar", "PATH=/bin"],
    );
    layout.tag(&m, "bb");
    let src = format!("oci:{}:bb", layout.dir.display());
    let cache = tmp.path().join("cache");
    let folder = tmp.path().join("out");
    let out = ok(ocirootfs(
        &cache,
        &[
            "--json",
            "--run",
            "echo \"$FOO\" > /created && busybox ls /proc/self >/dev/null && busybox pwd > /wd",
            &src,
            folder.to_str().unwrap(),
        ],
    ));
    assert_eq!(json(&out)["run_status"], 0);
    assert_eq!(fs::read_to_string(folder.join("created")).unwrap(), "bar\n");
    assert_eq!(fs::read_to_string(folder.join("wd")).unwrap(), "/\n");
    // Nothing stays mounted in the result.
    assert_eq!(fs::read_dir(folder.join("proc")).unwrap().count(), 0);

    let failed = tmp.path().join("failed");
    let r = ocirootfs(
        &cache,
        &["--run", "touch /x; exit 7", &src, failed.to_str().unwrap()],
    );
    assert_eq!(
        r.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(String::from_utf8_lossy(&r.stderr).contains("status 7"));
    assert!(!failed.exists());
}

#[test]
fn damaged_cached_manifests_and_configs_are_fetched_again() {
    if !testkit::require_tool("skopeo") || !testkit::require_tool("docker-registry") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = two_platform_layout(&tmp.path().join("layout"));
    let registry = testkit::registry::Registry::start();
    let image = format!("{}/multi:1", registry.addr());
    testkit::run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.dir.display()),
        &format!("docker://{image}"),
    ]));
    let cache = tmp.path().join("cache");
    let first = tmp.path().join("first");
    ok(ocirootfs(
        &cache,
        &["--platform", "linux/amd64", &image, first.to_str().unwrap()],
    ));
    // The JSON blobs the pull cached (the amd64 manifest the index chose, and its config),
    // each damaged in place with its size kept.
    let blobs = cache.join("blobs/sha256");
    let mut damaged = Vec::new();
    for e in fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let mut bytes = fs::read(&p).unwrap();
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            continue; // a layer
        }
        let i = bytes.len() / 2;
        bytes[i] ^= 0x20;
        fs::write(&p, &bytes).unwrap();
        damaged.push(p);
    }
    assert_eq!(damaged.len(), 2, "manifest and config cached: {damaged:?}");
    // Hashed again when read: each is evicted and fetched anew, and the pull works.
    let second = tmp.path().join("second");
    ok(ocirootfs(
        &cache,
        &[
            "--platform",
            "linux/amd64",
            &image,
            second.to_str().unwrap(),
        ],
    ));
    assert_eq!(fs::read(second.join("etc/arch")).unwrap(), b"amd64");
    for p in damaged {
        let hex = p.file_name().unwrap().to_str().unwrap().to_string();
        let bytes = fs::read(&p).unwrap();
        let actual = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        assert_eq!(actual, hex, "{} was not replaced", p.display());
    }
}
