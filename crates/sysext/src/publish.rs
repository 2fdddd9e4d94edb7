//! Extension images as OCI 1.1 artifacts in a registry: `sysext push` and `sysext pull`.
//!
//! One artifact holds one extension. Each image is a manifest with
//! - `artifactType` [`ARTIFACT_TYPE`],
//! - the empty config (`application/vnd.oci.empty.v1+json`, `{}`), as OCI 1.1 asks of
//!   artifacts without a config,
//! - one layer: the image file as it is, of media type [`LAYER_SQUASHFS`] or [`LAYER_EROFS`],
//!   named by `org.opencontainers.image.title` (the file name, as ORAS does),
//! - annotations: the extension's name, version, architecture, its extension-release text and,
//!   for an image a bake built, the bake's rebuild key ([`ANN_KEY`]).
//!
//! Images of several architectures are pushed as one image index (platform `linux/GOARCH`,
//! the same annotations on each entry). Every registry request goes through
//! [`ocirootfs::registry::Session`]: the credentials, retries, `--insecure`, bounded manifest
//! reads and blob cache of ocirootfs. Documents are written with sorted keys, so the same
//! images give the same digests.
//!
//! `pull` fetches the manifest for the platform (an index is resolved with ocirootfs's
//! platform rule), checks the artifact type, and copies the one layer to the output under a
//! temporary name, verified against its digest and size; only a verified image is renamed
//! into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use ocirootfs::reference::{parse_image_ref, ImageRef, Platform};
use ocirootfs::registry::Session;
use safefs::atomic::AtomicOutput;
use sysext_core::inspect::{Image, ImageFormat};
use sysext_core::release::OsRelease;

/// The `artifactType` of an extension image.
pub const ARTIFACT_TYPE: &str = "application/vnd.sysext.image.v1";
/// The layer media type of a squashfs extension image.
pub const LAYER_SQUASHFS: &str = "application/vnd.sysext.image.layer.v1.squashfs";
/// The layer media type of an EROFS extension image.
pub const LAYER_EROFS: &str = "application/vnd.sysext.image.layer.v1.erofs";
/// OCI 1.1's empty config.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
const EMPTY_JSON: &[u8] = b"{}";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub const ANN_NAME: &str = "dev.sysext.name";
pub const ANN_VERSION: &str = "dev.sysext.version";
pub const ANN_ARCH: &str = "dev.sysext.architecture";
pub const ANN_RELEASE: &str = "dev.sysext.extension-release";
pub const ANN_KEY: &str = "dev.sysext.rebuild-key";
const ANN_TITLE: &str = "org.opencontainers.image.title";
const ANN_OCI_VERSION: &str = "org.opencontainers.image.version";

/// An image file read for pushing.
#[derive(Debug, Clone, Serialize)]
pub struct LocalImage {
    pub path: PathBuf,
    pub file: String,
    pub name: String,
    pub version: Option<String>,
    /// systemd's name (`x86-64`, `arm64`); `None` for `_any` or unset.
    pub architecture: Option<String>,
    pub media_type: &'static str,
    pub release: String,
    pub rebuild_key: Option<String>,
    pub digest: String,
    pub size: u64,
}

/// What a push did, per image.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub file: String,
    pub architecture: Option<String>,
    pub manifest: String,
    pub layer: String,
    pub size: u64,
    /// False when the registry had the layer already.
    pub uploaded: bool,
}

/// What `sysext push` did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub reference: String,
    /// The digest the tag points at (the index, or the one manifest).
    pub digest: String,
    pub media_type: &'static str,
    pub images: Vec<Pushed>,
}

/// What `sysext pull` did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub reference: String,
    pub manifest: String,
    pub platform: Option<String>,
    pub output: PathBuf,
    pub name: Option<String>,
    pub version: Option<String>,
    pub architecture: Option<String>,
    pub rebuild_key: Option<String>,
    pub digest: String,
    pub size: u64,
}

/// sha256 (the bake's one file hash) and size of a file.
fn file_digest(path: &Path) -> Result<(String, u64)> {
    let sha = crate::bake::build::file_sha256(path)?;
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    Ok((format!("sha256:{sha}"), size))
}

/// The rebuild key a bake recorded for `file` in `DIR/.bake-state.json` beside it, if the
/// state's digest is the file's.
fn bake_key(path: &Path, file: &str, digest: &str) -> Option<String> {
    let state_path = path.parent()?.join(crate::bake::STATE_FILE);
    let bytes = crate::bake::read_limited(&state_path).ok()?;
    let state: crate::bake::State = serde_json::from_slice(&bytes).ok()?;
    let e = state.images.get(file)?;
    (Some(e.sha256.as_str()) == digest.strip_prefix("sha256:")).then(|| e.key.clone())
}

