//! Registries, through `oci-client` on a `tokio` runtime (the cargo feature `registry`, on by
//! default): credentials, retries with backoff, manifests and configs (at most
//! [`MAX_DOCUMENT`] bytes, cached ones hashed again), layers streamed into the [`Cache`] in
//! parallel, each verified while it downloads. See [`crate::source`] for the rules.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Cache;
use crate::reference::{validate_digest, ImageRef};
use crate::source::{
    check_platform, host_or, is_index, parse_config, parse_doc, select_platform, sha256_hex, Image,
    Layer, LayerData, ResolveOptions, SourceError, MAX_DOCUMENT,
};

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

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
enum CredsFrom {
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
fn auth_files() -> Vec<PathBuf> {
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
fn registry_auth(
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

/// The image being pulled and where its credentials came from: what errors name.
#[derive(Debug, Clone)]
struct Remote {
    image: ImageRef,
    creds: CredsFrom,
}

impl Remote {
    fn denied(&self) -> SourceError {
        let registry = self.image.registry.clone();
        let image = self.image.to_string();
        match &self.creds {
            CredsFrom::None => SourceError::Unauthorized { registry, image },
            c => SourceError::CredentialsRefused {
                registry,
                image,
                creds: c.to_string(),
            },
        }
    }

    fn not_found(&self) -> SourceError {
        let r = &self.image;
        SourceError::NotFound {
            image: r.to_string(),
            registry: r.registry.clone(),
            repository: r.repository.clone(),
            reference: r
                .digest
                .clone()
                .or_else(|| r.tag.clone())
                .unwrap_or_else(|| "latest".into()),
        }
    }
}

/// An error and its causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !out.contains(&m) {
            out = format!("{out}: {m}");
        }
        cur = c.source();
    }
    out
}

