//! Resolve a [`Source`] into an [`Image`]: its manifest for the wanted platform, its config
//! (`Env`, `WorkingDir`, `diff_ids`) and its layers, ready to be opened in order.
//!
//! - registries through `oci-client` on a `tokio` runtime: anonymous bearer tokens, or
//!   credentials from `--creds`, else the first auth file with an entry for the registry
//!   (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
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
//! Manifests are parsed with small tolerant structs so Docker schema2 and OCI media types are
//! treated alike; every digest is validated before it is used to build a path.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::cache::{Cache, CacheError};
use crate::reference::{validate_digest, ImageRef, Platform, ReferenceError, Source};

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
struct Plat {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Plat>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Document {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
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

fn is_index(doc: &Document, desc_type: &str) -> bool {
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

fn parse_config(bytes: &[u8], where_: &str) -> Result<ImageConfig, SourceError> {
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
    File(PathBuf),
    /// A blob of an `oci:` layout folder, opened again with [`open_in_layout`].
    InLayout {
        dir: PathBuf,
        rel: String,
    },
    Slice {
        file: PathBuf,
        offset: u64,
        len: u64,
    },
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
        if let LayerData::Download(rx) = &self.data {
            let path = rx.recv().map_err(|_| SourceError::Cancelled)??;
            self.data = LayerData::File(path);
        }
        match &self.data {
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
    pub(crate) _runtime: Option<tokio::runtime::Runtime>,
    pub(crate) _progress: Option<indicatif::MultiProgress>,
}

/// Settings for resolving.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    pub platform: Option<Platform>,
    pub insecure: bool,
    pub creds: Option<String>,
    pub progress: bool,
}

fn host_or(p: &Option<Platform>) -> Platform {
    p.clone().unwrap_or_else(Platform::host)
}

fn select_platform<'a>(
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

fn check_platform(
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

fn sha256_hex(b: &[u8]) -> String {
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

fn parse_doc(bytes: &[u8], what: &'static str, where_: &str) -> Result<Document, SourceError> {
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
        _runtime: None,
        _progress: None,
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
        _runtime: None,
        _progress: None,
    })
}

// ---------- registry ----------

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

fn b64decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Where the registry credentials came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CredsFrom {
    None,
    Flag,
    File(PathBuf),
}

impl std::fmt::Display for CredsFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredsFrom::None => f.write_str("nowhere"),
            CredsFrom::Flag => f.write_str("--creds"),
            CredsFrom::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The auth files read, in order, when `--creds` is not given: the ones skopeo and docker
/// write (`skopeo login`, `docker login`).
fn auth_files() -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    if let Some(x) = var("XDG_RUNTIME_DIR") {
        files.push(x.join("containers/auth.json"));
    }
    if let Some(h) = var("HOME") {
        files.push(h.join(".config/containers/auth.json"));
    }
    if let Some(d) = var("DOCKER_CONFIG") {
        files.push(d.join("config.json"));
    }
    if let Some(h) = var("HOME") {
        files.push(h.join(".docker/config.json"));
    }
    files
}

/// `docker.io`, `https://index.docker.io/v1/`, `http://host:5000/` → one comparable form.
fn normalise_auth_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k)
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// Credentials for `registry/repository` from the text of an auth file
/// (`{"auths": {"host[/namespace]": {"auth": base64("USER:PASSWORD")}}}`): the most specific
/// key wins (`quay.io/org/app`, then `quay.io/org`, then `quay.io`). `Err` says what is wrong
/// with the file.
pub fn creds_from_auth_file(
    text: &str,
    registry: &str,
    repository: &str,
) -> Result<Option<(String, String)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let Some(auths) = v.get("auths") else {
        return Ok(None);
    };
    let auths = auths.as_object().ok_or("\"auths\" is not a JSON object")?;
    let by_key: HashMap<String, &serde_json::Value> = auths
        .iter()
        .map(|(k, e)| (normalise_auth_key(k), e))
        .collect();
    let mut scope = format!("{}/{repository}", normalise_auth_key(registry));
    loop {
        if let Some(e) = by_key.get(&scope) {
            // An entry without "auth" (e.g. kept for a credential helper) gives nothing.
            if let Some(s) = e.get("auth").and_then(|a| a.as_str()) {
                let bad =
                    || format!("the \"auth\" entry for {scope} is not base64 of USER:PASSWORD");
                let dec = String::from_utf8(b64decode(s).ok_or_else(bad)?).map_err(|_| bad())?;
                let (u, p) = dec.split_once(':').ok_or_else(bad)?;
                return Ok(Some((u.into(), p.into())));
            }
        }
        match scope.rsplit_once('/') {
            Some((parent, _)) => scope = parent.to_string(),
            None => return Ok(None),
        }
    }
}

