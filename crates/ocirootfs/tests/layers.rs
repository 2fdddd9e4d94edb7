//! Hand-made layers against umoci: multi-layer rules, hostile entries, bad digests, platforms.

mod common;

use common::*;
use std::fs;
use std::path::Path;

fn multi_layer_layout(dir: &Path) -> Layout {
    let mut l1 = LayerTar::new();
    l1.dir("etc", 0o755)
        .file("etc/keep", 0o644, b"keep")
        .file("etc/gone", 0o600, b"to be whited out")
        .dir("opq", 0o750)
        .file("opq/lower", 0o644, b"lower")
        .dir("opq/sub", 0o755)
        .file("opq/sub/deep", 0o644, b"deep")
        .file("swap", 0o644, b"file first")
        .dir("dir2file", 0o755)
        .file("dir2file/inner", 0o644, b"inner")
        .file("bin/tool", 0o4755, b"#!/bin/sh\n")
        .hardlink("bin/tool-link", "bin/tool")
        .symlink("bin/rel", "tool")
        .symlink("bin/abs", "/bin/tool")
        .symlink("varrun", "/run")
        .file_owned("home/user/file", 0o640, 1000, 1000, b"owned")
        .fifo("pipe");
    let mut l2 = LayerTar::new();
    // Opaque marker placed after a new entry in the same directory: it must not remove it.
    l2.file("opq/new", 0o644, b"new")
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("etc/.wh.gone", 0o644, b"")
        .dir("swap", 0o700)
        .file("swap/child", 0o644, b"child")
        .file("dir2file", 0o600, b"now a file")
        .file("bin/tool", 0o755, b"replaced")
        .hardlink("bin/second", "etc/keep")
        .file(".wh.pipe", 0o644, b"")
        .file("run/x", 0o644, b"run");
    let mut l3 = LayerTar::new();
    l3.file("swap", 0o644, b"file again")
        .symlink("bin/rel", "../etc/keep");
    let mut layout = Layout::new(dir);
    let m = layout.image(
        &[l1.finish(), l2.finish(), l3.finish()],
        Comp::Gzip,
        "amd64",
        None,
        &["PATH=/bin"],
    );
    layout.tag(&m, "multi");
    layout
}

