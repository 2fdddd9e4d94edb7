//! The `sysext bake` manifest (TOML): which extensions to build, from what, how, for which
//! architectures. [`parse`] validates a text before any work starts, [`load`] reads a file;
//! [`Manifest`] and [`Extension`] are the model. The builders are in `crates/sysext/src/bake`;
//! this crate holds only the format, so the fuzz target (`crates/flix/fuzz`, `bake_manifest`)
//! builds it without them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not a valid manifest; `message` says which rule it breaks.
    #[error("manifest {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Architectures a bake can target (systemd's names).
pub const ARCHITECTURES: &[&str] = &["x86-64", "arm64"];

/// How an extension is made from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Programs and their library closure relocated (flix).
    Flix,
    /// The whole rootfs with namespace launchers (flatwrap).
    Flatwrap,
    /// Files placed as given (release tarballs of static binaries).
    Static,
}

/// How image files are named ([`Manifest::image_suffix`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSuffix {
    #[default]
    Raw,
    Class,
}

impl ImageSuffix {
    fn is_raw(&self) -> bool {
        *self == ImageSuffix::Raw
    }

    /// `.raw`, or `.sysext.raw` / `.confext.raw` for an entry with `confext`.
    pub fn of(self, confext: bool) -> &'static str {
        match (self, confext) {
            (ImageSuffix::Raw, _) => ".raw",
            (ImageSuffix::Class, false) => ".sysext.raw",
            (ImageSuffix::Class, true) => ".confext.raw",
        }
    }
}

/// An image file system a manifest entry may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsName {
    Squashfs,
    Erofs,
}

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// URL directory the images are served from (transfer files, Butane); `--base-url` wins.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Image file names: `NAME-VERSION-ARCH.raw` (`raw`, the default; every systemd) or
    /// `NAME-VERSION-ARCH.sysext.raw` / `.confext.raw` (`class`, as systemd 255 and later
    /// recommend; the hosts' links are then `NAME.sysext.raw` / `NAME.confext.raw` too).
    #[serde(default, skip_serializing_if = "ImageSuffix::is_raw")]
    pub image_suffix: ImageSuffix,
    /// Default architectures of every extension.
    #[serde(default = "default_arches")]
    pub architectures: Vec<String>,
    #[serde(rename = "extension", default)]
    pub extensions: Vec<Extension>,
}

fn default_arches() -> Vec<String> {
    vec!["x86-64".into()]
}

/// One `[[extension]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    pub name: String,
    pub version: String,
    /// Image reference, `oci:DIR[:TAG]`, `oci-archive:F`, `docker-archive:F`, a rootfs folder,
    /// or (static) a tarball. `{arch}` (x86-64, arm64) and `{goarch}` (amd64, arm64) are
    /// substituted; a relative path is relative to the manifest.
    pub source: String,
    /// Per-architecture sources overriding `source`.
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    pub mode: Mode,
    /// flix/flatwrap: entries as on their command lines. static: `SRC:/usr/TARGET` (or
    /// `/opt/...`), SRC relative to the source root; a bare SRC starting with `usr/` or `opt/`
    /// keeps its place. Empty (static) = the source's usr/ and opt/ as they are.
    #[serde(default)]
    pub paths: Vec<String>,
    /// flix: libraries loaded with dlopen.
    #[serde(default)]
    pub extra_libs: Vec<String>,
    /// static/flatwrap: unit files in the source, installed to usr/lib/systemd/system/.
    #[serde(default)]
    pub units: Vec<String>,
    /// Units started with the extension through `Upholds=` drop-ins on their `WantedBy=` target.
    #[serde(default)]
    pub enable: Vec<String>,
    /// Architectures for this extension (default: the manifest's).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    /// Keep setuid/setgid bits and file capabilities of the source (stripped by default).
    /// Left out of the rebuild key when false, so existing keys stay valid.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_privileges: bool,
    /// An optional extension: its transfer file names a systemd-sysupdate feature
    /// (`NAME.feature`, systemd 257), off unless the host enables it. Not part of the image,
    /// so not of the rebuild key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// Pack as a dm-verity DDI (a GPT disk image with the file system, its hash tree and,
    /// when bake is given --verity-key/--verity-cert, the root hash signature, as
    /// systemd-repart `--make-ddi=sysext` lays it out); without a key it is left unsigned for
    /// `sysext sign` (offline signing). Left out of the rebuild key when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verity: bool,
    /// The image's file system: squashfs (default) or erofs, as `--fs` takes it. Left out of
    /// the rebuild key when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsName>,
    /// The compressor, with an optional level, as `--compression` takes it (`zstd`,
    /// `lz4hc:12`); checked against `fs` before any work. Left out of the rebuild key when not
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// A configuration extension (systemd-confext, merged over /etc) instead of a sysext:
    /// mode static only, `paths` target `/etc/...` (empty: the source's etc/ as it is), no
    /// units. Left out of the rebuild key when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confext: bool,
}

