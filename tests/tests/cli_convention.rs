//! One command-line convention for the five binaries (issue 13): the shared option groups in
//! every `--help` where they apply, `--creds` from `$OCIROOTFS_CREDS` against a registry that
//! requires a login, a closed stdout as a normal end (status 0, no panic), and the same exit
//! statuses (0 ok, 1 findings, 2 error; `flix-patchelf` keeps patchelf's 1) everywhere.
//!
//! Inputs are made here: a tiny rootfs (the host's loader, libc and /usr/bin/true), the same
//! as an OCI layout, a registry with HTTP Basic auth holding it, a Torcx tarball.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest, Sha256};

const USER: &str = "carol";
const PASSWORD: &str = "pipe-s3cret";

fn bin(name: &str) -> Command {
    let mut c = Command::new(testkit::workspace_bin(name));
    // No credentials, cache or platform of the machine take part.
    for v in [
        "OCIROOTFS_CREDS",
        "OCIROOTFS_CACHE",
        "OCIROOTFS_PLATFORM",
        "REGISTRY_AUTH_FILE",
        "DOCKER_CONFIG",
        "XDG_RUNTIME_DIR",
        "RUST_LOG",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(what: &str, o: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn ok(what: &str, cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", show(what, &o));
    o
}

/// A rootfs with /usr/bin/true and what it loads (the host's, x86-64).
fn tiny_rootfs(root: &Path) {
    testkit::host_glibc(root);
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy("/usr/bin/true", root.join("usr/bin/true")).unwrap();
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// An OCI layout at `layout` holding `rootfs` as one uncompressed layer, tagged `1`.
fn oci_layout(rootfs: &Path, layout: &Path) {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| -> serde_json::Value {
        let d = sha(bytes);
        fs::write(blobs.join(&d), bytes).unwrap();
        serde_json::json!({"digest": format!("sha256:{d}"), "size": bytes.len()})
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", rootfs).unwrap();
    let layer = b.into_inner().unwrap();
    let mut layer_desc = blob(&layer);
    layer_desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"].clone()]},
    });
    let mut config_desc = blob(&serde_json::to_vec(&config).unwrap());
    config_desc["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer_desc],
    });
    let mut manifest_desc = blob(&serde_json::to_vec(&manifest).unwrap());
    manifest_desc["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_desc["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "1"});
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [manifest_desc],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
}

/// A bake manifest building `tiny` from `source` with flix.
fn bake_manifest(path: &Path, source: &str) {
    fs::write(
        path,
        format!(
            "base_url = \"https://example.com/ext/\"\n[[extension]]\nname = \"tiny\"\nversion = \"1\"\n\
             source = \"{source}\"\nmode = \"flix\"\npaths = [\"/usr/bin/true\"]\n"
        ),
    )
    .unwrap();
}

// ---------- --help ----------

#[test]
fn help_lists_the_shared_groups() {
    const SOURCE: &[&str] = &[
        "--platform",
        "--creds",
        "--insecure",
        "--cache",
        "--cache-max",
    ];
    const OUTPUT: &[&str] = &[
        "-o, --output",
        "-f, --force",
        "--format",
        "--fs",
        "--compression",
        "--verity",
        "--seed",
        "--key",
        "--cert",
    ];
    // (command, groups that apply, flags that must not be there)
    type Flags = &'static [&'static str];
    let cases: &[(Flags, &[Flags], Flags)] = &[
        (&["ocirootfs"], &[SOURCE, &["-f, --force", "--json"]], &[]),
        (&["flix"], &[SOURCE, OUTPUT], &[]),
        (&["flatwrap"], &[SOURCE, OUTPUT], &[]),
        (&["sysext", "pack"], &[OUTPUT], &["--creds"]),
        (&["sysext", "convert-torcx"], &[OUTPUT], &["--creds"]),
        (
            &["sysext", "bake"],
            &[&[
                "--creds",
                "--insecure",
                "--cache",
                "--cache-max",
                "-o, --out",
            ]],
            // The platform is the job's architecture.
            &["--platform", "--compression"],
        ),
        (
            &["sysext", "pull"],
            &[SOURCE, &["-o, --output", "-f, --force", "--json"]],
            &["--compression", "--fs"],
        ),
        (
            &["sysext", "push"],
            &[&["--creds", "--insecure", "--cache", "--cache-max", "--json"]],
            &["--platform", "--output", "--compression"],
        ),
        (
            &["sysext", "inspect"],
            &[&["--json"]],
            &["--creds", "--output"],
        ),
        (
            &["flix-patchelf"],
            &[&["--set-interpreter", "--output"]],
            &["--creds", "--compression"],
        ),
    ];
    for (cmd, groups, absent) in cases {
        let o = ok(&cmd.join(" "), bin(cmd[0]).args(&cmd[1..]).arg("--help"));
        let help = text(&o.stdout);
        for flag in groups.iter().flat_map(|g| g.iter()) {
            assert!(help.contains(flag), "{cmd:?} --help lacks {flag}:\n{help}");
        }
        for flag in *absent {
            assert!(!help.contains(flag), "{cmd:?} --help has {flag}:\n{help}");
        }
        if groups.iter().any(|g| g.contains(&"--creds")) {
            // One help text: the environment form is named, its value never shown.
            assert!(help.contains("[env: OCIROOTFS_CREDS]"), "{cmd:?}:\n{help}");
            // The cache limit: its variable and its default.
            assert!(
                help.contains("[env: OCIROOTFS_CACHE_MAX") && help.contains("default: 10G"),
                "{cmd:?}:\n{help}"
            );
        }
    }
}

