//! Resolve a [`Source`] into an [`Image`]: its manifest for the wanted platform, its config
//! (`Env`, `WorkingDir`, `diff_ids`) and its layers, ready to be opened in order.
//!
//! - registries: see [`crate::registry`] (the cargo feature `registry`): anonymous bearer
//!   tokens, or credentials from `--creds`, else the first auth file with an entry for the
//!   registry (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//!   `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`),
//!   used for every request (token, manifests, index, config, blobs). Plain HTTP for loopback
//!   registries; elsewhere verified HTTPS, or with `insecure` unverified HTTPS and then plain
//!   HTTP. Connection failures, 5xx and 429 are retried with backoff (6 attempts, under 8 s of
//!   waiting); 401/403, 404 and TLS failures are not, and say what to do next.
//!   Layers stream into the [`Cache`] in parallel, each verified while it downloads, and can be
//!   unpacked as soon as they land while later ones are still downloading.
//! - `oci:DIR[:TAG]` (an OCI image layout), `oci-archive:FILE` and `docker-archive:FILE` (both
//!   `docker save` formats) are read in place: archives are indexed once and their members read
//!   by offset, never extracted.
//!
//! Inputs are untrusted: a layout's files are opened with the layout folder as `/` (a link
//! never leads out of it), only regular files are read (a FIFO does not block), JSON
//! documents are read with a limit ([`MAX_DOCUMENT`]), blob sizes declared by descriptors are
//! checked against the files before anything is read, manifests and configs are hashed before
//! they are parsed and layers while they are unpacked. Archive headers go through
//! [`crate::tarbounds`].
//!
//! Manifests are parsed with small tolerant structs so Docker schema2 and OCI media types are
//! treated alike; every digest is validated before it is used to build a path. [`parse_index`],
//! [`parse_manifest`] and [`parse_image_config`] expose those parsers (for fuzzing).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
#[cfg(feature = "registry")]
use std::sync::mpsc;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::cache::{Cache, CacheError};
use crate::reference::{validate_digest, Platform, ReferenceError, Source};

