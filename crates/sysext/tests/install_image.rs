//! `sysext install-image` on a disk image with Flatcar's partition layout (labels and type
//! GUIDs of its disk_layout.json; EFI-SYSTEM vfat, BIOS-BOOT, USR-A ext4 with an os-release of
//! ID=flatcar, USR-B, OEM btrfs, OEM-CONFIG, ROOT ext4), built here with sfdisk and the mkfs
//! tools, and checked by mounting the result.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

fn sysext() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sysext"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// (number, label, type GUID, start MiB, size MiB) as Flatcar lays them out, scaled down.
const LAYOUT: &[(u32, &str, &str, u64, u64)] = &[
    (
        1,
        "EFI-SYSTEM",
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        1,
        8,
    ),
    (2, "BIOS-BOOT", "21686148-6449-6E6F-744E-656564454649", 9, 1),
    (3, "USR-A", "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6", 10, 16),
    (4, "USR-B", "5DFBF5F4-2848-4BAC-AA5E-0D9A20B745A6", 26, 4),
    (6, "OEM", "0FC63DAF-8483-4772-8E79-3D69D8477DE4", 30, 128),
    (
        7,
        "OEM-CONFIG",
        "C95DC21A-DF0E-4340-8D7B-26CBFA9A03E0",
        158,
        1,
    ),
    (9, "ROOT", "3884DD41-8582-4404-B9A8-E9B84F2DF50E", 159, 48),
];

fn part(label: &str) -> (u64, u64) {
    let p = LAYOUT.iter().find(|p| p.1 == label).unwrap();
    (p.3 * MIB, p.4 * MIB)
}

/// Writes `img` into `disk` at `offset`.
fn put(disk: &Path, img: &Path, offset: u64) {
    testkit::run_ok(
        Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", disk.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", offset / MIB)),
    );
}

/// A Flatcar-like disk image in `dir` (ID=flatcar os-release `os_id`).
fn flatcar_disk(dir: &Path, os_id: &str) -> PathBuf {
    flatcar_disk_with(dir, os_id, |_| {})
}

/// The same, with `root_setup` run on the ROOT tree before it is made a file system.
fn flatcar_disk_with(dir: &Path, os_id: &str, root_setup: impl Fn(&Path)) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let disk = dir.join("flatcar_production_image.bin");
    let f = fs::File::create(&disk).unwrap();
    f.set_len(208 * MIB).unwrap();
    drop(f);
    let mut script = String::from("label: gpt\nunit: sectors\n");
    for (n, label, ty, start, size) in LAYOUT {
        script.push_str(&format!(
            "{}{n} : start={}, size={}, type={ty}, name=\"{label}\"\n",
            disk.display(),
            start * MIB / 512,
            size * MIB / 512
        ));
    }
    let mut c = Command::new("sfdisk");
    c.arg("--no-reread")
        .arg("--no-tell-kernel")
        .arg("-q")
        .arg(&disk)
        .stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    // EFI-SYSTEM: vfat. BIOS-BOOT, USR-B, OEM-CONFIG: bytes to keep.
    let efi = dir.join("efi.img");
    testkit::run_ok(
        Command::new("mkfs.vfat")
            .args(["-n", "EFI-SYSTEM", "-C"])
            .arg(&efi)
            .arg((8 * 1024).to_string()),
    );
    put(&disk, &efi, part("EFI-SYSTEM").0);
    for (label, seed) in [("BIOS-BOOT", 1u8), ("USR-B", 2), ("OEM-CONFIG", 3)] {
        let (off, size) = part(label);
        let bytes: Vec<u8> = (0..size)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        let p = dir.join(format!("{label}.img"));
        fs::write(&p, bytes).unwrap();
        put(&disk, &p, off);
    }
    // USR-A: the OS's /usr, with its os-release and a program (the architecture).
    let usr = dir.join("usr-tree");
    fs::create_dir_all(usr.join("lib")).unwrap();
    fs::create_dir_all(usr.join("bin")).unwrap();
    fs::write(
        usr.join("lib/os-release"),
        format!("NAME=\"Flatcar Container Linux by Kinvolk\"\nID={os_id}\nVERSION_ID=4230.2.0\n"),
    )
    .unwrap();
    fs::copy(testkit::which("busybox").unwrap(), usr.join("bin/env")).unwrap();
    let usr_img = dir.join("usr.img");
    testkit::run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "USR-A", "-d"])
            .arg(&usr)
            .arg(&usr_img)
            .arg("16M"),
    );
    put(&disk, &usr_img, part("USR-A").0);
    // OEM: btrfs with the vendor's file.
    let oem = dir.join("oem-tree");
    fs::create_dir_all(&oem).unwrap();
    fs::write(oem.join("oem-release"), "ID=qemu\n").unwrap();
    let oem_img = dir.join("oem.img");
    fs::File::create(&oem_img)
        .unwrap()
        .set_len(128 * MIB)
        .unwrap();
    testkit::run_ok(
        Command::new("mkfs.btrfs")
            .args(["-q", "-L", "OEM", "--rootdir"])
            .arg(&oem)
            .arg(&oem_img),
    );
    put(&disk, &oem_img, part("OEM").0);
    // ROOT: ext4 with an /etc.
    let root = dir.join("root-tree");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/hostname"), "localhost\n").unwrap();
    root_setup(&root);
    let root_img = dir.join("root.img");
    testkit::run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-L", "ROOT", "-d"])
            .arg(&root)
            .arg(&root_img)
            .arg("48M"),
    );
    put(&disk, &root_img, part("ROOT").0);
    disk
}

