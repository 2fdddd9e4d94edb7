//! Registry credentials: `--creds`, then the first auth file with an entry for the registry,
//! else anonymous; [`CredsFrom`] says which, for error messages.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;

use crate::reference::ImageRef;
use crate::source::SourceError;

fn b64decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Where the registry credentials came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CredsFrom {
    None,
    Flag,
    File(PathBuf),
}

impl std::fmt::Display for CredsFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredsFrom::None => f.write_str("nowhere"),
            CredsFrom::Flag => f.write_str("--creds"),
            CredsFrom::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The auth files read, in order, when `--creds` is not given: the ones skopeo and docker
/// write (`skopeo login`, `docker login`).
pub(super) fn auth_files() -> Vec<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    if let Some(x) = var("XDG_RUNTIME_DIR") {
        files.push(x.join("containers/auth.json"));
    }
    if let Some(h) = var("HOME") {
        files.push(h.join(".config/containers/auth.json"));
    }
    if let Some(d) = var("DOCKER_CONFIG") {
        files.push(d.join("config.json"));
    }
    if let Some(h) = var("HOME") {
        files.push(h.join(".docker/config.json"));
    }
    files
}

/// `docker.io`, `https://index.docker.io/v1/`, `http://host:5000/` → one comparable form.
fn normalise_auth_key(k: &str) -> String {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k)
        .trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    let (host, path) = k.split_once('/').unwrap_or((k, ""));
    let host = match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    };
    if path.is_empty() {
        host.to_string()
    } else {
        format!("{host}/{path}")
    }
}

/// Credentials for `registry/repository` from the text of an auth file
/// (`{"auths": {"host[/namespace]": {"auth": base64("USER:PASSWORD")}}}`): the most specific
/// key wins (`quay.io/org/app`, then `quay.io/org`, then `quay.io`). `Err` says what is wrong
/// with the file.
pub fn creds_from_auth_file(
    text: &str,
    registry: &str,
    repository: &str,
) -> Result<Option<(String, String)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let Some(auths) = v.get("auths") else {
        return Ok(None);
    };
    let auths = auths.as_object().ok_or("\"auths\" is not a JSON object")?;
    let by_key: HashMap<String, &serde_json::Value> = auths
        .iter()
        .map(|(k, e)| (normalise_auth_key(k), e))
        .collect();
    let mut scope = format!("{}/{repository}", normalise_auth_key(registry));
    loop {
        if let Some(e) = by_key.get(&scope) {
            // An entry without "auth" (e.g. kept for a credential helper) gives nothing.
            if let Some(s) = e.get("auth").and_then(|a| a.as_str()) {
                let bad =
                    || format!("the \"auth\" entry for {scope} is not base64 of USER:PASSWORD");
                let dec = String::from_utf8(b64decode(s).ok_or_else(bad)?).map_err(|_| bad())?;
                let (u, p) = dec.split_once(':').ok_or_else(bad)?;
                return Ok(Some((u.into(), p.into())));
            }
        }
        match scope.rsplit_once('/') {
            Some((parent, _)) => scope = parent.to_string(),
            None => return Ok(None),
        }
    }
}