/// Errors from resolving or fetching an image.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} in {where_} is not valid JSON")]
    Json {
        what: &'static str,
        where_: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{} is not a regular file (it is a {kind}); an image layout or archive holds regular files only, so the input is malformed or hostile", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{what} {} has {size} bytes, over the limit of {limit} bytes; the input is malformed or hostile", path.display())]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{what} {reference} of {image}: the registry sent more than {limit} bytes, the most read of a {what}; the registry is broken or hostile")]
    DocumentTooLarge {
        what: &'static str,
        reference: String,
        image: String,
        limit: u64,
    },
    #[error("blob {digest} in {where_} has {actual} bytes, its descriptor declares {declared}; the layout is damaged or hostile")]
    SizeMismatch {
        digest: String,
        where_: String,
        declared: u64,
        actual: u64,
    },
    #[error("no image for platform {wanted} in {source_name}; it offers: {offered}. Pass --platform with one of those")]
    Platform {
        wanted: String,
        source_name: String,
        offered: String,
    },
    #[error("{source_name} holds several images ({tags}); name one as {source_name}:TAG")]
    AmbiguousTag { source_name: String, tags: String },
    #[error("tag {tag:?} not found in {source_name}; it holds: {tags}")]
    TagNotFound {
        tag: String,
        source_name: String,
        tags: String,
    },
    #[error("blob {digest} is missing from {where_}")]
    MissingBlob { digest: String, where_: String },
    #[error("blob {digest} from {where_} does not match its digest (got sha256:{actual})")]
    Digest {
        digest: String,
        where_: String,
        actual: String,
    },
    #[error("registry {registry} denied access to {image} without credentials (401/403): the repository needs a login, or does not exist; pass --creds USER:PASSWORD, or log in with `skopeo login {registry}` (or `docker login`; read from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json)")]
    Unauthorized { registry: String, image: String },
    #[error("registry {registry} refused the credentials from {creds} for {image} (401/403); check the user name and password, and that this user may pull {image}")]
    CredentialsRefused {
        registry: String,
        image: String,
        creds: String,
    },
    #[error("invalid --creds value: expected USER:PASSWORD")]
    CredsFormat,
    #[error("cannot use the registry auth file {}: {problem}; fix or remove it, or pass --creds USER:PASSWORD", path.display())]
    AuthFile { path: PathBuf, problem: String },
    #[error("image {image} not found (manifest unknown): registry {registry} has no tag or digest {reference} in {repository}; check the repository name and the tag (list the tags with `skopeo list-tags docker://{registry}/{repository}`)")]
    NotFound {
        image: String,
        registry: String,
        repository: String,
        reference: String,
    },
    #[error("repository {repository} not found on registry {registry} (name unknown) while pulling {image}; check the image name")]
    RepositoryNotFound {
        image: String,
        registry: String,
        repository: String,
    },
    #[error("registry error for {image}: {message}")]
    Registry { image: String, message: String },
    #[error("cannot reach registry {registry} for {image} after {attempts} attempt(s) over {secs}s: {message}; {hint}")]
    Unreachable {
        registry: String,
        image: String,
        attempts: u32,
        secs: u64,
        message: String,
        hint: String,
    },
    #[error("HTTPS to registry {registry} failed for {image}: {message}; {hint}")]
    Tls {
        registry: String,
        image: String,
        message: String,
        hint: String,
    },
    #[error("cannot set up the registry client")]
    Runtime(#[source] io::Error),
    #[error("a layer download was cancelled")]
    Cancelled,
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

// ---------- manifest model ----------

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

// ---------- image ----------

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

pub(crate) fn select_platform<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
    source_name: &str,
) -> Result<&'a Descriptor, SourceError> {
    let real = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os != "unknown" && p.architecture != "unknown")
    };
    let hit = manifests.iter().filter(real).find(|d| {
        let p = d.platform.as_ref().expect("filtered");
        want.matches(&p.os, &p.architecture, p.variant.as_deref())
    });
    if let Some(d) = hit {
        return Ok(d);
    }
    let offered: Vec<String> = manifests
        .iter()
        .filter(real)
        .map(|d| {
            let p = d.platform.as_ref().expect("filtered");
            match p.variant.as_deref().filter(|v| !v.is_empty()) {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            }
        })
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

// ---------- local layouts and archives ----------

/// Where a local layout keeps its blobs.
enum LocalBlobs {
    Dir(PathBuf),
    Archive(ArchiveIndex),
}

/// Member offsets of an uncompressed tar archive.
struct ArchiveIndex {
    file: PathBuf,
    members: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
}

fn clean_member(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl ArchiveIndex {
    fn build(file: &Path) -> Result<ArchiveIndex, SourceError> {
        let rd = |source| SourceError::Read {
            path: file.to_path_buf(),
            source,
        };
        let (f, _) = open_regular(file)?;
        // PAX and GNU long-name records are bounded before the tar crate reads them whole.
        let mut ar = tar::Archive::new(crate::tarbounds::Bounded::new(io::BufReader::new(f)));
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        for e in ar.entries().map_err(rd)? {
            let e = e.map_err(rd)?;
            let name = clean_member(&String::from_utf8_lossy(&e.path_bytes()));
            match e.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, (e.raw_file_position(), e.size()));
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    if let Some(t) = e.link_name_bytes() {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        let target = if e.header().entry_type() == tar::EntryType::Link
                            || t.starts_with('/')
                        {
                            clean_member(&t)
                        } else {
                            let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                            clean_member(&format!("{dir}/{t}"))
                        };
                        links.insert(name, target);
                    }
                }
                _ => {}
            }
        }
        Ok(ArchiveIndex {
            file: file.to_path_buf(),
            members,
            links,
        })
    }

    fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut n = clean_member(name);
        for _ in 0..16 {
            if let Some(m) = self.members.get(&n) {
                return Some(*m);
            }
            n = self.links.get(&n)?.clone();
        }
        None
    }

    fn read_member(&self, name: &str, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let Some((off, len)) = self.find(name) else {
            return Ok(None);
        };
        if len > limit {
            return Err(SourceError::TooLarge {
                what: "archive member",
                path: self.file.join(name),
                size: len,
                limit,
            });
        }
        let rd = |source| SourceError::Read {
            path: self.file.clone(),
            source,
        };
        let (mut f, _) = open_regular(&self.file)?;
        f.seek(SeekFrom::Start(off)).map_err(rd)?;
        let mut v = Vec::with_capacity(len as usize);
        f.take(len).read_to_end(&mut v).map_err(rd)?;
        Ok(Some(v))
    }
}

