//! The squashfs reader behind `sysext inspect` and `sysext check` (`sysext_core::inspect`) on
//! arbitrary bytes: opening, listing, the summary and reading small files must return errors,
//! never panic, and stay within libFuzzer's memory limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use fsimage::EntryKind;
use sysext_core::inspect::Image;

/// Files larger than this (as the image declares them) are not read whole.
const READ_LIMIT: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp folder");
    let path = dir.path().join("fuzz.raw");
    std::fs::write(&path, data).expect("write the input");
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
        }
    }
});