/// Resolves the credentials for `r`: `--creds` first, then the first auth file (of `files`)
/// with an entry for the registry, else anonymous (registries may still hand out anonymous
/// bearer tokens).
fn registry_auth(
    r: &ImageRef,
    creds: Option<&str>,
    files: &[PathBuf],
) -> Result<(oci_client::secrets::RegistryAuth, CredsFrom), SourceError> {
    use oci_client::secrets::RegistryAuth;
    if let Some(c) = creds {
        let (u, p) = c
            .split_once(':')
            .filter(|(u, _)| !u.is_empty())
            .ok_or(SourceError::CredsFormat)?;
        return Ok((RegistryAuth::Basic(u.into(), p.into()), CredsFrom::Flag));
    }
    for f in files {
        let text = match fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SourceError::AuthFile {
                    path: f.clone(),
                    problem: e.to_string(),
                })
            }
        };
        match creds_from_auth_file(&text, &r.registry, &r.repository) {
            Ok(Some((u, p))) => {
                tracing::debug!("credentials for {} from {}", r.registry, f.display());
                return Ok((RegistryAuth::Basic(u, p), CredsFrom::File(f.clone())));
            }
            Ok(None) => {
                if text.contains("credHelpers") || text.contains("credsStore") {
                    tracing::warn!(
                        "{} names a credential helper, which ocirootfs does not run; pass --creds USER:PASSWORD if {} needs a login",
                        f.display(),
                        r.registry
                    );
                }
            }
            Err(problem) => {
                return Err(SourceError::AuthFile {
                    path: f.clone(),
                    problem,
                })
            }
        }
    }
    Ok((RegistryAuth::Anonymous, CredsFrom::None))
}

/// The image being pulled and where its credentials came from: what errors name.
#[derive(Debug, Clone)]
struct Remote {
    image: ImageRef,
    creds: CredsFrom,
}

impl Remote {
    fn denied(&self) -> SourceError {
        let registry = self.image.registry.clone();
        let image = self.image.to_string();
        match &self.creds {
            CredsFrom::None => SourceError::Unauthorized { registry, image },
            c => SourceError::CredentialsRefused {
                registry,
                image,
                creds: c.to_string(),
            },
        }
    }

    fn not_found(&self) -> SourceError {
        let r = &self.image;
        SourceError::NotFound {
            image: r.to_string(),
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            reference: r
                .digest
                .clone()
                .or_else(|| r.tag.clone())
                .unwrap_or_else(|| "latest".into()),
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            out = format!("{out}: {m}");
        }
        cur = c.source();
    }
    out
}