/// The host of the first URL in an error message (`http://HOST[:PORT]/...`), and the message
/// without that URL.
fn split_url(chain: &str) -> (Option<&str>, String) {
    let Some(start) = chain.find("://") else {
        return (None, chain.to_string());
    };
    let begin = chain[..start]
        .rfind(|c: char| !c.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    let rest = &chain[start + 3..];
    let end = rest
        .find(|c: char| c == ')' || c.is_whitespace())
        .unwrap_or(rest.len());
    let host = rest[..end].split('/').next().filter(|h| !h.is_empty());
    (host, format!("{}{}", &chain[..begin], &rest[end..]))
}

/// The next step for a request that did not get an HTTP answer; `true` when retrying may help.
fn connection_hint(chain: &str, r: &ImageRef) -> (String, bool) {
    // The words are looked for outside the URL, whose host could contain any of them.
    let (host, rest) = split_url(chain);
    let l = rest.to_ascii_lowercase();
    let registry_host = r.registry == "docker.io" && host == Some("index.docker.io");
    let target = match host {
        Some(h) if h != r.registry && !registry_host => {
            format!("{h} (the token server {} sends clients to)", r.registry)
        }
        _ => r.registry.clone(),
    };
    if l.contains("certificate")
        || l.contains("tls")
        || l.contains("invalidcontenttype")
        || l.contains("corrupt message")
        || l.contains("handshake")
    {
        let hint = format!("if {target} serves plain HTTP or has a self-signed certificate, pass --insecure (only loopback registries are trusted that way without it)");
        (hint, false)
    } else if l.contains("connection refused") {
        let what = if target == r.registry {
            "the registry is running and the host:port in the image name is right"
        } else {
            "the token server is running"
        };
        (
            format!("nothing listens at {target}; check that {what}"),
            true,
        )
    } else if l.contains("dns") || l.contains("lookup") || l.contains("name or service") {
        // A name that does not resolve is not retried: waiting does not make it resolve, and
        // a mistyped name (or a path taken for an image) should fail at once.
        (
            format!("the host name {target} does not resolve; check the image name (a local file or folder is written as a path: /..., ./... or oci:DIR)"),
            false,
        )
    } else {
        (format!("check the network and that {target} is up"), true)
    }
}

/// Maps a client error to ours; the flag says whether it is worth retrying.
fn classify(e: oci_client::errors::OciDistributionError, rem: &Remote) -> (SourceError, bool) {
    use oci_client::errors::OciDistributionError as E;
    let r = &rem.image;
    let image = r.to_string();
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => (rem.denied(), false),
        E::ImageManifestNotFoundError(_) => (rem.not_found(), false),
        E::RegistryError { ref envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}", x.code).to_ascii_lowercase())
                .collect();
            let has = |c: &str| codes.iter().any(|x| x == c);
            if has("nameunknown") {
                (
                    SourceError::RepositoryNotFound {
                        image,
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                    },
                    false,
                )
            } else if has("manifestunknown") || has("notfound") {
                (rem.not_found(), false)
            } else if has("unauthorized") || has("denied") {
                (rem.denied(), false)
            } else if has("toomanyrequests") {
                (
                    SourceError::Registry {
                        image,
                        message: e.to_string(),
                    },
                    true,
                )
            } else {
                (
                    SourceError::Registry {
                        image,
                        message: e.to_string(),
                    },
                    false,
                )
            }
        }
        E::ServerError {
            code, ref message, ..
        } => match code {
            401 | 403 => (rem.denied(), false),
            404 => (rem.not_found(), false),
            400 if message.contains("HTTPS server") => (
                SourceError::Registry {
                    image,
                    message: format!(
                        "{} answers HTTPS only; pass --insecure to use it without a verified certificate",
                        r.registry
                    ),
                },
                false,
            ),
            _ => (
                SourceError::Registry {
                    image,
                    message: e.to_string(),
                },
                code >= 500 || code == 429 || code == 408,
            ),
        },
        E::RequestError(_) | E::IoError(_) => {
            let chain = error_chain(&e);
            let (hint, transient) = connection_hint(&chain, r);
            let registry = r.registry.clone();
            if transient {
                (
                    SourceError::Unreachable {
                        registry,
                        image,
                        attempts: 1,
                        secs: 0,
                        message: chain,
                        hint,
                    },
                    true,
                )
            } else {
                (
                    SourceError::Tls {
                        registry,
                        image,
                        message: chain,
                        hint,
                    },
                    false,
                )
            }
        }
        _ => (
            SourceError::Registry {
                image,
                message: error_chain(&e),
            },
            false,
        ),
    }
}

/// At most this many attempts per request ...
const ATTEMPTS: u32 = 6;
/// ... and no new attempt once this much time has passed since the first.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(4);

/// Exponential backoff for one request: 0.25 s, 0.5 s, 1 s, 2 s, 4 s (under 8 s in all).
struct Backoff {
    attempts: u32,
    delay: Duration,
    start: std::time::Instant,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            attempts: 1,
            delay: FIRST_DELAY,
            start: std::time::Instant::now(),
        }
    }

    /// After a failed attempt: waits and returns `None` when another attempt may follow,
    /// else gives the error back (with the attempts made, if it is about reaching the
    /// registry).
    async fn after(&mut self, err: SourceError, transient: bool) -> Option<SourceError> {
        let spent = self.start.elapsed();
        if !transient || self.attempts >= ATTEMPTS || spent + self.delay > RETRY_BUDGET {
            return Some(match err {
                SourceError::Unreachable {
                    registry,
                    image,
                    message,
                    hint,
                    ..
                } => SourceError::Unreachable {
                    registry,
                    image,
                    attempts: self.attempts,
                    secs: spent.as_secs_f64().round() as u64,
                    message,
                    hint,
                },
                e => e,
            });
        }
        let why = match &err {
            SourceError::Unreachable { message, .. } => message.clone(),
            e => e.to_string(),
        };
        tracing::warn!(
            "{why}; retrying in {:?} (attempt {} of {ATTEMPTS})",
            self.delay,
            self.attempts + 1
        );
        tokio::time::sleep(self.delay).await;
        self.attempts += 1;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        None
    }
}

