//! The cache's size limit: leases, last-use stamps, the listing, and least-recently-used
//! eviction.
//!
//! Entries are blobs (`blobs/sha256/HEX`) and unpacked root filesystems (`rootfs/HEX`, made by
//! [`crate::materialize`]). Each entry has a lock file, `locks/blob-HEX` or `locks/rootfs-HEX`,
//! whose mtime is also the entry's last-use stamp, set explicitly when the entry is leased
//! (atimes are unreliable under `relatime`/`noatime`). An entry without a lock file (one
//! cached before stamps existed) counts as used when it was written.
//!
//! Two processes may share a cache. The locking, in full:
//! - A pull holds a [`Lease`] on every entry it reads or writes: a shared `flock` on the
//!   entry's lock file, taken *before* it looks the entry up and held until it has read it
//!   (for a rootfs of `materialize`, as long as the returned `Rootfs` lives).
//! - Eviction runs under `evict.lock`, taken exclusively, so two evictors do not both remove
//!   entries for the same excess. It takes each victim's lock file exclusively and
//!   *non-blocking*: an entry in use by anyone (this process included, flocks belong to open
//!   files) is skipped. Holding it, the evictor removes the entry (a rootfs is first renamed
//!   into `trash/`, and deleted after its lock is released), then unlinks the lock file.
//! - A lessee that got its lock checks that the lock file's path still names the inode it
//!   locked; if an evictor unlinked it meanwhile, it starts again with a new lock file. So a
//!   lease always protects the entry under its name.
//! - Eviction to the limit runs before a pull downloads (with room for what it will write),
//!   after it ends, and when a [`crate::Rootfs`] is dropped (its lease ended first), so a
//!   command that held an unpacked tree to the end still leaves the cache under its limit.
//!   Entries in use count, so the cache may be over its limit while commands run.
//! - Entries are written under a temporary name starting with a dot and renamed into place
//!   (`BlobWriter::finish`, `safefs::atomic` for a rootfs), so a partial entry is never
//!   visible under its final name; dot names are not entries and are never evicted (stale ones
//!   of killed processes are removed by [`super::Cache::open`]).
//!
//! Sizes are the bytes of file content (hardlinked files counted once in a rootfs).

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{FlockOperation, Mode, OFlags};

use super::{Cache, CacheError, COUNTER};
use crate::reference::validate_digest;

/// The cache limit when none is given: 10 GiB.
pub const DEFAULT_MAX: u64 = 10 << 30;

/// A size: plain bytes, or a number with a binary suffix `K`, `M`, `G` or `T` (also `KiB`,
/// `MB` and the like; every unit is a power of 1024): `300M`, `2G`, `1.5G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("{s:?} is not a size (e.g. 300M, 2G, or bytes)")),
    };
    let bad = || format!("{s:?} is not a size (e.g. 300M, 2G, or bytes)");
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1 << shift).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * (1u64 << shift) as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// A size for people: `1.5 GiB`, `300 MiB`, `12 KiB`, `7 B`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v < 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.0} {}", UNITS[u])
    }
}

/// What a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A verified blob (layer, manifest, config).
    Blob,
    /// An unpacked root filesystem, named by its manifest digest.
    Rootfs,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Blob => "blob",
            Kind::Rootfs => "rootfs",
        }
    }
}

/// One cache entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub kind: Kind,
    /// `sha256:HEX`: the blob's digest, or the manifest digest of a rootfs.
    pub digest: String,
    pub bytes: u64,
    /// When a pull last used it, in seconds since the epoch.
    pub last_used: u64,
    /// A process holds it right now (it cannot be evicted).
    pub in_use: bool,
    /// The lock file's mtime when the entry was listed (`None`: it had none).
    #[serde(skip)]
    stamp: Option<SystemTime>,
    #[serde(skip)]
    used: SystemTime,
}

impl Entry {
    fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }
}

/// The cache's entries, least recently used first (`ocirootfs cache list`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    pub dir: PathBuf,
    /// The limit the cache is kept under, in bytes.
    pub limit: u64,
    /// The bytes of every entry.
    pub total: u64,
    pub entries: Vec<Entry>,
}

/// What an eviction did (`ocirootfs cache prune`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Pruned {
    /// The limit pruned to (`None`: everything not in use).
    pub limit: Option<u64>,
    pub removed: Vec<Entry>,
    /// The bytes removed.
    pub freed: u64,
    /// Entries that would have gone but are in use by a running pull.
    pub in_use: Vec<Entry>,
    /// The bytes left in the cache.
    pub total: u64,
}

/// A shared lock on an entry: no eviction removes it while this lives.
#[derive(Debug)]
pub struct Lease {
    _file: Option<fs::File>,
}