/// A static-busybox extension `NAME.raw` for `ID=id` (`_any` for any OS).
fn extension(dir: &Path, name: &str, file: &str, id: &str) -> PathBuf {
    let tree = dir.join(format!("tree-{name}"));
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::create_dir_all(tree.join("usr/lib/extension-release.d")).unwrap();
    fs::copy(
        testkit::which("busybox").unwrap(),
        tree.join(format!("usr/bin/{name}")),
    )
    .unwrap();
    fs::write(
        tree.join(format!(
            "usr/lib/extension-release.d/extension-release.{name}"
        )),
        format!("ID={id}\nVERSION_ID=4230.2.0\nARCHITECTURE=x86-64\n"),
    )
    .unwrap();
    let out = dir.join(file);
    testkit::run_ok(
        sysext()
            .arg("pack")
            .arg(&tree)
            .arg(&out)
            .args(["--name", name]),
    );
    out
}

fn sha(p: &Path) -> String {
    let o = testkit::run_ok(Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs `script` with ROOT mounted on $R and OEM on $O (read-only) from `disk`.
fn inspect_disk(disk: &Path, script: &str) -> String {
    let (ro, rs) = part("ROOT");
    let (oo, os) = part("OEM");
    let d = disk.display();
    let o = testkit::in_mount_namespace(&format!(
        "set -e; R=$(mktemp -d); O=$(mktemp -d); \
         mount -o ro,loop,offset={ro},sizelimit={rs} {d} $R; \
         mount -o ro,loop,offset={oo},sizelimit={os} {d} $O; {script}"
    ));
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Trixie's `systemd-sysupdate list` with the definitions `/etc/sysupdate.NAME.d` of the
/// ROOT partition of `disk` (mounted read-only on a folder in `scratch`) as its root.
fn sysupdate_list(disk: &Path, scratch: &Path, name: &str) -> Output {
    let chroot = testkit::fixtures::trixie_systemd_root();
    let mnt = scratch.join("sysupdate-root");
    fs::create_dir_all(&mnt).unwrap();
    let (ro, rs) = part("ROOT");
    testkit::in_mount_namespace(&format!(
        "set -e; mount -o ro,loop,offset={ro},sizelimit={rs} '{}' '{}'; {}; \
         chroot '{}' /usr/lib/systemd/systemd-sysupdate --root=/target \
           --definitions=/etc/sysupdate.{name}.d list",
        disk.display(),
        mnt.display(),
        testkit::fixtures::chroot_prelude(&chroot, &mnt),
        chroot.display()
    ))
}

/// The bytes of `disk` outside ROOT and OEM.
fn outside_written_partitions(disk: &Path) -> Vec<u8> {
    let b = fs::read(disk).unwrap();
    let (oo, os) = part("OEM");
    let (ro, rs) = part("ROOT");
    assert!(oo + os <= ro);
    let (oo, oe, ro, re) = (
        oo as usize,
        (oo + os) as usize,
        ro as usize,
        (ro + rs) as usize,
    );
    [&b[..oo], &b[oe..ro], &b[re..]].concat()
}

fn tools_ready() -> bool {
    testkit::require_root("loop devices and mounts")
        && [
            "sfdisk",
            "mkfs.vfat",
            "mkfs.btrfs",
            "mkfs.ext4",
            "busybox",
            "bzip2",
        ]
        .iter()
        .all(|t| testkit::require_tool(t))
}

#[test]
fn extensions_go_into_root_and_oem_and_nothing_else_changes() {
    if !tools_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let disk = flatcar_disk(d, "flatcar");
    let before = sha(&disk);
    let hello = extension(d, "hello", "hello-1.0-x86-64.raw", "flatcar");
    fs::write(d.join("hello.transfer"), "[Transfer]\nVerify=false\n").unwrap();
    let tools = extension(d, "tools", "tools-2-x86-64.raw", "_any");
    let out = d.join("out.bin");
    let o = sysext()
        .arg("install-image")
        .arg(&disk)
        .arg(&hello)
        .arg(format!("tools:{}", tools.display()))
        .args(["--to", "tools=oem:/sysext", "-o"])
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["os"], "flatcar 4230.2.0", "{report}");
    assert_eq!(report["architecture"], "x86-64", "{report}");
    assert_eq!(sha(&disk), before, "the input changed");

    let listing = inspect_disk(
        &out,
        "stat -c '%n %a %u:%g %s' $R/opt/extensions/hello/hello-1.0-x86-64.raw \
           | sed \"s|$R||\"; \
         readlink $R/etc/extensions/hello.raw $R/etc/extensions/tools.raw; \
         cat $R/etc/sysupdate.hello.d/hello.transfer; \
         ls $R/etc/sysupdate.tools.d 2>&1 | grep -c 'No such' ; \
         stat -c '%n %a' $O/sysext/tools/tools-2-x86-64.raw | sed \"s|$O||\"; \
         cat $O/oem-release $R/etc/hostname; \
         sha256sum $R/opt/extensions/hello/hello-1.0-x86-64.raw \
           $O/sysext/tools/tools-2-x86-64.raw | cut -d' ' -f1",
    );
    let want = format!(
        "/opt/extensions/hello/hello-1.0-x86-64.raw 644 0:0 {}\n\
         /opt/extensions/hello/hello-1.0-x86-64.raw\n/oem/sysext/tools/tools-2-x86-64.raw\n\
         [Transfer]\nVerify=false\n1\n/sysext/tools/tools-2-x86-64.raw 644\n\
         ID=qemu\nlocalhost\n{}\n{}\n",
        fs::metadata(&hello).unwrap().len(),
        sha(&hello),
        sha(&tools)
    );
    assert_eq!(listing, want);
    assert!(
        outside_written_partitions(&out) == outside_written_partitions(&disk),
        "bytes outside ROOT and OEM changed"
    );

    // No output is replaced without --force.
    let again = sysext()
        .arg("install-image")
        .arg(&disk)
        .arg(&hello)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));

    // From a .bz2 input, the same result.
    testkit::run_ok(Command::new("bzip2").arg("-k").arg(&disk));
    let bz = d.join("flatcar_production_image.bin.bz2");
    let out2 = d.join("out2.bin");
    let o = sysext()
        .arg("install-image")
        .arg(&bz)
        .arg(&hello)
        .arg("-o")
        .arg(&out2)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("bzip2"), "{}", text(&o));
    let l = inspect_disk(&out2, "readlink $R/etc/extensions/hello.raw");
    assert_eq!(l, "/opt/extensions/hello/hello-1.0-x86-64.raw\n");
    assert!(outside_written_partitions(&out2) == outside_written_partitions(&disk));
}