#[test]
fn multi_layer_rules_match_umoci() {
    if !testkit::require_root("multi-layer unpack with owners") || !testkit::require_tool("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = multi_layer_layout(&tmp.path().join("layout"));
    let reference = tmp.path().join("umoci");
    umoci_unpack(&layout.dir, "multi", &reference);
    let ours = tmp.path().join("ours");
    let src = format!("oci:{}:multi", layout.dir.display());
    ok(ocirootfs(
        &tmp.path().join("cache"),
        &[&src, ours.to_str().unwrap()],
    ));
    assert_same_tree(&ours, &reference);
    // Spot checks a user would notice.
    assert!(!ours.join("etc/gone").exists());
    assert!(!ours.join("opq/lower").exists() && !ours.join("opq/sub").exists());
    assert_eq!(fs::read(ours.join("opq/new")).unwrap(), b"new");
    assert_eq!(fs::read(ours.join("swap")).unwrap(), b"file again");
    assert_eq!(
        fs::read_link(ours.join("bin/rel")).unwrap(),
        Path::new("../etc/keep")
    );
    assert!(fs::symlink_metadata(ours.join("pipe")).is_err());
}

#[test]
fn compressions_and_folder_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut tar = LayerTar::new();
    tar.file("a/b", 0o644, b"hello");
    let tar = tar.finish();
    for (tag, c) in [
        ("plain", Comp::None),
        ("gz", Comp::Gzip),
        ("zst", Comp::Zstd),
    ] {
        let m = layout.image(std::slice::from_ref(&tar), c, "amd64", None, &[]);
        layout.tag(&m, tag);
    }
    let cache = tmp.path().join("cache");
    for tag in ["plain", "gz", "zst"] {
        let out = tmp.path().join(tag);
        ok(ocirootfs(
            &cache,
            &[
                &format!("oci:{}:{tag}", layout.dir.display()),
                out.to_str().unwrap(),
            ],
        ));
        assert_eq!(fs::read(out.join("a/b")).unwrap(), b"hello", "{tag}");
    }
    // An existing non-empty FOLDER is refused without --force and left alone.
    let out = tmp.path().join("gz");
    fs::write(out.join("mine"), b"x").unwrap();
    let r = ocirootfs(
        &cache,
        &[
            &format!("oci:{}:zst", layout.dir.display()),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("--force"));
    assert!(out.join("mine").exists());
    ok(ocirootfs(
        &cache,
        &[
            &format!("oci:{}:zst", layout.dir.display()),
            out.to_str().unwrap(),
            "--force",
        ],
    ));
    assert!(!out.join("mine").exists());
    // No tag in a layout with several: a clear error naming the tags.
    let r = ocirootfs(
        &cache,
        &[
            &format!("oci:{}", layout.dir.display()),
            tmp.path().join("x").to_str().unwrap(),
        ],
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("plain, gz, zst"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn hostile_layers_never_write_outside() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let before = listing(tmp.path());
    let out_abs = outside.to_str().unwrap().to_string();
    let rel_out = out_abs.trim_start_matches('/').to_string();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut cases: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    let one = |f: &dyn Fn(&mut LayerTar)| {
        let mut t = LayerTar::new();
        f(&mut t);
        t.finish()
    };
    cases.push((
        "dotdot",
        vec![one(&|t| {
            t.file("../../../../../../../../pwned-dotdot", 0o644, b"x");
        })],
    ));
    cases.push((
        "dotdot-deep",
        vec![one(&|t| {
            t.file(
                &format!("a/../../../../../../../../../{rel_out}/pwned"),
                0o644,
                b"x",
            );
        })],
    ));
    cases.push((
        "absolute",
        vec![one(&|t| {
            t.file(&format!("{out_abs}/pwned-abs"), 0o644, b"x");
        })],
    ));
    cases.push((
        "symlink-root",
        vec![one(&|t| {
            t.symlink("evil", "/")
                .file(&format!("evil/{rel_out}/pwned-root"), 0o644, b"x");
        })],
    ));
    cases.push((
        "symlink-dotdot",
        vec![one(&|t| {
            t.symlink("up", "..").file(
                &format!("up/up/up/up/up/up/up/up/{rel_out}/pwned-up"),
                0o644,
                b"x",
            );
        })],
    ));
    cases.push((
        "symlink-abs-dir",
        vec![one(&|t| {
            t.symlink("o", &out_abs)
                .file("o/pwned-o", 0o644, b"x")
                .file("o/secret", 0o644, b"overwritten");
        })],
    ));
    cases.push((
        "symlink-next-layer",
        vec![
            one(&|t| {
                t.symlink("o", &out_abs);
            }),
            one(&|t| {
                t.file("o/secret", 0o644, b"overwritten")
                    .file("o/pwned-layer", 0o644, b"x");
            }),
        ],
    ));
    cases.push((
        "symlink-chain",
        vec![one(&|t| {
            t.symlink("c", &out_abs)
                .symlink("b", "c")
                .symlink("a", "b")
                .dir("a/d", 0o755)
                .file("a/d/../pwned-chain", 0o644, b"x")
                .file("a/pwned-chain", 0o644, b"x");
        })],
    ));
    cases.push((
        "hardlink-outside",
        vec![one(&|t| {
            t.hardlink("hl", &format!("{out_abs}/secret"));
        })],
    ));
    cases.push((
        "hardlink-dotdot",
        vec![one(&|t| {
            t.hardlink("hl", &format!("../../../../../../../../{rel_out}/secret"));
        })],
    ));
    cases.push((
        "whiteout-through-symlink",
        vec![
            one(&|t| {
                t.symlink("o", &out_abs);
            }),
            one(&|t| {
                t.file("o/.wh.secret", 0o644, b"").dir("o", 0o755).file(
                    "o/.wh..wh..opq",
                    0o644,
                    b"",
                );
            }),
        ],
    ));
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for (name, layers) in cases {
        let m = layout.image(&layers, Comp::None, "amd64", None, &[]);
        layout.tag(&m, name);
    }
    let cache = tmp.path().join("cache");
    for name in names {
        let folder = tmp.path().join(format!("out-{name}"));
        let r = ocirootfs(
            &cache,
            &[
                &format!("oci:{}:{name}", layout.dir.display()),
                folder.to_str().unwrap(),
            ],
        );
        eprintln!(
            "{name}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.stderr).trim()
        );
        if !r.status.success() {
            assert_eq!(r.status.code(), Some(2), "{name}");
            assert!(!folder.exists(), "{name}: a failed pull left FOLDER");
        }
        assert_eq!(
            fs::read(outside.join("secret")).unwrap(),
            b"secret",
            "{name} changed the outside"
        );
        let mut now = listing(tmp.path());
        now.retain(|p| {
            !p.starts_with(&folder) && !p.starts_with(&cache) && !p.starts_with(&layout.dir)
        });
        let mut want = before.clone();
        want.retain(|p| !p.starts_with(&layout.dir));
        assert_eq!(now, want, "{name} wrote outside FOLDER");
        assert!(!Path::new("/pwned-dotdot").exists());
        let _ = fs::remove_dir_all(&folder);
    }
}

#[test]
fn corrupt_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut t = LayerTar::new();
    t.file("f", 0o644, b"genuine");
    let m = layout.image(&[t.finish()], Comp::Gzip, "amd64", None, &[]);
    layout.tag(&m, "bad");
    // Swap the layer blob's content for another valid layer.
    let manifest = layout.read_json(&m);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let mut evil = LayerTar::new();
    evil.file("f", 0o644, b"evil!!!");
    let (evil, _) = compress(&evil.finish(), Comp::Gzip);
    fs::write(layout.blob_path(layer), evil).unwrap();
    let folder = tmp.path().join("out");
    let r = ocirootfs(
        &tmp.path().join("cache"),
        &[
            &format!("oci:{}:bad", layout.dir.display()),
            folder.to_str().unwrap(),
        ],
    );
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains(layer) && err.contains("does not match"),
        "{err}"
    );
    assert!(!folder.exists());
    assert!(fs::read_dir(tmp.path()).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".out")));
}

