//! Temporary paths that must not outlive an interrupted run.
//!
//! - [`install`] (called first thing by every binary's `main`): a thread waits for SIGINT,
//!   SIGTERM or SIGHUP (signal-hook's iterator: the handler only wakes the thread), removes every
//!   [registered](register) path and exits with 128 + the signal number (130, 143, 129).
//! - [`wait_if_stopping`]: called by `main` before it reports an error: while the signal
//!   thread removes the temp paths, the work in progress fails on them; that failure is not
//!   reported and the exit status stays the signal's.
//! - [`register`]: a temp file or folder being built ([`crate::atomic::AtomicOutput`], merge
//!   workspaces, ocirootfs's temp folders); dropping the [`Registration`] forgets it.
//! - [`remove_stale`]: what a signal handler cannot clean (SIGKILL, power loss) a later run
//!   does: temp names carry the pid of the process that made them (`PREFIX<pid>-...`), and an
//!   entry is stale when that process is gone, or when the pid now belongs to a process that
//!   started after the entry was last changed (pid reuse).
//! - [`remove_tree`]: removal without following symlinks and without descending into anything
//!   mounted below the path (a merge workspace is a mount point in its private namespace).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static REGISTRY: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
/// The signal being handled, 0 while none.
static STOPPING: AtomicI32 = AtomicI32::new(0);

fn registry() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts the signal thread (once per process; later calls return the first result). `tool`
/// names the program in the message printed when a signal stops it.
pub fn install(tool: &'static str) -> io::Result<()> {
    let r = INSTALLED.get_or_init(|| {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| e.to_string())?;
        std::thread::Builder::new()
            .name("cleanup".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    STOPPING.store(sig, Ordering::SeqCst);
                    let left = remove_registered();
                    for (p, e) in &left {
                        eprintln!("{tool}: cannot remove {}: {e}", p.display());
                    }
                    eprintln!("{tool}: stopped by signal {sig}; temporary files removed");
                    std::process::exit(128 + sig);
                }
            })
            .map(drop)
            .map_err(|e| e.to_string())
    });
    r.clone().map_err(io::Error::other)
}

/// Whether a signal is stopping the process (the signal thread is removing the temp paths).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst) != 0
}

/// Never returns while a signal is stopping the process: the signal thread ends it with
/// 128 + N once the temp paths are gone. Returns at once otherwise.
pub fn wait_if_stopping() {
    while stopping() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes every registered path now; returns those that could not be removed.
fn remove_registered() -> Vec<(PathBuf, io::Error)> {
    let paths: Vec<PathBuf> = std::mem::take(&mut *registry()).into_values().collect();
    remove_all(paths)
}

/// Removes `paths`, the last registered first; returns those that could not be removed.
fn remove_all(paths: Vec<PathBuf>) -> Vec<(PathBuf, io::Error)> {
    let mut left = Vec::new();
    for p in paths.into_iter().rev() {
        // Another thread may still be writing into a folder until it sees `stopping()`: a
        // few tries, a second at most.
        let mut last = None;
        for _ in 0..50 {
            match remove_tree(&p) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(e) = last {
            left.push((p, e));
        }
    }
    left
}

/// A registered temp path; dropping it forgets the path (it does not remove it).
#[derive(Debug)]
#[must_use = "the path is forgotten when the registration is dropped"]
pub struct Registration(u64);

/// Registers `path` to be removed when a signal stops the process. Relative paths are made
/// absolute now (another thread may change directory later).
pub fn register(path: &Path) -> Registration {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry().insert(id, abs);
    Registration(id)
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().remove(&self.0);
    }
}

/// Called right after creating a [registered](register) path. A signal may have come between
/// registering and creating it, and the signal thread may already have removed the registered
/// paths, this one not there yet: then it is removed here and the call never returns (the
/// signal thread ends the process). Returns at once otherwise.
pub fn created(path: &Path) {
    if stopping() {
        let _ = remove_tree(path);
        wait_if_stopping();
    }
}

/// The paths registered now (for tests and diagnostics).
pub fn registered() -> Vec<PathBuf> {
    registry().values().cloned().collect()
}

/// Decodes the octal escapes (`\040` for a blank) of a /proc mountinfo field.
fn unescape_mountinfo(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Mount points at or below `dir` in the calling thread's mount namespace.
fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/thread-self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|m| m.starts_with(dir))
        .collect()
}

/// Removes a file, a symlink (not what it points to) or a folder tree. A folder with anything
/// mounted at or below it is left alone (an error): removing through a mount would delete
/// what is mounted there.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    let real = fs::canonicalize(path)?;
    let mounted = mounts_below(&real);
    if !mounted.is_empty() {
        return Err(io::Error::other(format!(
            "{} is mounted below it; unmount it first",
            mounted[0].display()
        )));
    }
    // std's remove_dir_all never follows symlinks (it opens each level with O_NOFOLLOW).
    fs::remove_dir_all(path)
}

