//! Parse what the user typed as SOURCE into a [`Source`]: a registry reference normalised the
//! way docker does (`alpine` → `docker.io/library/alpine:latest`), one of skopeo's local forms
//! (`oci:DIR[:TAG]`, `oci-archive:FILE`, `docker-archive:FILE`), or a plain folder.

use std::fmt;
use std::path::{Path, PathBuf};

/// Errors from parsing a source or platform string.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("invalid image reference {0:?}: {1}")]
    Invalid(String, &'static str),
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    Digest(String),
    #[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")]
    Platform(String),
}

/// A normalised registry reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `docker.io`, `quay.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// `library/alpine`.
    pub repository: String,
    /// The tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// A pinned manifest digest.
    pub digest: Option<String>,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl ImageRef {
    /// Whether the registry is on the loopback interface (plain HTTP is allowed there).
    pub fn is_loopback(&self) -> bool {
        let host = match self.registry.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => self.registry.as_str(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// Where an image (or a ready root filesystem) comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Registry(ImageRef),
    /// `oci:DIR[:TAG]`
    OciLayout {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`
    OciArchive {
        file: PathBuf,
        tag: Option<String>,
    },
    /// `docker-archive:FILE`
    DockerArchive(PathBuf),
    /// An existing root filesystem folder.
    Folder(PathBuf),
}

/// Checks a `sha256:<64 hex>` digest, so paths built from it are safe.
pub fn validate_digest(d: &str) -> Result<&str, ReferenceError> {
    match d.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(h)
        }
        _ => Err(ReferenceError::Digest(d.to_string())),
    }
}

/// Splits `PATH[:TAG]` the way skopeo does: the tag is whatever follows the last `:` if the
/// whole string is not an existing path.
fn split_path_tag(s: &str) -> (PathBuf, Option<String>) {
    if Path::new(s).exists() {
        return (PathBuf::from(s), None);
    }
    match s.rsplit_once(':') {
        Some((p, t)) if !t.is_empty() && !t.contains('/') => {
            (PathBuf::from(p), Some(t.to_string()))
        }
        _ => (PathBuf::from(s), None),
    }
}

/// Parses SOURCE.
pub fn parse_source(s: &str) -> Result<Source, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if let Some(rest) = s.strip_prefix("oci:") {
        let (dir, tag) = split_path_tag(rest);
        return Ok(Source::OciLayout { dir, tag });
    }
    if let Some(rest) = s.strip_prefix("oci-archive:") {
        let (file, tag) = split_path_tag(rest);
        return Ok(Source::OciArchive { file, tag });
    }
    if let Some(rest) = s.strip_prefix("docker-archive:") {
        // A trailing `:name:tag` selector is accepted and ignored beyond the first image.
        let (file, _) = split_path_tag(rest);
        return Ok(Source::DockerArchive(file));
    }
    if let Some(rest) = s.strip_prefix("docker://") {
        return parse_image_ref(rest).map(Source::Registry);
    }
    if s.starts_with('/')
        || s.starts_with("./")
        || s.starts_with("../")
        || s == "."
        || Path::new(s).is_dir()
    {
        return Ok(Source::Folder(PathBuf::from(s)));
    }
    parse_image_ref(s).map(Source::Registry)
}

/// Parses and normalises a registry reference.
pub fn parse_image_ref(s: &str) -> Result<ImageRef, ReferenceError> {
    if s.is_empty() {
        return Err(ReferenceError::Empty);
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((n, d)) => {
            validate_digest(d)?;
            (n, Some(d.to_string()))
        }
        None => (s, None),
    };
    // A tag follows the last ':' after the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&name_tag[..at], Some(name_tag[at + 1..].to_string()))
        }
        None => (name_tag, None),
    };
    if let Some(t) = &tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(ReferenceError::Invalid(s.into(), "bad tag"));
        }
    }
    if name.is_empty() {
        return Err(ReferenceError::Invalid(s.into(), "missing repository name"));
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
        "docker.io".to_string()
    } else {
        registry
    };
    let repository = if registry == "docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    let repo_ok = !repository.is_empty()
        && repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !repo_ok {
        return Err(ReferenceError::Invalid(
            s.into(),
            "repository must be lowercase letters, digits, '.', '_', '-' separated by '/'",
        ));
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some("latest".to_string())
    } else {
        tag
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// An OCI platform: `os/architecture[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// Parses `linux/arm64`, `linux/arm/v7`, or just `arm64` (os linux).
    pub fn parse(s: &str) -> Result<Platform, ReferenceError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || ReferenceError::Platform(s.to_string());
        let (os, arch, variant) = match parts.as_slice() {
            [a] => ("linux", *a, None),
            [o, a] => (*o, *a, None),
            [o, a, v] => (*o, *a, Some(v.to_string())),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() || variant.as_deref() == Some("") {
            return Err(bad());
        }
        let architecture = match arch {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant,
        })
    }

    /// The platform of the running host.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "riscv64" => ("riscv64", None),
            "s390x" => ("s390x", None),
            a => (a, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
        }
    }

    fn norm_variant(arch: &str, v: Option<&str>) -> Option<String> {
        let v = v.unwrap_or("");
        match arch {
            // arm64 has only one variant in practice: "", "8", "v8", "v8.0" are the same.
            "arm64" if matches!(v, "" | "8" | "v8" | "v8.0") => Some("v8".into()),
            _ if v.is_empty() => None,
            _ => Some(v.trim_start_matches('v').to_string()),
        }
    }

    /// Whether an index entry's platform satisfies this request. A request without a
    /// variant accepts any variant of the architecture.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        match &self.variant {
            None => true,
            Some(want) => {
                Self::norm_variant(architecture, Some(want))
                    == Self::norm_variant(architecture, variant)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_references() {
        let cases: &[(&str, &str)] = &[
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("user/app:1", "docker.io/user/app:1"),
            ("index.docker.io/library/debian", "docker.io/library/debian:latest"),
            ("quay.io/org/app:v1.0", "quay.io/org/app:v1.0"),
            ("127.0.0.1:5000/name:tag", "127.0.0.1:5000/name:tag"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b/c", "localhost:5000/a/b/c:latest"),
            (
                "name@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "docker.io/library/name@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_image_ref(input).unwrap().to_string(),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "UPPER/case",
            "a:b:c",
            "x@sha256:abc",
            "x@md5:00",
            "a//b",
            "a:-x",
        ] {
            assert!(parse_image_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback() {
        for (r, want) in [
            ("127.0.0.1:5000/a", true),
            ("localhost:1/a", true),
            ("[::1]:5000/a", true),
            ("quay.io/a", false),
        ] {
            assert_eq!(parse_image_ref(r).unwrap().is_loopback(), want, "{r}");
        }
    }

    #[test]
    fn parses_sources() {
        assert_eq!(
            parse_source("oci:/nonexistent/dir:trixie").unwrap(),
            Source::OciLayout {
                dir: "/nonexistent/dir".into(),
                tag: Some("trixie".into())
            }
        );
        assert_eq!(
            parse_source("oci:/nonexistent/dir").unwrap(),
            Source::OciLayout {
                dir: "/nonexistent/dir".into(),
                tag: None
            }
        );
        assert_eq!(
            parse_source("docker-archive:/x.tar").unwrap(),
            Source::DockerArchive("/x.tar".into())
        );
        assert_eq!(
            parse_source("oci-archive:/x.tar").unwrap(),
            Source::OciArchive {
                file: "/x.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            parse_source("/srv/rootfs").unwrap(),
            Source::Folder("/srv/rootfs".into())
        );
        assert!(matches!(
            parse_source("alpine").unwrap(),
            Source::Registry(_)
        ));
        assert!(matches!(
            parse_source("docker://alpine").unwrap(),
            Source::Registry(_)
        ));
    }

    #[test]
    fn platforms() {
        let p = Platform::parse("linux/arm64").unwrap();
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(p.matches("linux", "arm64", None));
        let v8 = Platform::parse("linux/arm64/v8").unwrap();
        for v in [None, Some(""), Some("8"), Some("v8"), Some("v8.0")] {
            assert!(v8.matches("linux", "arm64", v), "{v:?}");
        }
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.matches("linux", "arm", Some("v7")));
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!(!p.matches("linux", "amd64", None));
        assert_eq!(
            Platform::parse("x86_64").unwrap().to_string(),
            "linux/amd64"
        );
        assert!(Platform::parse("a/b/c/d").is_err());
        assert!(Platform::parse("linux/").is_err());
    }
}