fn lock_err(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Lock {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `path` still names the file open as `file` (an evictor may have unlinked it).
fn still_named(file: &fs::File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn flock(file: &fs::File, op: FlockOperation) -> rustix::io::Result<()> {
    loop {
        match rustix::fs::flock(file, op) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

fn open_lock(path: &Path, create: OFlags) -> rustix::io::Result<fs::File> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | create,
        Mode::from_raw_mode(0o644),
    )
    .map(fs::File::from)
}

/// Bytes of file content under a folder (not following links, hardlinks once).
fn tree_bytes(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    let mut total = 0u64;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() < 2 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}

fn is_hex64(name: &str) -> bool {
    name.len() == 64 && validate_digest(&format!("sha256:{name}")).is_ok()
}

impl Cache {
    /// The bytes of the unpacked rootfs `rootfs/HEX`: walked once, then read from
    /// `rootfs/HEX.bytes`. An entry is named by its manifest digest and never changes once in
    /// place, so the record stays true, also for an entry evicted and unpacked again; every
    /// process that scans the cache (each pull, `cache list`) then reads one small file
    /// instead of stat-ing every file of every rootfs.
    fn rootfs_bytes(&self, hex: &str, path: &Path) -> u64 {
        use std::io::Read;
        let rec = self.dir.join("rootfs").join(format!("{hex}.bytes"));
        let mut text = String::new();
        let recorded = fs::File::open(&rec)
            .and_then(|f| f.take(32).read_to_string(&mut text))
            .ok()
            .and_then(|_| text.trim().parse::<u64>().ok());
        if let Some(n) = recorded {
            return n;
        }
        let n = tree_bytes(path);
        // Written under a temporary name and renamed: a reader never sees half a number.
        // (`.HEX.bytes.tmp-PID-N`: one a killed process leaves is removed as stale.)
        let tmp = self.dir.join("rootfs").join(format!(
            ".{hex}.bytes.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if fs::write(&tmp, format!("{n}\n")).is_ok() && fs::rename(&tmp, &rec).is_err() {
            let _ = fs::remove_file(&tmp);
        }
        n
    }

    fn lock_path(&self, kind: Kind, hex: &str) -> PathBuf {
        self.dir
            .join("locks")
            .join(format!("{}-{hex}", kind.word()))
    }

    /// Leases a blob for this pull (see the module docs): call before looking it up.
    pub fn lease_blob(&self, digest: &str) -> Result<Lease, CacheError> {
        let hex = validate_digest(digest)?;
        self.lease(Kind::Blob, hex)
    }

    /// Leases the unpacked rootfs of a manifest.
    pub fn lease_rootfs(&self, manifest_digest: &str) -> Result<Lease, CacheError> {
        let hex = validate_digest(manifest_digest)?;
        self.lease(Kind::Rootfs, hex)
    }

    fn lease(&self, kind: Kind, hex: &str) -> Result<Lease, CacheError> {
        let path = self.lock_path(kind, hex);
        loop {
            let file = match open_lock(&path, OFlags::CREATE) {
                Ok(f) => f,
                // A cache this user may read but not write (or without `locks/`, which any
                // evictor creates): nothing to stamp.
                Err(
                    e @ (rustix::io::Errno::ACCESS
                    | rustix::io::Errno::PERM
                    | rustix::io::Errno::ROFS
                    | rustix::io::Errno::NOENT),
                ) => {
                    tracing::debug!("no lease on {}: {e}", path.display());
                    return Ok(Lease { _file: None });
                }
                Err(e) => return Err(lock_err(&path)(e.into())),
            };
            // Blocks only while an evictor holds it, to remove the entry.
            flock(&file, FlockOperation::LockShared).map_err(|e| lock_err(&path)(e.into()))?;
            if still_named(&file, &path) {
                // The last-use stamp; a lock file of another user cannot be stamped, which
                // only makes the entry look older.
                let _ = file.set_modified(SystemTime::now());
                return Ok(Lease { _file: Some(file) });
            }
        }
    }

    /// The cache's entries (and the names of lock files without one), least recently used
    /// first. `probe` tells entries in use (by taking their lock a moment).
    fn scan(&self, probe: bool) -> (Vec<Entry>, Vec<PathBuf>) {
        let mut entries = Vec::new();
        for (kind, sub) in [(Kind::Blob, "blobs/sha256"), (Kind::Rootfs, "rootfs")] {
            let Ok(rd) = fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_hex64(&name) {
                    continue;
                }
                let Ok(m) = e.path().symlink_metadata() else {
                    continue;
                };
                let bytes = match kind {
                    Kind::Blob if m.is_file() => m.len(),
                    Kind::Blob => 0,
                    Kind::Rootfs if m.is_dir() => self.rootfs_bytes(&name, &e.path()),
                    Kind::Rootfs => continue,
                };
                let lock = self.lock_path(kind, &name);
                let stamp = lock.symlink_metadata().and_then(|l| l.modified()).ok();
                let used = stamp.or_else(|| m.modified().ok()).unwrap_or(UNIX_EPOCH);
                let in_use = probe
                    && open_lock(&lock, OFlags::empty()).is_ok_and(|f| {
                        flock(&f, FlockOperation::NonBlockingLockExclusive).is_err()
                    });
                entries.push(Entry {
                    kind,
                    digest: format!("sha256:{name}"),
                    bytes,
                    last_used: used
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    in_use,
                    stamp,
                    used,
                });
            }
        }
        entries.sort_by(|a, b| a.used.cmp(&b.used).then(a.digest.cmp(&b.digest)));
        let mut orphans = Vec::new();
        if let Ok(rd) = fs::read_dir(self.dir.join("locks")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((kind, hex)) = name.split_once('-') else {
                    continue;
                };
                let kind = match kind {
                    "blob" => Kind::Blob,
                    "rootfs" => Kind::Rootfs,
                    _ => continue,
                };
                if is_hex64(hex) && !self.entry_path(kind, hex).exists() {
                    orphans.push(e.path());
                }
            }
        }
        (entries, orphans)
    }

    fn entry_path(&self, kind: Kind, hex: &str) -> PathBuf {
        match kind {
            Kind::Blob => self.dir.join("blobs/sha256").join(hex),
            Kind::Rootfs => self.dir.join("rootfs").join(hex),
        }
    }

    /// Every entry, least recently used first, with the total and the limit.
    pub fn list(&self) -> Listing {
        let (entries, _) = self.scan(true);
        Listing {
            dir: self.dir.clone(),
            limit: self.max,
            total: entries.iter().map(|e| e.bytes).sum(),
            entries,
        }
    }

    /// Evicts the entries used least recently, skipping those in use, until the cache holds
    /// at most `limit - room` bytes (`None`: every entry not in use). Lock files left without
    /// an entry go too.
    pub fn prune(&self, limit: Option<u64>, room: u64) -> Result<Pruned, CacheError> {
        let _ = fs::create_dir_all(self.dir.join("locks"));
        let guard_path = self.dir.join("evict.lock");
        let guard =
            open_lock(&guard_path, OFlags::CREATE).map_err(|e| lock_err(&guard_path)(e.into()))?;
        flock(&guard, FlockOperation::LockExclusive)
            .map_err(|e| lock_err(&guard_path)(e.into()))?;
        let (entries, orphans) = self.scan(false);
        for o in orphans {
            self.remove_orphan_lock(&o);
        }
        let mut out = Pruned {
            limit,
            total: entries.iter().map(|e| e.bytes).sum(),
            ..Default::default()
        };
        let mut trash = Vec::new();
        for e in entries {
            if limit.is_some_and(|l| out.total.saturating_add(room) <= l) {
                break;
            }
            if self.try_remove(&e, &mut trash) {
                out.total -= e.bytes;
                out.freed += e.bytes;
                out.removed.push(e);
            } else {
                out.in_use.push(Entry { in_use: true, ..e });
            }
        }
        drop(guard);
        for t in trash {
            if let Err(e) = fs::remove_dir_all(&t) {
                tracing::warn!("cannot remove the evicted rootfs {}: {e}", t.display());
            }
        }
        Ok(out)
    }

    /// Evicts to the cache's limit, with `room` bytes to spare for what a pull is about to
    /// write. Errors are logged: a pull does not fail over housekeeping.
    pub fn make_room(&self, room: u64) {
        match self.prune(Some(self.max), room) {
            Ok(p) => self.log_pruned(&p),
            Err(e) => tracing::warn!("cannot keep the cache under its limit: {e}"),
        }
    }

    fn log_pruned(&self, p: &Pruned) {
        if !p.removed.is_empty() {
            tracing::info!(
                "cache {}: removed {} entries ({}) not used recently, to stay under {}",
                self.dir.display(),
                p.removed.len(),
                human_size(p.freed),
                human_size(self.max)
            );
        }
    }

    /// [`Cache::make_room`] once this process has let go of the rootfs `digest`: when that
    /// rootfs would go but is still held, tries again for a moment (up to 250 ms). A child
    /// that another thread of this process forks holds a copy of the lease's descriptor, and
    /// so its lock, until it runs its program; a rootfs held by another process stays.
    pub fn make_room_after_release(&self, digest: &str) {
        for _ in 0..25 {
            match self.prune(Some(self.max), 0) {
                Ok(p)
                    if p.in_use
                        .iter()
                        .any(|e| e.kind == Kind::Rootfs && e.digest == digest) =>
                {
                    self.log_pruned(&p);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(p) => return self.log_pruned(&p),
                Err(e) => {
                    tracing::warn!("cannot keep the cache under its limit: {e}");
                    return;
                }
            }
        }
    }

    /// Removes one entry if nobody holds it and nobody used it since it was listed.
    fn try_remove(&self, e: &Entry, trash: &mut Vec<PathBuf>) -> bool {
        let lock = self.lock_path(e.kind, e.hex());
        let file = match e.stamp {
            // It had a lock file: it must be the same, unchanged.
            Some(_) => open_lock(&lock, OFlags::empty()),
            // It had none: one appearing since means a lessee.
            None => open_lock(&lock, OFlags::CREATE | OFlags::EXCL),
        };
        let Ok(file) = file else { return false };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err()
            || !still_named(&file, &lock)
        {
            return false;
        }
        if e.stamp.is_some() && file.metadata().and_then(|m| m.modified()).ok() != e.stamp {
            return false;
        }
        let path = self.entry_path(e.kind, e.hex());
        let removed = match e.kind {
            Kind::Blob => fs::remove_file(&path),
            Kind::Rootfs => {
                let t = self.dir.join("trash").join(format!(
                    "evict-{}-{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed)
                ));
                let r =
                    fs::create_dir_all(self.dir.join("trash")).and_then(|()| fs::rename(&path, &t));
                if r.is_ok() {
                    trash.push(t);
                    let _ =
                        fs::remove_file(self.dir.join("rootfs").join(format!("{}.bytes", e.hex())));
                }
                r
            }
        };
        match removed {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!("cannot evict {} from the cache: {err}", path.display());
                return false;
            }
        }
        let _ = fs::remove_file(&lock);
        true
    }

    fn remove_orphan_lock(&self, lock: &Path) {
        let Ok(file) = open_lock(lock, OFlags::empty()) else {
            return;
        };
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok()
            && still_named(&file, lock)
        {
            let name = lock.file_name().unwrap_or_default().to_string_lossy();
            let gone = name.split_once('-').is_some_and(|(k, hex)| {
                let kind = if k == "rootfs" {
                    Kind::Rootfs
                } else {
                    Kind::Blob
                };
                !self.entry_path(kind, hex).exists()
            });
            if gone {
                let _ = fs::remove_file(lock);
            }
        }
    }
}

/// `2026-12-07 12:20` (UTC) for a time in seconds since the epoch.
pub fn utc_minutes(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn digest_of(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("123"), Ok(123));
        assert_eq!(parse_size("300M"), Ok(300 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "M", "12X", "-1", "1e3", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(human_size(7), "7 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(300 << 20), "300 MiB");
        assert_eq!(utc_minutes(0), "1970-01-01 00:00");
        assert_eq!(utc_minutes(1_796_648_400), "2026-12-07 13:00");
        assert_eq!(utc_minutes(1_709_251_140), "2024-02-29 23:59");
    }

    #[test]
    fn leased_entries_survive_and_the_oldest_go_first() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = Cache::open(tmp.path()).unwrap().with_max(10);
        let blobs: Vec<Vec<u8>> = (0..3).map(|i| vec![b'a' + i; 6]).collect();
        let digests: Vec<String> = blobs.iter().map(|b| digest_of(b)).collect();
        for (b, d) in blobs.iter().zip(&digests) {
            drop(cache.lease_blob(d).unwrap());
            cache.put(d, b).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let l = cache.list();
        assert_eq!(l.total, 18);
        let order: Vec<&str> = l.entries.iter().map(|e| e.digest.as_str()).collect();
        assert_eq!(
            order,
            digests.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(l.entries.iter().all(|e| !e.in_use));

        // Over the limit: the oldest goes.
        let p = cache.prune(Some(12), 0).unwrap();
        assert_eq!(p.removed.len(), 1, "{p:?}");
        assert_eq!(p.removed[0].digest, digests[0]);
        assert_eq!((p.freed, p.total), (6, 12));
        assert!(cache.get(&digests[0], None).unwrap().is_none());
        // An entry in use stays, also under a limit of 0; a lease is a use.
        let held = cache.lease_blob(&digests[1]).unwrap();
        assert!(cache.list().entries.iter().any(|e| e.in_use));
        assert_eq!(cache.list().entries.last().unwrap().digest, digests[1]);
        let p = cache.prune(Some(0), 0).unwrap();
        assert_eq!(p.removed.len(), 1, "{p:?}");
        assert_eq!(p.removed[0].digest, digests[2]);
        assert_eq!(p.in_use.len(), 1);
        assert_eq!(p.total, 6);
        assert!(cache.get(&digests[1], None).unwrap().is_some());
        drop(held);
        // Everything not in use, and lock files without an entry.
        cache.prune(None, 0).unwrap();
        assert_eq!(cache.list().entries.len(), 0);
        assert_eq!(fs::read_dir(tmp.path().join("locks")).unwrap().count(), 0);
    }
}