/// The largest JSON document read from an image source: `index.json`, manifests, image
/// configs, docker-archive's `manifest.json` (4 MiB; real ones are a few KiB).
pub const MAX_DOCUMENT: u64 = 4 << 20;

/// What kind of file a mode is, for messages.
fn file_kind(ft: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType as T;
    match ft {
        T::RegularFile => "regular file",
        T::Directory => "folder",
        T::Symlink => "symbolic link",
        T::Fifo => "FIFO",
        T::Socket => "socket",
        T::CharacterDevice => "character device",
        T::BlockDevice => "block device",
        T::Unknown => "file of unknown type",
    }
}

/// Requires `fd` (opened as `path`) to be a regular file; its size.
fn require_regular(fd: &std::os::fd::OwnedFd, path: &Path) -> Result<u64, SourceError> {
    let st = rustix::fs::fstat(fd).map_err(|e| SourceError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if ft != rustix::fs::FileType::RegularFile {
        return Err(SourceError::NotRegular {
            path: path.to_path_buf(),
            kind: file_kind(ft),
        });
    }
    Ok(st.st_size as u64)
}

/// Opens a file named by the user (an `oci-archive:` or `docker-archive:` FILE; links are
/// followed, it is the user's path) without blocking on a FIFO, and requires a regular file.
/// Returns the file and its size.
pub(crate) fn open_regular(path: &Path) -> Result<(fs::File, u64), SourceError> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| SourceError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let size = require_regular(&fd, path)?;
    Ok((fs::File::from(fd), size))
}

/// Opens `rel` inside the layout folder `dir`: symbolic links resolve with `dir` as `/`, so
/// none leads out of the layout (`/dev/zero` becomes `DIR/dev/zero`); a FIFO does not block
/// the open; anything but a regular file is refused. `Ok(None)`: not there.
pub(crate) fn open_in_layout(
    dir: &Path,
    rel: &str,
) -> Result<Option<(fs::File, u64)>, SourceError> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let path = dir.join(rel);
    let rd = |e: rustix::io::Errno, p: &Path| SourceError::Read {
        path: p.to_path_buf(),
        source: e.into(),
    };
    let root = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| rd(e, dir))?;
    let fd = match rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(rd(e, &path)),
    };
    let size = require_regular(&fd, &path)?;
    Ok(Some((fs::File::from(fd), size)))
}

