//! End-to-end: flatwrap a Debian trixie image served by a local registry (and the same rootfs
//! as a folder), merge the result over the bookworm host's
//! `/usr` in a private mount namespace (as `sysext run` does) or run it unmerged with
//! `FLATWRAP_ROOT`, and run the programs as root, as a user with bwrap and as a user with the
//! user-namespace fallback. Everything namespaced runs in child processes.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const BIN: &str = env!("CARGO_BIN_EXE_flatwrap");
/// A uid/gid with no passwd entry, distinct from the overflow id 65534.
const USER: u32 = 4321;

fn work_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("flatwrap-launchers")
}

fn flatwrap(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run flatwrap")
}

/// `tools.raw` (default options) and the folder `chroot-etc/tools` (`--etc chroot`), built once.
fn built() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let rootfs = testkit::fixtures::trixie_rootfs();
        let dir = work_dir();
        if dir.exists() {
            testkit::run_ok(Command::new("rm").arg("-rf").arg(&dir));
        }
        fs::create_dir_all(dir.join("chroot-etc")).unwrap();
        let src = rootfs.to_str().unwrap();
        let entries = [
            "/usr/bin/htop",
            "/usr/sbin/nginx",
            "/usr/bin/python3",
            "/usr/bin/b3sum",
            "/usr/lib/systemd/system/nginx.service",
            "/usr/share/doc/htop",
        ];
        let before = fs::metadata(rootfs.join("usr/bin")).unwrap().mtime();
        // tools.raw from the image served by a local registry, as in the acceptance.
        let registry = testkit::registry::Registry::start();
        let image = registry.push_oci_layout(
            &testkit::fixtures::trixie_oci_layout(),
            "trixie",
            "debian:trixie",
        );
        let cache = dir.join("cache");
        let mut args = vec![image.as_str(), "tools", "--cache", cache.to_str().unwrap()];
        args.extend(entries);
        let out = flatwrap(&args, &dir);
        drop(registry);
        assert!(
            out.status.success(),
            "flatwrap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The unit's ExecStop runs /sbin/start-stop-daemon, which is not wrapped: a warning.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("start-stop-daemon"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The folder variant straight from the rootfs folder.
        let mut args = vec![src, "tools", "--etc", "chroot", "--format", "dir"];
        args.extend(entries);
        let out = flatwrap(&args, &dir.join("chroot-etc"));
        assert!(
            out.status.success(),
            "flatwrap --format dir failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            fs::metadata(rootfs.join("usr/bin")).unwrap().mtime(),
            before,
            "the source rootfs was modified"
        );
        (dir.join("tools.raw"), dir.join("chroot-etc/tools"))
    })
}

fn ready() -> bool {
    testkit::require_root("flatwrap launcher tests")
        && testkit::require_tool("bwrap")
        && testkit::require_tool("unshare")
        && testkit::require_tool("docker-registry")
        && testkit::require_tool("skopeo")
        && testkit::require_tool("umoci")
}

