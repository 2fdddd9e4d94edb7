//! Local layouts and archives: `oci:DIR`, `oci-archive:FILE`, `docker-archive:FILE`; the
//! bounded, regular-file-only reads under them; and [`resolve`], the entry point.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::cache::Cache;
use crate::reference::{validate_digest, Source};

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

pub(super) fn clean_member(name: &str) -> String {
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

/// The one size rule for a JSON document of `size` bytes (`what` at `path`, for the message):
/// more than [`MAX_DOCUMENT`] is refused before it is read or parsed.
pub(crate) fn document_within_limit(
    what: &'static str,
    path: impl Into<PathBuf>,
    size: u64,
) -> Result<(), SourceError> {
    if size > MAX_DOCUMENT {
        return Err(SourceError::TooLarge {
            what,
            path: path.into(),
            size,
            limit: MAX_DOCUMENT,
        });
    }
    Ok(())
}

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
    let fd = match safefs::openat2(
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
    fn read_blob(&self, digest: &str, declared: u64) -> Result<Vec<u8>, SourceError> {
        let hex = validate_digest(digest)?;
        let rel = format!("blobs/sha256/{hex}");
        self.check_size(digest, &rel, Some(declared))?;
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
    let index = parse_index(&index_bytes, &where_)?;
    let entries = index.manifests();
    let tags = || {
        let t: Vec<&str> = entries.iter().filter_map(ref_name).collect();
        if t.is_empty() {
            "no tags".to_string()
        } else {
            t.join(", ")
        }
    };
    let chosen: Vec<&Descriptor> = match tag {
        Some(t) => entries.iter().filter(|d| ref_name(d) == Some(t)).collect(),
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
            if list.iter().all(|d| d.platform().is_some()) {
                select_platform(&list, &host_or(&opts.platform), &where_)?.clone()
            } else {
                return Err(SourceError::AmbiguousTag {
                    source_name: where_,
                    tags: tags(),
                });
            }
        }
    };
    let mut depth = 0;
    let manifest = loop {
        let bytes = blobs.read_blob(desc.digest().as_ref(), desc.size())?;
        let what = format!("manifest {}", desc.digest());
        match parse_doc(&bytes, &what, &where_, Some(desc.media_type()))? {
            Document::Manifest(m) => break m,
            Document::Index(index) => {
                depth += 1;
                if depth > 4 {
                    return Err(SourceError::Invalid(format!(
                        "{where_}: image indexes nested too deep"
                    )));
                }
                desc =
                    select_platform(index.manifests(), &host_or(&opts.platform), &where_)?.clone();
            }
        }
    };
    let cfg_desc = manifest.config();
    let cfg_bytes = blobs.read_blob(cfg_desc.digest().as_ref(), cfg_desc.size())?;
    let config = parse_config(
        &cfg_bytes,
        &format!("image config {}", cfg_desc.digest()),
        &where_,
    )?;
    let platform = check_platform(&config, &opts.platform, &where_)?;
    let mut layers = Vec::new();
    for (i, l) in manifest.layers().iter().enumerate() {
        let hex = validate_digest(l.digest().as_ref())?;
        layers.push(Layer {
            data: blobs.layer_data(&format!("blobs/sha256/{hex}"), Some(l.size()))?,
            diff_id: config.diff_ids.get(i).cloned(),
            digest: Some(l.digest().to_string()),
            size: Some(l.size()),
            media_type: l.media_type().to_string(),
            cache: None,
        });
    }
    Ok(Image {
        name,
        digest: Some(desc.digest().to_string()),
        platform: Some(platform),
        config,
        layers,
        downloaded: Default::default(),
        _keep: Vec::new(),
    })
}

#[derive(Deserialize)]
pub(super) struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub(super) config: String,
    #[serde(rename = "Layers", default)]
    pub(super) layers: Vec<String>,
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
    let entries: Vec<DockerManifestEntry> = serde_json::from_slice(&mbytes)
        .map_err(|e| json_error("manifest.json".into(), &where_, e))?;
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
    let config = parse_config(
        &cfg_bytes,
        &format!("image config {:?}", entry.config),
        &where_,
    )?;
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
