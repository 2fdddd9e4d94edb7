use std::fs;
use std::io::Read;
use std::path::Path;

use oci_spec::image::{Descriptor, MediaType};

use crate::reference::{Platform, Source};

use super::*;

/// An index entry for `os/arch[/variant]`, its digest made of `c`.
fn desc(c: char, os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
    let mut platform = serde_json::json!({"os": os, "architecture": arch});
    if let Some(v) = variant {
        platform["variant"] = v.into();
    }
    serde_json::from_value(serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": hexd(c),
        "size": 100,
        "platform": platform,
    }))
    .unwrap()
}

/// `sha256:` and 64 times `c`.
fn hexd(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

#[test]
fn platform_selection_lists_the_offer() {
    let list = vec![
        desc('a', "linux", "amd64", None),
        desc('b', "linux", "arm64", Some("v8")),
        desc('c', "unknown", "unknown", None),
    ];
    let got = select_platform(&list, &Platform::parse("linux/arm64").unwrap(), "x").unwrap();
    assert_eq!(got.digest().to_string(), hexd('b'));
    let err = select_platform(&list, &Platform::parse("linux/s390x").unwrap(), "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("linux/amd64, linux/arm64/v8"), "{err}");
    assert!(!err.contains("unknown"), "{err}");
}

/// A layer (uncompressed tar) holding one file `hi`.
fn hi_layer() -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    t.append_data(&mut h, "hi", &b"hi"[..]).unwrap();
    t.into_inner().unwrap()
}

/// A one-layer OCI layout in `dir`; returns the layer's hex digest.
fn layout(dir: &Path) -> String {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let h = sha256_hex(b);
        fs::write(blobs.join(&h), b).unwrap();
        (h, b.len())
    };
    let layer = hi_layer();
    let (lh, ll) = put(&layer);
    let cfg = format!(
        r#"{{"os":"linux","architecture":"amd64","rootfs":{{"type":"layers","diff_ids":["sha256:{lh}"]}}}}"#
    );
    let (ch, cl) = put(cfg.as_bytes());
    let man = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{ch}","size":{cl}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:{lh}","size":{ll}}}]}}"#
    );
    let (mh, ml) = put(man.as_bytes());
    fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{mh}","size":{ml}}}]}}"#
        ),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    lh
}

fn resolve_dir(dir: &Path) -> Result<Image, SourceError> {
    let opts = ResolveOptions {
        platform: Some(Platform::parse("linux/amd64").unwrap()),
        ..Default::default()
    };
    resolve(
        &Source::OciLayout {
            dir: dir.to_path_buf(),
            tag: None,
        },
        None,
        &opts,
    )
}