/// Reads an image for pushing: its format, release file, name, version, architecture.
pub fn read_image(path: &Path) -> Result<LocalImage> {
    let img = Image::open(path).with_context(|| format!("opening {}", path.display()))?;
    let info = img
        .info()
        .with_context(|| format!("reading {}", path.display()))?;
    let media_type = match info.format {
        ImageFormat::Squashfs => LAYER_SQUASHFS,
        ImageFormat::Erofs => LAYER_EROFS,
        ImageFormat::Dir => bail!(
            "{} is a folder; push takes image files (pack it first: sysext pack {} NAME.raw)",
            path.display(),
            path.display()
        ),
    };
    let (Some(release_file), Some(release)) = (info.release_file, info.release) else {
        bail!(
            "{} has no usr/lib/extension-release.d/extension-release.NAME; it is not an extension image",
            path.display()
        );
    };
    let name = release_file
        .rsplit_once("extension-release.")
        .map(|(_, n)| n.to_string())
        .unwrap_or_default();
    sysext_core::release::validate_name(&name)
        .with_context(|| format!("the release file of {}", path.display()))?;
    let rel = OsRelease::parse(&release);
    let architecture = rel
        .get("ARCHITECTURE")
        .filter(|a| !a.is_empty() && *a != "_any")
        .map(str::to_string);
    let file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // SYSEXT_VERSION_ID, else the VERSION of a sysupdate name NAME-VERSION-ARCH.raw.
    let version = rel
        .get("SYSEXT_VERSION_ID")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .or_else(|| {
            let arch = architecture.as_deref()?;
            let v = file
                .strip_prefix(&format!("{name}-"))?
                .strip_suffix(&format!("-{arch}.raw"))?;
            bake_manifest::valid_version(v).then(|| v.to_string())
        });
    let (digest, size) = file_digest(path)?;
    let rebuild_key = bake_key(path, &file, &digest);
    Ok(LocalImage {
        path: path.to_path_buf(),
        file,
        name,
        version,
        architecture,
        media_type,
        release,
        rebuild_key,
        digest,
        size,
    })
}

/// The annotations of an image (on its manifest, and on its entry in an index).
fn annotations(i: &LocalImage) -> BTreeMap<&'static str, String> {
    let mut a = BTreeMap::new();
    a.insert(ANN_NAME, i.name.clone());
    a.insert(ANN_RELEASE, i.release.clone());
    if let Some(v) = &i.version {
        a.insert(ANN_VERSION, v.clone());
        a.insert(ANN_OCI_VERSION, v.clone());
    }
    if let Some(x) = &i.architecture {
        a.insert(ANN_ARCH, x.clone());
    }
    if let Some(k) = &i.rebuild_key {
        a.insert(ANN_KEY, k.clone());
    }
    a
}

/// The manifest of one image, as bytes with sorted keys.
pub fn image_manifest(i: &LocalImage) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": EMPTY_CONFIG,
            "digest": format!("sha256:{}", hex::encode(Sha256::digest(EMPTY_JSON))),
            "size": EMPTY_JSON.len(),
            "data": "e30=",
        },
        "layers": [{
            "mediaType": i.media_type,
            "digest": i.digest,
            "size": i.size,
            "annotations": { ANN_TITLE: i.file },
        }],
        "annotations": annotations(i),
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Checks what one push may hold: images of one extension, one per architecture, each with
/// an architecture when there are several.
fn check_set(images: &[LocalImage]) -> Result<()> {
    let Some(first) = images.first() else {
        bail!("nothing to push: give one or more images");
    };
    for i in images {
        if i.name != first.name {
            bail!(
                "{} is the extension {} but {} is {}: one artifact holds one extension; push them to separate references",
                i.file, i.name, first.file, first.name
            );
        }
        if images.len() > 1 && i.architecture.is_none() {
            bail!(
                "{} has no ARCHITECTURE in its extension-release, so it cannot be one of several architectures in an index; push it alone",
                i.file
            );
        }
    }
    for (n, i) in images.iter().enumerate() {
        if let Some(j) = images[..n]
            .iter()
            .find(|j| j.architecture == i.architecture)
        {
            bail!(
                "{} and {} are both for {}: an artifact holds one image per architecture",
                j.file,
                i.file,
                i.architecture.as_deref().unwrap_or("any architecture")
            );
        }
    }
    Ok(())
}

