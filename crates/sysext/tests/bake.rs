//! `sysext bake` end to end: a static tarball with a unit, a flix folder (musl), static and
//! flix arm64 entries, a broken entry; incremental re-runs; SHA256SUMS with `sha256sum -c`;
//! Butane snippets parsed as YAML.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use sysext_core::inspect::Image;

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

fn sh(script: &str) {
    testkit::run_ok(Command::new("sh").args(["-ec", script]));
}

const UNIT: &str = "[Unit]\nDescription=hello\n[Service]\nExecStart=/usr/bin/hello true\n[Install]\nWantedBy=multi-user.target\n";

/// Inputs in a folder on the same filesystem as the fixtures (hardlinked arm64 tree).
fn inputs(dir: &Path) {
    let d = dir.display();
    fs::create_dir_all(dir.join("st/bin")).unwrap();
    fs::copy(testkit::which("busybox").unwrap(), dir.join("st/bin/hello")).unwrap();
    fs::write(dir.join("st/hello.service"), UNIT).unwrap();
    sh(&format!(
        "tar -C {d}/st -czf {d}/hello.tar.gz bin hello.service"
    ));
    // arm64 static build of the same extension.
    fs::create_dir_all(dir.join("armst/bin")).unwrap();
    fs::write(dir.join("m.c"), "int main(void){return 0;}\n").unwrap();
    sh(&format!(
        "aarch64-linux-gnu-gcc -static -O -o {d}/armst/bin/hello {d}/m.c"
    ));
    fs::write(dir.join("armst/hello.service"), UNIT).unwrap();
    // A tiny rootfs: busybox-static and a musl dynamic program with its loader.
    fs::create_dir_all(dir.join("rootfs/usr/bin")).unwrap();
    fs::create_dir_all(dir.join("rootfs/lib")).unwrap();
    fs::copy(
        testkit::which("busybox").unwrap(),
        dir.join("rootfs/usr/bin/busybox"),
    )
    .unwrap();
    sh(&format!("musl-gcc -O -o {d}/rootfs/usr/bin/dyn {d}/m.c"));
    let ld = fs::read_dir("/lib")
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("ld-musl-x86_64")
        })
        .expect("musl loader in /lib (musl-tools)");
    fs::copy(ld.path(), dir.join("rootfs/lib").join(ld.file_name())).unwrap();
    // The arm64 extract tree lacks the /lib link: give flix a root with it, hardlinking usr.
    let a64 = testkit::fixtures::trixie_arm64_rootfs();
    sh(&format!(
        "mkdir {d}/a64 && cp -al {}/usr {d}/a64/usr && ln -s usr/lib {d}/a64/lib",
        a64.display()
    ));
}

const MANIFEST: &str = r#"
base_url = "https://example.org/ext"
architectures = ["x86-64", "arm64"]

[[extension]]
name = "hello"
version = "1.0"
source = "./hello.tar.gz"
sources = { arm64 = "./armst" }
mode = "static"
paths = ["bin/hello:/usr/bin/"]
units = ["hello.service"]
enable = ["hello.service"]

[[extension]]
name = "dyn"
version = "2.1"
source = "./rootfs"
mode = "flix"
paths = ["/usr/bin/dyn"]
architectures = ["x86-64"]

[[extension]]
name = "b3"
version = "1.5"
source = "./rootfs"
sources = { arm64 = "./a64" }
mode = "flix"
paths = ["/usr/bin/b3sum"]
architectures = ["arm64"]

[[extension]]
name = "wrapped"
version = "0.1"
source = "./rootfs"
mode = "flatwrap"
paths = ["/usr/bin/busybox"]
architectures = ["x86-64"]

[[extension]]
name = "gone"
version = "1"
source = "./missing-{goarch}.tar.gz"
mode = "static"
architectures = ["x86-64"]

[[extension]]
name = "broken"
version = "1"
source = "./rootfs"
mode = "flix"
paths = ["/usr/bin/not-there"]
architectures = ["x86-64"]
"#;

