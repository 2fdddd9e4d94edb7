//! The bake manifest parser (crates/sysext/src/bake/manifest.rs `parse`) on arbitrary text:
//! errors, never panics. The sysext crate has no library, so the parser's source file is
//! compiled here as a module, with the one item it takes from its parent (`BakeError`).
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;

/// The two variants of `sysext::bake::BakeError` that manifest.rs builds.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error("{}: {message}", path.display())]
    Manifest { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[allow(dead_code)]
#[path = "../../../sysext/src/bake/manifest.rs"]
mod manifest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = manifest::parse(text, Path::new("bake.toml")) {
        assert!(!m.extensions.is_empty());
    }
});