#[test]
fn layouts_are_read_inside_their_folder_with_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layer = layout(dir);
    let mut image = resolve_dir(dir).unwrap();
    assert_eq!(image.layers.len(), 1);
    let mut data = Vec::new();
    image.layers[0]
        .open()
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(sha256_hex(&data), layer);

    let blob = dir.join("blobs/sha256").join(&layer);
    // A link to /dev/zero resolves inside the layout, where there is no dev/zero.
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    assert!(matches!(
        resolve_dir(dir),
        Err(SourceError::MissingBlob { .. })
    ));
    // A FIFO is refused without blocking.
    fs::remove_file(&blob).unwrap();
    testkit::mkfifo(&blob);
    let e = resolve_dir(dir).err().unwrap();
    assert!(
        matches!(e, SourceError::NotRegular { kind: "FIFO", .. }),
        "{e}"
    );
    // A blob of another size than its descriptor declares is refused before it is read.
    fs::remove_file(&blob).unwrap();
    fs::File::create(&blob).unwrap().set_len(3 << 30).unwrap();
    let e = resolve_dir(dir).err().unwrap();
    assert!(matches!(e, SourceError::SizeMismatch { .. }), "{e}");
    // A link inside the layout is followed inside it.
    fs::remove_file(&blob).unwrap();
    layout(dir);
    fs::rename(&blob, dir.join("real")).unwrap();
    std::os::unix::fs::symlink("/real", &blob).unwrap();
    assert!(resolve_dir(dir).is_ok());
    // An index.json over the limit is refused by its size.
    fs::File::create(dir.join("index.json"))
        .unwrap()
        .set_len(MAX_DOCUMENT + 1)
        .unwrap();
    let e = resolve_dir(dir).err().unwrap();
    assert!(matches!(e, SourceError::TooLarge { .. }), "{e}");
    fs::remove_file(dir.join("index.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("index.json")).unwrap();
    assert!(resolve_dir(dir).is_err());
}

/// An OCI index (`mediaType` as given, none when empty) over `entries`.
fn index_json(media_type: &str, entries: &[serde_json::Value]) -> Vec<u8> {
    let mut i = serde_json::json!({"schemaVersion": 2, "manifests": entries});
    if !media_type.is_empty() {
        i["mediaType"] = media_type.into();
    }
    serde_json::to_vec(&i).unwrap()
}

/// `man` parses as a manifest (not an index) with this config and these layers.
fn assert_manifest(man: &str, config: &str, layers: &[(String, u64)]) {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let got = parse_manifest(man.as_bytes(), &amd64).unwrap();
    assert!(!got.is_index);
    assert_eq!(got.config.as_deref(), Some(config));
    assert_eq!(got.layers, layers);
}

#[test]
fn document_parsers_for_fuzzing() {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let d = hexd;
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{}","platform":{{"os":"linux","architecture":"arm64"}}}},{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":"{}","platform":{{"os":"linux","architecture":"amd64"}},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
        d('a'),
        d('b')
    );
    let got = parse_manifest(index.as_bytes(), &amd64).unwrap();
    assert!(got.is_index);
    assert_eq!(got.chosen, Some(d('b')));
    assert_eq!(got.tags, ["v1"]);
    let man = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":3}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":7}}]}}"#,
        d('c'),
        d('e')
    );
    assert_manifest(&man, &d('c'), &[(d('e'), 7)]);
    // A digest that would become a path outside the blobs folder is refused.
    let bad = man.replace(&d('c'), "sha256:../../../etc/passwd");
    assert!(parse_manifest(bad.as_bytes(), &amd64).is_err());
    // So is a digest of another algorithm: blobs are named by their SHA-256.
    let other = man.replace(&d('e'), &format!("sha512:{}", "e".repeat(128)));
    assert!(parse_manifest(other.as_bytes(), &amd64).is_err());
    let e = parse_manifest(b"[", &amd64).unwrap_err().to_string();
    assert!(e.starts_with("manifest in input is not valid JSON"), "{e}");
    let e = parse_manifest(br#"{"schemaVersion":"2"}"#, &amd64)
        .unwrap_err()
        .to_string();
    assert!(e.contains("or has one of the wrong type"), "{e}");
    let cfg = parse_image_config(
        br#"{"os":"linux","architecture":"amd64","config":{"Env":["A=1"],"WorkingDir":""},"rootfs":{"type":"layers","diff_ids":[]}}"#,
    )
    .unwrap();
    assert_eq!(cfg.env, ["A=1"]);
    assert_eq!(cfg.working_dir, None);
    let big = vec![b' '; MAX_DOCUMENT as usize + 1];
    assert!(matches!(
        parse_image_config(&big),
        Err(SourceError::TooLarge { .. })
    ));
    let docker =
        parse_docker_manifest(br#"[{"Config":"../c.json","Layers":["a/../../l.tar"]}]"#).unwrap();
    assert_eq!(docker, [("c.json".to_string(), vec!["l.tar".to_string()])]);
}

#[test]
fn docker_manifest_lists_and_manifests_are_read_like_oci_ones() {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let arm7 = Platform::parse("linux/arm/v7").unwrap();
    let list = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
        {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"{}","platform":{{"architecture":"amd64","os":"linux"}}}},
        {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"{}","platform":{{"architecture":"arm","os":"linux","variant":"v6"}}}},
        {{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","size":528,"digest":"{}","platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}}]}}"#,
        hexd('a'),
        hexd('b'),
        hexd('c')
    );
    let got = parse_manifest(list.as_bytes(), &amd64).unwrap();
    assert!(got.is_index);
    assert_eq!(got.chosen, Some(hexd('a')));
    // The variant decides between two entries of one architecture.
    let got = parse_manifest(list.as_bytes(), &arm7).unwrap();
    assert_eq!(got.chosen, Some(hexd('c')));
    // Nothing for s390x: an index without a choice, and resolving says what it offers.
    let s390x = Platform::parse("linux/s390x").unwrap();
    assert_eq!(
        parse_manifest(list.as_bytes(), &s390x).unwrap().chosen,
        None
    );
    let Document::Index(i) = parse_doc(list.as_bytes(), "manifest", "x", None).unwrap() else {
        panic!("a manifest list is an index")
    };
    let err = select_platform(i.manifests(), &s390x, "x")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("linux/amd64, linux/arm/v6, linux/arm/v7"),
        "{err}"
    );

    let man = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
        "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":1472,"digest":"{}"}},
        "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3,"digest":"{}"}}]}}"#,
        hexd('d'),
        hexd('e')
    );
    assert_manifest(&man, &hexd('d'), &[(hexd('e'), 3)]);
}

