//! Corrupt and truncated ELF input is an error, never a panic, and never a silently wrong scan.

use std::path::Path;

use elf_closure::{self as elf, ElfError};

fn sample() -> Vec<u8> {
    // A real dynamically linked program of the trixie fixture (falls back to the host's).
    let root = testkit::fixtures::trixie_rootfs();
    std::fs::read(root.join("usr/bin/htop"))
        .or_else(|_| std::fs::read("/bin/ls"))
        .unwrap()
}

fn u16le(b: &[u8], off: usize) -> usize {
    u16::from_le_bytes([b[off], b[off + 1]]) as usize
}

fn u64le(b: &[u8], off: usize) -> usize {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap()) as usize
}

#[test]
fn truncations_are_errors() {
    let full = sample();
    let info = elf::scan(&full).unwrap().unwrap();
    assert!(info.class64 && info.is_dynamic && !info.needed.is_empty());
    let phoff = u64le(&full, 32);
    let phentsize = u16le(&full, 54);
    let phnum = u16le(&full, 56);
    let phend = phoff + phentsize * phnum;
    // Cut points: inside the ident, inside the header, inside the program headers.
    let table: &[(usize, &str)] = &[
        (0, "none"),
        (3, "none"),
        (4, "err"),
        (15, "err"),
        (16, "err"),
        (40, "err"),
        (63, "err"),
        (64, "err"),
        (phoff + 1, "err"),
        (phend - 1, "err"),
    ];
    for (len, want) in table {
        let r = elf::scan(&full[..*len]);
        match *want {
            "none" => assert!(matches!(r, Ok(None)), "{len}: {r:?}"),
            _ => assert!(matches!(r, Err(ElfError::Malformed { .. })), "{len}: {r:?}"),
        }
    }
    // Every other cut: an error, or (once everything the scan reads is present) the full result.
    let step = (full.len() / 4000).max(1);
    let mut errors = 0;
    for len in (4..full.len()).step_by(step) {
        match elf::scan(&full[..len]) {
            Ok(Some(i)) => assert_eq!(i, info, "cut at {len}"),
            Ok(None) => panic!("cut at {len}: not ELF?"),
            Err(_) => errors += 1,
        }
    }
    assert!(errors > 0);
    // The file reader sees the same: a truncated file is an error naming the file.
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("htop.cut");
    std::fs::write(&p, &full[..phend - 1]).unwrap();
    let e = elf::scan_file(&p).unwrap_err().to_string();
    assert!(e.contains("htop.cut"), "{e}");
    assert!(elf::scan_file(Path::new("/nonexistent/x")).is_err());
}

#[test]
fn corrupted_fields_are_errors_not_panics() {
    let full = sample();
    let patch = |off: usize, bytes: &[u8]| {
        let mut b = full.clone();
        b[off..off + bytes.len()].copy_from_slice(bytes);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("class 9", patch(4, &[9])),
        ("byte order 0", patch(5, &[0])),
        ("e_phoff past the end", patch(32, &u64::MAX.to_le_bytes())),
        ("e_phnum huge", patch(56, &0xfffe_u16.to_le_bytes())),
        ("e_phentsize wrong", patch(54, &7u16.to_le_bytes())),
    ];
    for (what, bytes) in &cases {
        assert!(elf::scan(bytes).is_err(), "{what}");
    }
    // Pseudo-random corruption of the header, program headers and dynamic data: any result
    // but a panic is acceptable.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let limit = full.len().min(64 * 1024);
    for _ in 0..3000 {
        let mut b = full[..limit].to_vec();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x as usize) % b.len().min(8192);
            b[off] = (x >> 32) as u8;
        }
        let _ = elf::scan(&b);
    }
}
