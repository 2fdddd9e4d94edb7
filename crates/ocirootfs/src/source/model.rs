//! The document model: indexes, manifests and configs are `oci-spec`'s types
//! ([`ImageIndex`], [`ImageManifest`], [`ImageConfiguration`], [`Descriptor`]); this module
//! decides which type a document is, refuses what ocirootfs does not read (Docker schema 1,
//! another schema version), and names the document in every error.
//!
//! Docker's schema 2 manifests and manifest lists have the same JSON shape as OCI's, with
//! other media types; `oci-spec` keeps a media type it does not know as [`MediaType::Other`],
//! so both are read by the same types.

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, ANNOTATION_REF_NAME,
};
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::*;
use crate::reference::{validate_digest, Platform};

/// The media type of a Docker manifest list (Docker's image index).
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The media types of Docker schema 1 manifests start with this.
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1";

/// An image index (or Docker manifest list), or an image manifest.
#[derive(Debug)]
pub(crate) enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

/// The fields that tell an index from a manifest, read before the document is parsed as one.
#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "schemaVersion", default)]
    schema_version: Option<u64>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<IgnoredAny>,
}

/// Whether a media type names an index: OCI's image index or Docker's manifest list (and
/// other spellings of them, as before: any type that says `index` or `manifest.list`).
fn names_index(media_type: &str) -> bool {
    matches!(MediaType::from(media_type), MediaType::ImageIndex)
        || media_type == DOCKER_MANIFEST_LIST
        || media_type.contains("index")
        || media_type.contains("manifest.list")
}

/// A JSON error about a document, told apart: not JSON at all, or JSON that lacks a field the
/// format requires (or has one of the wrong type).
pub(crate) fn json_error(what: String, where_: &str, source: serde_json::Error) -> SourceError {
    let problem = match source.classify() {
        serde_json::error::Category::Data => {
            "lacks a field the image format requires, or has one of the wrong type"
        }
        _ => "is not valid JSON",
    };
    SourceError::Json {
        what,
        where_: where_.into(),
        problem,
        source,
    }
}

/// Reads the fields that tell an index from a manifest, and refuses Docker schema 1 (by its
/// `schemaVersion` or media type, its own or `desc_type`'s) and any schema version but 2.
fn shape(
    bytes: &[u8],
    what: &str,
    where_: &str,
    desc_type: Option<&MediaType>,
) -> Result<Shape, SourceError> {
    let shape: Shape =
        serde_json::from_slice(bytes).map_err(|e| json_error(what.into(), where_, e))?;
    let own_type = shape.media_type.as_deref().unwrap_or("");
    if shape.schema_version == Some(1)
        || own_type.starts_with(DOCKER_SCHEMA1)
        || desc_type.is_some_and(|t| t.as_ref().starts_with(DOCKER_SCHEMA1))
    {
        return Err(SourceError::Invalid(format!(
            "{what} in {where_} is a Docker schema 1 manifest, which ocirootfs does not read; push the image again with a current docker, podman or skopeo to get a schema 2 or OCI manifest"
        )));
    }
    if let Some(v) = shape.schema_version.filter(|v| *v != 2) {
        return Err(SourceError::Invalid(format!(
            "{what} in {where_} has schemaVersion {v}; ocirootfs reads version 2 (OCI, or Docker schema 2)"
        )));
    }
    Ok(shape)
}

/// Parses a manifest or an index (`what` names it in errors, e.g. `manifest sha256:…`; `where_`
/// is the source). It is an index when it has `manifests`, or when its own media type or
/// `desc_type` (the type of the descriptor that pointed at it, if any) names an index.
/// Docker schema 1 manifests, and any other schema version than 2, are refused.
pub(crate) fn parse_doc(
    bytes: &[u8],
    what: &str,
    where_: &str,
    desc_type: Option<&MediaType>,
) -> Result<Document, SourceError> {
    let shape = shape(bytes, what, where_, desc_type)?;
    let is_index = shape.manifests.is_some()
        || names_index(shape.media_type.as_deref().unwrap_or(""))
        || desc_type.is_some_and(|t| names_index(t.as_ref()));
    let parsed = if is_index {
        serde_json::from_slice(bytes).map(|i| Document::Index(Box::new(i)))
    } else {
        serde_json::from_slice(bytes).map(|m| Document::Manifest(Box::new(m)))
    };
    parsed.map_err(|e| json_error(what.into(), where_, e))
}

