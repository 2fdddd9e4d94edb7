//! The disk image readers behind `sysext inspect`, `check`, `merge` and `run`
//! (`fsimage::dissect`, `fsimage::ddi`, `fsimage::verity`, `fsimage::signature`) on arbitrary
//! bytes carrying a protective MBR's and a GPT header's signatures: dissecting, reading the file system in its
//! partition, the summary and the userspace hash tree check must return errors, never panic,
//! and stay within libFuzzer's memory limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysext_core::inspect::Image;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() < 1024 {
        bytes.resize(1024, 0);
    }
    bytes[510..512].copy_from_slice(&[0x55, 0xaa]);
    bytes[512..520].copy_from_slice(b"EFI PART");
    let dir = tempfile::tempdir().expect("temp folder");
    let path = dir.path().join("fuzz.raw");
    std::fs::write(&path, &bytes).expect("write the input");
    if let Ok(d) = fsimage::dissect::Dissected::open(&path) {
        if let Some(v) = &d.verity {
            let _ = v.verify(&d, 1);
            let _ = v.check_signature(&[]);
        }
    }
    let Ok(image) = Image::open(&path) else {
        return;
    };
    let _ = image.info();
    let _ = image.verify();
});
