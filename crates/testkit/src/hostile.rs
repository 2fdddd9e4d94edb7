//! Support for the hostile-input suite (`tests/tests/hostile_*.rs`): run a command on crafted
//! input and assert the safe outcome, not an error text.
//!
//! - [`run_bounded`]: runs a command with a time limit and measures its own peak RSS (from
//!   `wait4`'s rusage of that child, not of every child of the test process).
//! - [`Sentinel`]: a folder outside every output that no command may touch; crafted inputs
//!   point their links and `..` paths at it.
//! - [`assert_no_privilege`]: no setuid/setgid bit and no `security.capability` xattr in a tree.
//! - [`leftovers`]: entries of a folder besides the expected ones (temp folders, partial
//!   outputs).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a bounded run gave.
#[derive(Debug)]
pub struct Bounded {
    /// Exit code, `None` when killed by a signal (also when the time limit killed it).
    pub code: Option<i32>,
    /// The signal that ended the process, if any.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Peak resident set size of the child, in KiB (`ru_maxrss`).
    pub max_rss_kib: u64,
    pub elapsed: Duration,
    /// The time limit was reached and the child was killed.
    pub timed_out: bool,
}

impl Bounded {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics unless the run ended by itself within its time limit, without a signal (no
    /// panic-abort, no stack overflow, no OOM kill), and stayed under `max_rss_mib`.
    pub fn assert_bounded(&self, what: &str, max_rss_mib: u64) {
        assert!(
            !self.timed_out,
            "{what}: still running after {:?}; stderr:\n{}",
            self.elapsed,
            self.stderr_text()
        );
        assert!(
            self.signal.is_none(),
            "{what}: killed by signal {:?} (crash or abort); stderr:\n{}",
            self.signal,
            self.stderr_text()
        );
        assert!(
            self.max_rss_kib <= max_rss_mib * 1024,
            "{what}: peak RSS {} MiB over the bound of {max_rss_mib} MiB",
            self.max_rss_kib / 1024
        );
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) and kills it when `limit` passes.
// The child is reaped by our own wait4 (for its rusage), never by `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Bounded {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let (status, usage) = loop {
        if let Some(done) = wait4(pid, libc::WNOHANG) {
            break done;
        }
        if start.elapsed() > limit && !timed_out {
            timed_out = true;
            let _ = child.kill();
            // Reap below (blocking), so the rusage is still this child's.
            break wait4(pid, 0).expect("wait4 after kill");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    Bounded {
        code,
        signal,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        max_rss_kib: usage.ru_maxrss.max(0) as u64,
        elapsed,
        timed_out,
    }
}

/// `wait4(pid, options)`: `Some((status, rusage))` once the child has ended.
#[allow(unsafe_code)]
fn wait4(pid: libc::pid_t, options: libc::c_int) -> Option<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right types; `pid` is our
        // own child, which std::process::Child has not reaped (we never call its wait).
        let r = unsafe { libc::wait4(pid, &mut status, options, &mut usage) };
        match r {
            0 => return None,
            r if r == pid => return Some((status, usage)),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                panic!("wait4({pid}): {e}");
            }
        }
    }
}

/// A folder that crafted inputs aim at: links planted in an input point here, `..` paths climb
/// to it. It starts with one file, `canary`, and must stay exactly so.
pub struct Sentinel {
    dir: tempfile_lite::Dir,
}

impl Sentinel {
    /// A new sentinel folder under the system temp folder (outside every test output).
    pub fn new() -> Sentinel {
        let dir = tempfile_lite::Dir::new("sysext-sentinel");
        std::fs::write(dir.path().join("canary"), b"canary\n").unwrap();
        Sentinel { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Panics when anything in the sentinel changed: a new entry, or the canary's bytes or mode.
    pub fn assert_untouched(&self, what: &str) {
        let mut names: Vec<_> = std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("canary")],
            "{what}: something was written into the sentinel folder {}",
            self.path().display()
        );
        let canary = self.path().join("canary");
        let meta = std::fs::symlink_metadata(&canary).unwrap();
        assert!(meta.is_file(), "{what}: the canary was replaced");
        assert_eq!(
            std::fs::read(&canary).unwrap(),
            b"canary\n",
            "{what}: the canary was overwritten"
        );
    }
}

impl Default for Sentinel {
    fn default() -> Self {
        Sentinel::new()
    }
}

/// Paths under `root` (not following links) that carry a setuid or setgid bit or a
/// `security.capability` xattr.
pub fn privileged_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for p in crate::tree_paths(root) {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.file_type().is_symlink() {
            continue;
        }
        let special = meta.mode() & 0o6000 != 0;
        if special || has_capability_xattr(&p) {
            found.push(p);
        }
    }
    found
}

/// Panics when [`privileged_files`] finds anything under `root`.
pub fn assert_no_privilege(root: &Path, what: &str) {
    let found = privileged_files(root);
    assert!(
        found.is_empty(),
        "{what}: privileged files in the output: {found:?}"
    );
}

fn has_capability_xattr(p: &Path) -> bool {
    let mut buf = [0u8; 64];
    rustix::fs::lgetxattr(p, "security.capability", &mut buf[..]).is_ok()
}

/// Names in `dir` other than `expected` (temp folders, partial outputs left behind).
pub fn leftovers(dir: &Path, expected: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

/// A temp folder removed on drop, without a dependency on the `tempfile` crate.
mod tempfile_lite {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> Dir {
            let base = std::env::temp_dir();
            for n in 0u32.. {
                let p = base.join(format!("{prefix}-{}-{n}", std::process::id()));
                match std::fs::create_dir(&p) {
                    Ok(()) => return Dir(p),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => panic!("cannot create {}: {e}", p.display()),
                }
            }
            unreachable!()
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child forked from this process that holds copies of all its descriptors (and so the
/// `flock` locks on them) for `millis`, then exits, as a child forked by another thread
/// does until it runs its program. Dropping it waits for it.
pub struct ForkedHolder(libc::pid_t);

impl ForkedHolder {
    #[allow(unsafe_code)]
    pub fn new(millis: u32) -> ForkedHolder {
        // SAFETY: the child only calls usleep and _exit, both async-signal-safe, so forking a
        // multi-threaded process is sound here.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::usleep(millis.saturating_mul(1000));
                libc::_exit(0);
            }
        }
        assert!(pid > 0, "fork: {}", std::io::Error::last_os_error());
        ForkedHolder(pid)
    }
}

impl Drop for ForkedHolder {
    fn drop(&mut self) {
        wait4(self.0, 0);
    }
}
