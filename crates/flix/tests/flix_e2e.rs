//! End to end on real data: trixie programs relocated by `flix` from a local registry, an OCI
//! layout and a rootfs folder, merged by the real systemd-sysext into a root that holds only
//! busybox (no libc at all), and run there doing real work.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FLIX: &str = env!("CARGO_BIN_EXE_flix");

fn flix(args: &[&str], cwd: &Path) -> Output {
    let out = Command::new(FLIX)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run flix");
    assert!(
        out.status.success(),
        "flix {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A root holding only busybox (static), os-release, /etc/passwd and the extension.
fn busybox_root(dir: &Path, raw: &Path) -> PathBuf {
    let root = dir.join("root");
    for d in [
        "usr/bin",
        "usr/lib",
        "etc",
        "var/lib/extensions",
        "var/lib/nginx",
        "proc",
        "tmp",
        "dev",
        "run",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = testkit::which("busybox").expect("busybox-static");
    fs::copy(&busybox, root.join("usr/bin/busybox")).unwrap();
    for applet in ["sh", "cat", "ls", "echo", "env"] {
        std::os::unix::fs::symlink("busybox", root.join("usr/bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=busyboxos\nVERSION_ID=1\n",
    )
    .unwrap();
    fs::write(root.join("etc/os-release"), "ID=busyboxos\nVERSION_ID=1\n").unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let name = raw.file_name().unwrap();
    fs::copy(raw, root.join("var/lib/extensions").join(name)).unwrap();
    assert!(!root.join("usr/lib/x86_64-linux-gnu").exists() && !root.join("lib64").exists());
    root
}

/// The shell prefix merging the extensions of `root` in a private namespace.
fn merged(root: &Path, then: &str) -> String {
    format!(
        "unshare -m --propagation shared sh -c 'mount -t tmpfs tmpfs /run && systemd-sysext --root={r} merge >/dev/null && mount -t proc proc {r}/proc && {then}'",
        r = root.display()
    )
}

fn sh(script: &str) -> Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

fn ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "{script}\nfailed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn release_of(root_or_tree: &Path, raw: &Path) -> String {
    let _ = root_or_tree;
    let out = testkit::run_ok(
        Command::new("unsquashfs")
            .arg("-cat")
            .arg(raw)
            .arg("usr/lib/extension-release.d/extension-release.tools"),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sysext check` finds nothing wrong.
fn assert_clean(raw: &Path) {
    let image = sysext_core::inspect::Image::open(raw).unwrap();
    let report = sysext_core::check::check_image(&image, None).unwrap();
    assert!(
        report.is_clean(),
        "sysext check on {}: {:#?}",
        raw.display(),
        report.findings
    );
}

fn prerequisites() -> bool {
    testkit::require_root("flix end-to-end")
        && [
            "systemd-sysext",
            "busybox",
            "unsquashfs",
            "skopeo",
            "docker-registry",
            "tmux",
            "umoci",
        ]
        .iter()
        .all(|t| testkit::require_tool(t))
}

#[test]
fn trixie_programs_from_a_registry_run_in_a_root_without_libc() {
    if !prerequisites() {
        return;
    }
    let rootfs = testkit::fixtures::trixie_rootfs();
    let layout = testkit::fixtures::trixie_oci_layout();
    let reg = testkit::registry::Registry::start();
    let image = reg.push_oci_layout(&layout, "trixie", "debian:trixie");
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path();

    // Without relocation the trixie programs do not run on this (older) host.
    let host = Command::new(rootfs.join("usr/bin/htop"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(!host.status.success());
    let err = String::from_utf8_lossy(&host.stderr);
    assert!(
        err.contains("GLIBC_2.") && err.contains("not found"),
        "{err}"
    );

    let out = flix(
        &[
            &image,
            "tools",
            "/usr/bin/htop",
            "/usr/sbin/nginx",
            "/usr/bin/b3sum",
            "/usr/bin/curl",
            "/usr/share/terminfo",
            "/usr/bin/python3",
            "/usr/lib/python3.13",
        ],
        tmp,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/usr/sbin/nginx is shipped as /usr/bin/nginx"),
        "{stderr}"
    );
    let raw = tmp.join("tools.raw");
    let release = release_of(tmp, &raw);
    assert!(
        release.contains("ID=_any") && release.contains("ARCHITECTURE=x86-64"),
        "{release}"
    );
    let listing = String::from_utf8_lossy(
        &testkit::run_ok(Command::new("unsquashfs").arg("-l").arg(&raw)).stdout,
    )
    .into_owned();
    assert!(
        !listing.contains("squashfs-root/usr/sbin"),
        "usr/sbin shipped as a directory"
    );
    assert!(!listing.contains("squashfs-root/usr/lib64"));
    assert!(listing.contains("squashfs-root/usr/local/tools/ld-linux-x86-64.so.2"));
    assert_clean(&raw);

    let root = busybox_root(tmp, &raw);
    fs::write(
        root.join("tmp/data"),
        "flix relocates programs\n".repeat(1000),
    )
    .unwrap();
    fs::write(
        root.join("tmp/nginx.conf"),
        "user nobody nogroup;\nerror_log /tmp/error.log;\npid /tmp/nginx.pid;\nevents {}\nhttp { access_log off; server { listen 127.0.0.1:8080; root /tmp; } }\n",
    )
    .unwrap();
    fs::write(root.join("tmp/empty"), "").unwrap();
    let r = root.display();
    let got = ok(&merged(
        &root,
        &format!("chroot {r} /usr/bin/b3sum --no-names /tmp/empty /tmp/data"),
    ));
    let lines: Vec<&str> = got.lines().collect();
    // BLAKE3's published hash of the empty input.
    assert_eq!(
        lines[0],
        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    );
    // The unrelocated program (old enough to run on this host) agrees on the data.
    let want = testkit::run_ok(
        Command::new(rootfs.join("usr/bin/b3sum"))
            .arg("--no-names")
            .arg(root.join("tmp/data")),
    );
    assert_eq!(lines[1], String::from_utf8_lossy(&want.stdout).trim());

    let nginx = sh(&merged(
        &root,
        &format!("chroot {r} /usr/bin/nginx -t -c /tmp/nginx.conf -e /tmp/error.log"),
    ));
    let nginx_err = String::from_utf8_lossy(&nginx.stderr);
    assert!(
        nginx.status.success()
            && nginx_err.contains("syntax is ok")
            && nginx_err.contains("test is successful"),
        "{nginx_err}"
    );

    let curl = ok(&merged(
        &root,
        &format!("chroot {r} /usr/bin/curl -sS file:///tmp/data"),
    ));
    assert_eq!(curl, "flix relocates programs\n".repeat(1000));

    let py = ok(&merged(
        &root,
        &format!("chroot {r} /usr/bin/python3 -c \"import json, sqlite3, hashlib, ssl, zlib; print(json.dumps({{\\\"n\\\": sqlite3.connect(\\\":memory:\\\").execute(\\\"select 6*7\\\").fetchone()[0]}}), hashlib.sha256(zlib.compress(b\\\"x\\\")).hexdigest()[:8])\""),
    ));
    assert!(py.starts_with("{\"n\": 42} "), "{py}");

    // htop draws in a terminal.
    let sock = format!("flix-e2e-{}", std::process::id());
    let inner = merged(
        &root,
        &format!("TERM=xterm-256color chroot {r} /usr/bin/htop"),
    );
    testkit::run_ok(Command::new("tmux").args([
        "-L",
        &sock,
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "30",
        &inner,
    ]));
    let mut screen = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let cap = Command::new("tmux")
            .args(["-L", &sock, "capture-pane", "-p"])
            .output()
            .unwrap();
        screen = String::from_utf8_lossy(&cap.stdout).into_owned();
        if screen.contains("Load average") {
            break;
        }
    }
    let _ = Command::new("tmux")
        .args(["-L", &sock, "kill-server"])
        .status();
    assert!(
        screen.contains("Load average") && screen.contains("Tasks"),
        "htop screen:\n{screen}"
    );
}

#[test]
fn folder_and_oci_layout_sources_give_working_images() {
    if !prerequisites() {
        return;
    }
    let rootfs = testkit::fixtures::trixie_rootfs();
    let layout = testkit::fixtures::trixie_oci_layout();
    let dir = tempfile::tempdir().unwrap();
    for (i, source) in [
        rootfs.display().to_string(),
        format!("oci:{}:trixie", layout.display()),
    ]
    .iter()
    .enumerate()
    {
        let sub = dir.path().join(i.to_string());
        fs::create_dir_all(&sub).unwrap();
        // The OCI layout's image as an lz4hc-compressed EROFS image.
        let fs_args: &[&str] = if i == 1 {
            &["--fs", "erofs", "--compression", "lz4hc"]
        } else {
            &[]
        };
        flix(
            &[
                &[source.as_str(), "tools", "/usr/bin/curl", "/usr/bin/htop"][..],
                fs_args,
            ]
            .concat(),
            &sub,
        );
        let raw = sub.join("tools.raw");
        if i == 1 {
            let head = fs::read(&raw).unwrap();
            assert_eq!(
                &head[1024..1028],
                &0xE0F5_E1E2u32.to_le_bytes(),
                "not EROFS"
            );
            // `sysext run` runs the relocated program from it, on this host.
            let o = Command::new(testkit::workspace_bin("sysext"))
                .arg("run")
                .arg(&raw)
                .args(["--", "/usr/bin/htop", "--version"])
                .output()
                .unwrap();
            assert!(
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("htop 3."),
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert_clean(&raw);
        // An existing output is kept unless --force.
        let again = Command::new(FLIX)
            .args([source.as_str(), "tools", "/usr/bin/curl"])
            .current_dir(&sub)
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
        let root = busybox_root(&sub, &raw);
        fs::write(root.join("tmp/x"), "payload").unwrap();
        let r = root.display();
        let out = ok(&merged(
            &root,
            &format!(
                "chroot {r} /usr/bin/curl -sS file:///tmp/x && chroot {r} /usr/bin/htop --version"
            ),
        ));
        assert!(
            out.starts_with("payload") && out.contains("htop 3."),
            "{source}: {out}"
        );
    }
    // From an image we unpack, files that stay as they are (here terminfo's) are staged as
    // links to the unpacked tree (in a cache on the output's file system) instead of copies:
    // the image is byte for byte the one made from the folder, and the cached tree is left as
    // it was.
    let cache = dir.path().join("cache");
    let image = format!("oci:{}:trixie", layout.display());
    let folder = rootfs.display().to_string();
    let args = ["tools", "/usr/bin/curl", "/usr/share/terminfo"];
    let mut raws = Vec::new();
    for (i, source) in [
        vec!["--cache", cache.to_str().unwrap(), image.as_str()],
        vec![folder.as_str()],
    ]
    .iter()
    .enumerate()
    {
        let sub = dir.path().join(format!("same-{i}"));
        fs::create_dir_all(&sub).unwrap();
        flix(&[&source[..], &args[..]].concat(), &sub);
        raws.push(fs::read(sub.join("tools.raw")).unwrap());
    }
    assert!(
        raws[0] == raws[1],
        "the image from the OCI layout differs from the one from the folder"
    );
    use std::os::unix::fs::MetadataExt;
    let cached: Vec<_> = walkdir::WalkDir::new(&cache)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file() && e.path().to_string_lossy().contains("/usr/share/terminfo/")
        })
        .collect();
    assert!(
        cached.len() > 10,
        "the unpacked tree is cached: {}",
        cached.len()
    );
    for e in cached {
        let p = e.path().to_string_lossy();
        let rel = &p[p.find("/usr/share/terminfo/").unwrap() + 1..];
        let (a, b) = (
            e.metadata().unwrap(),
            fs::metadata(rootfs.join(rel)).unwrap(),
        );
        assert_eq!(
            (a.nlink(), a.mode(), a.len()),
            (b.nlink(), b.mode(), b.len()),
            "{rel}: cached as unpacked"
        );
    }
}