#[test]
fn index_entries_of_unknown_types_or_without_platform_are_kept() {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let entries = [
        // An artifact of a media type nobody registered, with annotations, and no platform.
        serde_json::json!({"mediaType": "application/vnd.example.sbom.v1+json", "size": 9,
            "digest": hexd('a'), "annotations": {"org.example": "x"}}),
        // An image manifest without a platform (an index entry need not have one).
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 9, "digest": hexd('b'),
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}),
        serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 9, "digest": hexd('c'),
            "platform": {"os": "linux", "architecture": "amd64", "os.version": "1"}}),
    ];
    let bytes = index_json("application/vnd.oci.image.index.v1+json", &entries);
    let got = parse_manifest(&bytes, &amd64).unwrap();
    assert!(got.is_index);
    assert_eq!(got.tags, ["latest"]);
    assert_eq!(got.chosen, Some(hexd('c')));
    let index = parse_index(&bytes, "x").unwrap();
    assert_eq!(
        index.manifests()[0].media_type().to_string(),
        "application/vnd.example.sbom.v1+json"
    );
    // Only entries without a platform: nothing to choose, and the error says so.
    let bytes = index_json("", &entries[..2]);
    let index = parse_index(&bytes, "x").unwrap();
    let err = select_platform(index.manifests(), &amd64, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing with a platform"), "{err}");
}

#[test]
fn an_index_is_told_from_a_manifest_by_its_type_or_shape() {
    let entry = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 9, "digest": hexd('a'), "platform": {"os": "linux", "architecture": "amd64"}});
    // By `manifests`, with no media type at all.
    let bare = index_json("", std::slice::from_ref(&entry));
    assert!(matches!(
        parse_doc(&bare, "m", "x", None),
        Ok(Document::Index(_))
    ));
    // By its own media type: an index without `manifests` is a broken index, not a manifest.
    let typed = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
    let e = parse_doc(typed, "manifest sha256:1", "x", None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("manifest sha256:1 in x lacks a field"), "{e}");
    // By the media type of the descriptor that led to it.
    let untyped = br#"{"schemaVersion":2}"#;
    let list = MediaType::from("application/vnd.docker.distribution.manifest.list.v2+json");
    let e = parse_doc(untyped, "m", "x", Some(&list)).unwrap_err();
    assert!(e.to_string().contains("lacks a field"), "{e}");
    assert!(format!("{:?}", e).contains("manifests"), "{e:?}");
    let e = parse_doc(untyped, "m", "x", Some(&MediaType::ImageManifest)).unwrap_err();
    assert!(format!("{:?}", e).contains("config"), "{e:?}");
}

#[test]
fn docker_schema_1_and_other_versions_are_refused() {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let v1 = br#"{"schemaVersion":1,"name":"library/alpine","tag":"3","architecture":"amd64","fsLayers":[{"blobSum":"sha256:aaaa"}],"history":[]}"#;
    let signed = br#"{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","fsLayers":[]}"#;
    for doc in [&v1[..], &signed[..]] {
        let e = parse_manifest(doc, &amd64).unwrap_err().to_string();
        assert!(e.contains("Docker schema 1"), "{e}");
        assert!(e.contains("push the image again"), "{e}");
    }
    // Named so by the descriptor that led to it.
    let t = MediaType::from("application/vnd.docker.distribution.manifest.v1+json");
    let e = parse_doc(br#"{"schemaVersion":2}"#, "m", "x", Some(&t)).unwrap_err();
    assert!(e.to_string().contains("Docker schema 1"), "{e}");
    let v3 = br#"{"schemaVersion":3,"manifests":[]}"#;
    let e = parse_manifest(v3, &amd64).unwrap_err().to_string();
    assert!(e.contains("schemaVersion 3"), "{e}");
}

#[test]
fn descriptors_need_a_media_type_and_a_size() {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let no_size = format!(
        r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}"}},"layers":[]}}"#,
        hexd('a')
    );
    let no_type = format!(
        r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":2}},"layers":[]}}"#,
        hexd('a')
    );
    for (doc, field) in [(no_size, "size"), (no_type, "mediaType")] {
        let e = parse_manifest(doc.as_bytes(), &amd64).unwrap_err();
        assert!(matches!(e, SourceError::Json { .. }), "{e}");
        let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
        assert!(
            chain.starts_with("manifest in input lacks a field"),
            "{chain}"
        );
        assert!(
            chain.contains(&format!("missing field `{field}`")),
            "{chain}"
        );
    }
}

