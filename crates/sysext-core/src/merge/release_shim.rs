//! TEMPORARY stand-in for `crate::release` (branch core-release) with the agreed names;
//! removed when that branch is merged.

use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct OsRelease {
    pairs: Vec<(String, String)>,
}

impl OsRelease {
    pub fn parse(text: &str) -> OsRelease {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            pairs.retain(|(key, _)| key != k.trim());
            pairs.push((k.trim().to_string(), v.to_string()));
        }
        OsRelease { pairs }
    }
    pub fn read(path: &Path) -> std::io::Result<OsRelease> {
        Ok(OsRelease::parse(&std::fs::read_to_string(path)?))
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

pub enum Verdict {
    Compatible,
    Incompatible { reason: String },
}

pub fn check_compatibility(ext: &OsRelease, host: &OsRelease, host_arch: &str) -> Verdict {
    let no = |reason: String| Verdict::Incompatible { reason };
    if ext.is_empty() {
        return no("carries no extension-release data, ignoring extension.".into());
    }
    let scope = ext.get("SYSEXT_SCOPE").unwrap_or("system portable");
    if !scope.split_whitespace().any(|s| s == "system") {
        return no("is not suitable for scope system, ignoring extension.".into());
    }
    if let Some(a) = ext
        .get("ARCHITECTURE")
        .filter(|a| !a.is_empty() && *a != "_any")
    {
        if a != host_arch {
            return no(format!(
                "is for architecture '{a}', but deployed on top of '{host_arch}'."
            ));
        }
    }
    let host_id = host.get("ID").unwrap_or("");
    let Some(id) = ext.get("ID").filter(|s| !s.is_empty()) else {
        return no(format!(
            "does not contain ID in extension-release but requested to match '{host_id}' or be '_any'"
        ));
    };
    if id == "_any" {
        return Verdict::Compatible;
    }
    if id != host_id {
        return no(format!(
            "is for OS '{id}', but deployed on top of '{host_id}'."
        ));
    }
    let host_version = host.get("VERSION_ID").filter(|s| !s.is_empty());
    let host_level = host.get("SYSEXT_LEVEL").filter(|s| !s.is_empty());
    if host_version.is_none() && host_level.is_none() {
        return Verdict::Compatible;
    }
    if let (Some(h), Some(e)) = (
        host_level,
        ext.get("SYSEXT_LEVEL").filter(|s| !s.is_empty()),
    ) {
        if h != e {
            return no(format!(
                "is for sysext API level '{e}', but running on sysext API level '{h}'"
            ));
        }
        return Verdict::Compatible;
    }
    let hv = host_version.unwrap_or("");
    match ext.get("VERSION_ID").filter(|s| !s.is_empty()) {
        None => no(format!(
            "does not contain VERSION_ID in extension-release but requested to match '{hv}'"
        )),
        Some(v) if v != hv => no(format!("is for OS '{v}', but deployed on top of '{hv}'.")),
        Some(_) => Verdict::Compatible,
    }
}

pub fn host_architecture() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("x86-64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}
