//! `sysext bake`'s update artifacts against a real systemd-sysupdate: Debian 12 lacks it, so
//! a trixie chroot (package `systemd-container`, systemd 257, and `gpg`, which systemd-pull
//! runs to verify `SHA256SUMS.gpg`) runs `list`, `check-new` and `update` with the baked
//! `NAME.transfer` against the out folder served over loopback HTTP.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The trixie root with systemd-sysupdate and systemd-pull (shared fixture).
fn sysupdate_root() -> PathBuf {
    testkit::fixtures::trixie_systemd_root()
}

/// Runs `systemd-sysupdate --definitions=/defs --root=/target VERB` in the chroot with
/// `host` mounted on `/target` (sysupdate reads the definitions below the root).
fn sysupdate(root: &Path, host: &Path, verb: &str) -> Output {
    sysupdate_with_keyring(root, host, None, verb)
}

/// The same, with `keyring` as the chroot's `/etc/systemd/import-pubring.gpg`, where
/// systemd-pull looks first for the keys that verify `SHA256SUMS.gpg`.
fn sysupdate_with_keyring(root: &Path, host: &Path, keyring: Option<&Path>, verb: &str) -> Output {
    let (r, h) = (root.display(), host.display());
    let keys = keyring.map_or(String::new(), |k| {
        format!(
            "mount -t tmpfs tmpfs {r}/etc/systemd; cp {} {r}/etc/systemd/import-pubring.gpg; ",
            k.display()
        )
    });
    testkit::in_mount_namespace(&format!(
        "set -e; mount --rbind /proc {r}/proc; mount --rbind /dev {r}/dev; \
         mount --bind {h} {r}/target; {keys}\
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

/// The assessment of `version`'s row in the table `list` printed.
fn row<'a>(o: &'a Output, version: &str) -> Option<&'a str> {
    testkit::fixtures::sysupdate_assessment(&o.stdout, version)
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
    testkit::hello_tarball(d);
    fs::write(
        d.join("m.toml"),
        "architectures = [\"x86-64\"]\n\n[[extension]]\nname = \"hello\"\nversion = \"1.0\"\n\
         source = \"./hello.tar.gz\"\nmode = \"static\"\npaths = [\"bin/hello:/usr/bin/\"]\n\n\
         [[extension]]\nname = \"extra\"\nversion = \"2.0\"\noptional = true\n\
         source = \"./hello.tar.gz\"\nmode = \"static\"\npaths = [\"bin/hello:/usr/bin/extra\"]\n",
    )
    .unwrap();
    let out = d.join("out");
    let (_server, port) = testkit::http::Server::start(d);
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
    fs::copy(out.join("hello.transfer"), host.join("defs/hello.transfer")).unwrap();

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

    // The optional extension: its transfer belongs to a feature that is off until enabled.
    let host = d.join("host-extra");
    fs::create_dir_all(host.join("defs")).unwrap();
    fs::create_dir_all(host.join("etc/extensions")).unwrap();
    for f in ["extra.transfer", "extra.feature"] {
        fs::copy(out.join(f), host.join("defs").join(f)).unwrap();
    }
    let installed = host.join("opt/extensions/extra/extra-2.0-x86-64.raw");
    let off = sysupdate(&root, &host, "update");
    assert!(!installed.exists(), "installed while off:\n{}", text(&off));
    fs::create_dir_all(host.join("defs/extra.feature.d")).unwrap();
    fs::write(
        host.join("defs/extra.feature.d/on.conf"),
        "[Feature]\nEnabled=true\n",
    )
    .unwrap();
    let on = sysupdate(&root, &host, "update");
    assert!(on.status.success(), "update failed:\n{}", text(&on));
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(out.join("extra-2.0-x86-64.raw")).unwrap()
    );

    // image_suffix = "class": NAME-VERSION-ARCH.sysext.raw, linked as NAME.sysext.raw.
    let m = fs::read_to_string(d.join("m.toml")).unwrap();
    fs::write(d.join("m2.toml"), format!("image_suffix = \"class\"\n{m}")).unwrap();
    testkit::run_ok(
        Command::new(env!("CARGO_BIN_EXE_sysext"))
            .current_dir(d)
            .args(["bake", "m2.toml", "--out", "out2", "--base-url"])
            .arg(format!("http://127.0.0.1:{port}/out2/")),
    );
    let raw2 = "hello-1.0-x86-64.sysext.raw";
    let host = d.join("host-class");
    fs::create_dir_all(host.join("defs")).unwrap();
    fs::create_dir_all(host.join("etc/extensions")).unwrap();
    fs::copy(
        d.join("out2/hello.transfer"),
        host.join("defs/hello.transfer"),
    )
    .unwrap();
    let update = sysupdate(&root, &host, "update");
    assert!(update.status.success(), "update failed:\n{}", text(&update));
    assert_eq!(
        fs::read(host.join("opt/extensions/hello").join(raw2)).unwrap(),
        fs::read(d.join("out2").join(raw2)).unwrap()
    );
    assert_eq!(
        fs::read_link(host.join("etc/extensions/hello.sysext.raw")).unwrap(),
        Path::new("../../opt/extensions/hello").join(raw2)
    );
}

