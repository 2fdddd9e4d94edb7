//! CI fan-out of `sysext bake`: `--plan --json` lists the jobs with the rebuild keys a bake
//! computes, `--only NAME@ARCH` shards built in separate processes with separate caches plus
//! `--collect` give the release one bake of the whole manifest gives, and a shard with other
//! bytes under the same file name is refused, naming the file.
//!
//! The manifest is small on purpose: two static extensions from folders and one from an image
//! in the loopback docker-registry (so the plan resolves a registry source without unpacking).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn sysext(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn manifest(registry: &str) -> String {
    format!(
        r#"
base_url = "https://example.org/ext"
architectures = ["x86-64", "arm64"]

[[extension]]
name = "hello"
version = "1.0"
source = "./st"
sources = {{ arm64 = "./st-arm" }}
mode = "static"

[[extension]]
name = "world"
version = "2.0"
source = "{registry}/base/world:1"
architectures = ["x86-64"]
mode = "static"
"#
    )
}

/// Inputs: two folders, and an image holding a usr/ tree pushed to the registry.
fn inputs(dir: &Path, registry: &testkit::registry::Registry) {
    for (d, text) in [("st", "hi\n"), ("st-arm", "hi arm\n"), ("img", "world\n")] {
        fs::create_dir_all(dir.join(d).join("usr/share/hello")).unwrap();
        fs::write(dir.join(d).join("usr/share/hello/msg"), text).unwrap();
    }
    let layout = dir.join("layout");
    let tag = format!("{}:t", layout.display());
    testkit::run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    );
    testkit::run_ok(Command::new("umoci").args(["new", "--image", &tag]));
    testkit::run_ok(
        Command::new("umoci")
            .args(["insert", "--image", &tag])
            .arg(dir.join("img"))
            .arg("/"),
    );
    registry.push_oci_layout(&layout, "t", "base/world:1");
    fs::write(dir.join("m.toml"), manifest(&registry.addr())).unwrap();
}

/// Every file of a folder (not the hidden state) with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != "bake-report.json")
        .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
        .collect()
}

#[test]
fn plan_shards_and_collect_give_the_single_bake() {
    if !testkit::require_tool("docker-registry") || !testkit::require_tool("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = testkit::registry::Registry::start();
    inputs(dir, &registry);

    let plan = ok(sysext(
        dir,
        &["bake", "m.toml", "--plan", "--json", "--cache", "c-plan"],
    ));
    let plan = plan.as_array().unwrap();
    let only: Vec<&str> = plan.iter().map(|j| j["only"].as_str().unwrap()).collect();
    assert_eq!(only, ["hello@x86-64", "hello@arm64", "world@x86-64"]);
    // The plan resolved the image without unpacking it.
    assert!(
        !dir.join("c-plan/rootfs").exists()
            || fs::read_dir(dir.join("c-plan/rootfs"))
                .unwrap()
                .next()
                .is_none()
    );

    // One bake of the whole manifest.
    let whole = ok(sysext(
        dir,
        &[
            "bake", "m.toml", "-o", "whole", "--json", "--cache", "c-whole",
        ],
    ));
    let keys: BTreeMap<String, String> = whole["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                format!(
                    "{}@{}",
                    e["name"].as_str().unwrap(),
                    e["arch"].as_str().unwrap()
                ),
                e["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for j in plan {
        assert_eq!(
            keys[j["only"].as_str().unwrap()],
            j["key"].as_str().unwrap(),
            "the plan's key is the bake's for {}",
            j["only"]
        );
    }

    // Three shards, each a separate process with its own cache, then --collect.
    let mut shards = Vec::new();
    for (i, o) in only.iter().enumerate() {
        let out = format!("shard{i}");
        let cache = format!("c-shard{i}");
        let r = ok(sysext(
            dir,
            &[
                "bake", "m.toml", "--only", o, "-o", &out, "--json", "--cache", &cache,
            ],
        ));
        assert_eq!(r["entries"].as_array().unwrap().len(), 1, "{o}");
        shards.push(out);
    }
    let mut args = vec!["bake", "--collect", "release"];
    args.extend(shards.iter().map(String::as_str));
    ok(sysext(dir, &args));
    assert_eq!(
        fs::read_to_string(dir.join("release/SHA256SUMS")).unwrap(),
        fs::read_to_string(dir.join("whole/SHA256SUMS")).unwrap()
    );
    assert_eq!(files(&dir.join("release")), files(&dir.join("whole")));
    testkit::run_ok(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(dir.join("release")),
    );
    let report: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("release/bake-report.json")).unwrap()).unwrap();
    assert_eq!(report["entries"].as_array().unwrap().len(), 3);

    // A shard baked from other inputs under the same file name: refused, naming the file;
    // nothing written.
    fs::create_dir_all(dir.join("other/st/usr/share/hello")).unwrap();
    fs::create_dir_all(dir.join("other/st-arm")).unwrap();
    fs::write(dir.join("other/st/usr/share/hello/msg"), "changed\n").unwrap();
    fs::copy(dir.join("m.toml"), dir.join("other/m.toml")).unwrap();
    ok(sysext(
        &dir.join("other"),
        &[
            "bake",
            "m.toml",
            "--only",
            "hello@x86-64",
            "-o",
            "../odd",
            "--cache",
            "../c-odd",
        ],
    ));
    let mut args = vec!["bake", "--collect", "release2"];
    args.extend(shards.iter().map(String::as_str));
    args.push("odd");
    let out = sysext(dir, &args);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("hello-1.0-x86-64.raw") && err.contains("odd"),
        "{err}"
    );
    assert!(!dir.join("release2").exists());

    // --only with an architecture the extension is not built for is refused before work.
    let out = sysext(dir, &["bake", "m.toml", "--only", "world@arm64", "-o", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("world@arm64"));
    assert!(!dir.join("x").exists());
}

