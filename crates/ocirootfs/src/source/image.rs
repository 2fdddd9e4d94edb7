//! An [`Image`]: its layers (local or downloading) and how a platform is chosen.

#[cfg(feature = "registry")]
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
#[cfg(feature = "registry")]
use std::sync::mpsc;
use std::sync::Arc;

use oci_spec::image::Descriptor;

use super::*;
use crate::cache::Cache;
use crate::reference::Platform;

pub(crate) enum LayerData {
    /// A blob of the cache.
    #[cfg(feature = "registry")]
    File(PathBuf),
    /// A blob of an `oci:` layout folder, opened again with [`open_in_layout`].
    InLayout { dir: PathBuf, rel: String },
    Slice {
        file: PathBuf,
        offset: u64,
        len: u64,
    },
    /// A registry download in progress.
    #[cfg(feature = "registry")]
    Download(mpsc::Receiver<Result<PathBuf, SourceError>>),
}

/// One layer of an image.
pub struct Layer {
    /// The blob digest (compressed), when known.
    pub digest: Option<String>,
    /// The digest of the uncompressed tar, from the config.
    pub diff_id: Option<String>,
    pub size: Option<u64>,
    pub media_type: String,
    pub(crate) data: LayerData,
    /// The blob lives in (or is being downloaded into) this cache.
    pub(crate) cache: Option<Cache>,
}

impl Layer {
    /// Drops a cached blob that turned out damaged.
    pub(crate) fn evict(&self) {
        if let (Some(c), Some(d)) = (&self.cache, &self.digest) {
            tracing::warn!(
                "cached blob {d} is damaged; removed from the cache, run again to fetch it"
            );
            c.evict(d);
        }
    }

    /// After an unpack error other than a digest mismatch (a decompression error, say): a
    /// cached blob whose content no longer matches its digest is evicted too.
    pub(crate) fn evict_if_damaged(&self) {
        #[cfg(feature = "registry")]
        if let (LayerData::File(p), Some(d)) = (&self.data, &self.digest) {
            use sha2::Digest as _;
            let Ok(mut f) = fs::File::open(p) else { return };
            let mut h = sha2::Sha256::new();
            if std::io::copy(&mut f, &mut h).is_ok()
                && d.strip_prefix("sha256:") != Some(hex::encode(h.finalize()).as_str())
            {
                self.evict();
            }
        }
    }

    /// Opens the layer blob for reading, waiting for its download if needed.
    pub fn open(&mut self) -> Result<Box<dyn Read + Send>, SourceError> {
        #[cfg(feature = "registry")]
        if let LayerData::Download(rx) = &self.data {
            let path = rx.recv().map_err(|_| SourceError::Cancelled)??;
            self.data = LayerData::File(path);
        }
        match &self.data {
            #[cfg(feature = "registry")]
            LayerData::File(p) => {
                let f = fs::File::open(p).map_err(|source| SourceError::Read {
                    path: p.clone(),
                    source,
                })?;
                Ok(Box::new(f))
            }
            LayerData::InLayout { dir, rel } => {
                let (f, _) = open_in_layout(dir, rel)?.ok_or_else(|| SourceError::MissingBlob {
                    digest: rel.clone(),
                    where_: dir.display().to_string(),
                })?;
                Ok(Box::new(f))
            }
            LayerData::Slice { file, offset, len } => {
                let (mut f, _) = open_regular(file)?;
                f.seek(SeekFrom::Start(*offset))
                    .map_err(|source| SourceError::Read {
                        path: file.clone(),
                        source,
                    })?;
                Ok(Box::new(f.take(*len)))
            }
            #[cfg(feature = "registry")]
            LayerData::Download(_) => Err(SourceError::Cancelled),
        }
    }
}

/// A resolved image.
pub struct Image {
    /// The source as normalised (`docker.io/library/alpine:latest`, `oci:/path:tag`, ...).
    pub name: String,
    /// The manifest digest (for docker-archive: the config digest, the image ID).
    pub digest: Option<String>,
    /// `os/arch[/variant]` of the chosen manifest.
    pub platform: Option<String>,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
    /// Bytes downloaded from a registry by this pull (manifests, config and layers).
    pub downloaded: Arc<std::sync::atomic::AtomicU64>,
    /// What must live as long as the image: the registry client's runtime and the progress
    /// bars of layers still downloading.
    pub(crate) _keep: Vec<Box<dyn std::any::Any + Send>>,
}

/// Settings for resolving.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    pub platform: Option<Platform>,
    pub insecure: bool,
    pub creds: Option<String>,
    pub progress: bool,
}

pub(crate) fn host_or(p: &Option<Platform>) -> Platform {
    p.clone().unwrap_or_else(Platform::host)
}

/// `os/architecture[/variant]` of an index entry's platform.
fn platform_name(p: &oci_spec::image::Platform) -> String {
    match p.variant().as_deref().filter(|v| !v.is_empty()) {
        Some(v) => format!("{}/{}/{v}", p.os(), p.architecture()),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

/// The entry of an index for the platform `want`. Entries without a platform, or with an
/// `unknown` one (attestations), are never chosen; the error lists what the index offers.
pub fn select_platform<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
    source_name: &str,
) -> Result<&'a Descriptor, SourceError> {
    let real = |d: &'a Descriptor| {
        d.platform().as_ref().filter(|p| {
            p.os().to_string() != "unknown" && p.architecture().to_string() != "unknown"
        })
    };
    let hit = manifests.iter().find(|d| {
        real(d).is_some_and(|p| {
            want.matches(
                &p.os().to_string(),
                &p.architecture().to_string(),
                p.variant().as_deref(),
            )
        })
    });
    if let Some(d) = hit {
        return Ok(d);
    }
    let offered: Vec<String> = manifests
        .iter()
        .filter_map(real)
        .map(platform_name)
        .collect();
    Err(SourceError::Platform {
        wanted: want.to_string(),
        source_name: source_name.into(),
        offered: if offered.is_empty() {
            "nothing with a platform".into()
        } else {
            offered.join(", ")
        },
    })
}

pub(crate) fn check_platform(
    cfg: &ImageConfig,
    want: &Option<Platform>,
    source_name: &str,
) -> Result<String, SourceError> {
    let mut plat = format!("{}/{}", cfg.os, cfg.architecture);
    if let Some(v) = cfg.variant.as_deref().filter(|v| !v.is_empty()) {
        plat = format!("{plat}/{v}");
    }
    if let Some(w) = want {
        if !cfg.architecture.is_empty()
            && !w.matches(&cfg.os, &cfg.architecture, cfg.variant.as_deref())
        {
            return Err(SourceError::Platform {
                wanted: w.to_string(),
                source_name: source_name.into(),
                offered: plat,
            });
        }
    }
    Ok(plat)
}
