//! ocirootfs's layer unpacker (`ocirootfs::unpack::apply_layer`) on arbitrary bytes (tar, or
//! gzip/zstd by magic) into a temp root: it must return an error rather than panic, and never
//! create anything outside the root: the sentinel folder beside it stays empty and the temp
//! folder holds nothing but the two.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp folder");
    let root = dir.path().join("root");
    let sentinel = dir.path().join("sentinel");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&sentinel).expect("sentinel");
    let mut opts = ocirootfs::unpack::UnpackOptions::default();
    // No owners, no device nodes: the fuzzer runs as whoever runs it.
    opts.as_root = false;
    let _ = ocirootfs::unpack::apply_layer(&root, data, None, None, &opts);
    let outside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read the temp folder")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "root" && n != "sentinel")
        .collect();
    assert!(outside.is_empty(), "written outside the root: {outside:?}");
    let in_sentinel = std::fs::read_dir(&sentinel).expect("sentinel").count();
    assert_eq!(in_sentinel, 0, "written into the sentinel beside the root");
    // Read-only folders the layer made must not stop the temp folder's removal.
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
});