/// Resolves the credentials for `r`: `--creds` first, then the first auth file (of `files`)
/// with an entry for the registry, else anonymous (registries may still hand out anonymous
/// bearer tokens).
pub(super) fn registry_auth(
    r: &ImageRef,
    creds: Option<&str>,
    files: &[PathBuf],
) -> Result<(oci_client::secrets::RegistryAuth, CredsFrom), SourceError> {
    use oci_client::secrets::RegistryAuth;
    if let Some(c) = creds {
        let (u, p) = c
            .split_once(':')
            .filter(|(u, _)| !u.is_empty())
            .ok_or(SourceError::CredsFormat)?;
        return Ok((RegistryAuth::Basic(u.into(), p.into()), CredsFrom::Flag));
    }
    for f in files {
        let text = match fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(SourceError::AuthFile {
                    path: f.clone(),
                    problem: e.to_string(),
                })
            }
        };
        match creds_from_auth_file(&text, &r.registry, &r.repository) {
            Ok(Some((u, p))) => {
                tracing::debug!("credentials for {} from {}", r.registry, f.display());
                return Ok((RegistryAuth::Basic(u, p), CredsFrom::File(f.clone())));
            }
            Ok(None) => {
                if text.contains("credHelpers") || text.contains("credsStore") {
                    tracing::warn!(
                        "{} names a credential helper, which ocirootfs does not run; pass --creds USER:PASSWORD if {} needs a login",
                        f.display(),
                        r.registry
                    );
                }
            }
            Err(problem) => {
                return Err(SourceError::AuthFile {
                    path: f.clone(),
                    problem,
                })
            }
        }
    }
    Ok((RegistryAuth::Anonymous, CredsFrom::None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_auth_files() {
        assert_eq!(b64decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(b64decode("YQ==").unwrap(), b"a");
        let text = r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},"http://127.0.0.1:5000/":{"auth":"YTpi"},"quay.io/org":{"auth":"bzpw"},"quay.io":{"auth":"cTpw"},"ghcr.io":{}}}"#;
        let get = |reg: &str, repo: &str| creds_from_auth_file(text, reg, repo).unwrap();
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(get("docker.io", "library/alpine"), pair("user", "pass"));
        assert_eq!(get("127.0.0.1:5000", "x"), pair("a", "b"));
        // The most specific key wins.
        assert_eq!(get("quay.io", "org/app"), pair("o", "p"));
        assert_eq!(get("quay.io", "other/app"), pair("q", "p"));
        // An entry without "auth" (credential helper) gives nothing; unknown hosts neither.
        assert_eq!(get("ghcr.io", "a"), None);
        assert_eq!(get("example.org", "a"), None);
        assert_eq!(creds_from_auth_file("{}", "quay.io", "a"), Ok(None));
        let err = creds_from_auth_file("garbage", "quay.io", "a").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = creds_from_auth_file(r#"{"auths":{"quay.io":{"auth":"!!"}}}"#, "quay.io", "a")
            .unwrap_err();
        assert!(err.contains("quay.io"), "{err}");
    }

    #[test]
    fn creds_flag_and_files() {
        use oci_client::secrets::RegistryAuth;
        let r = crate::reference::parse_image_ref("127.0.0.1:5000/a/b:1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.json");
        fs::write(&empty, r#"{"auths":{}}"#).unwrap();
        let good = dir.path().join("good.json");
        fs::write(&good, r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpwOng="}}}"#).unwrap();
        let bad = dir.path().join("bad.json");
        fs::write(&bad, "{").unwrap();
        let missing = dir.path().join("missing.json");

        let (auth, from) = registry_auth(&r, Some("me:pa:ss"), std::slice::from_ref(&bad)).unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == "me" && p == "pa:ss"));
        assert_eq!(from, CredsFrom::Flag);
        for wrong in ["nocolon", ":pass"] {
            let e = registry_auth(&r, Some(wrong), &[]).unwrap_err();
            assert!(matches!(e, SourceError::CredsFormat), "{wrong}: {e}");
        }
        let (auth, from) =
            registry_auth(&r, None, &[missing.clone(), empty.clone(), good.clone()]).unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == "u" && p == "p:x"));
        assert_eq!(from, CredsFrom::File(good.clone()));
        let (auth, from) = registry_auth(&r, None, &[missing, empty]).unwrap();
        assert!(matches!(auth, RegistryAuth::Anonymous));
        assert_eq!(from, CredsFrom::None);
        let e = registry_auth(&r, None, &[bad.clone(), good])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&bad.display().to_string()) && e.contains("--creds"),
            "{e}"
        );
    }
}