/// Copies the files of folder `from` into a new folder `to`.
fn copy_folder(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A signed bake: the real systemd-sysupdate installs its image with `Verify=yes` through the
/// keyring its Butane snippet installs, and installs nothing from a tampered image, a
/// tampered SHA256SUMS or a signature by another key.
#[test]
fn real_sysupdate_verifies_the_signed_sha256sums() {
    if !testkit::require_root("chroot and mounts for systemd-sysupdate")
        || !testkit::require_tool("mmdebstrap")
        || !testkit::require_tool("python3")
        || !testkit::require_tool("busybox")
        || !testkit::require_tool("gpg")
    {
        return;
    }
    let root = sysupdate_root();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    testkit::hello_tarball(d);
    fs::write(
        d.join("m.toml"),
        "architectures = [\"x86-64\"]\n\n[[extension]]\nname = \"hello\"\nversion = \"1.0\"\n\
         source = \"./hello.tar.gz\"\nmode = \"static\"\npaths = [\"bin/hello:/usr/bin/\"]\n",
    )
    .unwrap();
    let key = testkit::new_signing_key(d, "publisher", "pass phrase");
    testkit::new_signing_key(d, "intruder", "");
    let (_server, port) = testkit::http::Server::start(d);
    let bake = |extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sysext"));
        c.current_dir(d)
            .args(["bake", "m.toml", "--out", "out", "--signing-key"])
            .arg(&key)
            .arg("--base-url")
            .arg(format!("http://127.0.0.1:{port}/good/"))
            .env_remove("SYSEXT_SIGNING_PASSPHRASE");
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };

    // The key has a passphrase: without it the bake stops before building anything.
    let o = bake(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("SYSEXT_SIGNING_PASSPHRASE"),
        "{}",
        text(&o)
    );
    assert!(!d.join("out").exists(), "output after a refused key");

    let o = bake(&[("SYSEXT_SIGNING_PASSPHRASE", "pass phrase")]);
    assert!(o.status.success(), "{}", text(&o));
    let out = d.join("out");
    let transfer = fs::read_to_string(out.join("hello.transfer")).unwrap();
    assert!(transfer.contains("\nVerify=yes\n"), "{transfer}");
    let sig = fs::read(out.join("SHA256SUMS.gpg")).unwrap();

    // An unchanged re-bake keeps the signature's bytes (a signature carries its time).
    let o = bake(&[("SYSEXT_SIGNING_PASSPHRASE", "pass phrase")]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::read(out.join("SHA256SUMS.gpg")).unwrap(), sig);

    // A signed bake as a shard: --collect signs the release with the same key, and refuses to
    // without one (the shard's transfer files say Verify=yes).
    let collect = |key: Option<&Path>, to: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sysext"));
        c.current_dir(d)
            .args(["bake", "--collect", to, "out"])
            .env("SYSEXT_SIGNING_PASSPHRASE", "pass phrase")
            .env_remove("SYSEXT_SIGNING_KEY");
        if let Some(k) = key {
            c.arg("--signing-key").arg(k);
        }
        c.output().unwrap()
    };
    let o = collect(None, "unsigned");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--signing-key"), "{}", text(&o));
    assert!(!d.join("unsigned").exists());
    let o = collect(Some(&key), "release");
    assert!(o.status.success(), "{}", text(&o));
    testkit::run_ok(
        Command::new("gpgv")
            .arg("--keyring")
            .arg(d.join("release/import-pubring.gpg"))
            .arg(d.join("release/SHA256SUMS.gpg"))
            .arg(d.join("release/SHA256SUMS")),
    );

    // The keyring as the Butane snippet installs it.
    let bu: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("hello-x86-64.bu")).unwrap()).unwrap();
    let file = bu["storage"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/systemd/import-pubring.gpg")
        .expect("the Butane snippet installs the keyring");
    let url = file["contents"]["source"].as_str().unwrap();
    let b64 = url.strip_prefix("data:;base64,").expect("a data URL");
    let decoded = Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b64.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(decoded.status.success());
    assert_eq!(
        decoded.stdout,
        fs::read(out.join("import-pubring.gpg")).unwrap()
    );
    let keyring = d.join("keyring.gpg");
    fs::write(&keyring, &decoded.stdout).unwrap();

    // Four served folders: as baked, and three tampered ones.
    let raw = "hello-1.0-x86-64.raw";
    copy_folder(&out, &d.join("good"));
    copy_folder(&out, &d.join("bad-image"));
    let mut img = fs::read(out.join(raw)).unwrap();
    let n = img.len();
    img[n / 2] ^= 1;
    fs::write(d.join("bad-image").join(raw), &img).unwrap();
    // A replaced image with SHA256SUMS made to match it: only the signature catches this.
    copy_folder(&out, &d.join("bad-sums"));
    fs::write(d.join("bad-sums").join(raw), &img).unwrap();
    let sums = fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    let real = sums
        .lines()
        .find(|l| l.ends_with(raw))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    let forged = Command::new("sha256sum")
        .arg(d.join("bad-sums").join(raw))
        .output()
        .unwrap();
    let forged = String::from_utf8_lossy(&forged.stdout);
    let forged = forged.split_whitespace().next().unwrap();
    fs::write(d.join("bad-sums/SHA256SUMS"), sums.replace(real, forged)).unwrap();
    copy_folder(&out, &d.join("bad-key"));
    let other_sig = d.join("other.sig");
    let home = d.join("gnupg-intruder");
    testkit::run_ok(
        Command::new("gpg")
            .args(["--batch", "--no-tty", "--homedir"])
            .arg(&home)
            .args(["--pinentry-mode", "loopback", "--passphrase", ""])
            .arg("--output")
            .arg(&other_sig)
            .arg("--detach-sign")
            .arg(out.join("SHA256SUMS")),
    );
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .status();
    fs::copy(&other_sig, d.join("bad-key/SHA256SUMS.gpg")).unwrap();

    for folder in ["bad-image", "bad-sums", "bad-key", "good"] {
        let host = d.join(format!("host-{folder}"));
        fs::create_dir_all(host.join("defs")).unwrap();
        fs::create_dir_all(host.join("etc/extensions")).unwrap();
        fs::write(
            host.join("defs/hello.transfer"),
            transfer.replace("/good\n", &format!("/{folder}\n")),
        )
        .unwrap();
        let update = sysupdate_with_keyring(&root, &host, Some(&keyring), "update");
        let installed = host.join("opt/extensions/hello").join(raw);
        if folder == "good" {
            assert!(update.status.success(), "update failed:\n{}", text(&update));
            assert_eq!(
                fs::read(&installed).unwrap(),
                fs::read(out.join(raw)).unwrap()
            );
            assert!(host
                .join("etc/extensions/hello.raw")
                .symlink_metadata()
                .is_ok());
        } else {
            assert!(
                !update.status.success(),
                "{folder}: sysupdate accepted it:\n{}",
                text(&update)
            );
            let left: Vec<_> = fs::read_dir(host.join("opt/extensions/hello"))
                .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "{folder}: {left:?} installed");
            assert!(host
                .join("etc/extensions/hello.raw")
                .symlink_metadata()
                .is_err());
        }
    }
}
