//! A library with glibc-hwcaps copies (baseline, x86-64-v2, v3, v4): flix ships every copy
//! (the baseline flat, the others under `usr/local/NAME/glibc-hwcaps/x86-64-vN/`), and the
//! relocated program, merged into a root with no libc, loads the copy of the highest level
//! this CPU supports, as the glibc loader decides.

use std::fs;
use std::process::Command;

const FLIX: &str = env!("CARGO_BIN_EXE_flix");

fn cc(args: &[&str]) {
    testkit::run_ok(Command::new("gcc").args(args));
}

#[test]
fn every_hwcaps_copy_is_shipped_and_the_cpu_picks_its_level() {
    if !testkit::require_root("systemd-sysext merge in a private namespace")
        || !["gcc", "busybox", "systemd-sysext", "unshare", "unsquashfs"]
            .iter()
            .all(|t| testkit::require_tool(t))
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    testkit::host_glibc(&root);
    fs::write(
        src.join("hw.c"),
        "const char *marker = \"hwcaps-copy-\" LEVEL;\nint hw(void) { return LEVEL[0] - '0'; }\n",
    )
    .unwrap();
    fs::write(
        src.join("main.c"),
        "#include <stdio.h>\nint hw(void);\nint main(void) { printf(\"level %d\\n\", hw()); return 0; }\n",
    )
    .unwrap();
    let lib = root.join("usr/lib/hw");
    for (sub, level) in [
        ("", "1"),
        ("glibc-hwcaps/x86-64-v2", "2"),
        ("glibc-hwcaps/x86-64-v3", "3"),
        ("glibc-hwcaps/x86-64-v4", "4"),
    ] {
        let d = lib.join(sub);
        fs::create_dir_all(&d).unwrap();
        cc(&[
            "-shared",
            "-fPIC",
            "-Wl,-soname,libhw.so.1",
            &format!("-DLEVEL=\"{level}\""),
            "-o",
            d.join("libhw.so.1").to_str().unwrap(),
            src.join("hw.c").to_str().unwrap(),
        ]);
    }
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    cc(&[
        "-o",
        root.join("usr/bin/hwprog").to_str().unwrap(),
        src.join("main.c").to_str().unwrap(),
        &format!("-L{}", lib.display()),
        "-l:libhw.so.1",
        "-Wl,-rpath,/usr/lib/hw",
    ]);

    testkit::run_ok(
        Command::new(FLIX)
            .arg(&root)
            .args(["hw", "/usr/bin/hwprog"])
            .current_dir(dir.path()),
    );
    let raw = dir.path().join("hw.raw");

    // Every copy is shipped, each where the loader looks for its level.
    let tree = dir.path().join("tree");
    testkit::run_ok(
        Command::new("unsquashfs")
            .args(["-q", "-d"])
            .arg(&tree)
            .arg(&raw),
    );
    let shipped = tree.join("usr/local/hw");
    for (at, level) in [
        ("libhw.so.1", "1"),
        ("glibc-hwcaps/x86-64-v2/libhw.so.1", "2"),
        ("glibc-hwcaps/x86-64-v3/libhw.so.1", "3"),
        ("glibc-hwcaps/x86-64-v4/libhw.so.1", "4"),
    ] {
        let bytes = fs::read(shipped.join(at)).unwrap_or_else(|e| panic!("{at}: {e}"));
        let marker = format!("hwcaps-copy-{level}");
        assert!(
            bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{at} is not the level-{level} copy"
        );
        let info = elf_closure::scan(&bytes).unwrap().unwrap();
        assert_eq!(info.runpath, vec!["/usr/local/hw"], "{at}");
        assert!(info.nodeflib, "{at}");
    }

    // Run it in a root with no libc: the CPU's level decides which copy is loaded.
    let bb = dir.path().join("bb");
    for d in ["usr/bin", "usr/lib", "etc", "var/lib/extensions", "run"] {
        fs::create_dir_all(bb.join(d)).unwrap();
    }
    fs::copy(
        testkit::which("busybox").unwrap(),
        bb.join("usr/bin/busybox"),
    )
    .unwrap();
    fs::write(bb.join("usr/lib/os-release"), "ID=bb\n").unwrap();
    fs::write(bb.join("etc/os-release"), "ID=bb\n").unwrap();
    fs::copy(&raw, bb.join("var/lib/extensions/hw.raw")).unwrap();
    let run = testkit::in_mount_namespace(&format!(
        "mount --make-rshared / && mount -t tmpfs tmpfs /run && systemd-sysext --root={r} merge >/dev/null && chroot {r} /usr/bin/hwprog",
        r = bb.display()
    ));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let level = elf_closure::running_x86_64_level().clamp(1, 4);
    assert_eq!(
        stdout,
        format!("level {level}\n"),
        "running CPU level {level}"
    );
}
