//! The os-release / extension-release parser (`sysext_core::release::OsRelease`), the
//! compatibility check and name validation on arbitrary bytes: never panics. Values it reads
//! and `ExtensionRelease::render` writes again are read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysext_core::release::{check_compatibility, validate_name, ExtensionRelease, OsRelease};

fuzz_target!(|data: &[u8]| {
    let Some(r) = OsRelease::from_bytes(data) else {
        return;
    };
    let _ = r.is_empty();
    let host = OsRelease::parse("ID=debian\nVERSION_ID=13\nSYSEXT_LEVEL=1\n");
    let _ = check_compatibility(&r, &host, "x86-64");
    let _ = check_compatibility(&host, &r, "arm64");
    if let Some(id) = r.get("ID") {
        let _ = validate_name(id);
    }
    let owned = |k: &str| r.get(k).map(str::to_string);
    let ext = ExtensionRelease {
        id: owned("ID").unwrap_or_else(|| "_any".into()),
        version_id: owned("VERSION_ID"),
        sysext_level: owned("SYSEXT_LEVEL"),
        architecture: owned("ARCHITECTURE"),
        sysext_scope: owned("SYSEXT_SCOPE"),
        sysext_id: owned("SYSEXT_ID"),
        sysext_version_id: owned("SYSEXT_VERSION_ID"),
        ..Default::default()
    };
    let back = OsRelease::parse(&ext.render());
    assert_eq!(back.get("ID"), Some(ext.id.as_str()));
    for (k, v) in [
        ("VERSION_ID", &ext.version_id),
        ("SYSEXT_LEVEL", &ext.sysext_level),
        ("ARCHITECTURE", &ext.architecture),
        ("SYSEXT_SCOPE", &ext.sysext_scope),
        ("SYSEXT_ID", &ext.sysext_id),
        ("SYSEXT_VERSION_ID", &ext.sysext_version_id),
    ] {
        assert_eq!(back.get(k), v.as_deref(), "{k} changed in render then parse");
    }
});
