//! systemd's architecture names, from ELF headers and from `uname`.

const EM_SPARC: u16 = 2;
const EM_386: u16 = 3;
const EM_68K: u16 = 4;
const EM_MIPS: u16 = 8;
const EM_PARISC: u16 = 15;
const EM_PPC: u16 = 20;
const EM_PPC64: u16 = 21;
const EM_S390: u16 = 22;
const EM_ARM: u16 = 40;
const EM_SH: u16 = 42;
const EM_SPARCV9: u16 = 43;
const EM_IA_64: u16 = 50;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
const EM_RISCV: u16 = 243;
const EM_LOONGARCH: u16 = 258;
const EM_ALPHA: u16 = 0x9026;

/// systemd's architecture name for an ELF file's `e_machine`, class and byte order, or
/// `None` for a machine systemd has no name for.
pub fn arch_from_elf(machine: u16, class64: bool, little_endian: bool) -> Option<&'static str> {
    let le = little_endian;
    Some(match machine {
        EM_X86_64 => "x86-64",
        EM_386 => "x86",
        EM_AARCH64 if le => "arm64",
        EM_AARCH64 => "arm64-be",
        EM_ARM if le => "arm",
        EM_ARM => "arm-be",
        EM_RISCV if class64 => "riscv64",
        EM_RISCV => "riscv32",
        EM_PPC64 if le => "ppc64-le",
        EM_PPC64 => "ppc64",
        EM_PPC if le => "ppc-le",
        EM_PPC => "ppc",
        EM_S390 if class64 => "s390x",
        EM_S390 => "s390",
        EM_LOONGARCH if class64 => "loongarch64",
        EM_MIPS => match (class64, le) {
            (true, true) => "mips64-le",
            (true, false) => "mips64",
            (false, true) => "mips-le",
            (false, false) => "mips",
        },
        EM_SPARCV9 => "sparc64",
        EM_SPARC => "sparc",
        EM_PARISC if class64 => "parisc64",
        EM_PARISC => "parisc",
        EM_IA_64 => "ia64",
        EM_ALPHA => "alpha",
        EM_68K => "m68k",
        EM_SH => "sh",
        _ => return None,
    })
}

/// systemd's architecture name read from the first bytes of an ELF file (its 20-byte
/// identification and `e_machine`), or `None` when the bytes are not ELF, the class or byte
/// order is not one ELF defines, or systemd has no name for the machine. The one place that
/// reads an architecture from ELF header bytes: flatwrap's plan and `inspect` call it, `check`
/// and flix call [`arch_from_elf`] with the scanned header's fields.
pub fn arch_from_elf_header(head: &[u8]) -> Option<&'static str> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let le = match head[5] {
        1 => true,
        2 => false,
        _ => return None,
    };
    let machine = if le {
        u16::from_le_bytes([head[18], head[19]])
    } else {
        u16::from_be_bytes([head[18], head[19]])
    };
    arch_from_elf(machine, class64, le)
}

/// systemd's architecture name for a `uname -m` machine string (`x86_64` → `x86-64`,
/// `aarch64` → `arm64`, ...), or `None` when systemd has none.
pub fn arch_from_uname(machine: &str) -> Option<&'static str> {
    let be = cfg!(target_endian = "big");
    Some(match machine {
        "x86_64" | "amd64" => "x86-64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        "aarch64" => "arm64",
        "aarch64_be" => "arm64-be",
        "riscv64" => "riscv64",
        "riscv32" => "riscv32",
        "ppc64le" => "ppc64-le",
        "ppc64" => "ppc64",
        "ppcle" => "ppc-le",
        "ppc" => "ppc",
        "s390x" => "s390x",
        "s390" => "s390",
        "loongarch64" => "loongarch64",
        "mips64" if be => "mips64",
        "mips64" => "mips64-le",
        "mips" if be => "mips",
        "mips" => "mips-le",
        "sparc64" => "sparc64",
        "sparc" => "sparc",
        "parisc64" => "parisc64",
        "parisc" => "parisc",
        "ia64" => "ia64",
        "alpha" => "alpha",
        "m68k" => "m68k",
        "sh" | "sh4" | "sh4a" => "sh",
        m if m.starts_with("arm") && m.ends_with('b') => "arm-be",
        m if m.starts_with("arm") => "arm",
        _ => return None,
    })
}

/// The running host's architecture in systemd's naming (what systemd-sysext compares
/// `ARCHITECTURE=` with).
pub fn host_architecture() -> Option<&'static str> {
    let uts = rustix::system::uname();
    let machine = uts.machine().to_str().ok()?;
    arch_from_uname(machine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, machine: u16) -> Vec<u8> {
        let mut h = b"\x7fELF".to_vec();
        h.extend_from_slice(&[class, data, 1, 0]);
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&2u16.to_le_bytes());
        if data == 1 {
            h.extend_from_slice(&machine.to_le_bytes());
        } else {
            h.extend_from_slice(&machine.to_be_bytes());
        }
        h
    }

    #[test]
    fn arch_from_header_bytes() {
        for (class, data, machine, want) in [
            (2, 1, EM_X86_64, Some("x86-64")),
            (2, 1, EM_AARCH64, Some("arm64")),
            (1, 1, EM_386, Some("x86")),
            (1, 1, EM_ARM, Some("arm")),
            (2, 1, EM_PPC64, Some("ppc64-le")),
            (2, 2, EM_S390, Some("s390x")),
            // Where flatwrap's copy said `mips64` and `ppc`.
            (2, 1, EM_MIPS, Some("mips64-le")),
            (1, 1, EM_PPC, Some("ppc-le")),
            (2, 2, EM_MIPS, Some("mips64")),
            (1, 2, EM_PPC, Some("ppc")),
            (2, 1, 9999, None),
            // Neither class nor byte order ELF defines.
            (3, 1, EM_X86_64, None),
            (2, 0, EM_X86_64, None),
        ] {
            let h = header(class, data, machine);
            assert_eq!(arch_from_elf_header(&h), want, "{class} {data} {machine}");
        }
        assert_eq!(arch_from_elf_header(b"#!/bin/sh\n0123456789"), None);
        assert_eq!(arch_from_elf_header(b"\x7fELF"), None);
    }

    #[test]
    fn arch_names() {
        let elf: &[(u16, bool, bool, Option<&str>)] = &[
            (EM_X86_64, true, true, Some("x86-64")),
            (EM_386, false, true, Some("x86")),
            (EM_AARCH64, true, true, Some("arm64")),
            (EM_ARM, false, true, Some("arm")),
            (EM_RISCV, true, true, Some("riscv64")),
            (EM_PPC64, true, true, Some("ppc64-le")),
            (EM_PPC64, true, false, Some("ppc64")),
            (EM_S390, true, false, Some("s390x")),
            (EM_LOONGARCH, true, true, Some("loongarch64")),
            (0xffff, true, true, None),
        ];
        for (m, c, le, want) in elf {
            assert_eq!(arch_from_elf(*m, *c, *le), *want, "machine {m}");
        }
        let uname: &[(&str, Option<&str>)] = &[
            ("x86_64", Some("x86-64")),
            ("i686", Some("x86")),
            ("aarch64", Some("arm64")),
            ("armv7l", Some("arm")),
            ("riscv64", Some("riscv64")),
            ("ppc64le", Some("ppc64-le")),
            ("s390x", Some("s390x")),
            ("loongarch64", Some("loongarch64")),
            ("pdp11", None),
        ];
        for (m, want) in uname {
            assert_eq!(arch_from_uname(m), *want, "uname {m}");
        }
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host_architecture(), Some("x86-64"));
        }
    }
}
