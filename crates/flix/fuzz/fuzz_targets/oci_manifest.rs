//! ocirootfs's parsers of OCI index / manifest / config JSON and docker-archive's
//! `manifest.json` (`ocirootfs::source::{parse_manifest, parse_image_config,
//! parse_docker_manifest}`) on arbitrary bytes: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ocirootfs::reference::Platform;

fuzz_target!(|data: &[u8]| {
    let platform = Platform::parse("linux/amd64").expect("a valid platform");
    if let Ok(m) = ocirootfs::source::parse_manifest(data, &platform) {
        // Every digest it hands out was validated (safe to build a path from).
        for d in m.chosen.iter().chain(m.config.iter()) {
            assert!(ocirootfs::reference::validate_digest(d).is_ok(), "{d}");
        }
        for (d, _) in &m.layers {
            assert!(ocirootfs::reference::validate_digest(d).is_ok(), "{d}");
        }
    }
    let _ = ocirootfs::source::parse_image_config(data);
    if let Ok(images) = ocirootfs::source::parse_docker_manifest(data) {
        // Member names are cleaned: no `..` survives.
        for (config, layers) in &images {
            for m in std::iter::once(config).chain(layers) {
                assert!(!m.split('/').any(|c| c == ".."), "{m}");
            }
        }
    }
});