/// Parses a reference to push to: a tag is needed (a digest names content, not a place).
pub fn push_ref(reference: &str) -> Result<ImageRef> {
    let r = parse_image_ref(reference).with_context(|| format!("the reference {reference:?}"))?;
    if r.digest.is_some() {
        bail!("{reference} names a digest; push to a tag (REGISTRY/REPOSITORY:TAG)");
    }
    Ok(r)
}

/// `sysext push IMAGE... REF`.
pub fn push(
    paths: &[PathBuf],
    reference: &str,
    opts: &ocirootfs::SourceOptions,
) -> Result<PushReport> {
    let r = push_ref(reference)?;
    let images = paths
        .iter()
        .map(|p| read_image(p))
        .collect::<Result<Vec<_>>>()?;
    check_set(&images)?;
    let session = Session::open(&r, opts, true).with_context(|| format!("connecting to {r}"))?;
    push_images(&session, &images)
}

/// Pushes checked images through an open session to its reference's tag.
pub fn push_images(session: &Session, images: &[LocalImage]) -> Result<PushReport> {
    let r = session.image().clone();
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    session
        .push_small_blob(EMPTY_JSON)
        .with_context(|| format!("pushing the empty config to {r}"))?;
    let mut pushed = Vec::new();
    let mut entries = Vec::new();
    let several = images.len() > 1;
    for i in images {
        let uploaded = session
            .push_blob(&i.digest, i.size, &i.path)
            .with_context(|| format!("pushing {} to {r}", i.path.display()))?;
        let manifest = image_manifest(i);
        let target = if several {
            format!("sha256:{}", hex::encode(Sha256::digest(&manifest)))
        } else {
            tag.clone()
        };
        let digest = session
            .push_manifest(&target, MANIFEST, &manifest)
            .with_context(|| format!("pushing the manifest of {} to {r}", i.file))?;
        let arch = i.architecture.as_deref().unwrap_or("");
        entries.push(json!({
            "mediaType": MANIFEST,
            "artifactType": ARTIFACT_TYPE,
            "digest": digest,
            "size": manifest.len(),
            "platform": { "os": "linux", "architecture": bake_manifest::goarch(arch) },
            "annotations": annotations(i),
        }));
        pushed.push(Pushed {
            file: i.file.clone(),
            architecture: i.architecture.clone(),
            manifest: digest,
            layer: i.digest.clone(),
            size: i.size,
            uploaded,
        });
    }
    let (digest, media_type) = if several {
        let mut top = BTreeMap::new();
        top.insert(ANN_NAME, images[0].name.clone());
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX,
            "artifactType": ARTIFACT_TYPE,
            "manifests": entries,
            "annotations": top,
        });
        let bytes = serde_json::to_vec(&index).unwrap_or_default();
        let d = session
            .push_manifest(&tag, INDEX, &bytes)
            .with_context(|| format!("pushing the index to {r}"))?;
        (d, INDEX)
    } else {
        (pushed[0].manifest.clone(), MANIFEST)
    };
    Ok(PushReport {
        reference: r.to_string(),
        digest,
        media_type,
        images: pushed,
    })
}