/// Every command with the output options refuses a compression its file system cannot have,
/// before any work: the source is missing, and the error is about the compression.
#[test]
fn file_system_and_compression_are_checked_first() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing").to_str().unwrap().to_string();
    let out = tmp.path().join("x.raw").to_str().unwrap().to_string();
    let cases: &[(&str, Vec<&str>)] = &[
        ("flix", vec![&missing, "x", "/usr/bin/true"]),
        ("flatwrap", vec![&missing, "x", "/usr/bin/true"]),
        ("sysext", vec!["pack", &missing, &out]),
        ("sysext", vec!["convert-torcx", &missing, "x"]),
    ];
    for (name, args) in cases {
        for (flags, says) in [
            (
                &["--fs", "erofs", "--compression", "xz"][..],
                "--compression lz4hc",
            ),
            (&["--compression", "none"][..], "--fs erofs"),
        ] {
            let o = bin(name).args(args).args(flags).output().unwrap();
            let what = format!("{name} {} {}", args.join(" "), flags.join(" "));
            assert_eq!(o.status.code(), Some(2), "{}", show(&what, &o));
            let err = text(&o.stderr);
            assert!(
                err.contains(says) && !err.contains("missing"),
                "{}",
                show(&what, &o)
            );
        }
    }
    assert!(!Path::new(&out).exists());
}

// ---------- --creds from $OCIROOTFS_CREDS ----------

#[test]
fn creds_come_from_the_environment_in_every_source_command() {
    if !["skopeo", "docker-registry", "htpasswd"]
        .iter()
        .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    tiny_rootfs(&t.join("rootfs"));
    oci_layout(&t.join("rootfs"), &t.join("layout"));
    let pw = testkit::run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
    fs::write(t.join("htpasswd"), &pw.stdout).unwrap();
    let registry = testkit::registry::Registry::start_with(&testkit::registry::RegistryConfig {
        auth: testkit::registry::RegistryAuth::Htpasswd(t.join("htpasswd")),
        ..Default::default()
    });
    let image = format!("{}/private/tiny:1", registry.addr());
    let creds = format!("{USER}:{PASSWORD}");
    testkit::run_ok(
        Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--dest-creds"])
            .arg(&creds)
            .arg(format!("oci:{}:1", t.join("layout").display()))
            .arg(format!("docker://{image}")),
    );
    let home = t.join("home");
    fs::create_dir_all(&home).unwrap();
    bake_manifest(&t.join("bake.toml"), &image);

    let out = t.join("out");
    fs::create_dir_all(&out).unwrap();
    let o = |p: &str| out.join(p).to_str().unwrap().to_string();
    // (name, arguments, what the run leaves when it works)
    let runs: Vec<(&str, Vec<String>, PathBuf)> = vec![
        (
            "ocirootfs",
            vec![image.clone(), o("rootfs")],
            out.join("rootfs/usr/bin/true"),
        ),
        (
            "flix",
            vec![
                image.clone(),
                "tiny".into(),
                "/usr/bin/true".into(),
                "-o".into(),
                o("flix/tiny.raw"),
            ],
            out.join("flix/tiny.raw"),
        ),
        (
            "flatwrap",
            vec![
                image.clone(),
                "tiny".into(),
                "/usr/bin/true".into(),
                "-o".into(),
                o("flatwrap/tiny.raw"),
            ],
            out.join("flatwrap/tiny.raw"),
        ),
        (
            "sysext",
            vec![
                "bake".into(),
                t.join("bake.toml").to_str().unwrap().into(),
                "--out".into(),
                o("bake"),
            ],
            out.join("bake/tiny-1-x86-64.raw"),
        ),
    ];
    for d in ["flix", "flatwrap"] {
        fs::create_dir_all(out.join(d)).unwrap();
    }
    for (i, (name, args, made)) in runs.iter().enumerate() {
        let cmd = |tag: &str| {
            let mut c = bin(name);
            c.args(args)
                .env("HOME", &home)
                .env("OCIROOTFS_CACHE", t.join(format!("cache-{i}-{tag}")));
            c
        };
        // Without a login the registry refuses: an error (bake: a failed job, status 1).
        let denied = cmd("anonymous").output().unwrap();
        let want = if *name == "sysext" { 1 } else { 2 };
        assert_eq!(denied.status.code(), Some(want), "{}", show(name, &denied));
        assert!(
            text(&denied.stderr).contains("denied access"),
            "{}",
            show(name, &denied)
        );
        assert!(!made.exists(), "{name}: {made:?} written without a login");
        // The same run with the password in the environment only (not in `ps`).
        let done = ok(name, cmd("env").env("OCIROOTFS_CREDS", &creds));
        assert!(made.exists(), "{}", show(name, &done));
    }
    // sysext push and pull of the baked image: refused without a login, done with the
    // password in the environment.
    let artifact = format!("{}/private/tiny-ext:1", registry.addr());
    let pulled = out.join("pulled.raw");
    let publish: [Vec<String>; 2] = [
        vec!["push".into(), o("bake/tiny-1-x86-64.raw"), artifact.clone()],
        vec![
            "pull".into(),
            artifact.clone(),
            "-o".into(),
            o("pulled.raw"),
        ],
    ];
    for args in &publish {
        let cmd = || {
            let mut c = bin("sysext");
            c.args(args)
                .env("HOME", &home)
                .env("OCIROOTFS_CACHE", t.join(format!("cache-{}", args[0])));
            c
        };
        let denied = cmd().output().unwrap();
        assert_eq!(denied.status.code(), Some(2), "{}", show(&args[0], &denied));
        assert!(
            text(&denied.stderr).contains("denied access"),
            "{}",
            show(&args[0], &denied)
        );
        assert!(!pulled.exists());
        ok(&args[0], cmd().env("OCIROOTFS_CREDS", &creds));
    }
    assert_eq!(
        fs::read(&pulled).unwrap(),
        fs::read(out.join("bake/tiny-1-x86-64.raw")).unwrap()
    );
}

