//! Pull container images from registries and local archives into a root filesystem folder,
//! with no container daemon.
//!
//! - [`reference`]: SOURCE strings ([`reference::Source`]) and platforms.
//! - [`source`]: manifests, indexes and configs from OCI layouts, oci-archive and
//!   docker-archive files, and (through [`registry`]) registries → an [`source::Image`].
//! - `registry`: registries through `oci-client` + `tokio`; the cargo feature `registry` (on
//!   by default; the fuzz crate builds without it).
//! - `download`: plain file downloads over HTTP(S) with the registry client's rules (feature
//!   `registry`), for `sysext install-image --from`.
//! - [`cache`]: verified, content-addressed blobs re-used across runs, kept under a size limit
//!   (least recently used entries evicted; entries in use by any process never).
//! - [`tarbounds`]: a reader under every tar parse that refuses PAX / GNU long-name records
//!   over 1 MiB before they are read into memory.
//! - [`unpack`]: layer application (whiteouts, hardlinks, owners, xattrs) that never writes
//!   outside the root.
//! - [`run`]: a command inside the rootfs (`--run`).
//! - [`cli`]: the `ocirootfs IMAGE FOLDER` and `ocirootfs cache list|prune` command line.
//!
//! Entry points: [`pull`] (the command: unpack into FOLDER, atomically) and [`materialize`] (for
//! flix and flatwrap: a folder passes through untouched, an image is unpacked once into the
//! cache under `rootfs/<manifest hex>` and re-used by later calls).

pub mod cache;
pub mod cli;
#[cfg(feature = "registry")]
pub mod download;
pub mod reference;
#[cfg(feature = "registry")]
pub mod registry;
pub mod run;
pub mod source;
pub mod tarbounds;
pub mod unpack;

use std::path::{Path, PathBuf};

use safefs::atomic::{AtomicError, AtomicOutput};

use crate::cache::{Cache, CacheError};
use crate::reference::{Platform, ReferenceError, Source};
use crate::source::{Image, ResolveOptions, SourceError};
use crate::unpack::{UnpackError, UnpackOptions};

/// Errors of [`pull`] and [`materialize`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("unpacking layer {index} ({digest}) of {image}")]
    Unpack {
        index: usize,
        digest: String,
        image: String,
        #[source]
        source: UnpackError,
    },
    #[error("{} exists and is not empty; pass --force to replace it", .0.display())]
    NotEmpty(PathBuf),
    #[error(transparent)]
    Output(#[from] AtomicError),
    #[error("cannot run the command in the rootfs")]
    Run(#[from] run::RunError),
    #[error("the command `{command}` exited with status {status}; {} was not written", folder.display())]
    RunFailed {
        command: String,
        status: i32,
        folder: PathBuf,
    },
    #[error("cannot create the temporary folder {}", path.display())]
    TempDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("source folder {} does not exist or is not a directory", .0.display())]
    NoFolder(PathBuf),
    #[error("copying the folder {} to {}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How to find and fetch an image.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// `os/arch[/variant]`; default the host's.
    pub platform: Option<String>,
    /// Blob cache; default [`cache::default_dir`].
    pub cache_dir: Option<PathBuf>,
    /// The cache's size limit in bytes; default [`cache::DEFAULT_MAX`].
    pub cache_max: Option<u64>,
    /// Allow plain HTTP and invalid certificates for non-loopback registries.
    pub insecure: bool,
    /// `USER:PASSWORD` for the registry.
    pub creds: Option<String>,
    /// Progress bars on stderr (only shown on a terminal).
    pub progress: bool,
}

/// A root filesystem ready for reading.
#[derive(Debug)]
pub struct Rootfs {
    pub path: PathBuf,
    /// The image's manifest digest (None for a folder).
    pub digest: Option<String>,
    pub platform: Option<String>,
    /// The image config's `Env`.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    _guard: Option<TempGuard>,
    /// Unpacked from an image by us (see [`Rootfs::unpacked`]).
    unpacked: bool,
    /// Keeps a cached rootfs from eviction while it is read.
    lease: Option<cache::Lease>,
    /// The cache holding it, trimmed to its limit when the lease ends (see `Drop`).
    cache: Option<Cache>,
}

