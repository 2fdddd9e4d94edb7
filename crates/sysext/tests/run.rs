//! `sysext run`, `merge`, `unmerge` and `status` against real squashfs images, loop devices
//! and overlayfs: the host's mounts must be untouched, during and after, also when the command
//! or `sysext` itself is killed, and no loop device may be left behind.

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SYSEXT: &str = env!("CARGO_BIN_EXE_sysext");
const BB: &str = "/usr/libexec/sysext-run-test/busybox";

fn ready() -> bool {
    testkit::require_root("sysext run tests")
        && testkit::require_tool("mksquashfs")
        && testkit::require_tool("busybox")
}

/// `NAME.raw` holding a static busybox (a program from outside the host's package set) at
/// [`BB`], plus `files` (path, content).
fn image(dir: &Path, name: &str, release: &str, files: &[(&str, &str)]) -> PathBuf {
    let tree = dir.join(format!("{name}.tree"));
    let bb = tree.join(BB.trim_start_matches('/'));
    fs::create_dir_all(bb.parent().unwrap()).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), &bb).unwrap();
    let rel = tree.join(format!(
        "usr/lib/extension-release.d/extension-release.{name}"
    ));
    fs::create_dir_all(rel.parent().unwrap()).unwrap();
    fs::write(rel, release).unwrap();
    for (p, content) in files {
        let p = tree.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let raw = dir.join(format!("{name}.raw"));
    testkit::mksquashfs(&tree, &raw, &[]);
    raw
}

/// A scratch folder holding `tools.raw` ([`image`] with no extra files, for any host).
fn tools_image() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let raw = image(t.path(), "tools", "ID=_any\n", &[]);
    (t, raw)
}

/// `sysext run ARGS -- BB CMD...`: runs the image's busybox applet `CMD`.
fn sysext_run(args: &[&OsStr], cmd: &[&str]) -> Command {
    let mut c = Command::new(SYSEXT);
    c.arg("run").args(args).arg("--").arg(BB).args(cmd);
    c
}

fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap()
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/sys/block").unwrap().flatten() {
        let f = e.path().join("loop/backing_file");
        if let Ok(b) = fs::read_to_string(&f) {
            if b.trim().starts_with(&*dir.to_string_lossy()) {
                out.push(format!("{}: {}", e.file_name().to_string_lossy(), b.trim()));
            }
        }
    }
    out
}

/// Autoclear loop devices detach once the last mount is released, which the kernel finishes
/// shortly after the namespace's last process exits (allow for a loaded machine).
fn assert_no_loops_eventually(dir: &Path) {
    let start = Instant::now();
    loop {
        let l = loops_under(dir);
        if l.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "loop devices left behind: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_same_mounts(before: &str, what: &str) {
    let now = mountinfo();
    assert_eq!(before, now, "the host's mountinfo changed {what}");
}

#[test]
fn run_program_from_image_leaves_host_untouched() {
    if !ready() {
        return;
    }
    let (t, raw) = tools_image();
    assert!(!Path::new(BB).exists(), "{BB} must not exist on the host");
    let before = mountinfo();
    let mut child = sysext_run(
        &[raw.as_ref()],
        &[
            "sh",
            "-c",
            "echo ready; cat /usr/.systemd-sysext/extensions; read x; exit 3",
        ],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "tools\n", "the merged /usr carries the marker file");
    // While the command runs: the image is on a real loop device, the host sees nothing.
    assert_eq!(
        loops_under(t.path()).len(),
        1,
        "{:?}",
        loops_under(t.path())
    );
    assert_same_mounts(&before, "while the command runs");
    assert!(!Path::new(BB).exists());
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("Using extensions 'tools'."));
    assert_same_mounts(&before, "after the command");
    assert_no_loops_eventually(t.path());
}