impl Extension {
    /// Sysext or confext.
    pub fn class(&self) -> sysext_core::release::ImageClass {
        if self.confext {
            sysext_core::release::ImageClass::Confext
        } else {
            sysext_core::release::ImageClass::Sysext
        }
    }

    /// The architectures this entry is built for.
    pub fn arches<'a>(&'a self, m: &'a Manifest) -> &'a [String] {
        self.architectures.as_deref().unwrap_or(&m.architectures)
    }

    /// The source for `arch`, placeholders substituted, relative paths joined to `base`.
    pub fn source_for(&self, arch: &str, base: &Path) -> String {
        let raw = self.sources.get(arch).unwrap_or(&self.source);
        let s = raw
            .replace("{arch}", arch)
            .replace("{goarch}", goarch(arch));
        if (s.starts_with("./") || s.starts_with("../")) && !s.contains(':') {
            base.join(s.strip_prefix("./").unwrap_or(&s))
                .to_string_lossy()
                .into_owned()
        } else {
            s
        }
    }
}

/// The OCI/Go architecture name for a systemd one.
pub fn goarch(arch: &str) -> &str {
    match arch {
        "x86-64" => "amd64",
        other => other,
    }
}

/// Whether `v` is a valid `@v` of systemd-sysupdate: `[A-Za-z0-9.,_+-]`, non-empty.
pub fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".,_+-".contains(&b))
}

