//! Other CPUs at run time: the programs of Debian trixie arm64 and i386 roots, relocated by
//! `flix`, run under qemu-user in a root that holds only the extension and the static
//! emulator (no libc, no loader outside `/usr/local/NAME`), and answer as they do in their
//! own root. arm64 objects are linked for 64 KiB pages: every relocated one keeps that
//! alignment, the segment flix adds included.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

const FLIX: &str = env!("CARGO_BIN_EXE_flix");

/// One foreign CPU: Debian's name, its fixture, its static emulator.
struct Cpu {
    arch: &'static str,
    rootfs: fn() -> PathBuf,
    qemu: &'static str,
}

const CPUS: &[Cpu] = &[
    Cpu {
        arch: "arm64",
        rootfs: testkit::fixtures::trixie_arm64_rootfs,
        qemu: "qemu-aarch64-static",
    },
    Cpu {
        arch: "i386",
        rootfs: testkit::fixtures::trixie_i386_rootfs,
        qemu: "qemu-i386-static",
    },
];

/// The fixture copied to `dir/own` with the merged-/usr links an installed system has
/// (`--variant=extract` runs no maintainer script, so they are missing): the programs' own
/// root, where they must answer first.
fn own_root(fixture: &Path, dir: &Path) -> PathBuf {
    let own = dir.join("own");
    testkit::run_ok(Command::new("cp").arg("-a").arg(fixture).arg(&own));
    for (link, target) in [("lib", "usr/lib"), ("bin", "usr/bin"), ("sbin", "usr/sbin")] {
        if fs::symlink_metadata(own.join(link)).is_err() {
            std::os::unix::fs::symlink(target, own.join(link)).unwrap();
        }
    }
    own
}

fn is_elf(p: &Path) -> bool {
    fs::read(p).is_ok_and(|b| b.starts_with(b"\x7fELF"))
}

