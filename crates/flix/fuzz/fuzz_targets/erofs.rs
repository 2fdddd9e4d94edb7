//! The EROFS reader behind `sysext inspect` and `sysext check` (`sysext_core::inspect`) on
//! arbitrary bytes carrying the EROFS magic: opening, listing, the summary, reading small
//! files and the ELF scan (compressed files too: index walks, LZ4 and zstd clusters) must
//! return errors, never panic or hang, and stay within libFuzzer's memory limit.
#![no_main]

use fsimage::EntryKind;
use libfuzzer_sys::fuzz_target;
use sysext_core::inspect::Image;

/// Files larger than this (as the image declares them) are not read whole.
const READ_LIMIT: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    // The magic is always there, so every input reaches the EROFS reader.
    let mut bytes = data.to_vec();
    if bytes.len() < 1028 {
        bytes.resize(1028, 0);
    }
    bytes[1024..1028].copy_from_slice(&fsimage::erofs::MAGIC.to_le_bytes());
    let dir = tempfile::tempdir().expect("temp folder");
    let path = dir.path().join("fuzz.raw");
    std::fs::write(&path, &bytes).expect("write the input");
    let Ok(image) = Image::open(&path) else {
        return;
    };
    let _ = image.info();
    for e in image.entries().iter().take(256) {
        if e.kind == EntryKind::File {
            let _ = image.head(e);
            if e.size <= READ_LIMIT {
                let _ = image.read_file(&e.path);
            }
            // Reads at the offsets an ELF header names: compressed files are entered
            // anywhere, not only from their start.
            let _ = image.scan_elf(&e.path);
        }
    }
});