/// A manifest's annotation.
fn ann(doc: &Value, key: &str) -> Option<String> {
    doc.get("annotations")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

/// The artifact manifest for `platform` (default: the host's) behind the session's reference,
/// with its digest; an index is resolved by ocirootfs's platform rule.
pub fn resolve(
    session: &Session,
    platform: Option<&str>,
) -> Result<(Value, String, Option<String>)> {
    let r = session.image().to_string();
    let (bytes, digest) = session
        .manifest(None)
        .with_context(|| format!("fetching the manifest of {r}"))?;
    let doc: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the manifest {digest} of {r} is not JSON"))?;
    let want = match platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    let is_index = doc.get("manifests").is_some()
        || doc.get("mediaType").and_then(Value::as_str) == Some(INDEX);
    if !is_index {
        if let (Some(p), Some(arch)) = (platform, ann(&doc, ANN_ARCH)) {
            let goarch = bake_manifest::goarch(&arch);
            if !want.matches("linux", goarch, None) {
                bail!("{r} holds an image for {arch} (linux/{goarch}), not for {p}; pull it without --platform, or pull the reference of a {p} image");
            }
        }
        return Ok((doc, digest, None));
    }
    let index: oci_spec::image::ImageIndex = serde_json::from_slice(&bytes)
        .with_context(|| format!("the index {digest} of {r} is not a valid image index"))?;
    let d = ocirootfs::source::select_platform(index.manifests(), &want, &r)?;
    let (next, size) = (d.digest().to_string(), d.size());
    let (bytes, digest) = session
        .manifest(Some(&next))
        .with_context(|| format!("fetching the manifest {next} of {r}"))?;
    if bytes.len() as u64 != size {
        bail!(
            "the manifest {next} of {r} has {} bytes, its index entry declares {size}; the registry is broken or hostile",
            bytes.len()
        );
    }
    let doc: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the manifest {digest} of {r} is not JSON"))?;
    Ok((doc, digest, Some(want.to_string())))
}

/// The one image layer of an artifact manifest: digest, size, file name.
pub fn image_layer(doc: &Value, digest: &str, r: &str) -> Result<(String, u64, Option<String>)> {
    let at = doc.get("artifactType").and_then(Value::as_str);
    if at != Some(ARTIFACT_TYPE) {
        bail!(
            "{r} (manifest {digest}) is not a sysext artifact: its artifactType is {}, not {ARTIFACT_TYPE}; pull container images with ocirootfs",
            at.map_or("missing".to_string(), |a| format!("{a:?}"))
        );
    }
    let layers = doc
        .get("layers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [layer] = layers else {
        bail!(
            "{r} (manifest {digest}) has {} layers; a sysext artifact has exactly one image",
            layers.len()
        );
    };
    let mt = layer.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if mt != LAYER_SQUASHFS && mt != LAYER_EROFS {
        bail!("{r} (manifest {digest}): the layer's media type {mt:?} is not a sysext image ({LAYER_SQUASHFS} or {LAYER_EROFS})");
    }
    let d = layer
        .get("digest")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    ocirootfs::reference::validate_digest(&d)?;
    let size = layer
        .get("size")
        .and_then(Value::as_u64)
        .with_context(|| format!("{r} (manifest {digest}): the layer has no size"))?;
    Ok((d, size, ann(layer, ANN_TITLE)))
}

/// `sysext pull REF [--platform] -o OUTPUT`.
pub fn pull(
    reference: &str,
    platform: Option<&str>,
    output: &Path,
    force: bool,
    opts: &ocirootfs::SourceOptions,
) -> Result<PullReport> {
    let r = parse_image_ref(reference).with_context(|| format!("the reference {reference:?}"))?;
    // Refused before anything is fetched.
    if !force && std::fs::symlink_metadata(output).is_ok() {
        bail!("{} exists; pass --force to replace it", output.display());
    }
    let session = Session::open(&r, opts, false).with_context(|| format!("connecting to {r}"))?;
    let (doc, manifest, platform) = resolve(&session, platform)?;
    let shown = r.to_string();
    let (digest, size, _) = image_layer(&doc, &manifest, &shown)?;
    let out = AtomicOutput::file(output, force)?;
    session
        .copy_verified(&digest, size, out.path())
        .with_context(|| format!("fetching the image {digest} of {shown}"))?;
    out.commit()?;
    Ok(PullReport {
        reference: shown,
        manifest,
        platform,
        output: output.to_path_buf(),
        name: ann(&doc, ANN_NAME),
        version: ann(&doc, ANN_VERSION),
        architecture: ann(&doc, ANN_ARCH),
        rebuild_key: ann(&doc, ANN_KEY),
        digest,
        size,
    })
}

/// Whether `t` is a valid tag of the distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// The reference of a bake job under `--push PREFIX`: `PREFIX/NAME:TAG`.
pub fn job_ref(prefix: &str, name: &str, tag: &str) -> Result<ImageRef> {
    let p = prefix.trim_end_matches('/');
    if p.contains('@')
        || p.rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') && p.contains('/'))
    {
        bail!("--push {prefix}: give a registry and a path without tag or digest, e.g. registry.example:5000/extensions");
    }
    let r = parse_image_ref(&format!("{p}/{name}:{tag}"))
        .with_context(|| format!("--push {prefix}: not a registry path"))?;
    Ok(r)
}

/// `bake --push`: the image of `job` with rebuild key `key`, fetched into `output` when the
/// registry holds an artifact under `PREFIX/NAME:KEY` whose rebuild-key annotation is `key`
/// (verified against digest and size, written atomically). Gives the reference it came from,
/// `None` when there is none.
pub fn reuse(
    prefix: &str,
    job: &crate::bake::build::Job,
    key: &str,
    output: &Path,
    opts: &ocirootfs::SourceOptions,
) -> Result<Option<String>> {
    let r = job_ref(prefix, &job.ext.name, key)?;
    let session = Session::open(&r, opts, true).with_context(|| format!("connecting to {r}"))?;
    let Some((bytes, digest)) = session
        .manifest_if_any()
        .with_context(|| format!("asking {r} for the rebuild key"))?
    else {
        return Ok(None);
    };
    let shown = r.to_string();
    let doc: Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the manifest {digest} of {shown} is not JSON"))?;
    if ann(&doc, ANN_KEY).as_deref() != Some(key) {
        tracing::warn!("{shown} does not carry the rebuild key {key}; building instead");
        return Ok(None);
    }
    let (layer, size, _) = image_layer(&doc, &digest, &shown)?;
    let out = AtomicOutput::file(output, true)?;
    session
        .copy_verified(&layer, size, out.path())
        .with_context(|| format!("fetching the image {layer} of {shown}"))?;
    out.commit()?;
    Ok(Some(format!("{shown}@{digest}")))
}

/// `bake --push`: pushes the image at `path` of `job` with rebuild key `key` to
/// `PREFIX/NAME:KEY`, and tags it `VERSION-ARCH` too when that is a valid tag. Gives the
/// reference.
pub fn push_job(
    prefix: &str,
    job: &crate::bake::build::Job,
    key: &str,
    path: &Path,
    opts: &ocirootfs::SourceOptions,
) -> Result<String> {
    let r = job_ref(prefix, &job.ext.name, key)?;
    let mut image = read_image(path)?;
    image.rebuild_key = Some(key.to_string());
    let session = Session::open(&r, opts, true).with_context(|| format!("connecting to {r}"))?;
    let report = push_images(&session, std::slice::from_ref(&image))?;
    let human = format!("{}-{}", job.ext.version, job.arch);
    if valid_tag(&human) {
        session
            .push_manifest(&human, MANIFEST, &image_manifest(&image))
            .with_context(|| format!("tagging {r} as {human}"))?;
    }
    Ok(format!("{}@{}", report.reference, report.digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(file: &str, arch: Option<&str>) -> LocalImage {
        LocalImage {
            path: PathBuf::from(file),
            file: file.into(),
            name: "hello".into(),
            version: Some("1.0".into()),
            architecture: arch.map(Into::into),
            media_type: LAYER_SQUASHFS,
            release: "ID=_any\n".into(),
            rebuild_key: Some("k".into()),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 3,
        }
    }

    #[test]
    fn manifests_are_stable_and_checked() {
        let a = img("hello-1.0-x86-64.raw", Some("x86-64"));
        let m = image_manifest(&a);
        assert_eq!(m, image_manifest(&a), "the same image gives the same bytes");
        let v: Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["artifactType"], ARTIFACT_TYPE);
        assert_eq!(v["config"]["mediaType"], EMPTY_CONFIG);
        assert_eq!(v["annotations"][ANN_KEY], "k");
        let (d, size, title) = image_layer(&v, "m", "r").unwrap();
        assert_eq!((d.as_str(), size), (a.digest.as_str(), 3));
        assert_eq!(title.as_deref(), Some("hello-1.0-x86-64.raw"));
        let mut wrong = v.clone();
        wrong["artifactType"] = json!("application/vnd.other");
        let e = image_layer(&wrong, "m", "r").unwrap_err().to_string();
        assert!(e.contains("not a sysext artifact"), "{e}");

        let b = img("hello-1.0-arm64.raw", Some("arm64"));
        check_set(&[a.clone(), b]).unwrap();
        let e = check_set(&[a.clone(), a.clone()]).unwrap_err().to_string();
        assert!(e.contains("one image per architecture"), "{e}");
        let e = check_set(&[a.clone(), img("any.raw", None)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no ARCHITECTURE"), "{e}");
        let mut other = img("other-1.0-arm64.raw", Some("arm64"));
        other.name = "other".into();
        let e = check_set(&[a, other]).unwrap_err().to_string();
        assert!(e.contains("one extension"), "{e}");
        assert!(valid_tag("1.0-x86-64") && valid_tag(&"a".repeat(64)));
        assert!(!valid_tag("1,0+x") && !valid_tag(".x") && !valid_tag(""));
        let r = job_ref("127.0.0.1:5000/ext/", "hello", "k").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/ext/hello:k");
        assert!(job_ref("127.0.0.1:5000/ext:tag", "hello", "k").is_err());
        assert!(job_ref("127.0.0.1:5000/ext@sha256:00", "hello", "k").is_err());
        assert!(push_ref("127.0.0.1:5000/a@sha256:0000000000000000000000000000000000000000000000000000000000000000").is_err());
    }
}