/// Parses a layout's `index.json` (always an index).
pub(crate) fn parse_index(bytes: &[u8], where_: &str) -> Result<ImageIndex, SourceError> {
    shape(bytes, "index.json", where_, None)?;
    serde_json::from_slice(bytes).map_err(|e| json_error("index.json".into(), where_, e))
}

/// The tag an index entry carries (`org.opencontainers.image.ref.name`).
pub(crate) fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
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
    pub layers: Vec<(String, u64)>,
}

/// Parses an image index, a manifest list or an image manifest (`index.json` included) the way
/// ocirootfs does before it follows one: JSON of at most [`MAX_DOCUMENT`] bytes, every digest
/// it would use validated, for an index the platform choice made.
pub fn parse_manifest(bytes: &[u8], platform: &Platform) -> Result<ManifestSummary, SourceError> {
    document_within_limit("manifest", "input", bytes.len() as u64)?;
    match parse_doc(bytes, "manifest", "input", None)? {
        Document::Index(index) => {
            let list = index.manifests();
            let mut out = ManifestSummary {
                is_index: true,
                tags: list
                    .iter()
                    .filter_map(|d| ref_name(d).map(str::to_string))
                    .collect(),
                ..Default::default()
            };
            if let Ok(d) = select_platform(list, platform, "input") {
                validate_digest(d.digest().as_ref())?;
                out.chosen = Some(d.digest().to_string());
            }
            Ok(out)
        }
        Document::Manifest(m) => {
            let config = validate_digest(m.config().digest().as_ref())
                .map(|_| m.config().digest().to_string())?;
            let mut layers = Vec::new();
            for l in m.layers() {
                validate_digest(l.digest().as_ref())?;
                layers.push((l.digest().to_string(), l.size()));
            }
            Ok(ManifestSummary {
                is_index: false,
                config: Some(config),
                layers,
                ..Default::default()
            })
        }
    }
}

/// Parses an image config (`Env`, `WorkingDir`, `rootfs.diff_ids`, the platform) the way
/// ocirootfs does.
pub fn parse_image_config(bytes: &[u8]) -> Result<ImageConfig, SourceError> {
    document_within_limit("image config", "input", bytes.len() as u64)?;
    parse_config(bytes, "image config", "input")
}

/// Parses docker-archive's `manifest.json`: each image's config member and layer members.
pub fn parse_docker_manifest(bytes: &[u8]) -> Result<Vec<(String, Vec<String>)>, SourceError> {
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(bytes)
        .map_err(|e| json_error("manifest.json".into(), "input", e))?;
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

/// What ocirootfs takes from an image's config ([`ImageConfiguration`]): the platform, what
/// running it needs, and the layers' uncompressed digests.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub env: Vec<String>,
    /// `WorkingDir`, `None` when empty.
    pub working_dir: Option<String>,
    pub diff_ids: Vec<String>,
}

impl From<ImageConfiguration> for ImageConfig {
    fn from(c: ImageConfiguration) -> ImageConfig {
        let inner = c.config().clone().unwrap_or_default();
        ImageConfig {
            os: c.os().to_string(),
            architecture: c.architecture().to_string(),
            variant: c.variant().clone(),
            env: inner.env().clone().unwrap_or_default(),
            working_dir: inner.working_dir().clone().filter(|w| !w.is_empty()),
            diff_ids: c.rootfs().diff_ids().clone(),
        }
    }
}

/// Parses an image config; `what` names it in errors (`image config sha256:…`), `where_` is
/// the source. The OCI image format requires `architecture`, `os` and `rootfs`.
pub(crate) fn parse_config(
    bytes: &[u8],
    what: &str,
    where_: &str,
) -> Result<ImageConfig, SourceError> {
    let c: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(|e| json_error(what.into(), where_, e))?;
    Ok(c.into())
}
