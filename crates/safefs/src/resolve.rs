//! `openat2(2)` as every crate here calls it.
//!
//! With `RESOLVE_IN_ROOT` or `RESOLVE_BENEATH` the kernel refuses a lookup with `EAGAIN` when a
//! rename or a mount anywhere on the machine raced with it (it cannot then prove that `..` stayed
//! inside the root). That is not an error of the input: the lookup is simply tried again. Busy
//! machines (tests in parallel, a CI host mounting images) hit it; a command must not fail then.

use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// How many times a lookup raced by renames or mounts is tried before `EAGAIN` is returned.
/// Each race needs another rename or mount during the few microseconds of one lookup, so a
/// bound this high is only reached when something renames without pause; it keeps time bounded.
const ATTEMPTS: u32 = 1000;

/// `openat2(dirfd, path, oflags, mode, resolve)`, tried again while the kernel reports `EAGAIN`
/// for a lookup raced by a rename or mount (up to a bound, yielding between tries).
pub fn openat2<Fd: AsFd, P: rustix::path::Arg + Copy>(
    dirfd: Fd,
    path: P,
    oflags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let dirfd = dirfd.as_fd();
    let mut attempt = 1;
    loop {
        #[allow(clippy::disallowed_methods)]
        match rustix::fs::openat2(dirfd, path, oflags, mode, resolve) {
            Err(Errno::AGAIN) if attempt < ATTEMPTS => {
                attempt += 1;
                std::thread::yield_now();
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Lookups that climb with `..` inside the root while another thread renames without pause:
    /// the raw call fails now and then with EAGAIN (when it does not, the race was not hit and
    /// the check below still holds); ours never fails.
    #[test]
    fn lookups_survive_concurrent_renames() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("a/b/c")).unwrap();
        std::fs::write(tmp.path().join("a/f"), b"x").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let renamer = {
            let stop = stop.clone();
            let dir = tmp.path().join("spin");
            std::fs::create_dir(&dir).unwrap();
            std::thread::spawn(move || {
                let (x, y) = (dir.join("x"), dir.join("y"));
                std::fs::write(&x, b"").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::fs::rename(&x, &y).unwrap();
                    std::fs::rename(&y, &x).unwrap();
                }
            })
        };
        let root = rustix::fs::open(
            tmp.path(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let path = "a/b/c/../../../../a/b/c/../../f";
        let mut raw_races = 0;
        for _ in 0..20_000 {
            #[allow(clippy::disallowed_methods)]
            match rustix::fs::openat2(
                &root,
                path,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                how,
            ) {
                Err(Errno::AGAIN) => raw_races += 1,
                r => {
                    r.unwrap();
                }
            }
            openat2(
                &root,
                path,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                how,
            )
            .expect("a lookup raced by renames is tried again");
        }
        stop.store(true, Ordering::Relaxed);
        renamer.join().unwrap();
        eprintln!("raw openat2 raced {raw_races} times in 20000 lookups");
    }
}
