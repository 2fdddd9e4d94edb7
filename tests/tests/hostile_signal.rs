//! Hostile conditions, signals (issue 12, class 6): a run stopped by SIGTERM or SIGINT while it
//! writes leaves no temp file or folder behind; one stopped by SIGKILL leaves what the next run
//! removes.
//!
//! Each case starts a binary on an input big enough to take seconds, waits until its temp name
//! appears in the output folder, sends the signal, and asserts the exit status (128 + N) and
//! that the output folder holds nothing. Every run must end within 120 s.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::hostile::leftovers;

const LIMIT: Duration = Duration::from_secs(120);
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// An extension tree named `big` with `mib` MiB of incompressible data (slow to pack).
fn big_tree(root: &Path, mib: usize) {
    let rel = root.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.big"), "ID=_any\n").unwrap();
    let data = root.join("usr/share/big");
    fs::create_dir_all(&data).unwrap();
    for i in 0..mib / 8 {
        fs::write(
            data.join(format!("blob{i}")),
            testkit::random_bytes(8 << 20, 0x9e37_79b9 + i as u64),
        )
        .unwrap();
    }
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Waits until an entry of `dir` starts with `prefix` (the run's temp name), while `child`
/// runs. Panics if the child ends first or `LIMIT` passes.
fn wait_for_temp(child: &mut Child, dir: &Path, prefix: &str) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Ok(rd) = fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(prefix) {
                    return e.path();
                }
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{prefix}: the run ended ({status}) before its temp name appeared in {dir:?}");
        }
        assert!(start.elapsed() < LIMIT, "{prefix}: no temp name in {dir:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn signal(child: &Child, sig: i32) {
    testkit::run_ok(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string()),
    );
}

/// Waits for the child (at most `LIMIT`); its exit code (None when killed by a signal) and
/// stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `cmd`, signals it once `prefix` appears in `dir`, and asserts it exits with 128+sig
/// leaving `dir` holding only `expected`.
fn interrupted(
    what: &str,
    cmd: &mut Command,
    dir: &Path,
    prefix: &str,
    sig: i32,
    expected: &[&str],
) {
    let mut child = spawn(cmd);
    let temp = wait_for_temp(&mut child, dir, prefix);
    // Let it write into the temp output for a moment.
    std::thread::sleep(Duration::from_millis(150));
    signal(&child, sig);
    let (code, err) = finish(child);
    assert_eq!(code, Some(128 + sig), "{what}: exit status; stderr:\n{err}");
    assert!(!temp.exists(), "{what}: {temp:?} left behind");
    assert_eq!(
        leftovers(dir, expected),
        Vec::<String>::new(),
        "{what}: left in the output folder; stderr:\n{err}"
    );
}

#[test]
fn pack_stopped_by_sigterm_or_sigint_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    big_tree(&tree, 96);
    for sig in [SIGTERM, SIGINT] {
        let out = t.path().join(format!("out-{sig}"));
        fs::create_dir(&out).unwrap();
        interrupted(
            &format!("sysext pack, signal {sig}"),
            Command::new(testkit::workspace_bin("sysext"))
                .args(["pack", "--threads", "1", "--level", "9"])
                .arg(&tree)
                .arg(out.join("big.raw")),
            &out,
            ".big.raw.tmp-",
            sig,
            &[],
        );
    }
    // The source is never modified.
    assert_eq!(leftovers(&tree, &["usr"]), Vec::<String>::new());
}