/// Runs `body` (sh) in a private mount namespace where `raw` is merged over `/usr`.
fn merged(raw: &Path, body: &str) -> Output {
    let script = format!(
        "set -e\nm=$(mktemp -d)\nmount -t squashfs -o loop,ro '{}' \"$m\"\n\
         mount -t overlay overlay -o \"lowerdir=$m/usr:/usr\" /usr\n{body}",
        raw.display()
    );
    testkit::in_mount_namespace(&script)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A folder under the host's /tmp that the test user can write to.
fn shared_tmp() -> tempfile::TempDir {
    let t = tempfile::Builder::new()
        .prefix("flatwrap-test-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o777)).unwrap();
    t
}

const PROBE: &str = r#"import os, sys
print("python", sys.version.split()[0])
print("ids", os.getuid(), os.getgid())
print("cwd", os.getcwd())
print("args", sys.argv[1:])
print("env", os.environ.get("FLATWRAP_PROBE"))
open(os.path.join(sys.argv[1], "written-" + sys.argv[2]), "w").write("from inside")
sys.exit(7)"#;

/// Runs the probe through the merged `/usr/bin/python3` as `who` and checks what it saw.
fn check_mode(who: &str, prefix: &str, uid: u32) {
    let (raw, _) = built();
    let shared = shared_tmp();
    let dir = shared.path().display();
    let body = format!(
        "cd '{dir}'\nset +e\n{prefix} env FLATWRAP_PROBE='a b' /usr/bin/python3 -c '{probe}' '{dir}' {who} 'two words' \"\"\necho \"status=$?\"\n\
         {prefix} /usr/bin/htop --version\n{prefix} /usr/sbin/nginx -v\n{prefix} /usr/bin/b3sum --version\n",
        probe = PROBE.replace('\'', r"'\''"),
    );
    let out = merged(raw, &body);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let ctx = format!("{who}: stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("python 3.13."),
        "trixie's python must run on the host: {ctx}"
    );
    assert!(stdout.contains(&format!("ids {uid} {uid}\n")), "{ctx}");
    assert!(stdout.contains(&format!("cwd {dir}\n")), "{ctx}");
    assert!(
        stdout.contains(&format!("args ['{dir}', '{who}', 'two words', '']")),
        "{ctx}"
    );
    assert!(stdout.contains("env a b\n"), "{ctx}");
    assert!(stdout.contains("status=7\n"), "{ctx}");
    assert!(stdout.contains("htop 3."), "{ctx}");
    assert!(stderr.contains("nginx version: nginx/"), "{ctx}");
    assert!(stdout.contains("b3sum 1."), "{ctx}");
    let written = shared.path().join(format!("written-{who}"));
    assert_eq!(
        fs::read_to_string(&written).unwrap_or_default(),
        "from inside",
        "the file written to the host's /tmp is not visible on the host: {ctx}"
    );
    assert_eq!(fs::metadata(&written).unwrap().uid(), uid, "{ctx}");
}

fn as_user(extra: &str) -> String {
    format!("{extra} setpriv --reuid={USER} --regid={USER} --clear-groups")
}

#[test]
fn merged_runs_as_root() {
    if !ready() {
        return;
    }
    check_mode("root", "", 0);
}

#[test]
fn merged_runs_as_user_with_bwrap() {
    if !ready() {
        return;
    }
    check_mode("bwrap", &as_user(""), USER);
}

#[test]
fn merged_runs_as_user_with_user_namespace() {
    if !ready() {
        return;
    }
    check_mode("userns", &as_user("NOBWRAP=1"), USER);
}

#[test]
fn extension_layout() {
    if !ready() {
        return;
    }
    let (raw, dir) = built();
    // The symlinked python3 got a launcher, not a symlink running outside the rootfs.
    let py = dir.join("usr/bin/python3");
    assert!(fs::symlink_metadata(&py).unwrap().is_file());
    assert!(fs::read_to_string(&py)
        .unwrap()
        .contains("run '/usr/bin/python3' \"$@\""));
    // Units and folders are linked into the copy.
    assert_eq!(
        fs::read_link(dir.join("usr/lib/systemd/system/nginx.service")).unwrap(),
        Path::new("/usr/local/tools/usr/lib/systemd/system/nginx.service")
    );
    assert_eq!(
        fs::read_link(dir.join("usr/share/doc/htop")).unwrap(),
        Path::new("/usr/local/tools/usr/share/doc/htop")
    );
    assert_eq!(
        fs::read_to_string(dir.join("usr/lib/extension-release.d/extension-release.tools"))
            .unwrap(),
        "ID=_any\nARCHITECTURE=x86-64\nEXTENSION_RELOAD_MANAGER=1\n"
    );
    // `sysext check` finds nothing to complain about but the launchers that hide this host's
    // own programs of the same name (e.g. python3), and systemd's rules accept it here.
    let image = sysext_core::inspect::Image::open(raw).unwrap();
    let host = sysext_core::check::Host::running().unwrap();
    let report = sysext_core::check::check_image(&image, Some(&host)).unwrap();
    assert!(
        report.findings.iter().all(|f| f.code == "shadows-host-file"
            && f.path.as_ref().is_some_and(|p| p.starts_with("usr/bin/")
                && fs::symlink_metadata(Path::new("/").join(p)).is_ok())),
        "{:#?}",
        report.findings
    );
    assert!(
        matches!(
            report.verdict,
            Some(sysext_core::release::Verdict::Compatible)
        ),
        "{:?}",
        report.verdict
    );
    // The real systemd-sysext accepts the image on a scratch root.
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("var/lib/extensions")).unwrap();
    fs::copy("/etc/os-release", root.join("usr/lib/os-release")).unwrap();
    fs::copy("/etc/os-release", root.join("etc/os-release")).unwrap();
    fs::copy(raw, root.join("var/lib/extensions/tools.raw")).unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "shared", "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs tmpfs /run && systemd-sysext --root='{r}' merge && ls '{r}/usr/local/tools/usr/bin/python3'",
            r = root.display()
        ))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("usr/local/tools/usr/bin/python3"),
        "systemd-sysext did not merge tools.raw: {stdout}\n{}",
        text(&out.stderr)
    );
}