/// The statuses of a bake report's entries, by file.
fn statuses(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["entries"]
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

#[test]
fn a_second_runner_reuses_what_the_registry_holds() {
    if !testkit::require_tool("docker-registry") || !testkit::require_tool("umoci") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let registry = testkit::registry::Registry::start();
    inputs(dir, &registry);
    let prefix = format!("{}/cache", registry.addr());

    // A prefix with a tag is refused before any work.
    let out = sysext(
        dir,
        &[
            "bake",
            "m.toml",
            "-o",
            "bad",
            "--push",
            &format!("{prefix}:t"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("without tag or digest"));
    assert!(!dir.join("bad").exists());

    // The first runner builds and pushes everything.
    let first = ok(sysext(
        dir,
        &[
            "bake", "m.toml", "-o", "one", "--push", &prefix, "--json", "--cache", "c1",
        ],
    ));
    assert!(statuses(&first).values().all(|s| s == "built"), "{first}");
    // Building unpacked the image source into the cache.
    assert!(fs::read_dir(dir.join("c1/rootfs"))
        .unwrap()
        .next()
        .is_some());

    // A second runner with an empty cache and another output folder builds nothing: every
    // image comes from the registry (and the image source is never unpacked).
    let second = ok(sysext(
        dir,
        &[
            "bake", "m.toml", "-o", "two", "--push", &prefix, "--json", "--cache", "c2",
        ],
    ));
    assert!(
        statuses(&second).values().all(|s| s == "reused"),
        "{second}"
    );
    assert!(
        !dir.join("c2/rootfs").exists()
            || fs::read_dir(dir.join("c2/rootfs"))
                .unwrap()
                .next()
                .is_none()
    );
    assert_eq!(files(&dir.join("one")), files(&dir.join("two")));
    let out = sysext(
        dir,
        &[
            "bake", "m.toml", "-o", "three", "--push", &prefix, "--cache", "c3",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("reused      hello-1.0-x86-64.raw"));

    // One entry's version changes: only its image is built.
    let changed = fs::read_to_string(dir.join("m.toml"))
        .unwrap()
        .replace("version = \"2.0\"", "version = \"2.1\"");
    fs::write(dir.join("m.toml"), changed).unwrap();
    let third = ok(sysext(
        dir,
        &[
            "bake", "m.toml", "-o", "four", "--push", &prefix, "--json", "--cache", "c4",
        ],
    ));
    let want: BTreeMap<String, String> = [
        ("hello-1.0-arm64.raw", "reused"),
        ("hello-1.0-x86-64.raw", "reused"),
        ("world-2.1-x86-64.raw", "built"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(statuses(&third), want);
    testkit::run_ok(
        Command::new("sha256sum")
            .args(["-c", "SHA256SUMS"])
            .current_dir(dir.join("four")),
    );
}