/// The host of the first URL in an error message (`http://HOST[:PORT]/...`), and the message
/// without that URL.
fn split_url(chain: &str) -> (Option<&str>, String) {
    let Some(start) = chain.find("://") else {
        return (None, chain.to_string());
    };
    let begin = chain[..start]
        .rfind(|c: char| !c.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    let rest = &chain[start + 3..];
    let end = rest
        .find(|c: char| c == ')' || c.is_whitespace())
        .unwrap_or(rest.len());
    let host = rest[..end].split('/').next().filter(|h| !h.is_empty());
    (host, format!("{}{}", &chain[..begin], &rest[end..]))
}

/// The next step for a request that did not get an HTTP answer; `true` when retrying may help.
fn connection_hint(chain: &str, r: &ImageRef) -> (String, bool) {
    // The words are looked for outside the URL, whose host could contain any of them.
    let (host, rest) = split_url(chain);
    let l = rest.to_ascii_lowercase();
    let registry_host = r.registry == "docker.io" && host == Some("index.docker.io");
    let target = match host {
        Some(h) if h != r.registry && !registry_host => {
            format!("{h} (the token server {} sends clients to)", r.registry)
        }
        _ => r.registry.clone(),
    };
    if l.contains("certificate")
        || l.contains("tls")
        || l.contains("invalidcontenttype")
        || l.contains("corrupt message")
        || l.contains("handshake")
    {
        let hint = format!("if {target} serves plain HTTP or has a self-signed certificate, pass --insecure (only loopback registries are trusted that way without it)");
        (hint, false)
    } else if l.contains("connection refused") {
        let what = if target == r.registry {
            "the registry is running and the host:port in the image name is right"
        } else {
            "the token server is running"
        };
        (
            format!("nothing listens at {target}; check that {what}"),
            true,
        )
    } else if l.contains("dns") || l.contains("lookup") || l.contains("name or service") {
        // A name that does not resolve is not retried: waiting does not make it resolve, and
        // a mistyped name (or a path taken for an image) should fail at once.
        (
            format!("the host name {target} does not resolve; check the image name (a local file or folder is written as a path: /..., ./... or oci:DIR)"),
            false,
        )
    } else {
        (format!("check the network and that {target} is up"), true)
    }
}

/// Maps a client error to ours; the flag says whether it is worth retrying.
fn classify(e: oci_client::errors::OciDistributionError, rem: &Remote) -> (SourceError, bool) {
    use oci_client::errors::OciDistributionError as E;
    let r = &rem.image;
    let image = r.to_string();
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => (rem.denied(), false),
        E::ImageManifestNotFoundError(_) => (rem.not_found(), false),
        E::RegistryError { ref envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}", x.code).to_ascii_lowercase())
                .collect();
            let has = |c: &str| codes.iter().any(|x| x == c);
            if has("nameunknown") {
                (
                    SourceError::RepositoryNotFound {
                        image,
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                    },
                    false,
                )
            } else if has("manifestunknown") || has("notfound") {
                (rem.not_found(), false)
            } else if has("unauthorized") || has("denied") {
                (rem.denied(), false)
            } else if has("toomanyrequests") {
                (
                    SourceError::Registry {
                        image,
                        message: e.to_string(),
                    },
                    true,
                )
            } else {
                (
                    SourceError::Registry {
                        image,
                        message: e.to_string(),
                    },
                    false,
                )
            }
        }
        E::ServerError {
            code, ref message, ..
        } => match code {
            401 | 403 => (rem.denied(), false),
            404 => (rem.not_found(), false),
            400 if message.contains("HTTPS server") => (
                SourceError::Registry {
                    image,
                    message: format!(
                        "{} answers HTTPS only; pass --insecure to use it without a verified certificate",
                        r.registry
                    ),
                },
                false,
            ),
            _ => (
                SourceError::Registry {
                    image,
                    message: e.to_string(),
                },
                code >= 500 || code == 429 || code == 408,
            ),
        },
        E::RequestError(_) | E::IoError(_) => {
            let chain = error_chain(&e);
            let (hint, transient) = connection_hint(&chain, r);
            let registry = r.registry.clone();
            if transient {
                (
                    SourceError::Unreachable {
                        registry,
                        image,
                        attempts: 1,
                        secs: 0,
                        message: chain,
                        hint,
                    },
                    true,
                )
            } else {
                (
                    SourceError::Tls {
                        registry,
                        image,
                        message: chain,
                        hint,
                    },
                    false,
                )
            }
        }
        _ => (
            SourceError::Registry {
                image,
                message: error_chain(&e),
            },
            false,
        ),
    }
}

/// At most this many attempts per request ...
const ATTEMPTS: u32 = 6;
/// ... and no new attempt once this much time has passed since the first.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(4);