#[test]
fn an_extension_for_another_os_is_refused_and_nothing_is_written() {
    if !tools_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let disk = flatcar_disk(d, "flatcar");
    let fedora = extension(d, "fed", "fed.raw", "fedora");
    let out = d.join("out.bin");
    let o = sysext()
        .arg("install-image")
        .arg(&disk)
        .arg(&fedora)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("fed.raw") && t.contains("fedora"), "{t}");
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out.bin"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A disk without Flatcar's partitions: the error lists what the table holds.
    let plain = d.join("plain.bin");
    fs::File::create(&plain).unwrap().set_len(8 * MIB).unwrap();
    let mut c = Command::new("sfdisk");
    c.args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&plain)
        .stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: gpt\nsize=4MiB, name=\"data\"\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let o = sysext()
        .arg("install-image")
        .arg(&plain)
        .arg(&fedora)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("USR-A") && t.contains("\"data\""), "{t}");
    assert!(!out.exists());
}

#[test]
fn a_killed_run_leaves_no_mount_loop_device_or_output() {
    if !tools_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let disk = flatcar_disk(d, "flatcar");
    let hello = extension(d, "hello", "hello.raw", "flatcar");
    // A bigger extension makes the run last long enough to be killed at several points.
    let big = d.join("tree-big");
    fs::create_dir_all(big.join("usr/lib/extension-release.d")).unwrap();
    fs::write(
        big.join("usr/lib/extension-release.d/extension-release.big"),
        "ID=_any\n",
    )
    .unwrap();
    let noise: Vec<u8> = (0..24 * MIB as usize)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::create_dir_all(big.join("usr/share")).unwrap();
    fs::write(big.join("usr/share/noise"), &noise).unwrap();
    let big_raw = d.join("big.raw");
    testkit::run_ok(sysext().arg("pack").arg(&big).arg(&big_raw));
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();

    let out = d.join("out.bin");
    let mut killed_during = 0;
    for delay_ms in [20u64, 60, 120, 200, 300, 450] {
        for sig in ["KILL", "TERM"] {
            let mut child = sysext()
                .arg("install-image")
                .arg(&disk)
                .arg(&hello)
                .arg(&big_raw)
                .arg("-o")
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(delay_ms));
            let running = child.try_wait().unwrap().is_none();
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(child.id().to_string())
                .status();
            let status = child.wait().unwrap();
            if running && !status.success() {
                killed_during += 1;
            }
            // The kernel lets go of the loop devices once the namespace is gone.
            let start = Instant::now();
            while !testkit::loop_devices_on(d).is_empty()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                testkit::loop_devices_on(d).is_empty(),
                "{sig} at {delay_ms} ms: {:?}",
                testkit::loop_devices_on(d)
            );
            let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(!mounts.contains(".sysext-merge-"), "{mounts}");
            if status.success() {
                fs::remove_file(&out).unwrap();
            }
            assert!(!out.exists(), "{sig} at {delay_ms} ms left the output");
            if sig == "TERM" {
                let temps: Vec<_> = fs::read_dir(d)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".out.bin.tmp-"))
                    .collect();
                assert!(
                    temps.is_empty(),
                    "SIGTERM at {delay_ms} ms left a temporary output"
                );
            }
        }
    }
    assert!(
        killed_during >= 4,
        "only {killed_during} runs were killed while running"
    );
    // A later run removes what SIGKILLed runs left and succeeds.
    let o = sysext()
        .arg("install-image")
        .arg(&disk)
        .arg(&hello)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let temps: Vec<_> = fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".out.bin.tmp-"))
        .collect();
    assert!(temps.is_empty());
}

