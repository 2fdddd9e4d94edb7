//! Index, manifest and config documents through every command that reads an image source
//! (ocirootfs, flix, flatwrap): Docker's schema 2 media types read like OCI's, Docker schema
//! 1 and descriptors without a size refused with the document named, and nothing written.
//! flix and flatwrap are found with `testkit::workspace_bin` (build them first:
//! `cargo build -p flix -p flatwrap --bins`).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// A layout whose `v1` is a Docker manifest list over one Docker schema 2 manifest of one
/// gzip layer holding `usr/bin/hello`, with a config that has no `config` section. Returns
/// the manifest as JSON (to make broken copies of) and the list's entry for it.
fn docker_layout(dir: &Path) -> (Layout, serde_json::Value, serde_json::Value) {
    let mut tar = LayerTar::new();
    tar.dir("usr", 0o755).dir("usr/bin", 0o755).file(
        "usr/bin/hello",
        0o755,
        b"#!/bin/sh\necho hi\n",
    );
    let tar = tar.finish();
    let (gz, _) = compress(&tar, Comp::Gzip);
    let mut layout = Layout::new(dir);
    let (ld, ls) = layout.blob(&gz);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "docker_version": "27.0.1",
        "container_config": {"Hostname": "", "Cmd": null},
        "rootfs": {"type": "layers", "diff_ids": [sha(&tar)]},
    });
    let (cd, cs) = layout.blob(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": ld, "size": ls}],
    });
    let (md, ms) = layout.blob(&serde_json::to_vec(&manifest).unwrap());
    let entry = serde_json::json!({"mediaType": DOCKER_MANIFEST, "digest": md, "size": ms,
        "platform": {"architecture": "amd64", "os": "linux"}});
    let list = serde_json::json!({"schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [entry.clone(),
            // An attestation: an unknown platform, a media type oci-spec does not name.
            {"mediaType": "application/vnd.in-toto+json", "digest": md, "size": ms,
             "platform": {"architecture": "unknown", "os": "unknown"}}]});
    let (xd, xs) = layout.blob(&serde_json::to_vec(&list).unwrap());
    layout.tag(
        &serde_json::json!({"mediaType": DOCKER_LIST, "digest": xd, "size": xs}),
        "v1",
    );
    (layout, manifest, entry)
}

fn run(name: &str, args: &[String], work: &Path) -> Output {
    let bin = if name == "ocirootfs" {
        bin()
    } else {
        testkit::workspace_bin(name)
    };
    Command::new(bin)
        .args(args)
        .env("OCIROOTFS_PLATFORM", "linux/amd64")
        .env("OCIROOTFS_CACHE", work.join("cache"))
        .env("HOME", work)
        .output()
        .unwrap_or_else(|e| panic!("run {name}: {e}"))
}

/// Every command that reads `source`, with an output under `out`.
fn commands(source: &str, out: &Path) -> Vec<(&'static str, Vec<String>, std::path::PathBuf)> {
    let o = |p: &str| out.join(p).to_str().unwrap().to_string();
    vec![
        (
            "ocirootfs",
            vec![source.into(), o("rootfs")],
            out.join("rootfs"),
        ),
        (
            "flix",
            vec![
                source.into(),
                "hello".into(),
                "/usr/bin/hello".into(),
                "-o".into(),
                o("hello.raw"),
            ],
            out.join("hello.raw"),
        ),
        (
            "flatwrap",
            vec![
                source.into(),
                "hello".into(),
                "/usr/bin/hello".into(),
                "-o".into(),
                o("flat.raw"),
            ],
            out.join("flat.raw"),
        ),
    ]
}

#[test]
fn docker_manifest_lists_and_manifests_are_unpacked() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _, _) = docker_layout(&tmp.path().join("layout"));
    let archive = tmp.path().join("image.tar");
    layout.archive(&archive);
    for source in [
        format!("oci:{}:v1", tmp.path().join("layout").display()),
        format!("oci-archive:{}", archive.display()),
    ] {
        let out = tmp.path().join("out");
        let _ = fs::remove_dir_all(&out);
        ok(ocirootfs(
            &tmp.path().join("cache"),
            &[&source, out.to_str().unwrap()],
        ));
        assert_eq!(
            fs::read(out.join("usr/bin/hello")).unwrap(),
            b"#!/bin/sh\necho hi\n",
            "{source}"
        );
    }
}

/// Tags `manifest` (JSON) as `v1` of a fresh layout in `dir`; the manifest's digest.
fn broken_layout(dir: &Path, manifest: &serde_json::Value, media_type: &str) -> String {
    let _ = docker_layout(dir);
    let mut layout = Layout::new(dir);
    let (md, ms) = layout.blob(&serde_json::to_vec(manifest).unwrap());
    layout.tag(
        &serde_json::json!({"mediaType": media_type, "digest": md, "size": ms}),
        "v1",
    );
    md
}

#[test]
fn refused_documents_are_named_by_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, manifest, _) = docker_layout(&tmp.path().join("good"));
    let mut no_size = manifest.clone();
    no_size["layers"][0].as_object_mut().unwrap().remove("size");
    let schema1 = serde_json::json!({
        "schemaVersion": 1, "name": "library/hello", "tag": "v1", "architecture": "amd64",
        "fsLayers": [{"blobSum": manifest["layers"][0]["digest"]}],
        "history": [{"v1Compatibility": "{}"}],
    });
    let cases = [
        (
            "no-size",
            no_size,
            DOCKER_MANIFEST,
            "lacks a field the image format requires",
            "missing field `size`",
        ),
        (
            "schema1",
            schema1,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "is a Docker schema 1 manifest",
            "push the image again",
        ),
    ];
    for (case, doc, media_type, problem, detail) in cases {
        let dir = tmp.path().join(case);
        let digest = broken_layout(&dir.join("layout"), &doc, media_type);
        let source = format!("oci:{}:v1", dir.join("layout").display());
        let out = dir.join("out");
        fs::create_dir_all(&out).unwrap();
        for (name, args, made) in commands(&source, &out) {
            let o = run(name, &args, &dir);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{case} {name}: {err}");
            assert!(
                err.contains(&format!("manifest {digest} in ")) && err.contains(problem),
                "{case} {name}: {err}"
            );
            assert!(err.contains(detail), "{case} {name}: {err}");
            assert!(!made.exists(), "{case} {name}: {made:?} written");
        }
    }
}