impl Rootfs {
    /// Whether the tree was unpacked by us (into the cache or a scratch folder), not a
    /// folder the user named: its files may then be shared with a staged tree as hard links
    /// (`safefs::tree::StageOptions::link_source`).
    pub fn unpacked(&self) -> bool {
        self.unpacked
    }
}

impl Drop for Rootfs {
    /// Ends the lease, then evicts to the cache's limit: the rootfs (and what it kept from
    /// eviction while it was read) may go now, so a bake or flix run leaves the cache under
    /// its limit, not over it by the trees it held at the end.
    fn drop(&mut self) {
        if let (Some(lease), Some(cache)) = (self.lease.take(), &self.cache) {
            drop(lease);
            match &self.digest {
                Some(d) => cache.make_room_after_release(d),
                None => cache.make_room(0),
            }
        }
    }
}

/// A temp folder removed on drop, and on SIGINT/SIGTERM ([`safefs::cleanup`]).
#[derive(Debug)]
struct TempGuard(PathBuf, #[allow(dead_code)] safefs::cleanup::Registration);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One applied layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerReport {
    pub digest: Option<String>,
    pub diff_id: Option<String>,
    pub media_type: String,
    pub size: Option<u64>,
    pub entries: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// What [`pull`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// The source, normalised.
    pub source: String,
    pub digest: Option<String>,
    pub platform: Option<String>,
    pub folder: PathBuf,
    pub layers: Vec<LayerReport>,
    /// Bytes fetched from a registry by this run (0 when everything was cached).
    pub downloaded_bytes: u64,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// Exit status of `--run`.
    pub run_status: Option<i32>,
}

fn resolve_opts(opts: &SourceOptions) -> Result<ResolveOptions, Error> {
    Ok(ResolveOptions {
        platform: opts.platform.as_deref().map(Platform::parse).transpose()?,
        insecure: opts.insecure,
        creds: opts.creds.clone(),
        progress: opts.progress,
    })
}

