//! The content-addressed blob cache: `DIR/blobs/sha256/<hex>`, each blob verified against its
//! digest (and its declared size) while it streams in, written under a temporary name and renamed
//! into place, so the cache never holds a partial or corrupt blob. Unpacked root filesystems for
//! [`crate::materialize`] live beside it in `DIR/rootfs/<manifest hex>`. The cache is kept
//! under a size limit, least recently used entries evicted first, safely while other processes
//! use it: see [`limit`].

mod limit;

pub use limit::{
    human_size, parse_size, utc_minutes, Entry, Kind, Lease, Listing, Pruned, DEFAULT_MAX,
};

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::reference::validate_digest;

/// Errors from the blob cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot create the cache folder {}; pass --cache DIR to use another one", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write blob {digest} to the cache at {}", path.display())]
    Write {
        digest: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} does not match its digest (got sha256:{actual}); it was not cached")]
    Mismatch { digest: String, actual: String },
    #[error("blob {digest} is larger than the {expected} bytes its descriptor declares; it was not cached")]
    TooLarge { digest: String, expected: u64 },
    #[error(
        "blob {digest} has {actual} bytes, its descriptor declares {expected}; it was not cached"
    )]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("cannot lock {} in the cache", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Digest(#[from] crate::reference::ReferenceError),
}

/// A cache folder.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    /// The size limit, in bytes.
    max: u64,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The default cache folder: `$XDG_CACHE_HOME/ocirootfs`, `~/.cache/ocirootfs`, or
/// `/var/cache/ocirootfs` when there is no home.
pub fn default_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("ocirootfs");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(h).join(".cache/ocirootfs");
    }
    PathBuf::from("/var/cache/ocirootfs")
}