/// The first line of `out`'s stdout, when it succeeded.
fn first_line(out: &Output) -> Option<String> {
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// `program ARGS` under `qemu -L root` (the emulator's guest prefix: the program's own root,
/// read in place).
fn in_own_root(qemu: &Path, root: &Path, program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg(qemu)
        .arg("-L")
        .arg(root)
        .arg(root.join(program.trim_start_matches('/')))
        .args(args)
        .output()
        .unwrap()
}

/// `ARGS` run in a chroot of `root` through the static emulator copied into it.
fn in_chroot(root: &Path, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg("chroot")
        .arg(root)
        .arg("/qemu")
        .args(args)
        .output()
        .unwrap()
}

/// Every PT_LOAD of the ELF file `p` has `p_align` = `align` and `p_offset ≡ p_vaddr`
/// modulo it (64-bit files; the loader maps them that way on 64 KiB-page kernels).
fn assert_load_alignment(p: &Path, align: u64) {
    let data = fs::read(p).unwrap();
    let header = object::elf::FileHeader64::<Endianness>::parse(&*data)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let endian = header.endian().unwrap();
    let loads: Vec<_> = header
        .program_headers(endian, &*data)
        .unwrap()
        .iter()
        .filter(|ph| ph.p_type(endian) == object::elf::PT_LOAD)
        .collect();
    assert!(!loads.is_empty(), "{}: no PT_LOAD", p.display());
    for ph in loads {
        let (off, vaddr, a) = (ph.p_offset(endian), ph.p_vaddr(endian), ph.p_align(endian));
        assert_eq!(a, align, "{}: PT_LOAD at {off:#x}", p.display());
        assert_eq!(off % a, vaddr % a, "{}: PT_LOAD at {off:#x}", p.display());
    }
}

#[test]
fn arm64_and_i386_programs_run_relocated_in_a_root_without_libc() {
    if !testkit::require_root("chroot into the relocated roots") {
        return;
    }
    let mut ran = Vec::new();
    for cpu in CPUS {
        if !testkit::require_tool(cpu.qemu) {
            return;
        }
        let qemu = testkit::which(cpu.qemu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let own = own_root(&(cpu.rootfs)(), dir.path());

        // The programs that answer --version in their own root.
        let mut programs = Vec::new();
        for e in fs::read_dir(own.join("usr/bin")).unwrap() {
            let path = e.unwrap().path();
            if !is_elf(&path) {
                continue;
            }
            let program = format!("/usr/bin/{}", path.file_name().unwrap().to_string_lossy());
            match first_line(&in_own_root(&qemu, &own, &program, &["--version"])) {
                // A program that prints its argv[0] (sed) named it by its path on this host.
                Some(line) => programs.push((program, line.replace(own.to_str().unwrap(), ""))),
                None => eprintln!("{}: {program} does not answer in its own root", cpu.arch),
            }
        }
        programs.sort();
        assert!(
            programs.len() >= 3,
            "{}: b3sum, curl and htop answer in their own root: {programs:?}",
            cpu.arch
        );

        // Relocated into a folder image, which becomes the whole root.
        let free = dir.path().join("free");
        let out = Command::new(FLIX)
            .arg(&own)
            .arg("tools")
            .args(programs.iter().map(|(p, _)| p))
            .args(["--format", "dir", "--output"])
            .arg(&free)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: flix failed: {}",
            cpu.arch,
            String::from_utf8_lossy(&out.stderr)
        );
        fs::copy(&qemu, free.join("qemu")).unwrap();
        fs::create_dir_all(free.join("tmp")).unwrap();
        let libcs: Vec<PathBuf> = testkit::tree_paths(&free)
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n == "libc.so.6"))
            .collect();
        assert_eq!(
            libcs,
            [free.join("usr/local/tools/libc.so.6")],
            "{}: the only C library is the extension's own",
            cpu.arch
        );

        for (program, want) in &programs {
            let out = in_chroot(&free, &[program, "--version"]);
            assert_eq!(
                first_line(&out).as_deref(),
                Some(want.as_str()),
                "{}: {program} in the root without libc: {}",
                cpu.arch,
                String::from_utf8_lossy(&out.stderr)
            );
            ran.push(format!("{} {program}", cpu.arch));
        }

        // Real work: hashing a file gives what the program gives in its own root; curl reads it.
        fs::write(free.join("tmp/data"), "hello from another CPU\n").unwrap();
        let data = free.join("tmp/data");
        let want = in_own_root(
            &qemu,
            &own,
            "/usr/bin/b3sum",
            &["--no-names", data.to_str().unwrap()],
        );
        let got = in_chroot(&free, &["/usr/bin/b3sum", "--no-names", "/tmp/data"]);
        assert!(
            want.status.success() && got.status.success(),
            "{}: b3sum: {}",
            cpu.arch,
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, want.stdout, "{}: b3sum", cpu.arch);
        assert_eq!(got.stdout.len(), 65, "{}: one hash", cpu.arch);
        let got = in_chroot(&free, &["/usr/bin/curl", "-s", "file:///tmp/data"]);
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            "hello from another CPU\n",
            "{}: curl: {}",
            cpu.arch,
            String::from_utf8_lossy(&got.stderr)
        );

        // glibc's own data through the relocated libc's redirected paths: a gconv module and
        // the C.UTF-8 locale, as in the program's own root.
        let want = in_own_root(
            &qemu,
            &own,
            "/usr/bin/iconv",
            &["-f", "UTF-8", "-t", "EBCDIC-US", data.to_str().unwrap()],
        );
        let got = in_chroot(
            &free,
            &[
                "/usr/bin/iconv",
                "-f",
                "UTF-8",
                "-t",
                "EBCDIC-US",
                "/tmp/data",
            ],
        );
        assert!(
            want.status.success() && got.status.success(),
            "{}: iconv: {}",
            cpu.arch,
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, want.stdout, "{}: iconv", cpu.arch);
        assert_eq!(
            got.stdout[..5],
            [0x88, 0x85, 0x93, 0x93, 0x96],
            "{}: hello",
            cpu.arch
        );
        let got = Command::new("chroot")
            .arg(&free)
            .args(["/qemu", "/usr/bin/locale", "charmap"])
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        assert_eq!(
            first_line(&got).as_deref(),
            Some("UTF-8"),
            "{}: locale",
            cpu.arch
        );

        if cpu.arch == "arm64" {
            for p in testkit::tree_paths(&free.join("usr")) {
                if p.is_file() && !p.is_symlink() && is_elf(&p) {
                    assert_load_alignment(&p, 0x10000);
                }
            }
        }
    }
    for cpu in CPUS {
        let n = ran.iter().filter(|r| r.starts_with(cpu.arch)).count();
        eprintln!("{}: {n} programs relocated and run without libc", cpu.arch);
    }
    eprintln!("{}", ran.join(", "));
}