fn bake(dir: &Path) -> (Output, serde_json::Value) {
    let out = sysext()
        .current_dir(dir)
        .args(["bake", "m.toml", "--out", "out", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, v)
}

/// `sysext bake m.toml --out out ARGS` in `dir` that must fail with exit status 2; its stderr.
fn bake_refused(dir: &Path, manifest: &str, args: &[&str]) -> String {
    fs::write(dir.join("m.toml"), manifest).unwrap();
    let out = sysext()
        .current_dir(dir)
        .args(["bake", "m.toml", "--out", "out"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

/// `sha256sum -c SHA256SUMS` in `dir` succeeds.
fn sums_verify(dir: &Path) {
    testkit::run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(dir),
    );
}

/// The images SHA256SUMS in `dir` lists; the other lines must be the folder's transfer files,
/// each listed.
fn sums_images(dir: &Path) -> usize {
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    let (images, texts): (Vec<&str>, Vec<&str>) = sums
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .partition(|f| f.ends_with(".raw"));
    let mut transfers: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".transfer"))
        .collect();
    transfers.sort();
    assert!(!transfers.is_empty());
    assert_eq!(texts, transfers, "{sums}");
    images.len()
}

/// The extension-release file of extension `name` in `img`.
fn release_of(img: &Image, name: &str) -> String {
    let rel = img
        .read_file(&format!(
            "usr/lib/extension-release.d/extension-release.{name}"
        ))
        .unwrap();
    String::from_utf8(rel).unwrap()
}

fn statuses(v: &serde_json::Value) -> BTreeMap<String, String> {
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name() != "bake-report.json")
        .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
        .collect()
}

/// The Butane config is JSON (YAML 1.2): parsed here with serde_json, and as YAML by
/// python3-yaml when it is installed.
fn butane_ok(text: &str, name: &str, raw: &str) {
    let d: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(d["variant"], "flatcar", "{text}");
    let f = &d["storage"]["files"];
    assert_eq!(
        f[0]["path"],
        format!("/opt/extensions/{name}/{raw}"),
        "{text}"
    );
    assert_eq!(
        f[0]["contents"]["source"],
        format!("https://example.org/ext/{raw}"),
        "{text}"
    );
    assert_eq!(
        f[1]["path"],
        format!("/etc/sysupdate.{name}.d/{name}.transfer"),
        "{text}"
    );
    assert_eq!(
        d["storage"]["links"][0],
        serde_json::json!({"path": format!("/etc/extensions/{name}.raw"), "target": format!("/opt/extensions/{name}/{raw}"), "hard": false})
    );
    assert_eq!(
        d["systemd"]["units"][0],
        serde_json::json!({"name": "systemd-sysupdate.timer", "enabled": true})
    );
    assert_eq!(
        d["systemd"]["units"][1]["dropins"][0]["contents"],
        format!("[Service]\nExecStartPre=/usr/lib/systemd/systemd-sysupdate -C {name} update\n")
    );
    if testkit::which("python3").is_some() {
        let script = format!(
            "import sys\ntry:\n import yaml\nexcept ImportError:\n sys.exit(0)\n\
             d = yaml.safe_load(open(sys.argv[1]))\n\
             f = d['storage']['files']\n\
             assert d['variant'] == 'flatcar', d\n\
             assert f[0]['path'] == '/opt/extensions/{name}/{raw}', f\n\
             assert f[0]['contents']['source'].endswith('/{raw}'), f\n\
             assert 'MatchPattern={name}-@v-%a.raw' in f[1]['contents']['inline'], f\n\
             assert d['storage']['links'][0] == {{'path': '/etc/extensions/{name}.raw', 'target': '/opt/extensions/{name}/{raw}', 'hard': False}}\n"
        );
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(tmp.path(), text).unwrap();
        testkit::run_ok(
            Command::new("python3")
                .args(["-c", &script])
                .arg(tmp.path()),
        );
    }
}

