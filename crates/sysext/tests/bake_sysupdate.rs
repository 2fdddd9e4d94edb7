//! `sysext bake`'s update artifacts against a real systemd-sysupdate: Debian 12 lacks it, so
//! a trixie chroot (package `systemd-container`, systemd 257) runs `list`, `check-new` and
//! `update` with the baked `NAME.conf` against the out folder served over loopback HTTP.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The trixie root with systemd-sysupdate and systemd-pull (shared fixture).
fn sysupdate_root() -> PathBuf {
    testkit::fixtures::trixie_systemd_root()
}

/// `python3 -m http.server` on a free loopback port, killed on drop.
struct Server(Child);

impl Server {
    fn start(dir: &Path) -> (Self, u16) {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = Server(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "http.server did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (server, port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `systemd-sysupdate --definitions=/defs --root=/target VERB` in the chroot with
/// `host` mounted on `/target` (sysupdate reads the definitions below the root).
fn sysupdate(root: &Path, host: &Path, verb: &str) -> Output {
    let (r, h) = (root.display(), host.display());
    testkit::in_mount_namespace(&format!(
        "set -e; mount --rbind /proc {r}/proc; mount --rbind /dev {r}/dev; \
         mount --bind {h} {r}/target; \
         chroot {r} /usr/lib/systemd/systemd-sysupdate --definitions=/defs --root=/target {verb}"
    ))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The assessment (last column) of `version`'s row in the table `list` prints on stdout.
fn row<'a>(o: &'a Output, version: &str) -> Option<&'a str> {
    std::str::from_utf8(&o.stdout)
        .ok()?
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.contains(&version))?
        .last()
        .copied()
}

#[test]
fn real_sysupdate_lists_offers_and_installs_the_baked_image() {
    if !testkit::require_root("chroot and mounts for systemd-sysupdate")
        || !testkit::require_tool("mmdebstrap")
        || !testkit::require_tool("python3")
        || !testkit::require_tool("busybox")
    {
        return;
    }
    let root = sysupdate_root();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::create_dir_all(d.join("st/bin")).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), d.join("st/bin/hello")).unwrap();
    testkit::run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(d.join("st"))
            .arg("-czf")
            .arg(d.join("hello.tar.gz"))
            .arg("bin"),
    );
    fs::write(
        d.join("m.toml"),
        "architectures = [\"x86-64\"]\n\n[[extension]]\nname = \"hello\"\nversion = \"1.0\"\n\
         source = \"./hello.tar.gz\"\nmode = \"static\"\npaths = [\"bin/hello:/usr/bin/\"]\n",
    )
    .unwrap();
    let out = d.join("out");
    let (_server, port) = Server::start(d);
    testkit::run_ok(
        Command::new(env!("CARGO_BIN_EXE_sysext"))
            .current_dir(d)
            .args(["bake", "m.toml", "--out", "out", "--base-url"])
            .arg(format!("http://127.0.0.1:{port}/out/")),
    );
    let raw = "hello-1.0-x86-64.raw";
    assert!(out.join(raw).is_file());

    // The host: the transfer file in /defs, /etc/extensions as a Flatcar host has it.
    let host = d.join("host");
    fs::create_dir_all(host.join("defs")).unwrap();
    fs::create_dir_all(host.join("etc/extensions")).unwrap();
    fs::copy(out.join("hello.conf"), host.join("defs/hello.conf")).unwrap();

    let list = sysupdate(&root, &host, "list");
    let t = text(&list);
    assert!(list.status.success(), "list failed:\n{t}");
    assert_eq!(
        row(&list, "1.0"),
        Some("candidate"),
        "1.0 not a candidate:\n{t}"
    );

    let check = sysupdate(&root, &host, "check-new");
    assert!(
        check.status.success(),
        "check-new failed:\n{}",
        text(&check)
    );
    assert_eq!(
        String::from_utf8_lossy(&check.stdout).trim(),
        "1.0",
        "{}",
        text(&check)
    );

    let update = sysupdate(&root, &host, "update");
    assert!(update.status.success(), "update failed:\n{}", text(&update));
    let installed = host.join("opt/extensions/hello").join(raw);
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(out.join(raw)).unwrap()
    );
    let link = host.join("etc/extensions/hello.raw");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../../opt/extensions/hello").join(raw)
    );

    // Installed and current now: nothing new to offer.
    let again = sysupdate(&root, &host, "list");
    let t = text(&again);
    assert!(again.status.success(), "{t}");
    assert_eq!(
        row(&again, "1.0"),
        Some("current"),
        "1.0 not current after update:\n{t}"
    );
    let check = sysupdate(&root, &host, "check-new");
    assert!(
        String::from_utf8_lossy(&check.stdout).trim().is_empty(),
        "{}",
        text(&check)
    );
}