async fn retry<T, F, Fut>(rem: &Remote, mut f: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
{
    let mut backoff = Backoff::new();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let (err, transient) = classify(e, rem);
                if let Some(e) = backoff.after(err, transient).await {
                    return Err(e);
                }
            }
        }
    }
}

struct Registry {
    client: Arc<oci_client::Client>,
    reference: oci_client::Reference,
    image: ImageRef,
    remote: Remote,
    auth: oci_client::secrets::RegistryAuth,
}

impl Registry {
    async fn manifest(
        &self,
        digest_or_tag: Option<&str>,
    ) -> Result<(Vec<u8>, String), SourceError> {
        let reference = match digest_or_tag {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        let (bytes, digest) = retry(&self.remote, || {
            self.client
                .pull_manifest_raw(&reference, &self.auth, ACCEPT)
        })
        .await?;
        // oci-client reads the manifest body whole; at least nothing larger is parsed or cached.
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(SourceError::TooLarge {
                what: "manifest",
                path: PathBuf::from(self.image.to_string()),
                size: bytes.len() as u64,
                limit: MAX_DOCUMENT,
            });
        }
        let actual = format!("sha256:{}", sha256_hex(&bytes));
        let expected = digest_or_tag
            .map(str::to_string)
            .or_else(|| self.image.digest.clone());
        if let Some(exp) = expected {
            if exp != actual {
                return Err(SourceError::Digest {
                    digest: exp,
                    where_: self.image.to_string(),
                    actual,
                });
            }
        }
        if digest.starts_with("sha256:") && digest != actual {
            return Err(SourceError::Digest {
                digest,
                where_: self.image.to_string(),
                actual,
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    async fn small_blob(
        &self,
        cache: &Cache,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Vec<u8>, SourceError> {
        if let Some(s) = size.filter(|s| *s > MAX_DOCUMENT) {
            return Err(SourceError::TooLarge {
                what: "blob",
                path: PathBuf::from(digest),
                size: s,
                limit: MAX_DOCUMENT,
            });
        }
        if let Some(b) = cache.read_verified(digest, size, MAX_DOCUMENT)? {
            return Ok(b);
        }
        let out = retry(&self.remote, || async {
            use futures_util::StreamExt;
            let mut stream = self
                .client
                .pull_blob_stream(&self.reference, digest)
                .await?
                .stream;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
                if out.len() as u64 > MAX_DOCUMENT {
                    // Refused below, without a retry.
                    break;
                }
            }
            Ok(out)
        })
        .await
        .map_err(|e| match e {
            SourceError::NotFound { image, .. } => SourceError::MissingBlob {
                digest: digest.to_string(),
                where_: image,
            },
            e => e,
        })?;
        if out.len() as u64 > MAX_DOCUMENT {
            return Err(SourceError::TooLarge {
                what: "blob",
                path: PathBuf::from(digest),
                size: out.len() as u64,
                limit: MAX_DOCUMENT,
            });
        }
        cache.put(digest, &out)?;
        Ok(out)
    }
}

/// One layer download, run as a task on the runtime.
struct Download {
    client: Arc<oci_client::Client>,
    reference: oci_client::Reference,
    remote: Remote,
    cache: Cache,
    digest: String,
    size: Option<u64>,
    bar: Option<indicatif::ProgressBar>,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

async fn download(d: Download) -> Result<PathBuf, SourceError> {
    use futures_util::StreamExt;
    let Download {
        client,
        reference,
        remote,
        cache,
        digest,
        size,
        bar,
        counter,
    } = d;
    let image = &remote.image;
    let mut backoff = Backoff::new();
    loop {
        let res: Result<PathBuf, (SourceError, bool)> = async {
            let mut stream = client
                .pull_blob_stream(&reference, digest.as_str())
                .await
                .map_err(|e| match classify(e, &remote) {
                    (SourceError::NotFound { .. }, _) => (
                        SourceError::MissingBlob {
                            digest: digest.clone(),
                            where_: image.to_string(),
                        },
                        false,
                    ),
                    c => c,
                })?
                .stream;
            let mut w = cache.writer(&digest, size).map_err(|e| (e.into(), false))?;
            if let Some(b) = &bar {
                b.set_position(0);
            }
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        w.write_chunk(&c).map_err(|e| (e.into(), false))?;
                        counter.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        if let Some(b) = &bar {
                            b.inc(c.len() as u64);
                        }
                    }
                    Err(e) => {
                        // An error once every byte arrived is the client's digest check.
                        let complete = size.is_some_and(|s| w.written() >= s);
                        let msg = format!("downloading {digest}: {e}");
                        return Err((
                            SourceError::Registry {
                                image: image.to_string(),
                                message: msg,
                            },
                            !complete,
                        ));
                    }
                }
            }
            w.finish().map_err(|e| (e.into(), false))
        }
        .await;
        match res {
            Ok(p) => {
                if let Some(b) = &bar {
                    b.finish();
                }
                tracing::debug!("downloaded {digest}");
                return Ok(p);
            }
            Err((e, transient)) => {
                if let Some(e) = backoff.after(e, transient).await {
                    if let Some(b) = &bar {
                        b.abandon();
                    }
                    return Err(e);
                }
            }
        }
    }
}

pub(crate) fn resolve_registry(
    r: &ImageRef,
    cache: &Cache,
    opts: &ResolveOptions,
) -> Result<Image, SourceError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SourceError::Runtime)?;
    let reference = match (&r.tag, &r.digest) {
        (_, Some(d)) => {
            oci_client::Reference::with_digest(r.registry.clone(), r.repository.clone(), d.clone())
        }
        (Some(t), None) => {
            oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), t.clone())
        }
        (None, None) => oci_client::Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            "latest".into(),
        ),
    };
    let (auth, creds_from) = registry_auth(r, opts.creds.as_deref(), &auth_files())?;
    let remote = Remote {
        image: r.clone(),
        creds: creds_from,
    };
    // With --insecure: HTTPS without certificate checks, then plain HTTP when the registry
    // does not speak TLS at all (as skopeo's --tls-verify=false does). Without it: plain HTTP
    // for loopback registries, HTTPS with verified certificates for every other.
    use oci_client::client::ClientProtocol;
    let plans: &[(ClientProtocol, bool)] = if opts.insecure {
        &[(ClientProtocol::Https, true), (ClientProtocol::Http, false)]
    } else if r.is_loopback() {
        &[(ClientProtocol::Http, false)]
    } else {
        &[(ClientProtocol::Https, false)]
    };
    let mut client = None;
    for (i, (protocol, accept_invalid_certificates)) in plans.iter().enumerate() {
        let config = oci_client::client::ClientConfig {
            protocol: protocol.clone(),
            accept_invalid_certificates: *accept_invalid_certificates,
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let c = oci_client::Client::try_from(config).map_err(|e| SourceError::Registry {
            image: r.to_string(),
            message: e.to_string(),
        })?;
        // The first request (GET /v2/, then the token server if the registry names one).
        match rt.block_on(retry(&remote, || {
            c.auth(&reference, &auth, oci_client::RegistryOperation::Pull)
        })) {
            Ok(_) => {
                client = Some(c);
                break;
            }
            Err(e @ SourceError::Tls { .. }) if i + 1 < plans.len() => {
                tracing::debug!("{e}; trying plain HTTP");
            }
            Err(e) => return Err(e),
        }
    }
    let client = client.expect("the last plan returns or errs");
    let reg = Registry {
        client: Arc::new(client),
        reference,
        image: r.clone(),
        remote: remote.clone(),
        auth,
    };
    let counter: Arc<std::sync::atomic::AtomicU64> = Default::default();
    let progress = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);

    let (digest, platform, config, layer_descs) = rt.block_on(async {
        let (mut bytes, mut digest) = reg.manifest(r.digest.as_deref()).await?;
        let mut doc = parse_doc(&bytes, "manifest", &r.to_string())?;
        let mut depth = 0;
        while is_index(&doc, "") {
            depth += 1;
            if depth > 4 {
                return Err(SourceError::Invalid(format!(
                    "{r}: image indexes nested too deep"
                )));
            }
            let list = doc.manifests.clone().unwrap_or_default();
            let d = select_platform(&list, &host_or(&opts.platform), &r.to_string())?
                .digest
                .clone();
            validate_digest(&d)?;
            (bytes, digest) = match cache.read_verified(&d, None, MAX_DOCUMENT)? {
                Some(b) => (b, d.clone()),
                None => {
                    let (b, dg) = reg.manifest(Some(&d)).await?;
                    cache.put(&dg, &b)?;
                    (b, dg)
                }
            };
            doc = parse_doc(&bytes, "manifest", &r.to_string())?;
        }
        let cfg_desc = doc.config.clone().ok_or_else(|| {
            SourceError::Invalid(format!("manifest {digest} of {r} has no config"))
        })?;
        let cfg = reg
            .small_blob(cache, &cfg_desc.digest, cfg_desc.size)
            .await?;
        let config = parse_config(&cfg, &r.to_string())?;
        let platform = check_platform(&config, &opts.platform, &r.to_string())?;
        Ok::<_, SourceError>((digest, platform, config, doc.layers.unwrap_or_default()))
    })?;

    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut layers = Vec::new();
    for (i, l) in layer_descs.into_iter().enumerate() {
        validate_digest(&l.digest)?;
        let data = match cache.get(&l.digest, l.size)? {
            Some(p) => LayerData::File(p),
            None => {
                let (tx, rx) = mpsc::sync_channel(1);
                let bar = progress.as_ref().map(|m| {
                    let b = m.add(indicatif::ProgressBar::new(l.size.unwrap_or(0)));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(l.digest.get(7..19).unwrap_or_default().to_string());
                    b
                });
                let fut = download(Download {
                    client: reg.client.clone(),
                    reference: reg.reference.clone(),
                    remote: remote.clone(),
                    cache: cache.clone(),
                    digest: l.digest.clone(),
                    size: l.size,
                    bar,
                    counter: counter.clone(),
                });
                let sem = sem.clone();
                rt.spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    let _ = tx.send(fut.await);
                });
                LayerData::Download(rx)
            }
        };
        layers.push(Layer {
            diff_id: config.diff_ids.get(i).cloned(),
            digest: Some(l.digest),
            size: l.size,
            media_type: l.media_type,
            data,
            cache: Some(cache.clone()),
        });
    }
    Ok(Image {
        name: r.to_string(),
        digest: Some(digest),
        platform: Some(platform),
        config,
        layers,
        downloaded: counter,
        _keep: {
            let mut keep: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(rt)];
            if let Some(p) = progress {
                keep.push(Box::new(p));
            }
            keep
        },
    })
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

    #[test]
    fn connection_hints() {
        let r = crate::reference::parse_image_ref("tls-certificate.example:5000/a:1").unwrap();
        let url = "error sending request for url (https://tls-certificate.example:5000/v2/)";
        let (hint, transient) = connection_hint(
            &format!("{url}: client error (Connect): tcp connect error: Connection refused"),
            &r,
        );
        assert!(transient && hint.contains("nothing listens"), "{hint}");
        let (hint, transient) = connection_hint(
            &format!("{url}: client error (Connect): invalid peer certificate: UnknownIssuer"),
            &r,
        );
        assert!(!transient && hint.contains("--insecure"), "{hint}");
        let (hint, transient) = connection_hint(
            "error sending request for url (http://auth.example/token?scope=x): tcp connect error: Connection refused (os error 111)",
            &r,
        );
        assert!(transient, "{hint}");
        assert!(
            hint.contains("nothing listens at auth.example (the token server tls-certificate.example:5000 sends clients to)"),
            "{hint}"
        );
        let (hint, transient) = connection_hint(
            &format!("{url}: client error (Connect): dns error: failed to lookup address information: Name or service not known"),
            &r,
        );
        assert!(!transient && hint.contains("does not resolve"), "{hint}");
        assert_eq!(
            split_url("a (https://h:1/v2/) b"),
            (Some("h:1"), "a () b".to_string())
        );
        assert_eq!(split_url("no url"), (None, "no url".to_string()));
    }
}
