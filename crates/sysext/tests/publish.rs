//! `sysext push` / `sysext pull` against the real loopback docker-registry: images of two
//! architectures baked from a tiny static manifest, pushed as one OCI 1.1 artifact index,
//! pulled back byte for byte (`--platform` picks), read by a second client (the distribution
//! API through curl), and refused with nothing written when the registry's copy of a blob is
//! tampered with or truncated.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

const MANIFEST: &str = r#"
base_url = "https://example.org/ext"
architectures = ["x86-64", "arm64"]

[[extension]]
name = "hello"
version = "1.0"
source = "./st"
sources = { arm64 = "./st-arm" }
mode = "static"
"#;

/// Bakes the manifest in `dir` into `dir/out`; the x86-64 image is over 16 MiB, so its push
/// takes the chunked upload path. Returns the bake report.
fn baked(dir: &Path) -> serde_json::Value {
    fs::create_dir_all(dir.join("st/usr/share/hello")).unwrap();
    fs::create_dir_all(dir.join("st-arm/usr/share/hello")).unwrap();
    fs::write(dir.join("st/usr/share/hello/msg"), "hi\n").unwrap();
    fs::write(
        dir.join("st/usr/share/hello/blob"),
        testkit::random_bytes(17 << 20, 7),
    )
    .unwrap();
    fs::write(dir.join("st-arm/usr/share/hello/msg"), "hi arm\n").unwrap();
    fs::write(dir.join("m.toml"), MANIFEST).unwrap();
    let out = sysext()
        .current_dir(dir)
        .args(["bake", "m.toml", "-o", "out", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run(dir: &Path, args: &[&str]) -> Output {
    sysext().current_dir(dir).args(args).output().unwrap()
}

fn ok(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// A second client: GET through curl, the bytes.
fn curl(url: &str, accept: &str) -> Vec<u8> {
    testkit::run_ok(Command::new("curl").args(["-sfS", "-H", &format!("Accept: {accept}"), url]))
        .stdout
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The registry's stored copy of a blob.
fn stored_blob(data: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    data.join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// Nothing named like `name` (the output or a temporary of it) in `dir`.
fn nothing_written(dir: &Path, name: &str) {
    let left: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(name))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn push_pull_round_trip_index_platforms_and_a_second_client() {
    if !testkit::require_tool("docker-registry") || !testkit::require_tool("curl") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let report = baked(dir);
    let key_of = |arch: &str| {
        report["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["arch"] == arch)
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let x86 = dir.join("out/hello-1.0-x86-64.raw");
    let arm = dir.join("out/hello-1.0-arm64.raw");
    let registry = testkit::registry::Registry::start();
    let reference = format!("{}/ext/hello:1.0", registry.addr());

    let pushed = ok(run(
        dir,
        &[
            "push",
            "out/hello-1.0-x86-64.raw",
            "out/hello-1.0-arm64.raw",
            &reference,
            "--cache",
            "c-push",
            "--json",
        ],
    ));
    assert_eq!(
        pushed["media_type"],
        "application/vnd.oci.image.index.v1+json"
    );

    // Pulled back: the host's platform by default, --platform picks the other.
    let pulled = ok(run(
        dir,
        &[
            "pull", &reference, "-o", "x.raw", "--cache", "c-pull", "--json",
        ],
    ));
    assert_eq!(
        fs::read(dir.join("x.raw")).unwrap(),
        fs::read(&x86).unwrap()
    );
    assert_eq!(pulled["architecture"], "x86-64");
    assert_eq!(pulled["rebuild_key"], key_of("x86-64").as_str());
    ok(run(
        dir,
        &[
            "pull",
            &reference,
            "--platform",
            "linux/arm64",
            "-o",
            "a.raw",
            "--cache",
            "c-pull",
        ],
    ));
    assert_eq!(
        fs::read(dir.join("a.raw")).unwrap(),
        fs::read(&arm).unwrap()
    );
    // An existing output needs --force; with it, the image is replaced.
    fs::write(dir.join("a.raw"), "old").unwrap();
    let out = run(
        dir,
        &["pull", &reference, "-o", "a.raw", "--cache", "c-pull"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(fs::read(dir.join("a.raw")).unwrap(), b"old");
    ok(run(
        dir,
        &[
            "pull",
            &reference,
            "--platform",
            "arm64",
            "-o",
            "a.raw",
            "-f",
            "--cache",
            "c-pull",
        ],
    ));
    assert_eq!(
        fs::read(dir.join("a.raw")).unwrap(),
        fs::read(&arm).unwrap()
    );
    // A platform the index does not offer is refused, naming what it offers.
    let out = run(
        dir,
        &[
            "pull",
            &reference,
            "--platform",
            "linux/riscv64",
            "-o",
            "r.raw",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    nothing_written(dir, "r.raw");

    // A second client's view, through the distribution API.
    let base = format!("http://{}/v2/ext/hello", registry.addr());
    let index: serde_json::Value = serde_json::from_slice(&curl(
        &format!("{base}/manifests/1.0"),
        "application/vnd.oci.image.index.v1+json",
    ))
    .unwrap();
    assert_eq!(index["artifactType"], "application/vnd.sysext.image.v1");
    let entries = index["manifests"].as_array().unwrap();
    let arches: Vec<&str> = entries
        .iter()
        .map(|e| e["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    for (e, (file, arch)) in entries.iter().zip([(&x86, "x86-64"), (&arm, "arm64")]) {
        let bytes = curl(
            &format!("{base}/manifests/{}", e["digest"].as_str().unwrap()),
            "application/vnd.oci.image.manifest.v1+json",
        );
        assert_eq!(sha(&bytes), e["digest"].as_str().unwrap());
        let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(m["artifactType"], "application/vnd.sysext.image.v1");
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(m["config"]["size"], 2);
        let layers = m["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        let image = fs::read(file).unwrap();
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.sysext.image.layer.v1.squashfs"
        );
        assert_eq!(layers[0]["digest"], sha(&image).as_str());
        assert_eq!(layers[0]["size"], image.len());
        assert_eq!(
            layers[0]["annotations"]["org.opencontainers.image.title"],
            file.file_name().unwrap().to_str().unwrap()
        );
        let a = &m["annotations"];
        assert_eq!(a["dev.sysext.name"], "hello");
        assert_eq!(a["dev.sysext.version"], "1.0");
        assert_eq!(a["dev.sysext.architecture"], arch);
        assert_eq!(a["dev.sysext.rebuild-key"], key_of(arch).as_str());
        let release = a["dev.sysext.extension-release"].as_str().unwrap();
        assert!(
            release.contains(&format!("ARCHITECTURE={arch}\n")),
            "{release}"
        );
        let blob = curl(
            &format!("{base}/blobs/{}", layers[0]["digest"].as_str().unwrap()),
            "*/*",
        );
        assert!(blob == image, "the registry serves the image as pushed");
    }

    // A second push of the same images uploads nothing and gives the same digest.
    let again = ok(run(
        dir,
        &[
            "push",
            "out/hello-1.0-x86-64.raw",
            "out/hello-1.0-arm64.raw",
            &reference,
            "--json",
        ],
    ));
    assert_eq!(again["digest"], pushed["digest"]);
    assert!(again["images"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["uploaded"] == false));

    // One image alone: a manifest, no index; --platform for another architecture is refused.
    let single = format!("{}/ext/hello:arm-only", registry.addr());
    ok(run(dir, &["push", "out/hello-1.0-arm64.raw", &single]));
    let out = run(
        dir,
        &["pull", &single, "--platform", "linux/amd64", "-o", "s.raw"],
    );
    assert_eq!(out.status.code(), Some(2));
    nothing_written(dir, "s.raw");
    // Two images for one architecture cannot be one artifact.
    let out = run(
        dir,
        &[
            "push",
            "out/hello-1.0-arm64.raw",
            "out/hello-1.0-arm64.raw",
            &single,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one image per architecture"));
    // An EROFS image goes as an EROFS layer and comes back the same.
    fs::create_dir_all(dir.join("e/usr/lib/extension-release.d")).unwrap();
    fs::write(
        dir.join("e/usr/lib/extension-release.d/extension-release.e"),
        "ID=_any\nARCHITECTURE=x86-64\n",
    )
    .unwrap();
    ok(run(dir, &["pack", "e", "e.raw", "--fs", "erofs"]));
    let erofs = format!("{}/ext/e:1", registry.addr());
    ok(run(dir, &["push", "e.raw", &erofs]));
    let m: serde_json::Value = serde_json::from_slice(&curl(
        &format!("http://{}/v2/ext/e/manifests/1", registry.addr()),
        "application/vnd.oci.image.manifest.v1+json",
    ))
    .unwrap();
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.sysext.image.layer.v1.erofs"
    );
    assert_eq!(m["annotations"]["dev.sysext.name"], "e");
    ok(run(
        dir,
        &["pull", &erofs, "-o", "e2.raw", "--cache", "c-pull"],
    ));
    assert_eq!(
        fs::read(dir.join("e2.raw")).unwrap(),
        fs::read(dir.join("e.raw")).unwrap()
    );

    // Something that is not a sysext artifact is refused.
    let layout = dir.join("layout");
    testkit::run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    testkit::run_ok(
        Command::new("umoci")
            .args(["new", "--image"])
            .arg(format!("{}:t", layout.display())),
    );
    let plain = registry.push_oci_layout(&layout, "t", "ext/plain:t");
    let out = run(dir, &["pull", &plain, "-o", "p.raw", "--cache", "c-pull"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sysext artifact"));
    nothing_written(dir, "p.raw");
}

#[test]
fn tampered_or_truncated_blobs_are_refused_and_nothing_is_written() {
    if !testkit::require_tool("docker-registry") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    baked(dir);
    let registry = testkit::registry::Registry::start();
    let reference = format!("{}/ext/hello:1.0", registry.addr());
    ok(run(
        dir,
        &[
            "push",
            "out/hello-1.0-x86-64.raw",
            &reference,
            "--cache",
            "c",
        ],
    ));
    let image = fs::read(dir.join("out/hello-1.0-x86-64.raw")).unwrap();
    let stored = stored_blob(&registry.data_dir(), &sha(&image));

    // One byte changed, the size kept: the digest check refuses it.
    let mut bad = image.clone();
    bad[4096] ^= 0xff;
    fs::write(&stored, &bad).unwrap();
    let out = run(
        dir,
        &["pull", &reference, "-o", "t.raw", "--cache", "fresh1"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("digest"), "{err}");
    nothing_written(dir, "t.raw");

    // The same pull over an output that exists (--force) keeps the old file.
    fs::write(dir.join("t.raw"), "old").unwrap();
    let out = run(
        dir,
        &["pull", &reference, "-o", "t.raw", "-f", "--cache", "fresh2"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read(dir.join("t.raw")).unwrap(), b"old");
    fs::remove_file(dir.join("t.raw")).unwrap();

    // Truncated: refused too (after the retries a cut-off download gets).
    fs::write(&stored, &image[..image.len() / 2]).unwrap();
    let out = run(
        dir,
        &["pull", &reference, "-o", "t.raw", "--cache", "fresh3"],
    );
    assert_eq!(out.status.code(), Some(2));
    nothing_written(dir, "t.raw");

    // Repaired, the pull succeeds.
    fs::write(&stored, &image).unwrap();
    ok(run(
        dir,
        &["pull", &reference, "-o", "t.raw", "--cache", "fresh3"],
    ));
    assert_eq!(fs::read(dir.join("t.raw")).unwrap(), image);
}
