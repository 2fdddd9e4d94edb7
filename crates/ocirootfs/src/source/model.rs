//! The manifest model: indexes, manifests and configs as ocirootfs reads them.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::*;
use crate::reference::{validate_digest, Platform};

#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct Plat {
    #[serde(default)]
    pub(crate) os: String,
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    #[serde(default)]
    pub(crate) size: Option<u64>,
    #[serde(default)]
    pub(crate) platform: Option<Plat>,
    #[serde(default)]
    pub(crate) annotations: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Document {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    #[serde(default)]
    pub(crate) config: Option<Descriptor>,
    #[serde(default)]
    pub(crate) layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub(crate) manifests: Option<Vec<Descriptor>>,
}

#[derive(Debug, Deserialize, Default)]
struct ConfigInner {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
struct RootfsSection {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
struct ConfigDoc {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<ConfigInner>,
    #[serde(default)]
    rootfs: RootfsSection,
}

/// What a manifest or an index names, as ocirootfs reads it ([`parse_manifest`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestSummary {
    /// An index (or manifest list) rather than an image manifest.
    pub is_index: bool,
    /// For an index: the manifest digest chosen for the platform asked for.
    pub chosen: Option<String>,
    /// For an index: the `org.opencontainers.image.ref.name` annotations.
    pub tags: Vec<String>,
    /// For a manifest: the config digest.
    pub config: Option<String>,
    /// For a manifest: the layers' digests and declared sizes.
    pub layers: Vec<(String, Option<u64>)>,
}

/// Parses an image index, a manifest list or an image manifest (`index.json` included) the way
/// ocirootfs does before it follows one: JSON of at most [`MAX_DOCUMENT`] bytes, every digest
/// it would use validated, for an index the platform choice made.
pub fn parse_manifest(bytes: &[u8], platform: &Platform) -> Result<ManifestSummary, SourceError> {
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(SourceError::TooLarge {
            what: "manifest",
            path: PathBuf::from("input"),
            size: bytes.len() as u64,
            limit: MAX_DOCUMENT,
        });
    }
    let doc = parse_doc(bytes, "manifest", "input")?;
    let mut out = ManifestSummary {
        is_index: is_index(&doc, ""),
        ..Default::default()
    };
    if out.is_index {
        let list = doc.manifests.unwrap_or_default();
        out.tags = list
            .iter()
            .filter_map(|d| {
                d.annotations
                    .get("org.opencontainers.image.ref.name")
                    .cloned()
            })
            .collect();
        if let Ok(d) = select_platform(&list, platform, "input") {
            validate_digest(&d.digest)?;
            out.chosen = Some(d.digest.clone());
        }
        return Ok(out);
    }
    if let Some(c) = &doc.config {
        validate_digest(&c.digest)?;
        out.config = Some(c.digest.clone());
    }
    for l in doc.layers.unwrap_or_default() {
        validate_digest(&l.digest)?;
        out.layers.push((l.digest, l.size));
    }
    Ok(out)
}

/// Parses an image config (`Env`, `WorkingDir`, `rootfs.diff_ids`, the platform) the way
/// ocirootfs does.
pub fn parse_image_config(bytes: &[u8]) -> Result<ImageConfig, SourceError> {
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(SourceError::TooLarge {
            what: "image config",
            path: PathBuf::from("input"),
            size: bytes.len() as u64,
            limit: MAX_DOCUMENT,
        });
    }
    parse_config(bytes, "input")
}

/// Parses docker-archive's `manifest.json`: each image's config member and layer members.
pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<(String, Vec<String>)>, SourceError> {
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(bytes).map_err(|source| SourceError::Json {
            what: "manifest.json",
            where_: "input".into(),
            source,
        })?;
    Ok(entries
        .into_iter()
        .map(|e| {
            (
                clean_member(&e.config),
                e.layers.iter().map(|l| clean_member(l)).collect(),
            )
        })
        .collect())
}

pub(crate) fn is_index(doc: &Document, desc_type: &str) -> bool {
    doc.manifests.is_some()
        || doc.media_type.contains("index")
        || doc.media_type.contains("manifest.list")
        || desc_type.contains("index")
        || desc_type.contains("manifest.list")
}

/// What the image's config says about running it.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub diff_ids: Vec<String>,
}

pub(crate) fn parse_config(bytes: &[u8], where_: &str) -> Result<ImageConfig, SourceError> {
    let c: ConfigDoc = serde_json::from_slice(bytes).map_err(|source| SourceError::Json {
        what: "image config",
        where_: where_.into(),
        source,
    })?;
    let inner = c.config.unwrap_or_default();
    Ok(ImageConfig {
        os: c.os,
        architecture: c.architecture,
        variant: c.variant,
        env: inner.env.unwrap_or_default(),
        working_dir: inner.working_dir.filter(|w| !w.is_empty()),
        diff_ids: c.rootfs.diff_ids,
    })
}
