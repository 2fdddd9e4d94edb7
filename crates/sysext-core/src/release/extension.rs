//! The extension-release metadata we write, and where an image keeps it.

use std::path::PathBuf;

use serde::Serialize;

use super::parse::SHELL_NEED_ESCAPE;

/// The extension-release metadata we write into an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionRelease {
    /// `ID=`; `_any` (the default) merges on every OS.
    pub id: String,
    pub version_id: Option<String>,
    pub sysext_level: Option<String>,
    /// systemd's architecture name (`x86-64`, `arm64`, ...), or `_any`.
    pub architecture: Option<String>,
    /// `SYSEXT_SCOPE=`, e.g. `system portable` (systemd's default when unset).
    pub sysext_scope: Option<String>,
    /// `EXTENSION_RELOAD_MANAGER=1`: systemd (v255+) reloads the manager after merging.
    pub reload_manager: bool,
    pub sysext_id: Option<String>,
    pub sysext_version_id: Option<String>,
}

impl Default for ExtensionRelease {
    fn default() -> Self {
        ExtensionRelease {
            id: "_any".to_string(),
            version_id: None,
            sysext_level: None,
            architecture: None,
            sysext_scope: None,
            reload_manager: false,
            sysext_id: None,
            sysext_version_id: None,
        }
    }
}

impl ExtensionRelease {
    /// The file text: one `KEY=value` line per set field, always in the order ID,
    /// VERSION_ID, SYSEXT_LEVEL, ARCHITECTURE, SYSEXT_SCOPE, EXTENSION_RELOAD_MANAGER,
    /// SYSEXT_ID, SYSEXT_VERSION_ID. Values are double-quoted when they hold anything but
    /// plain characters; [`OsRelease::parse`](super::OsRelease::parse) reads back exactly the values written.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: &str| {
            out.push_str(key);
            out.push('=');
            out.push_str(&quote(value));
            out.push('\n');
        };
        line("ID", &self.id);
        let optional = [
            ("VERSION_ID", &self.version_id),
            ("SYSEXT_LEVEL", &self.sysext_level),
            ("ARCHITECTURE", &self.architecture),
            ("SYSEXT_SCOPE", &self.sysext_scope),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                line(key, v);
            }
        }
        if self.reload_manager {
            line("EXTENSION_RELOAD_MANAGER", "1");
        }
        for (key, value) in [
            ("SYSEXT_ID", &self.sysext_id),
            ("SYSEXT_VERSION_ID", &self.sysext_version_id),
        ] {
            if let Some(v) = value {
                line(key, v);
            }
        }
        out
    }
}

/// A value as written: bare when it is made of plain characters, else double-quoted with
/// `"`, `\`, `` ` `` and `$` escaped.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+:/@,%".contains(c));
    if plain {
        return value.to_string();
    }
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if SHELL_NEED_ESCAPE.contains(&c) {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// Where an extension named `name` keeps its metadata, relative to the image root:
/// `usr/lib/extension-release.d/extension-release.NAME`.
pub fn release_file_path(name: &str) -> PathBuf {
    super::ImageClass::Sysext.release_file(name)
}