/// `/opt/extensions/hello/RAW` and the image `hello.raw` links to, in a scratch root
/// merged by systemd-sysext in a private mount namespace: the program and the drop-in appear.
fn systemd_merges_as_deployed(dir: &Path, raw: &Path) {
    let root = dir.join("host");
    let host = "ID=flatcar\nVERSION_ID=4081.2.0\n";
    for d in [
        "usr/lib",
        "etc",
        "var/lib/extensions",
        "opt/extensions/hello",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("usr/lib/os-release"), host).unwrap();
    fs::write(root.join("etc/os-release"), host).unwrap();
    let file = raw.file_name().unwrap().to_string_lossy().into_owned();
    fs::copy(raw, root.join("opt/extensions/hello").join(&file)).unwrap();
    // What /etc/extensions/hello.raw points to on the host, as a copy in /var/lib/extensions:
    // systemd-sysext 252 (this machine) has no /etc/extensions yet and does not discover
    // symlinked images under --root; Flatcar's systemd does both.
    fs::copy(raw, root.join("var/lib/extensions/hello.raw")).unwrap();
    let r = root.display();
    let script = format!(
        "mount --make-rshared / && mount -t tmpfs tmpfs /run && systemd-sysext --root='{r}' merge && \
         test -x '{r}/usr/bin/hello' && \
         cat '{r}/usr/lib/systemd/system/multi-user.target.d/10-hello-hello.service.conf'"
    );
    let out = testkit::in_mount_namespace(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Upholds=hello.service"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bake_builds_all_isolates_failures_and_is_incremental() {
    for t in ["busybox", "musl-gcc", "aarch64-linux-gnu-gcc", "sha256sum"] {
        if !testkit::require_tool(t) {
            return;
        }
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    inputs(dir);
    fs::write(dir.join("m.toml"), MANIFEST).unwrap();

    // First bake: everything but the broken entry is built; exit status 1.
    let (out, v) = bake(dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let st = statuses(&v);
    let expect = [
        ("hello-1.0-x86-64.raw", "built"),
        ("hello-1.0-arm64.raw", "built"),
        ("dyn-2.1-x86-64.raw", "built"),
        ("b3-1.5-arm64.raw", "built"),
        ("wrapped-0.1-x86-64.raw", "built"),
        ("broken-1-x86-64.raw", "failed"),
        ("gone-1-x86-64.raw", "failed"),
    ];
    for (f, s) in expect {
        assert_eq!(
            st.get(f).map(String::as_str),
            Some(s),
            "{f}: {st:?}\n{stderr}"
        );
    }
    let broken = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "broken")
        .unwrap();
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("/usr/bin/not-there"),
        "{broken}"
    );
    assert!(
        stderr.contains("FAILED") && stderr.contains("not-there"),
        "{stderr}"
    );
    assert!(
        stderr.contains("missing-amd64.tar.gz: no such file or folder"),
        "{stderr}"
    );
    let o = dir.join("out");
    assert!(!o.join("broken-1-x86-64.raw").exists());
    let leftovers: Vec<_> = fs::read_dir(&o)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".bake-state.json")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Report sizes and digests match the files; SHA256SUMS verifies with sha256sum -c.
    for e in v["entries"].as_array().unwrap() {
        if e["status"] == "built" {
            let p = o.join(e["file"].as_str().unwrap());
            assert_eq!(e["bytes"].as_u64(), Some(fs::metadata(&p).unwrap().len()));
            assert_eq!(e["sha256"].as_str().unwrap().len(), 64);
        }
    }
    let sums = fs::read_to_string(o.join("SHA256SUMS")).unwrap();
    assert_eq!(sums_images(&o), 5, "{sums}");
    for l in sums.lines() {
        let (h, f) = l.split_once("  ").unwrap();
        assert!(
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
            "{l}"
        );
        assert!(!f.contains('/'), "{l}");
    }
    sums_verify(&o);

    // Images: names, architectures, release files, the Upholds drop-in.
    let img = Image::open(&o.join("hello-1.0-arm64.raw")).unwrap();
    let info = serde_json::to_value(img.info().unwrap()).unwrap();
    let text = info.to_string();
    assert!(text.contains("extension-release.hello"), "{text}");
    let rel = release_of(&img, "hello");
    assert!(rel.contains("ARCHITECTURE=arm64"), "{rel}");
    assert!(rel.contains("EXTENSION_RELOAD_MANAGER=1"), "{rel}");
    let hello = img.read_file("usr/bin/hello").unwrap();
    assert_eq!(&hello[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([hello[18], hello[19]]),
        183,
        "EM_AARCH64"
    );
    for arch in ["x86-64", "arm64"] {
        let img = Image::open(&o.join(format!("hello-1.0-{arch}.raw"))).unwrap();
        let paths: Vec<&str> = img.entries().iter().map(|e| e.path.as_str()).collect();
        for want in [
            "usr/bin/hello",
            "usr/lib/systemd/system/hello.service",
            "usr/lib/systemd/system/multi-user.target.d/10-hello-hello.service.conf",
        ] {
            assert!(paths.contains(&want), "{want} in {arch}: {paths:?}");
        }
        let dropin = img
            .read_file("usr/lib/systemd/system/multi-user.target.d/10-hello-hello.service.conf")
            .unwrap();
        assert!(String::from_utf8_lossy(&dropin).contains("Upholds=hello.service"));
        let rel = release_of(&img, "hello");
        assert!(rel.contains(&format!("ARCHITECTURE={arch}")), "{rel}");
    }
    let b3 = Image::open(&o.join("b3-1.5-arm64.raw")).unwrap();
    let rel = release_of(&b3, "b3");
    assert!(rel.contains("ARCHITECTURE=arm64"), "{rel}");
    let bin = b3.read_file("usr/bin/b3sum").unwrap();
    assert_eq!(u16::from_le_bytes([bin[18], bin[19]]), 183, "EM_AARCH64");
    let dynimg = Image::open(&o.join("dyn-2.1-x86-64.raw")).unwrap();
    let rel = release_of(&dynimg, "dyn");
    assert!(rel.contains("ARCHITECTURE=x86-64"), "{rel}");

    // Deployed as the Butane snippet lays it out, the real systemd-sysext merges it.
    if testkit::require_root("systemd-sysext merge of a baked image") {
        systemd_merges_as_deployed(dir, &o.join("hello-1.0-x86-64.raw"));
    }

    // Transfer files and Butane snippets.
    let conf = fs::read_to_string(o.join("hello.transfer")).unwrap();
    assert!(conf.contains("Verify=false\n"), "unsigned: {conf}");
    assert!(!o.join("hello.conf").exists());
    assert!(conf.contains("Path=https://example.org/ext\n"), "{conf}");
    assert!(conf.contains("MatchPattern=hello-@v-%a.raw\n"), "{conf}");
    assert!(
        conf.contains("CurrentSymlink=/etc/extensions/hello.raw\n"),
        "{conf}"
    );
    for (name, raw, bu) in [
        ("hello", "hello-1.0-arm64.raw", "hello-arm64.bu"),
        ("hello", "hello-1.0-x86-64.raw", "hello-x86-64.bu"),
        ("b3", "b3-1.5-arm64.raw", "b3-arm64.bu"),
    ] {
        butane_ok(&fs::read_to_string(o.join(bu)).unwrap(), name, raw);
    }

    // Second bake, nothing changed: all up to date, no output touched.
    let before = mtimes(&o);
    let (out2, v2) = bake(dir);
    assert_eq!(out2.status.code(), Some(1));
    for (f, s) in statuses(&v2) {
        let failing = f.starts_with("broken") || f.starts_with("gone");
        let want = if failing { "failed" } else { "up-to-date" };
        assert_eq!(s, want, "{f}");
    }
    assert_eq!(before, mtimes(&o), "outputs were rewritten");

    // Fix the broken entry, change the tarball: only those are rebuilt.
    let fixed = MANIFEST
        .replace("/usr/bin/not-there", "/usr/bin/busybox")
        .replace("./missing-{goarch}.tar.gz", "./rootfs");
    fs::write(dir.join("m.toml"), fixed).unwrap();
    fs::write(dir.join("st/extra"), "x").unwrap();
    let d = dir.display();
    sh(&format!(
        "tar -C {d}/st -czf {d}/hello.tar.gz bin hello.service extra"
    ));
    let (out3, v3) = bake(dir);
    assert_eq!(
        out3.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out3.stderr)
    );
    let st = statuses(&v3);
    assert_eq!(st["hello-1.0-x86-64.raw"], "built");
    assert_eq!(st["broken-1-x86-64.raw"], "built");
    assert_eq!(st["hello-1.0-arm64.raw"], "up-to-date");
    assert_eq!(st["dyn-2.1-x86-64.raw"], "up-to-date");
    assert_eq!(st["b3-1.5-arm64.raw"], "up-to-date");
    assert_eq!(st["wrapped-0.1-x86-64.raw"], "up-to-date");
    assert_eq!(st["gone-1-x86-64.raw"], "built");
    sums_verify(&o);
    assert_eq!(sums_images(&o), 7);
    // The flatwrap image has its launcher and release file.
    let w = Image::open(&o.join("wrapped-0.1-x86-64.raw")).unwrap();
    assert!(w.entries().iter().any(|e| e.path == "usr/bin/busybox"));
    release_of(&w, "wrapped");
}