#[test]
fn etc_comes_from_the_host_by_default_and_from_the_image_on_request() {
    if !ready() {
        return;
    }
    let (raw, dir) = built();
    let host = fs::read_to_string("/etc/os-release").unwrap();
    let host_name = host
        .lines()
        .find(|l| l.starts_with("PRETTY_NAME="))
        .unwrap()
        .to_string();
    let read = "import sys; print([l for l in open('/etc/os-release') if l.startswith('PRETTY_NAME=')][0].strip())";
    let out = merged(
        raw,
        &format!(
            "/usr/bin/python3 -c \"{read}\"\nETCMAP=chroot /usr/bin/python3 -c \"{read}\"\n{u} /usr/bin/python3 -c \"{read}\"\n{u} env ETCMAP=chroot /usr/bin/python3 -c \"{read}\"\n",
            u = as_user("")
        ),
    );
    let stdout = text(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    let trixie = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"";
    assert_eq!(
        lines,
        [host_name.as_str(), trixie, host_name.as_str(), trixie],
        "{}",
        text(&out.stderr)
    );
    // Built with --etc chroot, run unmerged: the image's /etc unless ETCMAP says otherwise.
    let script = format!(
        "FLATWRAP_ROOT='{d}' '{d}/usr/bin/python3' -c \"{read}\"\nETCMAP=host FLATWRAP_ROOT='{d}' '{d}/usr/bin/python3' -c \"{read}\"\n",
        d = dir.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let stdout = text(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    assert_eq!(lines, [trixie, host_name.as_str()], "{}", text(&out.stderr));
}

#[test]
fn flatwrap_root_runs_unmerged_and_skips_missing_host_dirs() {
    if !ready() {
        return;
    }
    let (_, dir) = built();
    let shared = shared_tmp();
    let out = Command::new(dir.join("usr/bin/python3"))
        .args([
            "-c",
            "import os,sys; print(os.getcwd()); open('/tmp/' + os.path.basename(os.getcwd()) + '/x', 'w').write('y'); print(os.path.isdir('/proc/self'))",
        ])
        .env("FLATWRAP_ROOT", dir)
        .env("FLATWRAP_HOST", "/dev /proc /flatwrap-no-such-dir /tmp")
        .current_dir(shared.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{}\nTrue\n", shared.path().display())
    );
    assert_eq!(fs::read_to_string(shared.path().join("x")).unwrap(), "y");
}

#[test]
fn missing_working_directory_falls_back_to_root_with_a_warning() {
    if !ready() {
        return;
    }
    let (raw, _) = built();
    // /mnt/elsewhere exists on the host (in this namespace) but not in the image's /mnt.
    let out = merged(
        raw,
        "mount -t tmpfs tmpfs /mnt && mkdir /mnt/elsewhere && cd /mnt/elsewhere && /usr/bin/python3 -c 'import os; print(os.getcwd())'",
    );
    assert_eq!(text(&out.stdout), "/\n", "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("working directory /mnt/elsewhere does not exist inside"),
        "{}",
        text(&out.stderr)
    );
}

fn host_mounts_of(path: &Path) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*path.to_string_lossy()) || l.contains(" flatwrap "))
        .map(String::from)
        .collect()
}