/// `--from`: the newest image of a name from a bake output served over HTTP, with its
/// transfer file, verified against the folder's SHA256SUMS; a tampered image is refused. The
/// host's systemd-sysupdate (trixie's, in a chroot, on the output's ROOT) counts the
/// installed image as its current version.
#[test]
fn from_a_served_bake_output_with_sha256sums() {
    if !tools_ready() || !testkit::require_tool("python3") || !testkit::require_tool("mmdebstrap") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let disk = flatcar_disk(d, "flatcar");
    testkit::hello_tarball(d);
    fs::create_dir_all(d.join("srv")).unwrap();
    let (_server, port) = testkit::http::Server::start(&d.join("srv"));
    let url = format!("http://127.0.0.1:{port}/out/");
    // Two versions baked into one folder: SHA256SUMS lists both.
    for v in ["1.9", "1.10"] {
        fs::write(
            d.join("m.toml"),
            format!(
                "architectures = [\"x86-64\"]\n\n[[extension]]\nname = \"hello\"\n\
                 version = \"{v}\"\nsource = \"./hello.tar.gz\"\nmode = \"static\"\n\
                 paths = [\"bin/hello:/usr/bin/\"]\n"
            ),
        )
        .unwrap();
        testkit::run_ok(
            sysext()
                .current_dir(d)
                .args(["bake", "m.toml", "--out", "srv/out", "--base-url"])
                .arg(&url),
        );
    }
    let install = |out: &Path| {
        sysext()
            .arg("install-image")
            .arg(&disk)
            .arg("hello")
            .args(["--from", &url, "-o"])
            .arg(out)
            .output()
            .unwrap()
    };
    let out = d.join("out.bin");
    let o = install(&out);
    assert!(o.status.success(), "{}", text(&o));
    let l = inspect_disk(
        &out,
        "readlink $R/etc/extensions/hello.raw; ls $R/etc/sysupdate.hello.d; \
         sha256sum $R/opt/extensions/hello/hello-1.10-x86-64.raw | cut -d' ' -f1",
    );
    assert_eq!(
        l,
        format!(
            "/opt/extensions/hello/hello-1.10-x86-64.raw\nhello.transfer\n{}\n",
            sha(&d.join("srv/out/hello-1.10-x86-64.raw"))
        )
    );
    // Where the transfer file keeps the versions: 1.10 is installed and current, 1.9 only
    // offered.
    let list = sysupdate_list(&out, d, "hello");
    assert!(list.status.success(), "{}", text(&list));
    let row = |v| testkit::fixtures::sysupdate_assessment(&list.stdout, v);
    assert_eq!(
        (row("1.10"), row("1.9")),
        (Some("current"), Some("available")),
        "{}",
        text(&list)
    );
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".sysext-install-")
        })
        .collect();
    assert!(left.is_empty(), "downloads left behind");

    // A transfer file changed on the server (it is listed in SHA256SUMS): refused, nothing
    // written.
    let tf = d.join("srv/out/hello.transfer");
    let good = fs::read_to_string(&tf).unwrap();
    fs::write(&tf, good.replace("InstancesMax=3", "InstancesMax=2")).unwrap();
    let out3 = d.join("out3.bin");
    let o = install(&out3);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("hello.transfer does not match"),
        "{}",
        text(&o)
    );
    assert!(!out3.exists());
    fs::write(&tf, good).unwrap();

    // A tampered image on the server: refused, nothing written.
    let img = d.join("srv/out/hello-1.10-x86-64.raw");
    let mut b = fs::read(&img).unwrap();
    let n = b.len();
    b[n / 2] ^= 1;
    fs::write(&img, b).unwrap();
    let out2 = d.join("out2.bin");
    let o = install(&out2);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("does not match"), "{}", text(&o));
    assert!(!out2.exists());
}