#[test]
fn bad_manifest_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let err = bake_refused(
        tmp.path(),
        "[[extension]]\nname = \"x\"\nversion = \"1 0\"\nsource = \"/\"\nmode = \"static\"\n",
        &["--base-url", "http://h/"],
    );
    assert!(err.contains("m.toml") && err.contains("version"), "{err}");
    assert!(!tmp.path().join("out").exists());

    let err = bake_refused(
        tmp.path(),
        "[[extension]]\nname = \"x\"\nversion = \"1\"\nsource = \"/\"\nmode = \"static\"\n",
        &[],
    );
    assert!(err.contains("--base-url"), "{err}");

    // A signing key that is not one fails the bake before anything is built.
    fs::write(tmp.path().join("key.asc"), "not a key\n").unwrap();
    let err = bake_refused(
        tmp.path(),
        "[[extension]]\nname = \"x\"\nversion = \"1\"\nsource = \"/\"\nmode = \"static\"\n",
        &["--base-url", "http://h/", "--signing-key", "key.asc"],
    );
    assert!(
        err.contains("key.asc") && err.contains("--export-secret-keys"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists());
}

/// The example as a reader first tries it, from another folder: each missing local source is
/// named by its resolved path at once (never tried as an image on a registry), and an image
/// whose registry host does not resolve fails without retries.
#[test]
fn missing_local_sources_and_unresolvable_hosts_fail_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(
        sub.join("m.toml"),
        r#"base_url = "https://example.org/ext"
architectures = ["x86-64", "arm64"]

[[extension]]
name = "hello"
version = "1.0"
source = "./hello-{goarch}.tar.gz"
mode = "static"
paths = ["bin/hello:/usr/bin/"]

[[extension]]
name = "tree"
version = "1.0"
source = "../no-such-tree"
mode = "static"
paths = ["bin/x:/usr/bin/"]
architectures = ["x86-64"]

[[extension]]
name = "remote"
version = "1.0"
source = "no-such-host.invalid/debian:trixie"
mode = "flix"
paths = ["/usr/bin/b3sum"]
architectures = ["x86-64"]
"#,
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = sysext()
        .current_dir(tmp.path())
        .args(["bake", "sub/m.toml", "--out", "out", "--json"])
        .output()
        .unwrap();
    let elapsed = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{err}");
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {err}"));
    let text = v.to_string();
    let sub_abs = sub.canonicalize().unwrap();
    for missing in [
        sub_abs.join("hello-amd64.tar.gz"),
        sub_abs.join("hello-arm64.tar.gz"),
        sub_abs.join("../no-such-tree"),
    ] {
        let want = format!("{}: no such file or folder", missing.display());
        assert!(text.contains(&want), "{want} not in {text}");
    }
    assert!(!text.contains("docker.io"), "{text}");
    assert!(
        text.contains("no-such-host.invalid") && text.contains("does not resolve"),
        "{text}"
    );
    assert!(!err.contains("retrying"), "{err}");
    // Four entries, none retried: well under a second each, with room for a loaded machine.
    assert!(elapsed.as_secs() < 8, "took {elapsed:?}: {err}");
}

