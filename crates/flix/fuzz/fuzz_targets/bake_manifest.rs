//! The bake manifest parser (`bake_manifest::parse`, crates/bake-manifest/src/lib.rs) on
//! arbitrary text: errors, never panics; an accepted manifest has extensions.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = bake_manifest::parse(text, Path::new("bake.toml")) {
        assert!(!m.extensions.is_empty());
    }
});