/// `--from --keyring`: SHA256SUMS must carry a good signature by a key of the keyring, as
/// systemd-sysupdate checks it. A bake signed by another key, an image changed on the server
/// together with its SHA256SUMS line, and an unsigned bake are refused, and nothing is written.
#[test]
fn from_a_signed_bake_output_with_a_keyring() {
    if !tools_ready() || !testkit::require_tool("python3") || !testkit::require_tool("gpg") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let disk = flatcar_disk(d, "flatcar");
    testkit::hello_tarball(d);
    fs::write(
        d.join("m.toml"),
        "architectures = [\"x86-64\"]\n\n[[extension]]\nname = \"hello\"\n\
         version = \"1.0\"\nsource = \"./hello.tar.gz\"\nmode = \"static\"\n\
         paths = [\"bin/hello:/usr/bin/\"]\n",
    )
    .unwrap();
    // Three bake outputs: signed by the publisher, signed by someone else, unsigned.
    let publisher = testkit::new_signing_key(d, "publisher", "");
    let other = testkit::new_signing_key(d, "other", "");
    for (out, key) in [
        ("signed", Some(&publisher)),
        ("other", Some(&other)),
        ("plain", None),
    ] {
        let mut c = sysext();
        c.current_dir(d)
            .args([
                "bake",
                "m.toml",
                "--out",
                &format!("srv/{out}"),
                "--base-url",
            ])
            .arg("http://127.0.0.1:1/out/");
        if let Some(k) = key {
            c.arg("--signing-key").arg(k);
        }
        testkit::run_ok(&mut c);
    }
    let keyring = d.join("keyring.gpg");
    fs::copy(d.join("srv/signed/import-pubring.gpg"), &keyring).unwrap();
    let (_server, port) = testkit::http::Server::start(&d.join("srv"));
    let install = |from: &str, out: &str| {
        sysext()
            .arg("install-image")
            .arg(&disk)
            .arg("hello")
            .args([
                "--from",
                &format!("http://127.0.0.1:{port}/{from}/"),
                "--keyring",
            ])
            .arg(&keyring)
            .arg("-o")
            .arg(d.join(out))
            .output()
            .unwrap()
    };
    let o = install("signed", "ok.bin");
    assert!(o.status.success(), "{}", text(&o));
    let l = inspect_disk(&d.join("ok.bin"), "ls $R/etc/sysupdate.hello.d");
    assert_eq!(l, "hello.transfer\n");

    let refused = |from: &str, out: &str, why: &str| {
        let o = install(from, out);
        assert_eq!(o.status.code(), Some(2), "{from}: {}", text(&o));
        assert!(text(&o).contains(why), "{from}: {}", text(&o));
        assert!(!d.join(out).exists(), "{from}: output written");
    };
    refused(
        "other",
        "other.bin",
        "is not a good signature of SHA256SUMS",
    );
    refused("plain", "plain.bin", "SHA256SUMS.gpg: not found");
    // The image changed on the server and its line in SHA256SUMS with it: only the signature
    // tells.
    let img = d.join("srv/signed/hello-1.0-x86-64.raw");
    let old = sha(&img);
    let mut b = fs::read(&img).unwrap();
    let n = b.len();
    b[n / 2] ^= 1;
    fs::write(&img, &b).unwrap();
    let sums = d.join("srv/signed/SHA256SUMS");
    let text_sums = fs::read_to_string(&sums).unwrap();
    fs::write(&sums, text_sums.replace(&old, &sha(&img))).unwrap();
    refused(
        "signed",
        "tampered.bin",
        "is not a good signature of SHA256SUMS",
    );
}