#[test]
fn configs_need_os_architecture_and_rootfs() {
    let ok = r#"{"os":"linux","architecture":"amd64","rootfs":{"type":"layers","diff_ids":["sha256:1"]}}"#;
    // A config without a `config` section is an image with no Env and no WorkingDir.
    let cfg = parse_image_config(ok.as_bytes()).unwrap();
    assert_eq!(
        (cfg.os.as_str(), cfg.architecture.as_str()),
        ("linux", "amd64")
    );
    assert!(cfg.env.is_empty() && cfg.working_dir.is_none());
    assert_eq!(cfg.diff_ids, ["sha256:1"]);
    for field in ["os", "architecture", "rootfs"] {
        let mut v: serde_json::Value = serde_json::from_str(ok).unwrap();
        v.as_object_mut().unwrap().remove(field);
        let e = parse_image_config(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(
            format!("{e:?}").contains(&format!("missing field `{field}`")),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with("image config in input lacks a field"),
            "{e}"
        );
    }
}

/// Writes `bytes` as a blob of the layout in `dir`; its digest and size.
fn put(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let h = sha256_hex(bytes);
    fs::write(blobs.join(&h), bytes).unwrap();
    (format!("sha256:{h}"), bytes.len())
}

#[test]
fn layouts_with_docker_media_types_and_nested_indexes_resolve() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let layer = hi_layer();
    let (ld, ll) = put(dir, &layer);
    // A Docker config: no `config` section, Docker's own fields besides.
    let cfg = serde_json::json!({"os": "linux", "architecture": "amd64", "docker_version": "27",
        "container_config": {"Hostname": ""}, "rootfs": {"type": "layers", "diff_ids": [ld]}});
    let (cd, cl) = put(dir, &serde_json::to_vec(&cfg).unwrap());
    let man = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cd, "size": cl},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": ld, "size": ll}]});
    let (md, ml) = put(dir, &serde_json::to_vec(&man).unwrap());
    let list = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": md, "size": ml, "platform": {"os": "linux", "architecture": "amd64"}}]});
    let (xd, xl) = put(dir, &serde_json::to_vec(&list).unwrap());
    // index.json names the manifest list by its media type only.
    let entry = serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "digest": xd, "size": xl, "annotations": {"org.opencontainers.image.ref.name": "v1"}});
    fs::write(dir.join("index.json"), index_json("", &[entry])).unwrap();
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let image = resolve_dir(dir).unwrap();
    assert_eq!(image.digest, Some(md.clone()));
    assert_eq!(image.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(image.layers.len(), 1);
    assert_eq!(
        image.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    assert_eq!(image.layers[0].size, Some(ll as u64));
    assert!(image.config.env.is_empty());

    // The manifest's layer descriptor without a size: refused, naming the manifest.
    let mut bad = man.clone();
    bad["layers"][0].as_object_mut().unwrap().remove("size");
    let (bd, bl) = put(dir, &serde_json::to_vec(&bad).unwrap());
    let entry = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": bd, "size": bl});
    fs::write(dir.join("index.json"), index_json("", &[entry])).unwrap();
    let e = resolve_dir(dir).err().unwrap();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        chain.starts_with(&format!("manifest {bd} in {} lacks a field", dir.display())),
        "{chain}"
    );
    assert!(chain.contains("missing field `size`"), "{chain}");
}

#[test]
fn member_names_are_cleaned() {
    assert_eq!(clean_member("./a/../b//c"), "b/c");
    assert_eq!(clean_member("../../x"), "x");
}