/// The pid in a temp name `PREFIX<pid>-...`.
pub fn temp_pid(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let (pid, tail) = rest.split_once('-')?;
    if tail.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// When process `pid` started, from `/proc/PID/stat` and the boot time in `/proc/stat`;
/// `None` when it does not exist (or cannot be read).
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold blanks and parentheses): state is field 3,
    // starttime field 22, in clock ticks since boot.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // /proc reports clock ticks in USER_HZ, 100 on every Linux architecture.
    const USER_HZ: u64 = 100;
    Some(UNIX_EPOCH + Duration::from_secs(btime) + Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// Whether the entry `meta` named for process `pid` is stale: that process is gone, or the pid
/// belongs to a process started after the entry was last changed.
fn is_stale(pid: u32, meta: &fs::Metadata) -> bool {
    if pid == std::process::id() {
        return false;
    }
    match process_start(pid) {
        None => !Path::new(&format!("/proc/{pid}")).exists(),
        Some(started) => {
            let changed = UNIX_EPOCH + Duration::new(meta.ctime().max(0) as u64, 0);
            // A second of slack: btime and starttime are coarse.
            started > changed + Duration::from_secs(1)
        }
    }
}

/// Removes the entries of `dir` named `PREFIX<pid>-...` left by processes that are gone (see
/// the module docs); returns the paths removed. Errors are skipped: this is housekeeping.
pub fn remove_stale(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_pid(n, prefix)) else {
            continue;
        };
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if is_stale(pid, &meta) && remove_tree(&e.path()).is_ok() {
            tracing::info!("removed {}, left by an interrupted run", e.path().display());
            removed.push(e.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names() {
        let p = ".a.raw.tmp-";
        assert_eq!(temp_pid(".a.raw.tmp-123-0", p), Some(123));
        assert_eq!(temp_pid(".a.raw.tmp-123-", p), None);
        assert_eq!(temp_pid(".a.raw.tmp-x-1", p), None);
        assert_eq!(temp_pid(".a.raw.tmp--1", p), None);
        assert_eq!(temp_pid(".b.raw.tmp-123-0", p), None);
        assert_eq!(temp_pid("a.raw", p), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(
            unescape_mountinfo(r"/tmp/a\040b\134c"),
            PathBuf::from("/tmp/a b\\c")
        );
        assert_eq!(unescape_mountinfo(r"/x\04"), PathBuf::from(r"/x\04"));
    }

    #[test]
    fn own_process_start_is_before_now() {
        let started = process_start(std::process::id()).unwrap();
        assert!(started <= SystemTime::now() + Duration::from_secs(1));
        assert!(started > SystemTime::now() - Duration::from_secs(24 * 3600 * 365));
        assert_eq!(process_start(u32::MAX), None);
    }

    #[test]
    fn stale_entries_of_dead_processes_go_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        // A process that is gone: a child that has exited and been reaped.
        let gone = {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            let id = c.id();
            c.wait().unwrap();
            id
        };
        let own = std::process::id();
        let names = [
            format!(".out.tmp-{gone}-0"),
            format!(".out.tmp-{own}-1"),
            format!(".other.tmp-{gone}-0"),
            "out".to_string(),
        ];
        for n in &names {
            fs::create_dir(d.path().join(n)).unwrap();
            fs::write(d.path().join(n).join("f"), "x").unwrap();
        }
        // A link inside a stale folder is removed, not followed.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), "k").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join(&names[0]).join("link")).unwrap();
        let removed = remove_stale(d.path(), ".out.tmp-");
        assert_eq!(removed, [d.path().join(&names[0])]);
        for n in &names[1..] {
            assert!(d.path().join(n).join("f").exists(), "{n}");
        }
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn registered_paths_are_removed_once_and_forgotten_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        fs::create_dir(&a).unwrap();
        fs::write(a.join("f"), "x").unwrap();
        fs::write(&b, "x").unwrap();
        let ra = register(&a);
        let rb = register(&b);
        drop(rb);
        assert!(registered().contains(&a));
        assert!(!registered().contains(&b));
        // What the signal thread does (without the exit), on this test's paths only.
        let mine: Vec<PathBuf> = registered()
            .into_iter()
            .filter(|p| p.starts_with(d.path()))
            .collect();
        assert_eq!(mine, std::slice::from_ref(&a));
        let left = remove_all(mine);
        assert!(left.is_empty(), "{left:?}");
        assert!(!a.exists());
        assert!(b.exists(), "an unregistered path stays");
        drop(ra);
    }
}