#[test]
fn archives_and_materialize() {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("layout"));
    let mut t1 = LayerTar::new();
    t1.dir("etc", 0o755)
        .file("etc/os-release", 0o644, b"ID=test\n")
        .file("old", 0o644, b"old");
    let mut t2 = LayerTar::new();
    t2.file(".wh.old", 0o644, b"")
        .file("usr/bin/app", 0o755, b"app");
    let m = layout.image(
        &[t1.finish(), t2.finish()],
        Comp::Gzip,
        "amd64",
        None,
        &["A=1"],
    );
    layout.tag(&m, "v1");
    let check = |root: &Path| {
        assert_eq!(fs::read(root.join("etc/os-release")).unwrap(), b"ID=test\n");
        assert_eq!(fs::read(root.join("usr/bin/app")).unwrap(), b"app");
        assert!(!root.join("old").exists());
    };
    let cache = tmp.path().join("cache");

    // oci-archive: the layout in a tar, read in place.
    let pull_archive = |kind: &str| {
        let archive = tmp.path().join(format!("image.{kind}.tar"));
        layout.archive(&archive);
        let out = tmp.path().join(format!("from-{kind}-archive"));
        ok(ocirootfs(
            &cache,
            &[
                &format!("{kind}-archive:{}", archive.display()),
                out.to_str().unwrap(),
            ],
        ));
        check(&out);
        out
    };
    pull_archive("oci");

    // docker-archive as Docker 25+ writes it: an OCI layout plus manifest.json naming blobs.
    let manifest = layout.read_json(&m);
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| format!("blobs/sha256/{}", &l["digest"].as_str().unwrap()[7..]))
        .collect();
    let docker_manifest = serde_json::json!([{
        "Config": format!("blobs/sha256/{}", &manifest["config"]["digest"].as_str().unwrap()[7..]),
        "RepoTags": ["test:v1"],
        "Layers": layers,
    }]);
    fs::write(
        layout.dir.join("manifest.json"),
        serde_json::to_vec(&docker_manifest).unwrap(),
    )
    .unwrap();
    let out = pull_archive("docker");

    // materialize: a folder passes through; an image is unpacked once into the cache.
    let mut opts = ocirootfs::SourceOptions::default();
    opts.cache_dir = Some(cache.clone());
    let folder = ocirootfs::materialize(out.to_str().unwrap(), &opts).unwrap();
    assert_eq!(folder.path, out);
    assert!(folder.digest.is_none());
    let src = format!("oci:{}:v1", layout.dir.display());
    let first = ocirootfs::materialize(&src, &opts).unwrap();
    check(&first.path);
    assert!(first.path.starts_with(&cache));
    assert_eq!(first.digest.as_deref(), m["digest"].as_str());
    assert_eq!(first.env, vec!["A=1".to_string()]);
    fs::write(first.path.join("marker"), b"reused").unwrap();
    let second = ocirootfs::materialize(&src, &opts).unwrap();
    assert_eq!(second.path, first.path);
    assert!(
        second.path.join("marker").exists(),
        "the cached rootfs was not re-used"
    );
    let missing = ocirootfs::materialize("/nonexistent/rootfs", &opts).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/rootfs"),
        "{missing}"
    );
}