/// Exponential backoff for one request: 0.25 s, 0.5 s, 1 s, 2 s, 4 s (under 8 s in all).
struct Backoff {
    attempts: u32,
    delay: Duration,
    start: std::time::Instant,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            attempts: 1,
            delay: FIRST_DELAY,
            start: std::time::Instant::now(),
        }
    }

    /// After a failed attempt: waits and returns `None` when another attempt may follow,
    /// else gives the error back (with the attempts made, if it is about reaching the
    /// registry).
    async fn after(&mut self, err: SourceError, transient: bool) -> Option<SourceError> {
        let spent = self.start.elapsed();
        if !transient || self.attempts >= ATTEMPTS || spent + self.delay > RETRY_BUDGET {
            return Some(match err {
                SourceError::Unreachable {
                    registry,
                    image,
                    message,
                    hint,
                    ..
                } => SourceError::Unreachable {
                    registry,
                    image,
                    attempts: self.attempts,
                    secs: spent.as_secs_f64().round() as u64,
                    message,
                    hint,
                },
                e => e,
            });
        }
        let why = match &err {
            SourceError::Unreachable { message, .. } => message.clone(),
            e => e.to_string(),
        };
        tracing::warn!(
            "{why}; retrying in {:?} (attempt {} of {ATTEMPTS})",
            self.delay,
            self.attempts + 1
        );
        tokio::time::sleep(self.delay).await;
        self.attempts += 1;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        None
    }
}

async fn retry<T, F, Fut>(rem: &Remote, mut f: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let (err, transient) = classify(e, rem);
                if let Some(e) = backoff.after(err, transient).await {
                    return Err(e);
                }
            }
        }
    }
}

struct Registry {
    client: Arc<oci_client::Client>,
    reference: oci_client::Reference,
    image: ImageRef,
    remote: Remote,
    auth: oci_client::secrets::RegistryAuth,
}