// ---------- a closed stdout ----------

/// Runs `cmd` with a stdout whose reader is already gone: every write fails with EPIPE.
fn with_closed_stdout(cmd: &mut Command) -> Output {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let mut child = cmd
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = Vec::new();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: Vec::new(),
        stderr: err,
    }
}

/// A Torcx package with one program.
fn torcx_tarball(path: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(
        ".torcx/manifest.json",
        0o644,
        br#"{"kind":"image-manifest-v0","value":{"bin":["/bin/hello"]}}"#,
    );
    add("bin/hello", 0o755, b"#!/bin/sh\necho hello\n");
    fs::write(path, b.into_inner().unwrap()).unwrap();
}

#[test]
fn a_closed_stdout_is_a_normal_end() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let rootfs = t.join("rootfs");
    tiny_rootfs(&rootfs);
    oci_layout(&rootfs, &t.join("layout"));
    let layout = format!("oci:{}:1", t.join("layout").display());
    torcx_tarball(&t.join("hello.torcx.tar"));
    bake_manifest(&t.join("bake.toml"), rootfs.to_str().unwrap());
    let p = |s: &str| t.join(s).to_str().unwrap().to_string();
    let cache = t.join("cache");
    fs::create_dir_all(t.join("re")).unwrap();

    // (binary, arguments, what the run still has to leave); in order: later runs read what
    // earlier ones wrote.
    let runs: Vec<(&str, Vec<String>, Option<String>)> = vec![
        (
            "ocirootfs",
            vec![layout.clone(), p("pulled"), "--json".into()],
            Some(p("pulled/usr/bin/true")),
        ),
        (
            "flix",
            vec![
                layout.clone(),
                "tiny".into(),
                "/usr/bin/true".into(),
                "-o".into(),
                p("tiny.raw"),
                "--json".into(),
            ],
            Some(p("tiny.raw")),
        ),
        (
            "flatwrap",
            vec![
                rootfs.to_str().unwrap().into(),
                "wrapped".into(),
                "/usr/bin/true".into(),
                "--format".into(),
                "dir".into(),
                "-o".into(),
                p("wrapped"),
                "--json".into(),
            ],
            Some(p("wrapped/usr/bin/true")),
        ),
        (
            "sysext",
            vec!["inspect".into(), "--json".into(), p("tiny.raw")],
            None,
        ),
        (
            "sysext",
            vec!["check".into(), "--json".into(), p("tiny.raw")],
            None,
        ),
        (
            "sysext",
            vec![
                "deps".into(),
                "--json".into(),
                "--root".into(),
                p("rootfs"),
                "/usr/bin/true".into(),
            ],
            None,
        ),
        (
            "sysext",
            vec![
                "pack".into(),
                "--json".into(),
                p("wrapped"),
                p("re/wrapped.raw"),
            ],
            Some(p("re/wrapped.raw")),
        ),
        (
            "sysext",
            vec![
                "convert-torcx".into(),
                "--json".into(),
                p("hello.torcx.tar"),
                "hello".into(),
                "-o".into(),
                p("hello.raw"),
            ],
            Some(p("hello.raw")),
        ),
        (
            "sysext",
            vec![
                "bake".into(),
                "--json".into(),
                p("bake.toml"),
                "--out".into(),
                p("baked"),
            ],
            Some(p("baked/tiny-1-x86-64.raw")),
        ),
        (
            "sysext",
            vec![
                "status".into(),
                "--json".into(),
                "--root".into(),
                p("rootfs"),
            ],
            None,
        ),
        ("flix-patchelf", vec!["--version".into()], None),
        (
            "flix-patchelf",
            vec!["--print-interpreter".into(), p("rootfs/usr/bin/true")],
            None,
        ),
    ];
    for (name, args, made) in &runs {
        let what = format!("{name} {}", args.join(" "));
        let o = with_closed_stdout(bin(name).args(args).env("OCIROOTFS_CACHE", &cache));
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{}", show(&what, &o));
        for bad in ["panicked", "Broken pipe", "error:"] {
            assert!(!err.contains(bad), "{}", show(&what, &o));
        }
        if let Some(m) = made {
            assert!(Path::new(m).exists(), "{what}: no {m}\n{err}");
        }
    }
}