/// `fs` and `compression` in a manifest entry: an lz4hc EROFS image, read back by `inspect`;
/// a compressor EROFS does not have is refused before anything is built, naming the entry.
#[test]
fn manifest_entries_choose_file_system_and_compressor() {
    let Some(busybox) = testkit::which("busybox") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::create_dir_all(d.join("st/bin")).unwrap();
    fs::copy(&busybox, d.join("st/bin/hello")).unwrap();
    let manifest = |comp: &str| {
        format!(
            "base_url = \"https://example.org/ext\"\n\n[[extension]]\nname = \"hello\"\n\
             version = \"1.0\"\nsource = \"./st\"\nmode = \"static\"\nfs = \"erofs\"\n\
             compression = \"{comp}\"\npaths = [\"bin/hello:/usr/bin/\"]\n"
        )
    };
    let err = bake_refused(d, &manifest("xz"), &[]);
    assert!(
        err.contains("m.toml") && err.contains("hello") && err.contains("lz4hc"),
        "{err}"
    );
    assert!(!d.join("out").exists());
    fs::write(d.join("m.toml"), manifest("lz4hc:12")).unwrap();
    let o = sysext()
        .current_dir(d)
        .args(["bake", "m.toml", "--out", "out"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = d.join("out/hello-1.0-x86-64.raw");
    let head = fs::read(&img).unwrap();
    assert_eq!(
        &head[1024..1028],
        &0xE0F5_E1E2u32.to_le_bytes(),
        "not EROFS"
    );
    let o = sysext()
        .args(["inspect", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let text = info.to_string();
    assert!(text.contains("usr/bin/hello"), "{text}");
    // Compressed: the image is smaller than busybox itself.
    assert!(
        (head.len() as u64) < fs::metadata(&busybox).unwrap().len(),
        "{} bytes",
        head.len()
    );
}