/// SIGKILL cannot be handled: the temp output stays, and the next run into the same folder
/// removes it (its process is gone).
#[test]
fn pack_killed_leaves_what_the_next_run_removes() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    big_tree(&tree, 64);
    let out = t.path().join("out");
    fs::create_dir(&out).unwrap();
    let mut child = spawn(
        Command::new(testkit::workspace_bin("sysext"))
            .args(["pack", "--threads", "1", "--level", "9"])
            .arg(&tree)
            .arg(out.join("big.raw")),
    );
    let temp = wait_for_temp(&mut child, &out, ".big.raw.tmp-");
    signal(&child, SIGKILL);
    let (code, _) = finish(child);
    assert_eq!(code, None, "killed");
    assert!(
        temp.exists(),
        "SIGKILL leaves the temp output (nothing can remove it)"
    );
    // A small tree packed into the same folder.
    let small = t.path().join("small");
    let rel = small.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.big"), "ID=_any\n").unwrap();
    fs::write(small.join("usr/lib/x"), "x").unwrap();
    let mut cmd = Command::new(testkit::workspace_bin("sysext"));
    cmd.arg("pack").arg(&small).arg(out.join("big.raw"));
    let r = testkit::hostile::run_bounded(&mut cmd, LIMIT);
    r.assert_bounded("sysext pack after a killed run", 256);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_eq!(leftovers(&out, &["big.raw"]), Vec::<String>::new());
}

#[test]
fn ocirootfs_stopped_by_sigterm_or_sigint_leaves_nothing() {
    let layout = testkit::fixtures::trixie_oci_layout();
    let t = tempfile::tempdir().unwrap();
    for sig in [SIGTERM, SIGINT] {
        let out = t.path().join(format!("out-{sig}"));
        fs::create_dir(&out).unwrap();
        interrupted(
            &format!("ocirootfs, signal {sig}"),
            Command::new(testkit::workspace_bin("ocirootfs"))
                .arg(format!("oci:{}", layout.display()))
                .arg(out.join("rootfs"))
                .arg("--cache")
                .arg(t.path().join("cache")),
            &out,
            ".rootfs.tmp-",
            sig,
            &[],
        );
    }
}

#[test]
fn flix_stopped_by_sigterm_or_sigint_leaves_nothing() {
    let rootfs = testkit::fixtures::trixie_rootfs();
    let t = tempfile::tempdir().unwrap();
    for sig in [SIGTERM, SIGINT] {
        let out = t.path().join(format!("out-{sig}"));
        fs::create_dir(&out).unwrap();
        interrupted(
            &format!("flix, signal {sig}"),
            Command::new(testkit::workspace_bin("flix"))
                .arg(&rootfs)
                .arg("py")
                .args(["/usr/bin/python3", "/usr/lib/python3.13"])
                .arg("-o")
                .arg(out.join("py.raw")),
            &out,
            ".py.raw",
            sig,
            &[],
        );
    }
}

/// `sysext run`'s merge workspace (a folder under TMPDIR) is removed when SIGTERM stops it while
/// the command runs.
#[test]
fn run_stopped_by_sigterm_leaves_no_workspace() {
    if !testkit::require_root("sysext run (mount namespace)") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let image = t.path().join("big");
    let rel = image.join("usr/lib/extension-release.d");
    fs::create_dir_all(&rel).unwrap();
    fs::write(rel.join("extension-release.big"), "ID=_any\n").unwrap();
    fs::write(image.join("usr/lib/marker"), "x").unwrap();
    let tmp = t.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    // SIGINT is ignored by `sysext run` while its command runs, as system(3) does (the
    // command gets it from the terminal and decides), so SIGTERM is the case here.
    let mut cmd = Command::new(testkit::workspace_bin("sysext"));
    cmd.arg("run")
        .arg(&image)
        .args(["--", "sleep", "60"])
        .env("TMPDIR", &tmp);
    let mut child = spawn(&mut cmd);
    wait_for_temp(&mut child, &tmp, ".sysext-merge-");
    std::thread::sleep(Duration::from_millis(500));
    signal(&child, SIGTERM);
    let (code, err) = finish(child);
    assert_eq!(code, Some(128 + SIGTERM), "stderr:\n{err}");
    assert_eq!(leftovers(&tmp, &[]), Vec::<String>::new(), "stderr:\n{err}");
}