/// A transfer file that keeps NAME's versions, or links the current one, elsewhere than where
/// the image and its link go is refused before anything is written (the host's sysupdate would
/// not see the installed version); where it says, the image goes in. A confext is linked from
/// `/var/lib/confexts`, where systemd-confext looks, and named by its own release file.
#[test]
fn transfer_files_agree_with_the_placement_and_confexts_link_from_var_lib() {
    if !tools_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let disk = flatcar_disk(d, "flatcar");
    let tools = extension(d, "tools", "tools-2-x86-64.raw", "_any");
    let transfer = |path: &str, link: &str| {
        fs::write(
            d.join("tools.transfer"),
            format!(
                "[Transfer]\nVerify=false\n[Source]\nType=url-file\nPath=http://127.0.0.1:1/\n\
                 MatchPattern=tools-@v-%a.raw\n[Target]\nType=regular-file\nPath={path}\n\
                 CurrentSymlink={link}\nMatchPattern=tools-@v-%a.raw\n"
            ),
        )
        .unwrap();
    };
    let install = |args: &[&str], out: &str| {
        sysext()
            .arg("install-image")
            .arg(&disk)
            .args(args)
            .arg("-o")
            .arg(d.join(out))
            .output()
            .unwrap()
    };
    let refused = |o: Output, out: &str, words: &[&str]| {
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        for w in words {
            assert!(text(&o).contains(w), "no {w:?} in: {}", text(&o));
        }
        assert!(!d.join(out).exists(), "output written");
    };
    let t = format!("tools:{}", tools.display());

    transfer("/opt/extensions/tools", "/etc/extensions/tools.raw");
    refused(
        install(&[&t, "--to", "tools=oem:/sysext"], "oem.bin"),
        "oem.bin",
        &[
            "tools.transfer",
            "Path=/opt/extensions/tools",
            "/oem/sysext/tools",
        ],
    );
    transfer("/opt/extensions/tools", "/etc/extensions/tools.sysext.raw");
    refused(
        install(&[&t], "link.bin"),
        "link.bin",
        &[
            "CurrentSymlink=/etc/extensions/tools.sysext.raw",
            "/etc/extensions/tools.raw",
        ],
    );
    // The same folder, written with a trailing slash and a %-escape.
    transfer("/opt/extensions/tools/", "/etc/extensions/%%tools.raw");
    refused(install(&[&t], "pct.bin"), "pct.bin", &["%tools.raw"]);
    transfer("/opt/extensions/tools/", "/etc/extensions/tools.raw");
    let o = install(&[&t], "ok.bin");
    assert!(o.status.success(), "{}", text(&o));

    // A confext, given as a plain FILE.
    let tree = d.join("tree-conf");
    fs::create_dir_all(tree.join("etc/extension-release.d")).unwrap();
    fs::write(
        tree.join("etc/extension-release.d/extension-release.conf"),
        "ID=_any\n",
    )
    .unwrap();
    fs::write(tree.join("etc/conf.toml"), "x = 1\n").unwrap();
    let conf = d.join("conf-1.confext.raw");
    testkit::run_ok(sysext().arg("pack").arg(&tree).arg(&conf).args([
        "--confext",
        "--name",
        "conf",
    ]));
    let o = install(&[conf.to_str().unwrap()], "conf.bin");
    assert!(o.status.success(), "{}", text(&o));
    let l = inspect_disk(
        &d.join("conf.bin"),
        &format!(
            "readlink $R/var/lib/confexts/conf.confext.raw; \
             test ! -e $R/etc/extensions/conf.raw && echo no-sysext-link; \
             cmp $R/opt/extensions/conf/conf-1.confext.raw '{}' && echo same",
            conf.display()
        ),
    );
    assert_eq!(
        l,
        "/opt/extensions/conf/conf-1.confext.raw\nno-sysext-link\nsame\n"
    );
}

