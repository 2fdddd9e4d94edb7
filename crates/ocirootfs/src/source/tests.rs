use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use crate::reference::{Platform, Source};

use super::*;

fn desc(os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
    Descriptor {
        media_type: String::new(),
        digest: format!("sha256:{os}{arch}"),
        size: None,
        platform: Some(Plat {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }),
        annotations: HashMap::new(),
    }
}

#[test]
fn platform_selection_lists_the_offer() {
    let list = vec![
        desc("linux", "amd64", None),
        desc("linux", "arm64", Some("v8")),
        desc("unknown", "unknown", None),
    ];
    let got = select_platform(&list, &Platform::parse("linux/arm64").unwrap(), "x").unwrap();
    assert_eq!(got.digest, "sha256:linuxarm64");
    let err = select_platform(&list, &Platform::parse("linux/s390x").unwrap(), "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("linux/amd64, linux/arm64/v8"), "{err}");
    assert!(!err.contains("unknown"), "{err}");
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
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(2);
    h.set_mode(0o644);
    t.append_data(&mut h, "hi", &b"hi"[..]).unwrap();
    let layer = t.into_inner().unwrap();
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
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &blob,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
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

#[test]
fn document_parsers_for_fuzzing() {
    let amd64 = Platform::parse("linux/amd64").unwrap();
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let index = format!(
        r#"{{"manifests":[{{"digest":"{}","platform":{{"os":"linux","architecture":"arm64"}}}},{{"digest":"{}","platform":{{"os":"linux","architecture":"amd64"}},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
        d('a'),
        d('b')
    );
    let got = parse_manifest(index.as_bytes(), &amd64).unwrap();
    assert!(got.is_index);
    assert_eq!(got.chosen, Some(d('b')));
    assert_eq!(got.tags, ["v1"]);
    let man = format!(
        r#"{{"config":{{"digest":"{}"}},"layers":[{{"digest":"{}","size":7}}]}}"#,
        d('c'),
        d('e')
    );
    let got = parse_manifest(man.as_bytes(), &amd64).unwrap();
    assert_eq!(got.config, Some(d('c')));
    assert_eq!(got.layers, [(d('e'), Some(7))]);
    // A digest that would become a path outside the blobs folder is refused.
    let bad = r#"{"config":{"digest":"sha256:../../../etc/passwd"}}"#;
    assert!(parse_manifest(bad.as_bytes(), &amd64).is_err());
    assert!(parse_manifest(b"[", &amd64).is_err());
    let cfg = parse_image_config(
        br#"{"os":"linux","architecture":"amd64","config":{"Env":["A=1"],"WorkingDir":""}}"#,
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
fn member_names_are_cleaned() {
    assert_eq!(clean_member("./a/../b//c"), "b/c");
    assert_eq!(clean_member("../../x"), "x");
}