fn open_cache(opts: &SourceOptions, source: &Source) -> Result<Option<Cache>, Error> {
    let needed = matches!(source, Source::Registry(_));
    let dir = opts.cache_dir.clone().unwrap_or_else(cache::default_dir);
    match Cache::open(&dir) {
        Ok(c) => Ok(Some(
            c.with_max(opts.cache_max.unwrap_or(cache::DEFAULT_MAX)),
        )),
        Err(e) if needed => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// Applies every layer of `image` to `root`, in order.
fn apply_all(image: &mut Image, root: &Path) -> Result<Vec<LayerReport>, Error> {
    let uopts = UnpackOptions::default();
    let mut reports = Vec::new();
    let name = image.name.clone();
    for (index, layer) in image.layers.iter_mut().enumerate() {
        let label = layer
            .digest
            .clone()
            .or_else(|| layer.diff_id.clone())
            .unwrap_or_else(|| format!("#{index}"));
        let blob = layer.open()?;
        tracing::debug!("applying layer {label}");
        let stats = unpack::apply_layer(
            root,
            blob,
            layer.digest.as_deref(),
            layer.diff_id.as_deref(),
            &uopts,
        )
        .map_err(|source| {
            if matches!(
                source,
                UnpackError::Digest { .. } | UnpackError::DiffId { .. }
            ) {
                layer.evict();
            } else {
                layer.evict_if_damaged();
            }
            Error::Unpack {
                index,
                digest: label,
                image: name.clone(),
                source,
            }
        })?;
        tracing::debug!(
            "applied layer {index}: {} entries, {} bytes",
            stats.entries,
            stats.bytes
        );
        reports.push(LayerReport {
            digest: layer.digest.clone(),
            diff_id: layer.diff_id.clone(),
            media_type: layer.media_type.clone(),
            size: layer.size,
            entries: stats.entries,
            bytes: stats.bytes,
            warnings: stats.warnings,
        });
    }
    Ok(reports)
}

/// Pulls SOURCE and unpacks it into FOLDER (`ocirootfs IMAGE FOLDER`). See [`pull_and_run`].
pub fn pull(
    source: &str,
    folder: &Path,
    opts: &SourceOptions,
    force: bool,
) -> Result<PullReport, Error> {
    pull_and_run(source, folder, opts, force, None)
}

/// Pulls SOURCE, unpacks it into a temporary folder beside FOLDER, optionally runs `run` in it,
/// and renames it into place. An existing non-empty FOLDER is refused unless `force`; an error
/// (or a failing command) leaves FOLDER as it was.
pub fn pull_and_run(
    source: &str,
    folder: &Path,
    opts: &SourceOptions,
    force: bool,
    run: Option<&str>,
) -> Result<PullReport, Error> {
    let src = reference::parse_source(source)?;
    if !force && folder.is_dir() && unpack::is_empty_dir(folder) {
        // An existing empty folder is as good as none.
        let _ = std::fs::remove_dir(folder);
    } else if !force && std::fs::symlink_metadata(folder).is_ok() {
        return Err(Error::NotEmpty(folder.to_path_buf()));
    }
    remove_stale_temps(folder);
    let out = AtomicOutput::dir(folder, force)?;
    let mut trim_after = None;
    let mut report = match &src {
        Source::Folder(p) => {
            if !p.is_dir() {
                return Err(Error::NoFolder(p.clone()));
            }
            copy_tree(p, out.path())?;
            PullReport {
                source: p.display().to_string(),
                digest: None,
                platform: None,
                folder: folder.to_path_buf(),
                layers: Vec::new(),
                downloaded_bytes: 0,
                env: Vec::new(),
                working_dir: None,
                run_status: None,
            }
        }
        _ => {
            let cache = open_cache(opts, &src)?;
            let mut image = source::resolve(&src, cache.as_ref(), &resolve_opts(opts)?)?;
            let layers = apply_all(&mut image, out.path())?;
            // Only registry pulls write to the cache; the image's leases end with it here.
            if let (Source::Registry(_), Some(c)) = (&src, &cache) {
                trim_after = Some(c.clone());
            }
            PullReport {
                source: image.name.clone(),
                digest: image.digest.clone(),
                platform: image.platform.clone(),
                folder: folder.to_path_buf(),
                layers,
                downloaded_bytes: image.downloaded.load(std::sync::atomic::Ordering::Relaxed),
                env: image.config.env.clone(),
                working_dir: image.config.working_dir.clone(),
                run_status: None,
            }
        }
    };
    if let Some(cmd) = run {
        let status =
            run::run_in_rootfs(out.path(), cmd, &report.env, report.working_dir.as_deref())?;
        report.run_status = Some(status);
        if status != 0 {
            return Err(Error::RunFailed {
                command: cmd.to_string(),
                status,
                folder: folder.to_path_buf(),
            });
        }
    }
    out.commit()?;
    // After the pull, with its leases released: its entries are now the most recent ones.
    if let Some(c) = trim_after {
        c.make_room(0);
    }
    Ok(report)
}

/// Removes temporary folders `.NAME.tmp-PID-N` left beside FOLDER by an interrupted run (one
/// whose process no longer exists).
fn remove_stale_temps(folder: &Path) {
    let (Some(name), parent) = (folder.file_name(), folder.parent()) else {
        return;
    };
    let parent = match parent {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let prefix = format!(".{}.tmp-", name.to_string_lossy());
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(&prefix) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!("removing {} left by an interrupted run", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Copies a folder tree (a plain folder given to `ocirootfs`) with the one whole-tree copier,
/// [`safefs::tree::copy_tree`]: owners, modes, times, links, devices, xattrs and holes
/// kept, every write inside the output.
fn copy_tree(from: &Path, to: &Path) -> Result<(), Error> {
    let copy_err = |source| Error::Copy {
        from: from.into(),
        to: to.into(),
        source,
    };
    let out = safefs::tree::Tree::open(to, &safefs::tree::TreeOptions::no_symlinks())
        .map_err(|e| copy_err(std::io::Error::other(e)))?;
    safefs::tree::copy_tree(from, &out, &safefs::tree::CopyTreeOptions::default())
        .map_err(|e| copy_err(std::io::Error::other(e)))?;
    Ok(())
}

/// The manifest digest [`materialize`] would give SOURCE's image for `opts`' platform, found
/// without fetching or unpacking a layer (a registry is asked for the manifest or index only);
/// `None` for a folder.
pub fn manifest_digest(source: &str, opts: &SourceOptions) -> Result<Option<String>, Error> {
    let src = reference::parse_source(source)?;
    match &src {
        Source::Folder(_) => Ok(None),
        #[cfg(feature = "registry")]
        Source::Registry(r) => {
            let session = registry::Session::open(r, opts, false)?;
            let (bytes, digest) = session.manifest(None)?;
            let where_ = r.to_string();
            match source::parse_doc(&bytes, &format!("manifest {digest}"), &where_, None)? {
                source::Document::Manifest(_) => Ok(Some(digest)),
                source::Document::Index(index) => {
                    let want = source::host_or(&resolve_opts(opts)?.platform);
                    let d = source::select_platform(index.manifests(), &want, &where_)?;
                    reference::validate_digest(d.digest().as_ref())?;
                    Ok(Some(d.digest().to_string()))
                }
            }
        }
        _ => {
            let cache = open_cache(opts, &src)?;
            let image = source::resolve(&src, cache.as_ref(), &resolve_opts(opts)?)?;
            Ok(image.digest.clone())
        }
    }
}

/// A root filesystem for SOURCE: a folder is returned as it is (and must be treated as
/// read-only); an image is pulled and unpacked once into the cache folder under
/// `rootfs/<manifest hex>`, re-used as long as it exists. If the cache cannot be written, the
/// image is unpacked into a temporary folder removed when the [`Rootfs`] is dropped.
pub fn materialize(source: &str, opts: &SourceOptions) -> Result<Rootfs, Error> {
    let src = reference::parse_source(source)?;
    if let Source::Folder(p) = &src {
        if !p.is_dir() {
            return Err(Error::NoFolder(p.clone()));
        }
        return Ok(Rootfs {
            path: p.clone(),
            digest: None,
            platform: None,
            env: Vec::new(),
            working_dir: None,
            _guard: None,
            unpacked: false,
            lease: None,
            cache: None,
        });
    }
    let cache = open_cache(opts, &src)?;
    let mut image = source::resolve(&src, cache.as_ref(), &resolve_opts(opts)?)?;
    let made = |path: PathBuf, image: &Image, guard, lease: Option<cache::Lease>| Rootfs {
        path,
        digest: image.digest.clone(),
        platform: image.platform.clone(),
        env: image.config.env.clone(),
        working_dir: image.config.working_dir.clone(),
        _guard: guard,
        unpacked: true,
        cache: lease.as_ref().and(cache.clone()),
        lease,
    };
    if let (Some(cache), Some(digest)) = (&cache, image.digest.clone()) {
        // Leased before it is looked up, for as long as the Rootfs lives.
        let lease = cache.lease_rootfs(&digest)?;
        let target = cache.rootfs_path(&digest)?;
        // The image (and its blobs' leases) goes first, so the blobs may be evicted.
        let trimmed = |rootfs: Rootfs, image: Image| {
            drop(image);
            cache.make_room(0);
            rootfs
        };
        if target.is_dir() {
            let r = made(target, &image, None, Some(lease));
            return Ok(trimmed(r, image));
        }
        if let Some(parent) = target.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Ok(out) = AtomicOutput::dir(&target, false) {
            apply_all(&mut image, out.path())?;
            let r = match out.commit() {
                Ok(p) => made(p, &image, None, Some(lease)),
                // Another process finished the same image first: use theirs.
                Err(AtomicError::Exists(p)) => made(p, &image, None, Some(lease)),
                Err(e) => return Err(e.into()),
            };
            return Ok(trimmed(r, image));
        }
    }
    // Temp folders of runs killed before they could clean up (SIGKILL).
    safefs::cleanup::remove_stale(&std::env::temp_dir(), "ocirootfs-");
    let base = std::env::temp_dir().join(format!(
        "ocirootfs-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    // Registered before it exists, so a signal in between cannot leave it behind.
    let registration = safefs::cleanup::register(&base);
    std::fs::create_dir(&base).map_err(|source| Error::TempDir {
        path: base.clone(),
        source,
    })?;
    safefs::cleanup::created(&base);
    let guard = TempGuard(base.clone(), registration);
    apply_all(&mut image, &base)?;
    Ok(made(base, &image, Some(guard), None))
}