/// Links planted in the OS image's ROOT are resolved inside ROOT, never on the machine running
/// the tool: an absolute `/opt` naming a folder of this machine is a dangling link inside the
/// image (refused, nothing written anywhere); `/etc/extensions` pointing above the file
/// system's root stays at that root.
#[test]
fn links_planted_in_root_stay_inside_it() {
    if !tools_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let victim = d.join("victim");
    fs::create_dir_all(victim.join("etc")).unwrap();
    let hello = extension(d, "hello", "hello.raw", "flatcar");
    let run = |disk: &Path, out: &Path| {
        sysext()
            .arg("install-image")
            .arg(disk)
            .arg(&hello)
            .arg("-o")
            .arg(out)
            .output()
            .unwrap()
    };

    let v = victim.clone();
    let disk = flatcar_disk_with(&d.join("one"), "flatcar", move |root| {
        std::os::unix::fs::symlink(&v, root.join("opt")).unwrap();
    });
    let out = d.join("out.bin");
    let o = run(&disk, &out);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("ROOT") && text(&o).contains("opt"),
        "{}",
        text(&o)
    );
    assert!(!out.exists());
    assert_eq!(
        walk(&victim),
        [victim.join("etc")],
        "written outside the image"
    );

    let disk = flatcar_disk_with(&d.join("two"), "flatcar", |root| {
        std::os::unix::fs::symlink("../../../../..", root.join("etc/extensions")).unwrap();
    });
    let o = run(&disk, &out);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        walk(&victim),
        [victim.join("etc")],
        "written outside the image"
    );
    let l = inspect_disk(&out, "readlink $R/hello.raw; ls $R/opt/extensions/*");
    assert_eq!(l, "/opt/extensions/hello/hello.raw\nhello.raw\n");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        v.push(e.path());
        if e.file_type().unwrap().is_dir() {
            v.extend(walk(&e.path()));
        }
    }
    v.sort();
    v
}