/// As root the program is the launcher's process: same PID, its own signals and exit status;
/// killed or not, nothing stays mounted on the host.
#[test]
fn pid_signals_and_nothing_left_mounted() {
    if !ready() {
        return;
    }
    let (_, dir) = built();
    for (signal, want) in [(15, Some(42)), (9, None)] {
        let mut child = Command::new(dir.join("usr/bin/python3"))
            .args([
                "-c",
                "import os, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\nprint(os.getpid(), flush=True)\nprint(open('/proc/self/mountinfo').readline(), flush=True)\ntime.sleep(60)",
            ])
            .env("FLATWRAP_ROOT", dir)
            .current_dir("/tmp")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let pid: u32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        assert_eq!(pid, child.id(), "the program must keep the launcher's PID");
        let root_line = lines.next().unwrap().unwrap();
        assert!(
            root_line.contains(" / / ") && root_line.contains("tmpfs flatwrap"),
            "the program's / must be the staging tmpfs: {root_line}"
        );
        assert!(
            host_mounts_of(dir).is_empty(),
            "the launcher's mounts leaked to the host: {:?}",
            host_mounts_of(dir)
        );
        testkit::run_ok(
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string()),
        );
        let status = child.wait().unwrap();
        assert_eq!(status.code(), want, "{status:?}");
        assert!(host_mounts_of(dir).is_empty());
    }
}

#[test]
fn bad_input_is_refused_without_output() {
    if !testkit::require_root("the trixie fixture") {
        return;
    }
    let rootfs = testkit::fixtures::trixie_rootfs();
    let tmp = tempfile::tempdir().unwrap();
    let src = rootfs.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["/nonexistent-rootfs", "x", "/usr/bin/htop"],
            "does not exist",
        ),
        (
            &[src, "x", "/usr/bin/no-such-program"],
            "not found in the rootfs",
        ),
        (&[src, "x", "/etc/debian_version"], "outside /usr"),
        (&[src, "a/b", "/usr/bin/htop"], "invalid extension name"),
    ];
    for (args, want) in cases {
        let out = flatwrap(args, tmp.path());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // An existing output is kept unless --force.
    fs::create_dir(tmp.path().join("x")).unwrap();
    let out = flatwrap(&[src, "x", "/usr/bin/htop", "--format", "dir"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["x"], "nothing half-written is left");
    assert!(fs::read_dir(tmp.path().join("x")).unwrap().next().is_none());
}

/// The unit is linked into /usr and its Exec lines reach the launcher: nginx.service's
/// ExecStartPre (`nginx -t`) passes with the image's /etc, and fails with the host's, which has
/// no nginx.conf.
#[test]
fn unit_exec_lines_run_the_wrapped_program() {
    if !ready() {
        return;
    }
    let (raw, _) = built();
    let out = merged(
        raw,
        "mount -t tmpfs tmpfs /var/log && mkdir /var/log/nginx\n\
         mount -t tmpfs tmpfs /var/lib && mkdir /var/lib/nginx\n\
         line=$(sed -n 's/^ExecStartPre=//p' /usr/lib/systemd/system/nginx.service)\n\
         set +e\nETCMAP=chroot sh -c \"$line\"; echo chroot=$?\nsh -c \"$line\"; echo host=$?\n",
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("chroot=0\n"), "{stdout}\n{stderr}");
    assert!(!stdout.contains("host=0\n"), "{stdout}\n{stderr}");
    assert!(stderr.contains("/etc/nginx/nginx.conf"), "{stderr}");
}