// ---------- exit statuses ----------

#[test]
fn exit_statuses_are_the_same_everywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let missing = t.join("missing").to_str().unwrap().to_string();
    let out = |s: &str| t.join(s).to_str().unwrap().to_string();

    // Errors: status 2, `NAME: error: ` and the cause chain on stderr, nothing on stdout.
    let errors: &[(&str, Vec<String>)] = &[
        (
            "ocirootfs",
            vec![missing.clone(), out("o"), "--json".into()],
        ),
        (
            "flix",
            vec![
                missing.clone(),
                "x".into(),
                "/usr/bin/true".into(),
                "--json".into(),
            ],
        ),
        (
            "flatwrap",
            vec![
                missing.clone(),
                "x".into(),
                "/usr/bin/true".into(),
                "--json".into(),
            ],
        ),
        (
            "sysext",
            vec!["inspect".into(), "--json".into(), missing.clone()],
        ),
        (
            "sysext",
            vec!["check".into(), "--json".into(), missing.clone()],
        ),
        (
            "sysext",
            vec![
                "pack".into(),
                "--json".into(),
                missing.clone(),
                out("p.raw"),
            ],
        ),
        (
            "sysext",
            vec![
                "bake".into(),
                "--json".into(),
                missing.clone(),
                "--out".into(),
                out("b"),
            ],
        ),
    ];
    for (name, args) in errors {
        let o = bin(name).args(args).output().unwrap();
        let what = format!("{name} {}", args.join(" "));
        assert_eq!(o.status.code(), Some(2), "{}", show(&what, &o));
        let err = text(&o.stderr);
        assert!(
            err.starts_with(&format!("{name}: error: ")) && err.contains("missing"),
            "{}",
            show(&what, &o)
        );
        assert_eq!(err.lines().count(), 1, "{}", show(&what, &o));
        assert!(o.stdout.is_empty(), "{}", show(&what, &o));
    }
    // Usage errors: 2 as well.
    for (name, args) in [
        ("ocirootfs", &["only-one"][..]),
        ("ocirootfs", &["cache", "prune", "--max", "lots"]),
        ("ocirootfs", &["cache"]),
        ("flix", &["src", "name"]),
        ("flatwrap", &["src", "name"]),
        ("sysext", &["pack", "--format", "tar", "a", "b"]),
    ] {
        let o = bin(name).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", show(name, &o));
    }

    // Findings: status 1 with the report on stdout. A folder image without its release file,
    // and a program whose library is missing from the rootfs.
    let img = t.join("noname");
    fs::create_dir_all(img.join("usr/bin")).unwrap();
    fs::write(img.join("usr/bin/x"), "#!/bin/sh\n").unwrap();
    let o = bin("sysext")
        .args(["check", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show("check", &o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["findings"].as_array().unwrap().is_empty(), "{v}");
    let root = t.join("nolibc");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy("/usr/bin/true", root.join("usr/bin/true")).unwrap();
    let o = bin("sysext")
        .args(["deps", "--json", "--root"])
        .arg(&root)
        .arg("/usr/bin/true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show("deps", &o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!v["missing"].as_array().unwrap().is_empty(), "{v}");

    // flix-patchelf keeps patchelf's conventions: 1, `patchelf: MESSAGE`.
    let o = bin("flix-patchelf")
        .args(["--print-interpreter", &missing])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", show("flix-patchelf", &o));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("patchelf: ") && !err.contains("error:"),
        "{err}"
    );
}
