//! One table of architecture names (`sysext_core::release::arch_from_elf` and
//! `arch_from_elf_header`) for every command that writes or judges `ARCHITECTURE=`.
//!
//! The cases the old copies disagreed on: flatwrap's own table named a little-endian mips64
//! program `mips64` and a little-endian 32-bit ppc one `ppc`, which `sysext check` (and systemd)
//! call `mips64-le` and `ppc-le`. Here flatwrap and flix pack a folder rootfs whose program is
//! such an ELF file; both write systemd's name, and `sysext check` against a host of that
//! architecture finds neither a wrong architecture nor an incompatibility (and against x86-64
//! finds the incompatibility, so the name is really read).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// A minimal ELF executable header (no program or section headers) for `machine`.
fn elf(class64: bool, little: bool, machine: u16) -> Vec<u8> {
    let u16b = |v: u16| {
        if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let u32b = |v: u32| {
        if little {
            v.to_le_bytes()
        } else {
            v.to_be_bytes()
        }
    };
    let mut h = b"\x7fELF".to_vec();
    h.extend_from_slice(&[
        if class64 { 2 } else { 1 },
        if little { 1 } else { 2 },
        1,
        0,
    ]);
    h.extend_from_slice(&[0; 8]);
    h.extend_from_slice(&u16b(2)); // ET_EXEC
    h.extend_from_slice(&u16b(machine));
    h.extend_from_slice(&u32b(1)); // EV_CURRENT
    let (ehsize, phentsize, shentsize) = if class64 {
        h.extend_from_slice(&[0; 24]); // entry, phoff, shoff
        (64u16, 56u16, 64u16)
    } else {
        h.extend_from_slice(&[0; 12]);
        (52, 32, 40)
    };
    h.extend_from_slice(&u32b(0)); // flags
    for v in [ehsize, phentsize, 0, shentsize, 0, 0] {
        h.extend_from_slice(&u16b(v));
    }
    assert_eq!(h.len(), ehsize as usize);
    h
}

fn rootfs(dir: &Path, program: &[u8]) {
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::write(dir.join("usr/bin/prog"), program).unwrap();
    fs::set_permissions(dir.join("usr/bin/prog"), fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(bin: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(testkit::workspace_bin(bin))
        .args(args)
        .current_dir(cwd)
        .env_remove("EXTRALIBS")
        .env_remove("CHROOT")
        .env_remove("HOST")
        .output()
        .unwrap()
}

fn ok(what: &str, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn release_arch(image: &Path) -> Option<String> {
    let text =
        fs::read_to_string(image.join("usr/lib/extension-release.d/extension-release.tools"))
            .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("ARCHITECTURE="))
        .map(|v| v.trim_matches('"').to_string())
}

/// `sysext check IMAGE --host-arch ARCH` findings' codes.
fn check_codes(w: &Path, image: &Path, arch: &str) -> Vec<String> {
    let out = run(
        "sysext",
        &[
            "check",
            image.to_str().unwrap(),
            "--host-os-release",
            "os-release",
            "--host-arch",
            arch,
            "--json",
        ],
        w,
    );
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn flatwrap_and_flix_write_what_check_accepts() {
    for (class64, little, machine, want) in [
        (true, true, 8u16, "mips64-le"),
        (false, true, 20u16, "ppc-le"),
    ] {
        let t = tempfile::tempdir().unwrap();
        let w = t.path();
        fs::write(w.join("os-release"), "ID=debian\nVERSION_ID=12\n").unwrap();
        let program = elf(class64, little, machine);
        assert_eq!(
            sysext_core::release::arch_from_elf_header(&program),
            Some(want)
        );
        rootfs(&w.join("rootfs"), &program);
        for tool in ["flatwrap", "flix"] {
            let out_dir = w.join(tool);
            fs::create_dir(&out_dir).unwrap();
            let image = out_dir.join("tools");
            let out = run(
                tool,
                &[
                    "rootfs",
                    "tools",
                    "/usr/bin/prog",
                    "--format",
                    "dir",
                    "-o",
                    image.to_str().unwrap(),
                ],
                w,
            );
            ok(tool, &out);
            assert_eq!(release_arch(&image).as_deref(), Some(want), "{tool}");
            let codes = check_codes(w, &image, want);
            for bad in ["wrong-architecture", "incompatible"] {
                assert!(
                    !codes.iter().any(|c| c == bad),
                    "{tool} {want}: check says {codes:?}"
                );
            }
            let codes = check_codes(w, &image, "x86-64");
            assert!(
                codes.iter().any(|c| c == "incompatible"),
                "{tool} {want} on x86-64: check says {codes:?}"
            );
        }
    }
}
