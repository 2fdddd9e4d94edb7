//! systemd-sysext's decision whether an image merges on a host.

use serde::Serialize;

use super::parse::WHITESPACE;
use super::{ImageClass, OsRelease};

/// systemd-sysext's decision for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The image merges.
    Compatible,
    /// The image is skipped (systemd-sysext: "No suitable extensions found (N ignored due
    /// to incompatible image(s))"); `reason` follows systemd's debug message.
    Incompatible { reason: String },
}

impl Verdict {
    pub fn is_compatible(&self) -> bool {
        matches!(self, Verdict::Compatible)
    }
}

fn incompatible(reason: String) -> Verdict {
    Verdict::Incompatible { reason }
}

/// Whether systemd-sysext merges an image with extension-release `ext` on a host with
/// os-release `host` and CPU `host_arch` (a systemd name, see [`host_architecture`](super::host_architecture)), in the
/// order systemd checks (exact string comparisons, empty values count as unset):
///
/// 1. no assignment at all (empty or missing file in a directory image) → skipped;
/// 2. `SYSEXT_SCOPE` (default `system portable`) must contain `system`;
/// 3. `ARCHITECTURE`, unless unset or `_any`, must equal `host_arch`;
/// 4. `ID` must be set; `_any` merges without further checks;
/// 5. `ID` must equal the host's `ID` or one of the words of the host's `ID_LIKE` (systemd
///    257; 252 compares with `ID` only, and the extension's own `ID_LIKE` is never used);
/// 6. a host with neither `VERSION_ID` nor `SYSEXT_LEVEL` accepts it;
/// 7. both sides with `SYSEXT_LEVEL`: the levels must be equal (`VERSION_ID` unchecked);
/// 8. otherwise, if the host has `VERSION_ID`, the extension's must equal it.
///
/// A host os-release without `ID` makes systemd refuse to merge anything; that is reported
/// as incompatible too.
///
/// A missing release file: systemd 252 skips a *directory* image without one like an empty
/// file (pass `OsRelease::default()`), but a `.raw` image without one ("Failed to read
/// metadata for image") aborts the whole merge, even with `--force`; callers that merge
/// `.raw` images must treat that as an error, not as a skip.
///
/// The verdicts follow systemd 257: they are compared with systemd-sysext 257 (and
/// systemd-confext 257) and 252 by `tests/release_compat_systemd.rs`; the one rule where 252
/// differs (host `ID_LIKE`) is listed there.
///
/// This is the sysext rule; [`check_class_compatibility`] takes the class.
pub fn check_compatibility(ext: &OsRelease, host: &OsRelease, host_arch: &str) -> Verdict {
    check_class_compatibility(ImageClass::Sysext, ext, host, host_arch)
}

/// [`check_compatibility`] for an image of `class`: a confext is judged by `CONFEXT_SCOPE` and
/// `CONFEXT_LEVEL` (against the host's `CONFEXT_LEVEL`) instead of the `SYSEXT_` keys, as
/// systemd-confext does; everything else is the same.
pub fn check_class_compatibility(
    class: ImageClass,
    ext: &OsRelease,
    host: &OsRelease,
    host_arch: &str,
) -> Verdict {
    let Some(host_id) = host.non_empty("ID") else {
        return incompatible(
            "'ID' field not found or empty in the host's os-release, systemd-sysext merges nothing"
                .into(),
        );
    };
    if ext.is_empty() {
        return incompatible("extension carries no extension-release data".into());
    }
    let scope_key = class.scope_key();
    if let Some(scope) = ext.get(scope_key) {
        if !scope.split(WHITESPACE).any(|s| s == "system") {
            return incompatible(format!(
                "extension is not suitable for scope system ({scope_key}={scope:?})"
            ));
        }
    }
    if let Some(arch) = ext.non_empty("ARCHITECTURE") {
        if arch != "_any" && arch != host_arch {
            return incompatible(format!(
                "extension is for architecture '{arch}', but deployed on top of '{host_arch}'"
            ));
        }
    }
    let Some(id) = ext.non_empty("ID") else {
        return incompatible(format!(
            "extension does not contain ID in extension-release but requested to match '{host_id}' or be '_any'"
        ));
    };
    if id == "_any" {
        return Verdict::Compatible;
    }
    let id_like = host
        .get("ID_LIKE")
        .is_some_and(|l| l.split(WHITESPACE).any(|w| w == id));
    if id != host_id && !id_like {
        return incompatible(format!(
            "extension is for OS '{id}', but deployed on top of '{host_id}'"
        ));
    }
    let host_version = host.non_empty("VERSION_ID");
    let level_key = class.level_key();
    let host_level = host.non_empty(level_key);
    if host_version.is_none() && host_level.is_none() {
        return Verdict::Compatible;
    }
    match (host_level, ext.non_empty(level_key)) {
        (Some(host_level), Some(level)) => {
            if host_level != level {
                return incompatible(format!(
                    "extension is for {class} API level '{level}', but running on {class} API level '{host_level}'"
                ));
            }
        }
        _ => {
            if let Some(host_version) = host_version {
                match ext.non_empty("VERSION_ID") {
                    None => {
                        return incompatible(format!(
                            "extension does not contain VERSION_ID in extension-release but requested to match '{host_version}'"
                        ))
                    }
                    Some(v) if v != host_version => {
                        return incompatible(format!(
                            "extension is for OS version '{v}', but deployed on top of '{host_version}'"
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
    }
    Verdict::Compatible
}