impl Registry {
    async fn manifest(
        &self,
        digest_or_tag: Option<&str>,
    ) -> Result<(Vec<u8>, String), SourceError> {
        let reference = match digest_or_tag {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        let (bytes, digest) = retry(&self.remote, || {
            self.client
                .pull_manifest_raw(&reference, &self.auth, ACCEPT)
        })
        .await?;
        // oci-client reads the manifest body whole; at least nothing larger is parsed or cached.
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(SourceError::TooLarge {
                what: "manifest",
                path: PathBuf::from(self.image.to_string()),
                size: bytes.len() as u64,
                limit: MAX_DOCUMENT,
            });
        }
        let actual = format!("sha256:{}", sha256_hex(&bytes));
        let expected = digest_or_tag
            .map(str::to_string)
            .or_else(|| self.image.digest.clone());
        if let Some(exp) = expected {
            if exp != actual {
                return Err(SourceError::Digest {
                    digest: exp,
                    where_: self.image.to_string(),
                    actual,
                });
            }
        }
        if digest.starts_with("sha256:") && digest != actual {
            return Err(SourceError::Digest {
                digest,
                where_: self.image.to_string(),
                actual,
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    async fn small_blob(
        &self,
        cache: &Cache,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Vec<u8>, SourceError> {
        if let Some(s) = size.filter(|s| *s > MAX_DOCUMENT) {
            return Err(SourceError::TooLarge {
                what: "blob",
                path: PathBuf::from(digest),
                size: s,
                limit: MAX_DOCUMENT,
            });
        }
        if let Some(b) = cache.read_verified(digest, size, MAX_DOCUMENT)? {
            return Ok(b);
        }
        let out = retry(&self.remote, || async {
            use futures_util::StreamExt;
            let mut stream = self
                .client
                .pull_blob_stream(&self.reference, digest)
                .await?
                .stream;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
                if out.len() as u64 > MAX_DOCUMENT {
                    // Refused below, without a retry.
                    break;
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| match e {
            SourceError::NotFound { image, .. } => SourceError::MissingBlob {
                digest: digest.to_string(),
                where_: image,
            },
            e => e,
        })?;
        if out.len() as u64 > MAX_DOCUMENT {
            return Err(SourceError::TooLarge {
                what: "blob",
                path: PathBuf::from(digest),
                size: out.len() as u64,
                limit: MAX_DOCUMENT,
            });
        }
        cache.put(digest, &out)?;
        Ok(out)
    }
}

/// One layer download, run as a task on the runtime.
struct Download {
    client: Arc<oci_client::Client>,
    reference: oci_client::Reference,
    remote: Remote,
    cache: Cache,
    digest: String,
    size: Option<u64>,
    bar: Option<indicatif::ProgressBar>,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

async fn download(d: Download) -> Result<PathBuf, SourceError> {
    use futures_util::StreamExt;
    let Download {
        client,
        reference,
        remote,
        cache,
        digest,
        size,
        bar,
        counter,
    } = d;
    let image = &remote.image;
    let mut backoff = Backoff::new();
    loop {
        let res: Result<PathBuf, (SourceError, bool)> = async {
            let mut stream = client
                .pull_blob_stream(&reference, digest.as_str())
                .await
                .map_err(|e| match classify(e, &remote) {
                    (SourceError::NotFound { .. }, _) => (
                        SourceError::MissingBlob {
                            digest: digest.clone(),
                            where_: image.to_string(),
                        },
                        false,
                    ),
                    c => c,
                })?
                .stream;
            let mut w = cache.writer(&digest, size).map_err(|e| (e.into(), false))?;
            if let Some(b) = &bar {
                b.set_position(0);
            }
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        w.write_chunk(&c).map_err(|e| (e.into(), false))?;
                        counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if let Some(b) = &bar {
                            b.inc(c.len() as u64);
                        }
                    }
                    Err(e) => {
                        // An error once every byte arrived is the client's digest check.
                        let complete = size.is_some_and(|s| w.written() >= s);
                        let msg = format!("downloading {digest}: {e}");
                        return Err((
                            SourceError::Registry {
                                image: image.to_string(),
                                message: msg,
                            },
                            !complete,
                        ));
                    }
                }
            }
            w.finish().map_err(|e| (e.into(), false))
        }
        .await;
        match res {
            Ok(p) => {
                if let Some(b) = &bar {
                    b.finish();
                }
                tracing::debug!("downloaded {digest}");
                return Ok(p);
            }
            Err((e, transient)) => {
                if let Some(e) = backoff.after(e, transient).await {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    return Err(e);
                }
            }
        }
    }
}

fn resolve_registry(
    r: &ImageRef,
    cache: &Cache,
    opts: &ResolveOptions,
) -> Result<Image, SourceError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SourceError::Runtime)?;
    let reference = match (&r.tag, &r.digest) {
        (_, Some(d)) => {
            oci_client::Reference::with_digest(r.registry.clone(), r.repository.clone(), d.clone())
        }
        (Some(t), None) => {
            oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone())
        }
        (None, None) => oci_client::Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            "latest".into(),
        ),
    };
    let (auth, creds_from) = registry_auth(r, opts.creds.as_deref(), &auth_files())?;
    let remote = Remote {
        image: r.clone(),
        creds: creds_from,
    };
    // With --insecure: HTTPS without certificate checks, then plain HTTP when the registry
    // does not speak TLS at all (as skopeo's --tls-verify=false does). Without it: plain HTTP
    // for loopback registries, HTTPS with verified certificates for every other.
    use oci_client::client::ClientProtocol;
    let plans: &[(ClientProtocol, bool)] = if opts.insecure {
        &[(ClientProtocol::Https, true), (ClientProtocol::Http, false)]
    } else if r.is_loopback() {
        &[(ClientProtocol::Http, false)]
    } else {
        &[(ClientProtocol::Https, false)]
    };
    let mut client = None;
    for (i, (protocol, accept_invalid_certificates)) in plans.iter().enumerate() {
        let config = oci_client::client::ClientConfig {
            protocol: protocol.clone(),
            accept_invalid_certificates: *accept_invalid_certificates,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let c = oci_client::Client::try_from(config).map_err(|e| SourceError::Registry {
            image: r.to_string(),
            message: e.to_string(),
        })?;
        // The first request (GET /v2/, then the token server if the registry names one).
        match rt.block_on(retry(&remote, || {
            c.auth(&reference, &auth, oci_client::RegistryOperation::Pull)
        })) {
            Ok(_) => {
                client = Some(c);
                break;
            }
            Err(e @ SourceError::Tls { .. }) if i + 1 < plans.len() => {
                tracing::debug!("{e}; trying plain HTTP");
            }
            Err(e) => return Err(e),
        }
    }
    let client = client.expect("the last plan returns or errs");
    let reg = Registry {
        client: Arc::new(client),
        reference,
        image: r.clone(),
        remote: remote.clone(),
        auth,
    };
    let counter: Arc<std::sync::atomic::AtomicU64> = Default::default();
    let progress = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);

    let (digest, platform, config, layer_descs) = rt.block_on(async {
        let (mut bytes, mut digest) = reg.manifest(r.digest.as_deref()).await?;
        let mut doc = parse_doc(&bytes, "manifest", &r.to_string())?;
        let mut depth = 0;
        while is_index(&doc, "") {
            depth += 1;
            if depth > 4 {
                return Err(SourceError::Invalid(format!(
                    "{r}: image indexes nested too deep"
                )));
            }
            let list = doc.manifests.clone().unwrap_or_default();
            let d = select_platform(&list, &host_or(&opts.platform), &r.to_string())?
                .digest
                .clone();
            validate_digest(&d)?;
            (bytes, digest) = match cache.read_verified(&d, None, MAX_DOCUMENT)? {
                Some(b) => (b, d.clone()),
                None => {
                    let (b, dg) = reg.manifest(Some(&d)).await?;
                    cache.put(&dg, &b)?;
                    (b, dg)
                }
            };
            doc = parse_doc(&bytes, "manifest", &r.to_string())?;
        }
        let cfg_desc = doc.config.clone().ok_or_else(|| {
            SourceError::Invalid(format!("manifest {digest} of {r} has no config"))
        })?;
        let cfg = reg
            .small_blob(cache, &cfg_desc.digest, cfg_desc.size)
            .await?;
        let config = parse_config(&cfg, &r.to_string())?;
        let platform = check_platform(&config, &opts.platform, &r.to_string())?;
        Ok::<_, SourceError>((digest, platform, config, doc.layers.unwrap_or_default()))
    })?;

    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut layers = Vec::new();
    for (i, l) in layer_descs.into_iter().enumerate() {
        validate_digest(&l.digest)?;
        let data = match cache.get(&l.digest, l.size)? {
            Some(p) => LayerData::File(p),
            None => {
                let (tx, rx) = mpsc::sync_channel(1);
                let bar = progress.as_ref().map(|m| {
                    let b = m.add(indicatif::ProgressBar::new(l.size.unwrap_or(0)));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(l.digest.get(7..19).unwrap_or_default().to_string());
                    b
                });
                let fut = download(Download {
                    client: reg.client.clone(),
                    reference: reg.reference.clone(),
                    remote: remote.clone(),
                    cache: cache.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    bar,
                    counter: counter.clone(),
                });
                let sem = sem.clone();
                rt.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let _ = tx.send(fut.await);
                });
                LayerData::Download(rx)
            }
        };
        layers.push(Layer {
            diff_id: config.diff_ids.get(i).cloned(),
            digest: Some(l.digest),
            size: l.size,
            media_type: l.media_type,
            data,
            cache: Some(cache.clone()),
        });
    }
    Ok(Image {
        name: r.to_string(),
        digest: Some(digest),
        platform: Some(platform),
        config,
        layers,
        downloaded: counter,
        _runtime: Some(rt),
        _progress: progress,
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
            resolve_registry(r, cache, opts)
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

    #[test]
    fn base64_and_auth_files() {
        assert_eq!(b64decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(b64decode("YQ==").unwrap(), b"a");
        let text = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"http://127.0.0.1:5000/":{"auth":"YTpi"},"quay.io/org":{"auth":"bzpw"},"quay.io":{"auth":"cTpw"},"ghcr.io":{}}}"#;
        let get = |reg: &str, repo: &str| creds_from_auth_file(text, reg, repo).unwrap();
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(get("docker.io", "library/alpine"), pair("user", "pass"));
        assert_eq!(get("127.0.0.1:5000", "x"), pair("a", "b"));
        // The most specific key wins.
        assert_eq!(get("quay.io", "org/app"), pair("o", "p"));
        assert_eq!(get("quay.io", "other/app"), pair("q", "p"));
        // An entry without "auth" (credential helper) gives nothing; unknown hosts neither.
        assert_eq!(get("ghcr.io", "a"), None);
        assert_eq!(get("example.org", "a"), None);
        assert_eq!(creds_from_auth_file("{}", "quay.io", "a"), Ok(None));
        let err = creds_from_auth_file("garbage", "quay.io", "a").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = creds_from_auth_file(r#"{"auths":{"quay.io":{"auth":"!!"}}}"#, "quay.io", "a")
            .unwrap_err();
        assert!(err.contains("quay.io"), "{err}");
    }

    #[test]
    fn creds_flag_and_files() {
        use oci_client::secrets::RegistryAuth;
        let r = crate::reference::parse_image_ref("127.0.0.1:5000/a/b:1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.json");
        fs::write(&empty, r#"{"auths":{}}"#).unwrap();
        let good = dir.path().join("good.json");
        fs::write(&good, r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpwOng="}}}"#).unwrap();
        let bad = dir.path().join("bad.json");
        fs::write(&bad, "{").unwrap();
        let missing = dir.path().join("missing.json");

        let (auth, from) = registry_auth(&r, Some("me:pa:ss"), std::slice::from_ref(&bad)).unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == "me" && p == "pa:ss"));
        assert_eq!(from, CredsFrom::Flag);
        for wrong in ["nocolon", ":pass"] {
            let e = registry_auth(&r, Some(wrong), &[]).unwrap_err();
            assert!(matches!(e, SourceError::CredsFormat), "{wrong}: {e}");
        }
        let (auth, from) =
            registry_auth(&r, None, &[missing.clone(), empty.clone(), good.clone()]).unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == "u" && p == "p:x"));
        assert_eq!(from, CredsFrom::File(good.clone()));
        let (auth, from) = registry_auth(&r, None, &[missing, empty]).unwrap();
        assert!(matches!(auth, RegistryAuth::Anonymous));
        assert_eq!(from, CredsFrom::None);
        let e = registry_auth(&r, None, &[bad.clone(), good])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&bad.display().to_string()) && e.contains("--creds"),
            "{e}"
        );
    }

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

    #[test]
    fn connection_hints() {
        let r = crate::reference::parse_image_ref("tls-certificate.example:5000/a:1").unwrap();
        let url = "error sending request for url (https://tls-certificate.example:5000/v2/)";
        let (hint, transient) = connection_hint(
            &format!("{url}: client error (Connect): tcp connect error: Connection refused"),
            &r,
        );
        assert!(transient && hint.contains("nothing listens"), "{hint}");
        let (hint, transient) = connection_hint(
            &format!("{url}: client error (Connect): invalid peer certificate: UnknownIssuer"),
            &r,
        );
        assert!(!transient && hint.contains("--insecure"), "{hint}");
        let (hint, transient) = connection_hint(
            "error sending request for url (http://auth.example/token?scope=x): tcp connect error: Connection refused (os error 111)",
            &r,
        );
        assert!(transient, "{hint}");
        assert!(
            hint.contains("nothing listens at auth.example (the token server tls-certificate.example:5000 sends clients to)"),
            "{hint}"
        );
        let (hint, transient) = connection_hint(
            &format!("{url}: client error (Connect): dns error: failed to lookup address information: Name or service not known"),
            &r,
        );
        assert!(!transient && hint.contains("does not resolve"), "{hint}");
        assert_eq!(
            split_url("a (https://h:1/v2/) b"),
            (Some("h:1"), "a () b".to_string())
        );
        assert_eq!(split_url("no url"), (None, "no url".to_string()));
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
    fn member_names_are_cleaned() {
        assert_eq!(clean_member("./a/../b//c"), "b/c");
        assert_eq!(clean_member("../../x"), "x");
    }
}
