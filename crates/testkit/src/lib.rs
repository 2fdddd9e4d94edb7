//! Shared test support for the workspace's integration tests: real components, no mocks.
//!
//! - [`require_root`]: privileged tests skip with a message on a developer machine without
//!   root, and fail loudly when `CI` is set.
//! - [`fixtures`]: root filesystems built with mmdebstrap once per machine (cached under
//!   `fixtures/` at the workspace root, or `$SYSEXT_FIXTURES`), shared by every test binary
//!   through a file lock.
//! - [`registry`]: a real `docker-registry` on 127.0.0.1 and a free port, stopped on drop.
//! - [`workspace_bin`]: the path of a binary built from this workspace.

pub mod fixtures;
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
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .output()
        .expect("cannot run unshare")
}
