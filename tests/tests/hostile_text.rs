//! Hostile inputs, generated text (issue 12, class 5 and the launcher part of class 3): names
//! and URLs from a rootfs or a manifest never become shell commands, unit specifiers or extra
//! lines of a generated file.
//!
//! - flatwrap: a rootfs whose top-level folders are named `x$(touch MARKER)` and `a b*`, and a
//!   program path with quotes and `$(...)`: the launcher runs the program, binds exactly those
//!   folders, and the marker never appears. A quoted extension name is refused, nothing written.
//! - bake: a `base_url` carrying `\n[Transfer]\nVerify=no` (manifest or `--base-url`) writes
//!   no artifact; a name with `%h` and a URL with `%20` reach the transfer file and the Butane
//!   config `%`-escaped, each file holding exactly the expected sections and keys.
//!
//! Every run is bounded: 256 MiB peak RSS and the time limit stated at each case.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::hostile::{leftovers, run_bounded, Sentinel};

const RSS_MIB: u64 = 256;

/// A minimal usr-merged rootfs around the build host's `dash` and the libraries `ldd` lists.
fn mini_rootfs(root: &Path) {
    for d in ["usr/bin", "usr/lib", "usr/lib64", "etc"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    for (l, t) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(t, root.join(l)).unwrap();
    }
    let dash = testkit::which("dash").expect("dash on the build host");
    let out = testkit::run_ok(Command::new("ldd").arg(&dash));
    let mut files = vec![PathBuf::from("/usr/bin/dash")];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let word = line
            .split("=>")
            .last()
            .unwrap_or("")
            .split_whitespace()
            .next()
            .unwrap_or("");
        if word.starts_with('/') {
            files.push(PathBuf::from(word));
        }
    }
    for f in files {
        let rel = f.strip_prefix("/").unwrap();
        let to = root.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        let from = if rel == Path::new("usr/bin/dash") {
            dash.clone()
        } else {
            f.clone()
        };
        fs::copy(&from, &to).unwrap();
        fs::set_permissions(&to, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn flatwrap(args: &[&str], cwd: &Path) -> testkit::hostile::Bounded {
    let mut cmd = Command::new(testkit::workspace_bin("flatwrap"));
    cmd.args(args).current_dir(cwd);
    for v in ["CHROOT", "HOST", "ETCMAP", "VARMAP", "HOMEMAP"] {
        cmd.env_remove(v);
    }
    let r = run_bounded(&mut cmd, Duration::from_secs(120));
    r.assert_bounded("flatwrap", RSS_MIB);
    r
}

fn ready() -> bool {
    testkit::require_root("flatwrap launchers on hostile names (mounts)")
        && testkit::require_tool("unshare")
        && testkit::require_tool("dash")
        && testkit::require_tool("ldd")
}

/// Runs a launcher of the unpacked extension `ext` (FLATWRAP_ROOT) as root, in `cwd`.
fn launch(ext: &Path, program: &str, args: &[&str], cwd: &Path) -> testkit::hostile::Bounded {
    let launcher = ext.join(program.trim_start_matches('/'));
    let mut cmd = Command::new(&launcher);
    cmd.args(args)
        .env("FLATWRAP_ROOT", ext)
        .env_remove("FLATWRAP_CHROOT")
        .env_remove("FLATWRAP_HOST")
        .current_dir(cwd);
    let r = run_bounded(&mut cmd, Duration::from_secs(60));
    r.assert_bounded("launcher", RSS_MIB);
    r
}

/// Top-level folders named `x$(touch MARKER)` and `a b*`: built and launched, the marker never
/// appears, the program runs, and exactly those folders are bound inside.
#[test]
fn top_level_names_are_not_shell_text() {
    if !ready() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    mini_rootfs(&root);
    // Where a `touch MARKER` would land: the launcher's and flatwrap's working directory.
    let work = t.path().join("work");
    fs::create_dir(&work).unwrap();
    let evil = "x$(touch MARKER)`touch MARKER2`";
    fs::create_dir(root.join(evil)).unwrap();
    fs::write(root.join(evil).join("f"), "evil-bound\n").unwrap();
    fs::create_dir(root.join("a b*")).unwrap();
    fs::write(root.join("a b*/f"), "exact\n").unwrap();
    // What a split `a b*` would bind instead: /a, and whatever b* matches (bin).
    fs::create_dir(root.join("a")).unwrap();
    fs::write(root.join("a/f"), "decoy\n").unwrap();
    let r = flatwrap(
        &[
            root.to_str().unwrap(),
            "tools",
            "/usr/bin/dash",
            "--format",
            "dir",
            "-o",
            t.path().join("tools").to_str().unwrap(),
        ],
        &work,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let ext = t.path().join("tools");
    let helper = fs::read_to_string(ext.join("usr/local/tools/.flatwrap/launch")).unwrap();
    assert!(helper.contains("set -euf"), "globbing off in the helper");

    let script = format!(
        "read a < '/a b*/f'; read x < '/{evil}/f'; read d < /a/f; echo \"$a $x $d\"; \
         for p in /*; do printf '<%s>' \"$p\"; done; echo"
    );
    let r = launch(&ext, "/usr/bin/dash", &["-c", &script], &work);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("exact evil-bound decoy"), "{out}");
    // The root inside: the rootfs' top-level entries (bound or linked) and the host's.
    let listing = lines.next().unwrap_or_default();
    for want in [
        "</a b*>",
        "</a>",
        "</bin>",
        &format!("</{evil}>"),
        "</usr>",
        "</proc>",
    ] {
        assert!(listing.contains(want), "{want} in {listing}");
    }
    for dir in [&work, t.path(), &ext, &root] {
        for m in ["MARKER", "MARKER2"] {
            assert!(
                !dir.join(m).exists(),
                "injected command ran: {m} in {dir:?}"
            );
        }
    }
    assert!(
        !Path::new("/MARKER").exists() && !Path::new("/MARKER2").exists(),
        "injected command ran in /"
    );
}

/// A program path with quotes and `$(...)` is one word of the launcher; an extension name with
/// a quote is refused before anything is written.
#[test]
fn quoted_program_paths_and_names() {
    if !ready() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("rootfs");
    mini_rootfs(&root);
    // The working directory of every run: a `touch MARKER` would land there.
    let sentinel = Sentinel::new();
    let work = sentinel.path().to_path_buf();
    let prog = "/usr/bin/it's \"q\" $(touch MARKER) `touch MARKER` ;touch MARKER".to_string();
    let prog_rel = prog.trim_start_matches('/');
    fs::copy(root.join("usr/bin/dash"), root.join(prog_rel)).unwrap();
    fs::set_permissions(root.join(prog_rel), fs::Permissions::from_mode(0o755)).unwrap();
    let r = flatwrap(
        &[
            root.to_str().unwrap(),
            "tools",
            &prog,
            "--format",
            "dir",
            "-o",
            t.path().join("tools").to_str().unwrap(),
        ],
        &work,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let r = launch(
        &t.path().join("tools"),
        &prog,
        &["-c", "echo ran \"$0\" \"$1\"", "zero", "one two"],
        &work,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_eq!(String::from_utf8_lossy(&r.stdout), "ran zero one two\n");
    sentinel.assert_untouched("quoted program path");

    // Names with quotes or shell text: refused, nothing written, source untouched.
    for name in ["it's", "a$(touch MARKER)", "a b", "x\ny"] {
        let out = t.path().join("named");
        let r = flatwrap(
            &[
                root.to_str().unwrap(),
                name,
                "/usr/bin/dash",
                "--format",
                "dir",
                "-o",
                out.to_str().unwrap(),
            ],
            &work,
        );
        assert_eq!(r.code, Some(2), "{name:?}: {}", r.stderr_text());
        assert!(!out.exists(), "{name:?}: output written");
        sentinel.assert_untouched(name);
        assert_eq!(
            leftovers(t.path(), &["rootfs", "tools"]),
            Vec::<String>::new(),
            "{name:?}"
        );
    }
}

/// A tarball holding one file under usr/, for a static bake.
fn static_tarball(path: &Path) {
    let f = fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let data = b"hello\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "usr/share/hello/README", &data[..])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

fn manifest(dir: &Path, name: &str, base_url: Option<&str>) -> PathBuf {
    static_tarball(&dir.join("hello.tgz"));
    let mut text = String::new();
    if let Some(u) = base_url {
        text.push_str(&format!(
            "base_url = {}\n",
            serde_json::to_string(u).unwrap()
        ));
    }
    text.push_str(&format!(
        "[[extension]]\nname = {}\nversion = \"1.0\"\nsource = \"./hello.tgz\"\nmode = \"static\"\n",
        serde_json::to_string(name).unwrap()
    ));
    let p = dir.join("bake.toml");
    fs::write(&p, text).unwrap();
    p
}

fn bake(manifest: &Path, out: &Path, extra: &[&str]) -> testkit::hostile::Bounded {
    let mut cmd = Command::new(testkit::workspace_bin("sysext"));
    cmd.arg("bake")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .args(extra);
    let r = run_bounded(&mut cmd, Duration::from_secs(120));
    r.assert_bounded("sysext bake", RSS_MIB);
    r
}

/// `[Section]Key=value` for every assignment of a unit-style file; panics on any other line.
fn sections_and_keys(text: &str) -> Vec<String> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for l in text.lines() {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('[') {
            assert!(l.ends_with(']'), "{l:?}");
            section = l.to_string();
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {l:?}"));
        keys.push(format!("{section}{k}={v}"));
    }
    keys
}

const INJECTED: &str = "https://example.org/ext\n[Transfer]\nVerify=no";

/// A base URL with a newline, from the manifest or from `--base-url`: nothing is written (no
/// transfer file, no Butane config, no image), so no injected line can exist anywhere.
#[test]
fn base_url_with_newlines_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    for (in_manifest, flag) in [(Some(INJECTED), None), (None, Some(INJECTED))] {
        let src = tempfile::tempdir_in(t.path()).unwrap();
        let m = manifest(src.path(), "hello", in_manifest);
        let out = src.path().join("out");
        let mut extra = Vec::new();
        if let Some(u) = flag {
            extra.extend(["--base-url", u]);
        }
        let r = bake(&m, &out, &extra);
        assert_eq!(r.code, Some(2), "{}", r.stderr_text());
        let written = if out.exists() {
            leftovers(&out, &[])
        } else {
            Vec::new()
        };
        assert_eq!(written, Vec::<String>::new(), "artifacts written");
        assert_eq!(
            leftovers(src.path(), &["hello.tgz", "bake.toml", "out"]),
            Vec::<String>::new()
        );
    }
}

/// `%` in a name and in a URL reach unit-style lines doubled; the transfer file holds exactly
/// the expected sections and keys, and the Butane config (JSON, which is YAML) exactly the
/// expected keys.
#[test]
fn percent_in_names_and_urls_is_escaped() {
    let t = tempfile::tempdir().unwrap();
    let m = manifest(t.path(), "n%h", Some("https://example.org/a%20b/"));
    let out = t.path().join("out");
    let r = bake(&m, &out, &["--json"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());

    let conf = fs::read_to_string(out.join("n%h.transfer")).unwrap();
    let mut keys = sections_and_keys(&conf);
    keys.sort();
    let mut want = vec![
        "[Transfer]Verify=false",
        "[Source]Type=url-file",
        "[Source]Path=https://example.org/a%%20b",
        "[Source]MatchPattern=n%%h-@v-%a.raw",
        "[Target]InstancesMax=3",
        "[Target]Type=regular-file",
        "[Target]Path=/opt/extensions/n%%h",
        "[Target]CurrentSymlink=/etc/extensions/n%%h.raw",
        "[Target]MatchPattern=n%%h-@v-%a.raw",
    ];
    want.sort();
    assert_eq!(keys, want, "{conf}");

    let bu = fs::read_to_string(out.join("n%h-x86-64.bu")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&bu).unwrap();
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&d), ["storage", "systemd", "variant", "version"]);
    assert_eq!(keys(&d["storage"]), ["files", "links"]);
    assert_eq!(keys(&d["systemd"]), ["units"]);
    let files = d["storage"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    for f in files {
        assert_eq!(keys(f), ["contents", "mode", "path"]);
    }
    assert_eq!(
        files[0]["contents"]["source"],
        "https://example.org/a%20b/n%25h-1.0-x86-64.raw"
    );
    assert_eq!(
        files[1]["contents"]["inline"].as_str().unwrap(),
        conf,
        "the Butane config carries the same transfer file"
    );
    let dropin = d["systemd"]["units"][1]["dropins"][0]["contents"]
        .as_str()
        .unwrap();
    assert_eq!(
        sections_and_keys(dropin),
        ["[Service]ExecStartPre=/usr/lib/systemd/systemd-sysupdate -C n%%h update"]
    );
    // YAML readers see the same document.
    if Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let out = testkit::run_ok(Command::new("python3").arg("-c").arg(
            "import sys, json, yaml\nprint(json.dumps(yaml.safe_load(open(sys.argv[1])), sort_keys=True))",
        ).arg(out.join("n%h-x86-64.bu")));
        let y: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(y, d);
    }
}