#[test]
fn run_command_killed_by_signal() {
    if !ready() {
        return;
    }
    let (t, raw) = tools_image();
    let before = mountinfo();
    let o = sysext_run(&[raw.as_ref()], &["sh", "-c", "kill -9 $$"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(128 + 9), "{o:?}");
    assert_same_mounts(&before, "after the command was killed");
    assert_no_loops_eventually(t.path());
}

#[test]
fn killing_sysext_run_kills_the_command_and_frees_the_loop_device() {
    if !ready() {
        return;
    }
    let (t, raw) = tools_image();
    let before = mountinfo();
    let mut child = sysext_run(&[raw.as_ref()], &["sleep", "60"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while loops_under(t.path()).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no loop device appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_same_mounts(&before, "after sysext was killed");
    assert_no_loops_eventually(t.path());
}

#[test]
fn run_with_root_uses_its_extensions_and_runs_inside_it() {
    if !ready() {
        return;
    }
    // A host with no libc at all: only a static busybox.
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    for d in ["usr/bin", "etc", "var/lib/extensions", "proc", "dev"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(
        testkit::which("busybox").unwrap(),
        root.join("usr/bin/busybox"),
    )
    .unwrap();
    fs::write(
        root.join("etc/os-release"),
        "ID=flatcar\nSYSEXT_LEVEL=1.0\n",
    )
    .unwrap();
    image(
        &root.join("var/lib/extensions"),
        "tools",
        "ID=flatcar\nSYSEXT_LEVEL=1.0\n",
        &[],
    );
    image(
        &root.join("var/lib/extensions"),
        "other",
        "ID=fedora\n",
        &[],
    );
    let o = testkit::run_ok(&mut sysext_run(
        &["--root".as_ref(), root.as_ref()],
        &[
            "sh",
            "-c",
            "cat /usr/.systemd-sysext/extensions; ls /usr/bin; test -e /proc/self/mountinfo && echo proc",
        ],
    ));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stdout, "tools\nbusybox\nproc\n");
    assert!(
        stderr.contains("Extension 'other' is for OS 'fedora', but deployed on top of 'flatcar'."),
        "{stderr}"
    );
    assert_no_loops_eventually(&root);
    assert!(!root.join("usr/.systemd-sysext").exists());
}

/// `merge`, `status` and `unmerge` on a scratch root, in a mount namespace of their own; the
/// collision report names every shadowed file and the winner.
#[test]
fn merge_reports_collisions_of_three_extensions() {
    if !ready() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    for d in ["usr/bin", "usr/lib", "etc", "var/lib/extensions"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("bin", root.join("usr/sbin")).unwrap();
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=debian\nVERSION_ID=12\n",
    )
    .unwrap();
    fs::write(root.join("usr/bin/host-tool"), "host").unwrap();
    let ext = root.join("var/lib/extensions");
    image(&ext, "alpha", "ID=_any\n", &[("usr/bin/tool", "alpha")]);
    image(
        &ext,
        "beta",
        "ID=debian\nVERSION_ID=12\n",
        &[("usr/bin/tool", "beta"), ("usr/sbin/beta-admin", "b")],
    );
    image(
        &ext,
        "gamma",
        "ID=_any\n",
        &[("usr/bin/tool", "gamma"), ("usr/bin/host-tool", "gamma")],
    );
    let script = format!(
        "mount --make-rshared / && mount -t tmpfs tmpfs /run && {s} merge --root {r} --json > {o}/report.json 2> {o}/merge.err && \
         cat {r}/usr/bin/tool > {o}/tool && {s} status --root {r} --json > {o}/status.json && \
         {s} merge --root {r} 2> {o}/again.err; echo $? > {o}/again.rc; \
         {s} unmerge --root {r} && ! mountpoint -q {r}/usr && echo unmerged > {o}/unmerged",
        s = SYSEXT,
        r = root.display(),
        o = t.path().display()
    );
    let o = testkit::in_mount_namespace(&script);
    let read = |f: &str| fs::read_to_string(t.path().join(f)).unwrap_or_default();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        read("merge.err")
    );
    assert_eq!(read("tool"), "gamma", "the last in version order wins");
    let report: serde_json::Value = serde_json::from_str(&read("report.json")).unwrap();
    let names: Vec<&str> = report["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    let collision = |path: &str| {
        report["collisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .unwrap_or_else(|| panic!("no collision for {path} in {report:#}"))
            .clone()
    };
    let tool = collision("/usr/bin/tool");
    assert_eq!(tool["winner"]["layer"], "gamma");
    let shadowed: Vec<&str> = tool["shadowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["layer"].as_str().unwrap())
        .collect();
    assert_eq!(shadowed, ["beta", "alpha"]);
    let host_tool = collision("/usr/bin/host-tool");
    assert_eq!(host_tool["winner"]["layer"], "gamma");
    assert_eq!(host_tool["shadowed"][0]["layer"], "host");
    // beta ships /usr/sbin as a real directory where the host has a symlink.
    let warned = report["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["path"] == "/usr/sbin" && w["extension"] == "beta");
    assert!(warned, "{report:#}");
    assert!(
        read("merge.err").contains("warning: extension 'beta': ships a real directory /usr/sbin")
    );
    assert!(read("merge.err").contains("Using extensions 'alpha', 'beta', 'gamma'."));
    let status: serde_json::Value = serde_json::from_str(&read("status.json")).unwrap();
    let usr = status
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hierarchy"] == "/usr")
        .unwrap();
    assert_eq!(
        usr["extensions"],
        serde_json::json!(["alpha", "beta", "gamma"])
    );
    assert_eq!(read("again.rc").trim(), "2", "merging a merged tree fails");
    assert!(
        read("again.err").contains("already merged"),
        "{}",
        read("again.err")
    );
    assert_eq!(read("unmerged"), "unmerged\n");
    assert_no_loops_eventually(&root);
}

/// A program of a newer distribution (trixie's htop needs GLIBC_2.38, the bookworm host has
/// 2.36) runs from an image through its own loader and libraries, merged under /usr/local.
#[test]
fn run_trixie_program_through_its_own_loader() {
    if !ready() {
        return;
    }
    let rootfs = testkit::fixtures::trixie_rootfs();
    let htop = rootfs.join("usr/bin/htop");
    let on_host = Command::new(&htop).arg("--version").output().unwrap();
    assert!(
        String::from_utf8_lossy(&on_host.stderr).contains("GLIBC_2.38"),
        "trixie's htop is expected to fail on the host: {on_host:?}"
    );
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    let dir = tree.join("usr/local/trixie-htop");
    fs::create_dir_all(&dir).unwrap();
    let libdir = rootfs.join("usr/lib/x86_64-linux-gnu");
    for lib in [
        "ld-linux-x86-64.so.2",
        "libc.so.6",
        "libm.so.6",
        "libncursesw.so.6",
        "libtinfo.so.6",
    ] {
        fs::copy(libdir.join(lib), dir.join(lib)).unwrap();
    }
    fs::copy(&htop, dir.join("htop")).unwrap();
    let rel = tree.join("usr/lib/extension-release.d/extension-release.htop");
    fs::create_dir_all(rel.parent().unwrap()).unwrap();
    fs::write(rel, "ID=_any\nARCHITECTURE=x86-64\n").unwrap();
    let raw = t.path().join("htop.raw");
    testkit::mksquashfs(&tree, &raw, &[]);
    let before = mountinfo();
    let d = "/usr/local/trixie-htop";
    let o = testkit::run_ok(
        Command::new(SYSEXT)
            .arg("run")
            .arg(&raw)
            .arg("--")
            .arg(format!("{d}/ld-linux-x86-64.so.2"))
            .args(["--library-path", d])
            .arg(format!("{d}/htop"))
            .arg("--version"),
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("htop 3."),
        "{o:?}"
    );
    assert_same_mounts(&before, "after running htop");
    assert_no_loops_eventually(t.path());
}

/// Ctrl-C (SIGINT to the process group) is the command's to handle: `sysext run` waits for it,
/// as system(3) does, and the command gets the default SIGINT handling back.
#[test]
fn interrupt_is_left_to_the_command() {
    if !ready() {
        return;
    }
    let (t, raw) = tools_image();
    let o = sysext_run(
        &[raw.as_ref()],
        &[
            "sh",
            "-c",
            "trap 'echo caught; exit 5' INT; kill -INT $PPID; kill -INT $$; sleep 5; echo not-interrupted",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "caught\n");
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert_no_loops_eventually(t.path());
}

/// A `.raw` that is no file system image is refused before anything runs, naming the file.
#[test]
fn run_refuses_an_unknown_image_format() {
    if !ready() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("notes.raw");
    fs::write(&bad, "just text\n").unwrap();
    let o = sysext_run(&[bad.as_ref()], &["echo", "ran"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(o.stdout.is_empty(), "the command must not run");
    assert!(
        stderr.contains(&*bad.to_string_lossy()) && stderr.contains("unsupported format"),
        "{stderr}"
    );
    assert_no_loops_eventually(t.path());
}

/// Folders and erofs images run too; the last in version order wins, loop devices go away.
#[test]
fn run_folder_and_erofs_images() {
    if !ready() || !testkit::require_tool("mkfs.erofs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // "tool-10" sorts after "tool-9" in UAPI version order, so the erofs image wins.
    let folder = t.path().join("tool-9");
    let rel = folder.join("usr/lib/extension-release.d/extension-release.tool-9");
    fs::create_dir_all(rel.parent().unwrap()).unwrap();
    fs::write(rel, "ID=_any\n").unwrap();
    fs::create_dir_all(folder.join("usr/share/tool")).unwrap();
    fs::write(folder.join("usr/share/tool/which"), "folder\n").unwrap();
    fs::write(folder.join("usr/share/tool/folder-only"), "f\n").unwrap();
    let raw = image(t.path(), "tool-10", "ID=_any\n", &[]);
    let tree = t.path().join("tool-10.tree");
    fs::create_dir_all(tree.join("usr/share/tool")).unwrap();
    fs::write(tree.join("usr/share/tool/which"), "erofs\n").unwrap();
    fs::remove_file(&raw).unwrap();
    testkit::run_ok(
        Command::new("mkfs.erofs")
            .arg("--all-root")
            .arg(&raw)
            .arg(&tree),
    );
    let before = mountinfo();
    let o = testkit::run_ok(&mut sysext_run(
        &["--report".as_ref(), folder.as_ref(), raw.as_ref()],
        &[
            "cat",
            "/usr/share/tool/which",
            "/usr/share/tool/folder-only",
        ],
    ));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "erofs\nf\n");
    assert!(
        stderr.contains("Using extensions 'tool-9', 'tool-10'."),
        "{stderr}"
    );
    assert!(
        stderr.contains("/usr/share/tool/which: file of 'tool-10' wins over file of 'tool-9'"),
        "{stderr}"
    );
    assert_same_mounts(&before, "after the run");
    assert_no_loops_eventually(t.path());
}

/// `--mutable=ephemeral`: the command writes into the merged /usr, the write is gone with the
/// command and never reaches the host; without it /usr is read-only.
#[test]
fn run_mutable_ephemeral_writes_vanish() {
    if !ready() {
        return;
    }
    let (_t, raw) = tools_image();
    let target = "/usr/share/sysext-run-test-written";
    let script = format!("echo hi > {target} && cat {target}");
    let before = mountinfo();
    let o = sysext_run(
        &[OsStr::new("--mutable=ephemeral"), raw.as_ref()],
        &["sh", "-c", &script],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");
    assert!(!Path::new(target).exists(), "the write reached the host");
    assert_same_mounts(&before, "after an ephemeral run");
    let o = sysext_run(&[raw.as_ref()], &["sh", "-c", &script])
        .output()
        .unwrap();
    assert!(!o.status.success(), "/usr was writable without --mutable");
    assert!(!Path::new(target).exists());
}
