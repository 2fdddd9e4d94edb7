//! The unavoidable `unsafe` of merging: leaving the host's mount namespace (`unshare`) and
//! attaching loop devices (the kernel's loop ioctls, which neither rustix nor libc wrap).
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use rustix::thread::UnshareFlags;

/// Move the calling thread (only it, and the processes it spawns afterwards) into a new mount
/// namespace, a copy of the current one. Other threads of the process stay where they were.
pub(crate) fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: `unshare_unsafe` is unsafe only for `CLONE_FILES`, which would let this thread
    // observe a different descriptor table than the others. We unshare the mount namespace
    // (which implies `CLONE_FS`: cwd, root and umask become private to the thread); the file
    // descriptor table stays shared.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }.map_err(io::Error::from)
}

const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_STATUS64: libc::c_ulong = 0x4C04;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A loop device with autoclear: it detaches itself once the last user (our descriptor, a
/// mount) is gone, so a crash cannot leak it.
pub(crate) struct LoopDevice {
    pub(crate) path: PathBuf,
    _fd: OwnedFd,
}

fn ioctl_arg(fd: &impl AsRawFd, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: the requests used with this helper (LOOP_CTL_GET_FREE, LOOP_SET_FD, LOOP_CLR_FD)
    // take an integer argument, not a pointer; the descriptor is open for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn ioctl_ptr<T>(fd: &impl AsRawFd, req: libc::c_ulong, arg: &T) -> io::Result<()> {
    // SAFETY: `arg` points to a live, properly laid out (`repr(C)`) struct of the type the
    // request expects (LOOP_CONFIGURE: loop_config, LOOP_SET_STATUS64: loop_info64); the
    // kernel only reads it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *const T) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl LoopDevice {
    /// Attach the `size` bytes of `backing` from `offset` (a partition of a disk image; size 0:
    /// to the end) to a free loop device, read-only unless `writable` (then `backing` must be
    /// open for writing).
    pub(crate) fn attach_range(
        backing: &File,
        name: &str,
        offset: u64,
        size: u64,
        writable: bool,
    ) -> io::Result<LoopDevice> {
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/loop-control")?;
        let mut info = LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: offset,
            lo_sizelimit: size,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: if writable {
                LO_FLAGS_AUTOCLEAR
            } else {
                LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR
            },
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        };
        let n = name.len().min(63);
        info.lo_file_name[..n].copy_from_slice(&name.as_bytes()[..n]);
        for _attempt in 0..64 {
            let nr = ioctl_arg(&control, LOOP_CTL_GET_FREE, 0)?;
            let path = PathBuf::from(format!("/dev/loop{nr}"));
            let dev = match OpenOptions::new()
                .read(true)
                .write(writable)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                // udev may not have created the node yet, or another process took it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            match ioctl_ptr(&dev, LOOP_CONFIGURE, &config) {
                Ok(()) => {
                    return Ok(LoopDevice {
                        path,
                        _fd: dev.into(),
                    })
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTTY)) => {
                    // Kernel before 5.8: the two-step setup.
                    match ioctl_arg(&dev, LOOP_SET_FD, backing.as_raw_fd() as libc::c_ulong) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
                        Err(e) => return Err(e),
                    }
                    if let Err(e) = ioctl_ptr(&dev, LOOP_SET_STATUS64, &info) {
                        let _ = ioctl_arg(&dev, LOOP_CLR_FD, 0);
                        return Err(e);
                    }
                    return Ok(LoopDevice {
                        path,
                        _fd: dev.into(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            "no free loop device after 64 attempts",
        ))
    }
}

/// Prepare the command: it dies with SIGKILL when the thread that spawned it dies (the waiting
/// thread lives as long as the command, so in practice: when our process is killed), so that a
/// killed `sysext run` does not leave the command holding the namespace; and it gets the
/// default SIGINT/SIGQUIT handling back (see [`IgnoreInterrupts`]).
pub(super) fn prepare_command(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec in the child and only calls prctl(2) and
    // signal(2), which are async-signal-safe, allocate nothing and take no locks.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// While alive, the process ignores SIGINT and SIGQUIT, as system(3) does while it waits: a
/// Ctrl-C goes to the command (same process group), which decides; we then return its status.
/// The previous actions are kept whole (`sigaction`, not `signal`), so the SA_SIGINFO handler
/// of [`safefs::cleanup`]'s signal thread comes back exactly as it was.
pub(super) struct IgnoreInterrupts {
    int: Option<libc::sigaction>,
    quit: Option<libc::sigaction>,
}

fn ignore(sig: libc::c_int) -> Option<libc::sigaction> {
    // SAFETY: all-zero is a valid sigaction (no handler, empty mask, no flags); both pointers
    // are to live locals; installing SIG_IGN is always sound.
    unsafe {
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = libc::SIG_IGN;
        let mut old: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(sig, &new, &mut old) == 0).then_some(old)
    }
}

impl IgnoreInterrupts {
    pub(super) fn new() -> IgnoreInterrupts {
        IgnoreInterrupts {
            int: ignore(libc::SIGINT),
            quit: ignore(libc::SIGQUIT),
        }
    }
}

impl Drop for IgnoreInterrupts {
    fn drop(&mut self) {
        for (sig, old) in [(libc::SIGINT, &self.int), (libc::SIGQUIT, &self.quit)] {
            if let Some(old) = old {
                // SAFETY: restores the action that was in place before `new`, as returned by
                // the kernel; the old-action pointer may be null.
                unsafe {
                    libc::sigaction(sig, old, std::ptr::null_mut());
                }
            }
        }
    }
}