/// Removes `.HEX.partial-PID-N` files whose writing process is gone (a killed pull).
fn remove_dead_partials(blobs: &Path) {
    let Ok(rd) = fs::read_dir(blobs) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, rest)) = name.split_once(".partial-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

impl Cache {
    /// Opens (creating) a cache folder, with the limit [`DEFAULT_MAX`].
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|source| CacheError::Create {
            path: blobs.clone(),
            source,
        })?;
        // Not needed to read a cache someone else keeps (see `limit`'s leases).
        let _ = fs::create_dir_all(dir.join("locks"));
        remove_dead_partials(&blobs);
        // Rootfs folders an evictor was deleting when it was killed, and those a killed
        // `materialize` was unpacking (`.HEX.tmp-PID-N`, see `safefs::atomic`).
        safefs::cleanup::remove_stale(&dir.join("trash"), "evict-");
        let rootfs = dir.join("rootfs");
        if let Ok(rd) = fs::read_dir(&rootfs) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(i) = name.find(".tmp-").filter(|_| name.starts_with('.')) {
                    safefs::cleanup::remove_stale(&rootfs, &name[..i + 5]);
                }
            }
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            max: DEFAULT_MAX,
        })
    }

    /// The same cache with another size limit, in bytes.
    pub fn with_max(mut self, max: u64) -> Cache {
        self.max = max;
        self
    }

    /// The size limit, in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, CacheError> {
        let hex = validate_digest(digest)?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// The blob's path if it is cached (a regular file, not a link) with the expected size.
    /// Its content is verified by the reader (layers are hashed while they are unpacked; small
    /// blobs go through [`Cache::read_verified`]).
    pub fn get(&self, digest: &str, size: Option<u64>) -> Result<Option<PathBuf>, CacheError> {
        let p = self.blob_path(digest)?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && size.is_none_or(|s| s == m.len()) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// A small cached blob (a manifest or config of at most `limit` bytes, `size` when the
    /// descriptor declares one), read and hashed again. A damaged, oversized or non-regular
    /// entry is evicted and `None` returned, so the caller fetches the blob again.
    pub fn read_verified(
        &self,
        digest: &str,
        size: Option<u64>,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, CacheError> {
        use rustix::fs::{FileType, Mode, OFlags};
        use std::io::Read;
        let p = self.blob_path(digest)?;
        let fd = match rustix::fs::open(
            &p,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => {
                tracing::warn!(
                    "cannot open cached blob {}: {e}; fetching it again",
                    p.display()
                );
                self.evict(digest);
                return Ok(None);
            }
        };
        let damaged = |why: String| {
            tracing::warn!("cached blob {digest} is damaged ({why}); removed, fetching it again");
            self.evict(digest);
            Ok(None)
        };
        let st = match rustix::fs::fstat(&fd) {
            Ok(st) => st,
            Err(e) => return damaged(e.to_string()),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return damaged("not a regular file".into());
        }
        let len = st.st_size as u64;
        if len > limit || size.is_some_and(|s| s != len) {
            return damaged(format!("{len} bytes"));
        }
        let mut bytes = Vec::with_capacity(len as usize);
        if let Err(e) = fs::File::from(fd).take(limit + 1).read_to_end(&mut bytes) {
            return damaged(e.to_string());
        }
        if bytes.len() as u64 > limit {
            return damaged(format!("over {limit} bytes"));
        }
        let actual = hex::encode(Sha256::digest(&bytes));
        if Some(actual.as_str()) != digest.strip_prefix("sha256:") {
            return damaged(format!("its content hashes to sha256:{actual}"));
        }
        Ok(Some(bytes))
    }

    /// Starts writing a blob; feed it with [`BlobWriter::write_chunk`], then
    /// [`BlobWriter::finish`].
    pub fn writer(&self, digest: &str, size: Option<u64>) -> Result<BlobWriter, CacheError> {
        let path = self.blob_path(digest)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_file_name(format!(
            ".{}.partial-{}-{n}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let file = fs::File::create(&tmp).map_err(|source| CacheError::Write {
            digest: digest.to_string(),
            path: tmp.clone(),
            source,
        })?;
        Ok(BlobWriter {
            digest: digest.to_string(),
            size,
            path,
            tmp,
            file: Some(io::BufWriter::with_capacity(1 << 20, file)),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Stores a small blob already in memory (manifests, configs).
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, CacheError> {
        let mut w = self.writer(digest, Some(bytes.len() as u64))?;
        w.write_chunk(bytes)?;
        w.finish()
    }

    /// Removes a cached blob found damaged, so the next run fetches it again.
    pub fn evict(&self, digest: &str) {
        if let Ok(p) = self.blob_path(digest) {
            let _ = fs::remove_file(p);
        }
    }

    /// Where the unpacked root filesystem of a manifest is kept.
    pub fn rootfs_path(&self, manifest_digest: &str) -> Result<PathBuf, CacheError> {
        let hex = validate_digest(manifest_digest)?;
        Ok(self.dir.join("rootfs").join(hex))
    }
}

/// A blob being written into the cache; dropped without `finish`, the partial file goes away.
pub struct BlobWriter {
    digest: String,
    size: Option<u64>,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<io::BufWriter<fs::File>>,
    hasher: Sha256,
    written: u64,
}

impl BlobWriter {
    /// Appends bytes, refusing more than the declared size.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), CacheError> {
        self.written += chunk.len() as u64;
        if let Some(s) = self.size {
            if self.written > s {
                return Err(CacheError::TooLarge {
                    digest: self.digest.clone(),
                    expected: s,
                });
            }
        }
        self.hasher.update(chunk);
        let file = self.file.as_mut().expect("writer used after finish");
        file.write_all(chunk).map_err(|source| CacheError::Write {
            digest: self.digest.clone(),
            path: self.tmp.clone(),
            source,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, then renames the blob into place.
    pub fn finish(mut self) -> Result<PathBuf, CacheError> {
        if let Some(s) = self.size {
            if self.written != s {
                return Err(CacheError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected: s,
                    actual: self.written,
                });
            }
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if Some(actual.as_str()) != self.digest.strip_prefix("sha256:") {
            return Err(CacheError::Mismatch {
                digest: self.digest.clone(),
                actual,
            });
        }
        let wr = |source| CacheError::Write {
            digest: self.digest.clone(),
            path: self.tmp.clone(),
            source,
        };
        let file = self.file.take().expect("finish called once");
        let file = file.into_inner().map_err(|e| wr(e.into_error()))?;
        // No fsync: a blob damaged by a crash is caught when it is read (every layer is hashed
        // again while it is unpacked) and evicted, see `Cache::evict`.
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(wr)?;
        Ok(self.path.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.is_some() || fs::symlink_metadata(&self.tmp).is_ok() {
            self.file = None;
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    #[test]
    fn stores_verified_blobs_only() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path()).unwrap();
        let d = digest_of(b"hello");
        assert!(cache.get(&d, Some(5)).unwrap().is_none());
        let p = cache.put(&d, b"hello").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(cache.get(&d, Some(5)).unwrap(), Some(p));

        let other = digest_of(b"other");
        assert!(matches!(
            cache.put(&other, b"wrong"),
            Err(CacheError::Mismatch { .. })
        ));
        assert!(cache.get(&other, None).unwrap().is_none());
        let mut w = cache.writer(&other, Some(3)).unwrap();
        assert!(matches!(
            w.write_chunk(b"other"),
            Err(CacheError::TooLarge { .. })
        ));
        drop(w);
        // Nothing but the one good blob is left, no partial files.
        let names: Vec<_> = fs::read_dir(tmp.path().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert_eq!(names.len(), 1);
        assert!(cache.blob_path("sha256:../../etc").is_err());
        // A partial file of a dead process goes away when the cache is opened again, and so
        // do the rootfs folders it was unpacking or evicting; a live one's stays.
        let dead = tmp.path().join("blobs/sha256/.abc.partial-4194304999-0");
        fs::write(&dead, b"x").unwrap();
        let unpacking = tmp.path().join("rootfs/.abc.tmp-4194304999-0");
        let evicting = tmp.path().join("trash/evict-4194304999-0");
        let live = tmp
            .path()
            .join(format!("rootfs/.abc.tmp-{}-0", std::process::id()));
        for d in [&unpacking, &evicting, &live] {
            fs::create_dir_all(d.join("usr")).unwrap();
        }
        Cache::open(tmp.path()).unwrap();
        assert!(!dead.exists() && !unpacking.exists() && !evicting.exists());
        assert!(live.exists());
    }

    #[test]
    fn small_blobs_are_hashed_again_and_damaged_ones_evicted() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path()).unwrap();
        let d = digest_of(b"{\"a\":1}");
        assert_eq!(cache.read_verified(&d, None, 100).unwrap(), None);
        let p = cache.put(&d, b"{\"a\":1}").unwrap();
        assert_eq!(
            cache.read_verified(&d, Some(7), 100).unwrap().as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        // A declared size or limit the entry does not fit: evicted.
        assert_eq!(cache.read_verified(&d, Some(8), 100).unwrap(), None);
        assert!(!p.exists());
        cache.put(&d, b"{\"a\":1}").unwrap();
        assert_eq!(cache.read_verified(&d, None, 6).unwrap(), None);
        assert!(!p.exists());
        // Damaged content of the right size: evicted.
        fs::write(&p, b"{\"a\":2}").unwrap();
        assert_eq!(cache.read_verified(&d, Some(7), 100).unwrap(), None);
        assert!(!p.exists());
        // A link planted in the cache is not followed, a FIFO does not block.
        std::os::unix::fs::symlink("/dev/zero", &p).unwrap();
        assert_eq!(cache.read_verified(&d, None, 100).unwrap(), None);
        assert!(cache.get(&d, None).unwrap().is_none());
        assert!(fs::symlink_metadata(&p).is_err());
        testkit::mkfifo(&p);
        assert_eq!(cache.read_verified(&d, None, 100).unwrap(), None);
        assert!(fs::symlink_metadata(&p).is_err());
    }
}