/// Reads all of `f` (of `size` bytes by its metadata), refusing more than `limit` bytes even
/// when the file grows while it is read.
fn read_limited(
    f: impl Read,
    size: u64,
    limit: u64,
    what: &'static str,
    path: &Path,
) -> Result<Vec<u8>, SourceError> {
    let too_large = |size| SourceError::TooLarge {
        what,
        path: path.to_path_buf(),
        size,
        limit,
    };
    if size > limit {
        return Err(too_large(size));
    }
    let mut v = Vec::with_capacity(size as usize);
    f.take(limit + 1)
        .read_to_end(&mut v)
        .map_err(|source| SourceError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if v.len() as u64 > limit {
        return Err(too_large(v.len() as u64));
    }
    Ok(v)
}

pub(crate) fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

impl LocalBlobs {
    fn where_(&self) -> String {
        match self {
            LocalBlobs::Dir(d) => d.display().to_string(),
            LocalBlobs::Archive(a) => a.file.display().to_string(),
        }
    }

    /// Reads a JSON document of the layout or archive (at most [`MAX_DOCUMENT`] bytes).
    fn read_file(&self, rel: &str) -> Result<Option<Vec<u8>>, SourceError> {
        match self {
            LocalBlobs::Dir(d) => match open_in_layout(d, rel)? {
                Some((f, size)) => {
                    read_limited(f, size, MAX_DOCUMENT, "document", &d.join(rel)).map(Some)
                }
                None => Ok(None),
            },
            LocalBlobs::Archive(a) => a.read_member(rel, MAX_DOCUMENT),
        }
    }

    /// The size of a blob file, `None` when it is not there.
    fn blob_size(&self, rel: &str) -> Result<Option<u64>, SourceError> {
        match self {
            LocalBlobs::Dir(d) => Ok(open_in_layout(d, rel)?.map(|(_, size)| size)),
            LocalBlobs::Archive(a) => Ok(a.find(rel).map(|(_, len)| len)),
        }
    }

    /// Checks a blob's size against the size its descriptor declares.
    fn check_size(
        &self,
        digest: &str,
        rel: &str,
        declared: Option<u64>,
    ) -> Result<(), SourceError> {
        let Some(declared) = declared else {
            return Ok(());
        };
        match self.blob_size(rel)? {
            Some(actual) if actual != declared => Err(SourceError::SizeMismatch {
                digest: digest.into(),
                where_: self.where_(),
                declared,
                actual,
            }),
            _ => Ok(()),
        }
    }

    /// Reads a small blob (a manifest or config, at most [`MAX_DOCUMENT`] bytes, of the size
    /// its descriptor declares) and verifies it.
    fn read_blob(&self, digest: &str, declared: Option<u64>) -> Result<Vec<u8>, SourceError> {
        let hex = validate_digest(digest)?;
        let rel = format!("blobs/sha256/{hex}");
        self.check_size(digest, &rel, declared)?;
        let bytes = self
            .read_file(&rel)?
            .ok_or_else(|| SourceError::MissingBlob {
                digest: digest.into(),
                where_: self.where_(),
            })?;
        let actual = sha256_hex(&bytes);
        if actual != hex {
            return Err(SourceError::Digest {
                digest: digest.into(),
                where_: self.where_(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Where a layer blob is; checked to be a regular file of the declared size (its digest
    /// is checked while it is unpacked).
    fn layer_data(&self, rel: &str, declared: Option<u64>) -> Result<LayerData, SourceError> {
        self.check_size(rel, rel, declared)?;
        match self {
            LocalBlobs::Dir(d) => {
                if open_in_layout(d, rel)?.is_none() {
                    return Err(SourceError::MissingBlob {
                        digest: rel.into(),
                        where_: self.where_(),
                    });
                }
                Ok(LayerData::InLayout {
                    dir: d.clone(),
                    rel: rel.into(),
                })
            }
            LocalBlobs::Archive(a) => {
                let (offset, len) = a.find(rel).ok_or_else(|| SourceError::MissingBlob {
                    digest: rel.into(),
                    where_: self.where_(),
                })?;
                Ok(LayerData::Slice {
                    file: a.file.clone(),
                    offset,
                    len,
                })
            }
        }
    }
}

pub(crate) fn parse_doc(
    bytes: &[u8],
    what: &'static str,
    where_: &str,
) -> Result<Document, SourceError> {
    serde_json::from_slice(bytes).map_err(|source| SourceError::Json {
        what,
        where_: where_.into(),
        source,
    })
}

fn resolve_layout(
    blobs: LocalBlobs,
    name: String,
    tag: Option<&str>,
    opts: &ResolveOptions,
) -> Result<Image, SourceError> {
    let where_ = blobs.where_();
    let index_bytes = blobs.read_file("index.json")?.ok_or_else(|| {
        SourceError::Invalid(format!(
            "{where_} is not an OCI image layout (no index.json)"
        ))
    })?;
    let index = parse_doc(&index_bytes, "index.json", &where_)?;
    let entries = index.manifests.unwrap_or_default();
    let tag_of = |d: &Descriptor| {
        d.annotations
            .get("org.opencontainers.image.ref.name")
            .cloned()
    };
    let tags = || {
        let t: Vec<String> = entries.iter().filter_map(tag_of).collect();
        if t.is_empty() {
            "no tags".to_string()
        } else {
            t.join(", ")
        }
    };
    let chosen: Vec<&Descriptor> = match tag {
        Some(t) => entries
            .iter()
            .filter(|d| tag_of(d).as_deref() == Some(t))
            .collect(),
        None => entries.iter().collect(),
    };
    let mut desc = match chosen.as_slice() {
        [one] => (*one).clone(),
        [] if tag.is_some() => {
            return Err(SourceError::TagNotFound {
                tag: tag.unwrap_or_default().into(),
                source_name: where_,
                tags: tags(),
            })
        }
        [] => return Err(SourceError::Invalid(format!("{where_} holds no image"))),
        many => {
            // Several entries for one tag or none: treat them as an index over platforms.
            let list: Vec<Descriptor> = many.iter().map(|d| (*d).clone()).collect();
            if list.iter().all(|d| d.platform.is_some()) {
                select_platform(&list, &host_or(&opts.platform), &where_)?.clone()
            } else {
                return Err(SourceError::AmbiguousTag {
                    source_name: where_,
                    tags: tags(),
                });
            }
        }
    };
    let mut manifest_bytes;
    let mut doc;
    let mut depth = 0;
    loop {
        manifest_bytes = blobs.read_blob(&desc.digest, desc.size)?;
        doc = parse_doc(&manifest_bytes, "manifest", &where_)?;
        if !is_index(&doc, &desc.media_type) {
            break;
        }
        depth += 1;
        if depth > 4 {
            return Err(SourceError::Invalid(format!(
                "{where_}: image indexes nested too deep"
            )));
        }
        let list = doc.manifests.clone().unwrap_or_default();
        desc = select_platform(&list, &host_or(&opts.platform), &where_)?.clone();
    }
    let cfg_desc = doc.config.ok_or_else(|| {
        SourceError::Invalid(format!(
            "manifest {} in {where_} has no config",
            desc.digest
        ))
    })?;
    let cfg_bytes = blobs.read_blob(&cfg_desc.digest, cfg_desc.size)?;
    let config = parse_config(&cfg_bytes, &where_)?;
    let platform = check_platform(&config, &opts.platform, &where_)?;
    let mut layers = Vec::new();
    for (i, l) in doc.layers.unwrap_or_default().into_iter().enumerate() {
        let hex = validate_digest(&l.digest)?;
        layers.push(Layer {
            data: blobs.layer_data(&format!("blobs/sha256/{hex}"), l.size)?,
            diff_id: config.diff_ids.get(i).cloned(),
            digest: Some(l.digest),
            size: l.size,
            media_type: l.media_type,
            cache: None,
        });
    }
    Ok(Image {
        name,
        digest: Some(desc.digest),
        platform: Some(platform),
        config,
        layers,
        downloaded: Default::default(),
        _keep: Vec::new(),
    })
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn resolve_docker_archive(file: &Path, opts: &ResolveOptions) -> Result<Image, SourceError> {
    let idx = ArchiveIndex::build(file)?;
    let blobs = LocalBlobs::Archive(idx);
    let where_ = file.display().to_string();
    let name = format!("docker-archive:{where_}");
    let Some(mbytes) = blobs.read_file("manifest.json")? else {
        // No legacy manifest: an OCI layout inside?
        return resolve_layout(blobs, name, None, opts);
    };
    let entries: Vec<DockerManifestEntry> =
        serde_json::from_slice(&mbytes).map_err(|source| SourceError::Json {
            what: "manifest.json",
            where_: where_.clone(),
            source,
        })?;
    let entry = entries
        .into_iter()
        .next()
        .ok_or_else(|| SourceError::Invalid(format!("{where_}: manifest.json lists no image")))?;
    let cfg_bytes = blobs
        .read_file(&entry.config)?
        .ok_or_else(|| SourceError::MissingBlob {
            digest: entry.config.clone(),
            where_: where_.clone(),
        })?;
    let cfg_hex = sha256_hex(&cfg_bytes);
    // The config's name is its digest, in both formats: `<hex>.json` or `blobs/sha256/<hex>`.
    let named = entry
        .config
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(".json")
        .to_string();
    if named.len() == 64 && named != cfg_hex {
        return Err(SourceError::Digest {
            digest: format!("sha256:{named}"),
            where_,
            actual: cfg_hex,
        });
    }
    let config = parse_config(&cfg_bytes, &where_)?;
    let platform = check_platform(&config, &opts.platform, &where_)?;
    if config.diff_ids.len() != entry.layers.len() {
        return Err(SourceError::Invalid(format!(
            "{where_}: manifest.json lists {} layers, the config {} diff_ids",
            entry.layers.len(),
            config.diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (i, l) in entry.layers.iter().enumerate() {
        let digest = l
            .strip_prefix("blobs/sha256/")
            .filter(|h| validate_digest(&format!("sha256:{h}")).is_ok())
            .map(|h| format!("sha256:{h}"));
        layers.push(Layer {
            data: blobs.layer_data(l, None)?,
            diff_id: config.diff_ids.get(i).cloned(),
            digest,
            size: None,
            media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
            cache: None,
        });
    }
    Ok(Image {
        name,
        digest: Some(format!("sha256:{cfg_hex}")),
        platform: Some(platform),
        config,
        layers,
        downloaded: Default::default(),
        _keep: Vec::new(),
    })
}

/// Resolves an image source (not a folder).
pub fn resolve(
    source: &Source,
    cache: Option<&Cache>,
    opts: &ResolveOptions,
) -> Result<Image, SourceError> {
    match source {
        Source::Registry(r) => {
            let cache = cache.ok_or_else(|| {
                SourceError::Invalid("a registry pull needs a cache folder".into())
            })?;
            #[cfg(feature = "registry")]
            return crate::registry::resolve_registry(r, cache, opts);
            #[cfg(not(feature = "registry"))]
            {
                let _ = (cache, opts);
                Err(SourceError::Invalid(format!(
                    "cannot pull {r}: this ocirootfs was built without registry support (the cargo feature `registry`); use oci:DIR, oci-archive:FILE or docker-archive:FILE"
                )))
            }
        }
        Source::OciLayout { dir, tag } => {
            if !dir.join("oci-layout").is_file() && !dir.join("index.json").is_file() {
                return Err(SourceError::Invalid(format!(
                    "{} is not an OCI image layout (no oci-layout or index.json)",
                    dir.display()
                )));
            }
            let name = match tag {
                Some(t) => format!("oci:{}:{t}", dir.display()),
                None => format!("oci:{}", dir.display()),
            };
            resolve_layout(LocalBlobs::Dir(dir.clone()), name, tag.as_deref(), opts)
        }
        Source::OciArchive { file, tag } => {
            let idx = ArchiveIndex::build(file)?;
            resolve_layout(
                LocalBlobs::Archive(idx),
                format!("oci-archive:{}", file.display()),
                tag.as_deref(),
                opts,
            )
        }
        Source::DockerArchive(file) => resolve_docker_archive(file, opts),
        Source::Folder(p) => Err(SourceError::Invalid(format!(
            "{} is a folder, not an image",
            p.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
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
            parse_docker_manifest(br#"[{"Config":"../c.json","Layers":["a/../../l.tar"]}]"#)
                .unwrap();
        assert_eq!(docker, [("c.json".to_string(), vec!["l.tar".to_string()])]);
    }

    #[test]
    fn member_names_are_cleaned() {
        assert_eq!(clean_member("./a/../b//c"), "b/c");
        assert_eq!(clean_member("../../x"), "x");
    }
}
