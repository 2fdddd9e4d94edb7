//! Run a shell command inside an unpacked root filesystem before it is handed over, as the
//! upstream `CMD=` did (`apk -U add b3sum`): on a thread of its own that leaves the process's
//! filesystem context and mount namespace (`unshare(CLONE_FS | CLONE_NEWNS)`), with every mount
//! made private so nothing reaches the host, `/proc` mounted, `/dev` and `/sys` bound from the
//! host, the host's `resolv.conf` bound over the image's, then `chroot` and `/bin/sh -c CMD`
//! with the image config's `Env` and `WorkingDir`. The mounts vanish with the namespace when the
//! thread ends; an empty `resolv.conf` created for the bind is removed again.
#![allow(unsafe_code)]

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::mount::{self, MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;

/// Errors from running a command in the rootfs.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot {op} for the command in {}", root.display())]
    Setup {
        op: String,
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a directory inside the rootfs (a symlink or file is refused); cannot mount there", path.display())]
    NotADir { path: PathBuf },
    #[error("the rootfs {} has no /bin/sh to run the command with", root.display())]
    NoShell { root: PathBuf },
    #[error("the command thread panicked")]
    Panicked,
}

fn setup(op: impl Into<String>, root: &Path) -> impl FnOnce(io::Error) -> RunError + '_ {
    let op = op.into();
    move |source| RunError::Setup {
        op,
        root: root.to_path_buf(),
        source,
    }
}

/// A real directory directly under the root (created when missing), never a symlink.
fn mount_point(root: &Path, name: &str) -> Result<PathBuf, RunError> {
    let p = root.join(name);
    match fs::symlink_metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(RunError::NotADir { path: p }),
        Err(_) => {
            fs::create_dir(&p).map_err(setup(format!("create /{name}"), root))?;
            Ok(p)
        }
    }
}

/// Runs `sh -c command` chrooted into `root`; returns its exit code (128+N for signal N).
pub fn run_in_rootfs(
    root: &Path,
    command: &str,
    env: &[String],
    working_dir: Option<&str>,
) -> Result<i32, RunError> {
    let root = fs::canonicalize(root).map_err(setup("resolve the rootfs", root))?;
    let sh = root.join("bin/sh");
    if fs::symlink_metadata(&sh).is_err() {
        return Err(RunError::NoShell { root });
    }
    let proc_ = mount_point(&root, "proc")?;
    let dev = mount_point(&root, "dev")?;
    let sys = mount_point(&root, "sys")?;
    // resolv.conf: only when /etc is a real directory and resolv.conf a file or absent.
    let etc = root.join("etc");
    let mut resolv = None;
    let mut created_resolv = false;
    if fs::symlink_metadata(&etc).is_ok_and(|m| m.is_dir())
        && Path::new("/etc/resolv.conf").exists()
    {
        let r = etc.join("resolv.conf");
        match fs::symlink_metadata(&r) {
            Ok(m) if m.is_file() => resolv = Some(r),
            Ok(_) => tracing::warn!(
                "{} is not a plain file; the host's resolv.conf is not bound",
                r.display()
            ),
            Err(_) => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&r)
                    .map_err(setup("create /etc/resolv.conf", &root))?;
                created_resolv = true;
                resolv = Some(r);
            }
        }
    }
    let mut envs: Vec<(String, String)> = env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if !envs.iter().any(|(k, _)| k == "PATH") {
        envs.push((
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ));
    }
    let wd = working_dir
        .filter(|w| !w.is_empty())
        .unwrap_or("/")
        .to_string();
    let command = command.to_string();
    let root2 = root.clone();
    let result = std::thread::spawn(move || -> Result<i32, RunError> {
        let root = root2;
        // SAFETY: CLONE_FILES is not among the flags, so no file descriptor table is unshared;
        // CLONE_FS and CLONE_NEWNS only give this thread its own root/cwd and mount namespace.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::FS | UnshareFlags::NEWNS) }
            .map_err(|e| setup("unshare the mount namespace", &root)(e.into()))?;
        mount::mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .map_err(|e| setup("make mounts private", &root)(e.into()))?;
        mount::mount(
            "proc",
            &proc_,
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .map_err(|e| setup("mount /proc", &root)(e.into()))?;
        mount::mount_bind_recursive("/dev", &dev)
            .map_err(|e| setup("bind /dev", &root)(e.into()))?;
        mount::mount_bind_recursive("/sys", &sys)
            .map_err(|e| setup("bind /sys", &root)(e.into()))?;
        if let Some(r) = &resolv {
            mount::mount_bind("/etc/resolv.conf", r)
                .map_err(|e| setup("bind /etc/resolv.conf", &root)(e.into()))?;
        }
        rustix::process::chroot(&root).map_err(|e| setup("chroot", &root)(e.into()))?;
        if rustix::process::chdir(wd.as_str()).is_err() {
            tracing::warn!("working directory {wd} does not exist in the rootfs; using /");
            rustix::process::chdir("/").map_err(|e| setup("chdir /", &root)(e.into()))?;
        }
        let stdout: Stdio = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::inherit());
        let status = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .env_clear()
            .envs(envs)
            .stdout(stdout)
            .status()
            .map_err(setup("start /bin/sh", &root))?;
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    })
    .join()
    .map_err(|_| RunError::Panicked);
    if created_resolv {
        let _ = fs::remove_file(root.join("etc/resolv.conf"));
    }
    result?
}