/// Parses and validates a manifest text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
    let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let bad = |message: String| ManifestError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    if let Some(u) = &m.base_url {
        gentext::BaseUrl::parse(u).map_err(|err| bad(err.to_string()))?;
    }
    if m.extensions.is_empty() {
        return Err(bad("no [[extension]] entries".into()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for e in &m.extensions {
        sysext_core::release::validate_new_name(&e.name)
            .map_err(|err| bad(format!("extension {:?}: {err}", e.name)))?;
        // The name is a word of transfer-file and unit lines (sysupdate -C NAME).
        gentext::unit_word("the name", &e.name)
            .map_err(|err| bad(format!("extension {:?}: {err}", e.name)))?;
        for u in &e.enable {
            if u.contains('/') {
                return Err(bad(format!(
                    "extension {}: enable = {u:?} is not a unit name; give the file name, e.g. foo.service",
                    e.name
                )));
            }
            gentext::unit_word("unit name", u)
                .map_err(|err| bad(format!("extension {}: enable: {err}", e.name)))?;
        }
        for u in &e.units {
            gentext::check_text("unit path", u)
                .map_err(|err| bad(format!("extension {}: units: {err}", e.name)))?;
        }
        if !seen.insert(e.name.clone()) {
            return Err(bad(format!("extension {:?} is listed twice", e.name)));
        }
        if !valid_version(&e.version) {
            return Err(bad(format!(
                "extension {}: version {:?} may only hold A-Z a-z 0-9 . , _ + - (systemd-sysupdate's @v)",
                e.name, e.version
            )));
        }
        for a in e.arches(&m).iter().chain(e.sources.keys()) {
            if !ARCHITECTURES.contains(&a.as_str()) {
                return Err(bad(format!(
                    "extension {}: architecture {a:?} is not one of {}",
                    e.name,
                    ARCHITECTURES.join(", ")
                )));
            }
        }
        if e.mode != Mode::Static && e.paths.is_empty() {
            return Err(bad(format!(
                "extension {}: mode {:?} needs paths (the programs to ship)",
                e.name, e.mode
            )));
        }
        if e.mode == Mode::Flix && !e.units.is_empty() {
            return Err(bad(format!(
                "extension {}: with mode flix, list unit files among paths, not units",
                e.name
            )));
        }
        if e.confext && (e.mode != Mode::Static || !e.units.is_empty() || !e.enable.is_empty()) {
            return Err(bad(format!(
                "extension {}: a confext (confext = true) is made with mode static from files placed under /etc, without units or enable",
                e.name
            )));
        }
        if e.mode != Mode::Flix && !e.extra_libs.is_empty() {
            return Err(bad(format!(
                "extension {}: extra_libs is for mode flix only",
                e.name
            )));
        }
    }
    Ok(m)
}

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// The folder relative sources are resolved against: the manifest's folder, as an absolute
/// path, so that a resolved source still reads as a path (`/...`), never as an image name.
pub fn base_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
architectures = ["x86-64", "arm64"]
[[extension]]
name = "tools"
version = "1.0"
source = "./rootfs-{arch}"
mode = "flix"
paths = ["/usr/bin/b3sum"]
[[extension]]
name = "docker"
version = "27.1.1"
source = "/srv/docker-{goarch}.tgz"
sources = { arm64 = "/other/arm.tgz" }
mode = "static"
paths = ["docker/:/usr/bin/"]
units = ["docker.service"]
enable = ["docker.service"]
architectures = ["x86-64"]
"#;

    #[test]
    fn parses_and_substitutes() {
        let m = parse(GOOD, Path::new("m.toml")).unwrap();
        assert_eq!(m.extensions.len(), 2);
        let t = &m.extensions[0];
        assert_eq!(t.arches(&m), ["x86-64", "arm64"]);
        assert_eq!(t.source_for("arm64", Path::new("/b")), "/b/rootfs-arm64");
        let d = &m.extensions[1];
        assert_eq!(d.arches(&m), ["x86-64"]);
        assert_eq!(
            d.source_for("x86-64", Path::new("/b")),
            "/srv/docker-amd64.tgz"
        );
        assert_eq!(d.source_for("arm64", Path::new("/b")), "/other/arm.tgz");
    }

    #[test]
    fn rejects_bad_entries() {
        let cases = [
            (GOOD.replace("\"1.0\"", "\"1 0\""), "version"),
            (GOOD.replace("\"arm64\"]", "\"riscv\"]"), "riscv"),
            (
                GOOD.replace("name = \"docker\"", "name = \"tools\""),
                "twice",
            ),
            (GOOD.replace("name = \"docker\"", "name = \"a/b\""), "a/b"),
            (GOOD.replace("mode = \"flix\"", "mode = \"other\""), "other"),
            (
                GOOD.replace("paths = [\"/usr/bin/b3sum\"]", ""),
                "needs paths",
            ),
            (
                GOOD.replace("version = \"1.0\"", "verison = \"1\""),
                "verison",
            ),
            ("base_url = \"x\"".to_string(), "base URL"),
            (
                format!("base_url = \"https://h/x\\n[Transfer]\\nVerify=no\"\n{GOOD}"),
                "base URL",
            ),
            ("base_url = \"https://h/x\"".to_string(), "no [[extension]]"),
            // The one rule for new image names (release::validate_new_name) speaks first.
            (
                GOOD.replace("name = \"docker\"", "name = \"a b\""),
                "' ' is not allowed",
            ),
            (
                GOOD.replace("name = \"docker\"", "name = \".docker\""),
                "starting with '.'",
            ),
            (
                GOOD.replace("name = \"docker\"", "name = \"a\\u001bb\""),
                "control",
            ),
            (
                GOOD.replace(
                    "enable = [\"docker.service\"]",
                    "enable = [\"x\\n.service\"]",
                ),
                "control",
            ),
            (
                GOOD.replace(
                    "enable = [\"docker.service\"]",
                    "enable = [\"../x.service\"]",
                ),
                "not a unit name",
            ),
            // A confext is static files under /etc, without units.
            (
                GOOD.replace("mode = \"flix\"", "mode = \"flix\"\nconfext = true"),
                "a confext (confext = true) is made with mode static",
            ),
            (
                GOOD.replace("mode = \"static\"", "mode = \"static\"\nconfext = true"),
                "without units or enable",
            ),
        ];
        for (text, want) in cases {
            let e = parse(&text, Path::new("m.toml")).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("m.toml"), "{want}: {e}");
        }
    }

    #[test]
    fn versions() {
        for v in ["1.0", "27.1.1", "1.2+git_3,x-rc1"] {
            assert!(valid_version(v), "{v}");
        }
        for v in ["", "1 0", "1/0", "ä"] {
            assert!(!valid_version(v), "{v}");
        }
    }
}

#[cfg(test)]
mod example {
    use super::*;

    #[test]
    fn example_manifest_is_valid() {
        let text = include_str!("../../../examples/bake.toml");
        let m = parse(text, Path::new("examples/bake.toml")).unwrap();
        assert!(m.extensions.len() >= 3);
        let modes: Vec<Mode> = m.extensions.iter().map(|e| e.mode).collect();
        for want in [Mode::Flix, Mode::Flatwrap, Mode::Static] {
            assert!(modes.contains(&want), "{want:?}");
        }
        let arm: Vec<&str> = m
            .extensions
            .iter()
            .filter(|e| e.arches(&m).iter().any(|a| a == "arm64"))
            .map(|e| e.name.as_str())
            .collect();
        assert!(arm.contains(&"b3sum") && arm.contains(&"hello"), "{arm:?}");
    }
}
