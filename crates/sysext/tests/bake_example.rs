//! The shipped example, `examples/bake.toml`, built as a user would: its Debian trixie image
//! served by a real docker-registry on 127.0.0.1, its local inputs prepared as the file's
//! header says. Every image is built, the arm64 ones hold arm64 objects and say so, and
//! `SHA256SUMS` verifies with `sha256sum -c`.

use std::fs;
use std::process::Command;

use fsimage::EntryKind;
use sysext_core::inspect::Image;

fn sh(script: &str) {
    testkit::run_ok(Command::new("sh").args(["-ec", script]));
}

#[test]
fn example_manifest_builds_for_both_architectures() {
    if !testkit::require_root("baking the example (unpacks an image as root)") {
        return;
    }
    for t in [
        "docker-registry",
        "skopeo",
        "gcc",
        "aarch64-linux-gnu-gcc",
        "sha256sum",
    ] {
        if !testkit::require_tool(t) {
            return;
        }
    }
    let registry = testkit::registry::Registry::start();
    registry.push_oci_layout(
        &testkit::fixtures::trixie_oci_layout(),
        "trixie",
        "debian:trixie",
    );
    let arm64 = testkit::fixtures::trixie_arm64_rootfs();

    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    let d = dir.display();
    let example = fs::read_to_string(testkit::workspace_root().join("examples/bake.toml")).unwrap();
    fs::write(
        dir.join("bake.toml"),
        example.replace("REGISTRY", &registry.addr()),
    )
    .unwrap();
    fs::create_dir_all(dir.join("hello/bin")).unwrap();
    fs::write(
        dir.join("hello.c"),
        "#include <stdio.h>\nint main(void){puts(\"hello\");return 0;}\n",
    )
    .unwrap();
    fs::write(
        dir.join("hello/hello.service"),
        "[Unit]\nDescription=hello\n[Service]\nType=oneshot\nExecStart=/usr/bin/hello\n[Install]\nWantedBy=multi-user.target\n",
    )
    .unwrap();
    for (goarch, cc) in [("amd64", "gcc"), ("arm64", "aarch64-linux-gnu-gcc")] {
        sh(&format!(
            "{cc} -static -O2 -o {d}/hello/bin/hello {d}/hello.c && tar -C {d}/hello -czf {d}/hello-{goarch}.tar.gz bin hello.service"
        ));
    }
    // The extract variant makes no /lib link; the example's header says to add it.
    sh(&format!(
        "mkdir {d}/trixie-arm64 && cp -a {}/usr {d}/trixie-arm64/usr && ln -s usr/lib {d}/trixie-arm64/lib",
        arm64.display()
    ));

    let out = Command::new(env!("CARGO_BIN_EXE_sysext"))
        .current_dir(dir)
        .args(["bake", "bake.toml", "--out", "out", "--json"])
        .args(["--cache", "cache"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bake failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut files: Vec<String> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["status"], "built", "{e}");
            e["file"].as_str().unwrap().to_string()
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "b3sum-1.5.4-arm64.raw",
            "b3sum-1.5.4-x86-64.raw",
            "hello-1.0.0-arm64.raw",
            "hello-1.0.0-x86-64.raw",
            "htop-3.4.1-x86-64.raw",
            "nginx-1.26.3-x86-64.raw",
            "python3-3.13-x86-64.raw",
        ]
    );

    let o = dir.join("out");
    testkit::run_ok(
        Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&o),
    );
    for f in &files {
        let arch = if f.ends_with("-arm64.raw") {
            "arm64"
        } else {
            "x86-64"
        };
        let name = f.split('-').next().unwrap();
        let img = Image::open(&o.join(f)).unwrap();
        let release = img
            .read_file(&format!(
                "usr/lib/extension-release.d/extension-release.{name}"
            ))
            .unwrap();
        let release = String::from_utf8_lossy(&release);
        assert!(release.contains("ID=_any"), "{f}: {release}");
        assert!(
            release.contains(&format!("ARCHITECTURE={arch}")),
            "{f}: {release}"
        );
        // Every ELF file in the image is built for that architecture.
        let machine: u16 = if arch == "arm64" { 183 } else { 62 };
        let mut elves = 0;
        for e in img.entries().iter().filter(|e| e.kind == EntryKind::File) {
            if e.size < 20 || !e.path.starts_with("usr/") {
                continue;
            }
            let bytes = img.read_file(&e.path).unwrap();
            if bytes.starts_with(b"\x7fELF") {
                let m = u16::from_le_bytes([bytes[18], bytes[19]]);
                assert_eq!(m, machine, "{f}: {} has e_machine {m}", e.path);
                elves += 1;
            }
            if name == "python3" && elves > 50 {
                break;
            }
        }
        assert!(elves > 0, "{f} holds no ELF file");
    }

    // The CI fan-out of the same manifest: the plan's jobs dealt to three shards, each baked
    // by its own process with its own cache, then collected: the same SHA256SUMS.
    let plan = Command::new(env!("CARGO_BIN_EXE_sysext"))
        .current_dir(dir)
        .args(["bake", "bake.toml", "--plan", "--json", "--cache", "cache"])
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let only: Vec<String> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["only"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(only.len(), files.len());
    let mut shards = Vec::new();
    for i in 0..3 {
        let shard = format!("shard{i}");
        let mut c = Command::new(env!("CARGO_BIN_EXE_sysext"));
        c.current_dir(dir)
            .args(["bake", "bake.toml", "--out", &shard])
            .args(["--cache", &format!("cache{i}")]);
        for o in only.iter().skip(i).step_by(3) {
            c.args(["--only", o]);
        }
        let r = c.output().unwrap();
        assert!(
            r.status.success(),
            "{shard}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        shards.push(shard);
    }
    let r = Command::new(env!("CARGO_BIN_EXE_sysext"))
        .current_dir(dir)
        .args(["bake", "--collect", "release"])
        .args(&shards)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "collect: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(
        fs::read_to_string(dir.join("release/SHA256SUMS")).unwrap(),
        fs::read_to_string(o.join("SHA256SUMS")).unwrap(),
        "the fan-out's SHA256SUMS differs from one bake's"
    );
}
