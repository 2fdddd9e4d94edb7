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
    check_platform, host_or, parse_config, parse_doc, select_platform, sha256_hex, Document, Image,
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
    /// Requests go over plain HTTP (a loopback registry, or `--insecure`'s second try).
    plain_http: bool,
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

/// Why a request got no HTTP answer, told from the error's typed causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// The TLS handshake failed: a certificate not trusted, or a peer that does not speak TLS
    /// (a `rustls::Error` among the causes).
    Tls,
    /// Nothing listens (an `io::Error` of kind `ConnectionRefused`).
    Refused,
    /// The host name does not resolve (checked with a lookup of its own).
    NoSuchHost,
    /// Anything else: a timeout, a reset, a network that is down.
    Other,
}

/// An error and its causes, the error an `io::Error` wraps included (its `source()` skips it).
fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| match c.downcast_ref::<io::Error>() {
        Some(io) => match io.get_ref() {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => std::error::Error::source(io),
        },
        None => c.source(),
    })
}

/// Where a failed request went, from the `reqwest::Error` among the causes: `HOST[:PORT]` as
/// the URL has it, the host, and the port (the scheme's when the URL names none).
fn failed_host(e: &(dyn std::error::Error + 'static)) -> Option<(String, String, u16)> {
    let url = causes(e).find_map(|c| c.downcast_ref::<reqwest::Error>()?.url())?;
    let host = url.host_str()?;
    let shown = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some((shown, bare.to_string(), url.port_or_known_default()?))
}

/// Classifies a failed request from the types of its causes (no message text is read).
fn transport_failure(e: &(dyn std::error::Error + 'static)) -> Transport {
    if causes(e).any(|c| c.is::<rustls::Error>()) {
        return Transport::Tls;
    }
    let kind = |c: &(dyn std::error::Error + 'static), k| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == k)
    };
    if causes(e).any(|c| kind(c, io::ErrorKind::ConnectionRefused)) {
        return Transport::Refused;
    }
    // A resolver failure has no error type of its own (std reports it as an uncategorised
    // io::Error): look the host up again. This runs only once a connection failed.
    let connect = causes(e).any(|c| {
        c.downcast_ref::<reqwest::Error>()
            .is_some_and(|r| r.is_connect())
    });
    match failed_host(e) {
        Some((_, host, port)) if connect && host.parse::<std::net::IpAddr>().is_err() => {
            let resolves = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                .is_ok_and(|mut a| a.next().is_some());
            if resolves {
                Transport::Other
            } else {
                Transport::NoSuchHost
            }
        }
        _ => Transport::Other,
    }
}

/// The next step for a request to `host` (the registry's, or the token server's it sends
/// clients to) that did not get an HTTP answer; `true` when retrying may help.
fn connection_hint(kind: Transport, host: Option<&str>, r: &ImageRef) -> (String, bool) {
    let registry_host = r.registry == "docker.io" && host == Some("index.docker.io");
    let target = match host {
        Some(h) if h != r.registry && !registry_host => {
            format!("{h} (the token server {} sends clients to)", r.registry)
        }
        _ => r.registry.clone(),
    };
    match kind {
        Transport::Tls => (
            format!("if {target} serves plain HTTP or has a self-signed certificate, pass --insecure (only loopback registries are trusted that way without it)"),
            false,
        ),
        Transport::Refused => {
            let what = if target == r.registry {
                "the registry is running and the host:port in the image name is right"
            } else {
                "the token server is running"
            };
            (
                format!("nothing listens at {target}; check that {what}"),
                true,
            )
        }
        // A name that does not resolve is not retried: waiting does not make it resolve, and
        // a mistyped name (or a path taken for an image) should fail at once.
        Transport::NoSuchHost => (
            format!("the host name {target} does not resolve; check the image name (a local file or folder is written as a path: /..., ./... or oci:DIR)"),
            false,
        ),
        Transport::Other => (format!("check the network and that {target} is up"), true),
    }
}

/// Maps a failed request without an HTTP answer to ours, worth retrying or not.
fn unreachable(e: &(dyn std::error::Error + 'static), r: &ImageRef) -> (SourceError, bool) {
    let host = failed_host(e).map(|(shown, _, _)| shown);
    let (hint, transient) = connection_hint(transport_failure(e), host.as_deref(), r);
    let (registry, image, message) = (r.registry.clone(), r.to_string(), error_chain(e));
    if transient {
        (
            SourceError::Unreachable {
                registry,
                image,
                attempts: 1,
                secs: 0,
                message,
                hint,
            },
            true,
        )
    } else {
        (
            SourceError::Tls {
                registry,
                image,
                message,
                hint,
            },
            false,
        )
    }
}

/// Maps a client error to ours; the flag says whether it is worth retrying.
fn classify(e: oci_client::errors::OciDistributionError, rem: &Remote) -> (SourceError, bool) {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    let r = &rem.image;
    let image = r.to_string();
    let other = |message: String, transient: bool| {
        (
            SourceError::Registry {
                image: image.clone(),
                message,
            },
            transient,
        )
    };
    match e {
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => (rem.denied(), false),
        E::ImageManifestNotFoundError(_) => (rem.not_found(), false),
        E::RegistryError { ref envelope, .. } => {
            let has = |c: C| envelope.errors.iter().any(|x| x.code == c);
            if has(C::NameUnknown) {
                (
                    SourceError::RepositoryNotFound {
                        image: image.clone(),
                        registry: r.registry.clone(),
                        repository: r.repository.clone(),
                    },
                    false,
                )
            } else if has(C::ManifestUnknown) || has(C::NotFound) {
                (rem.not_found(), false)
            } else if has(C::Unauthorized) || has(C::Denied) {
                (rem.denied(), false)
            } else {
                other(e.to_string(), has(C::Toomanyrequests))
            }
        }
        E::ServerError { code, .. } => match code {
            401 | 403 => (rem.denied(), false),
            404 => (rem.not_found(), false),
            // What an HTTPS-only server (Go's net/http) answers to plain HTTP: a bare 400, no
            // OCI error body (that would be a RegistryError).
            400 if rem.plain_http => other(
                format!(
                    "{} answers HTTPS only (it answered plain HTTP with 400 Bad Request); pass --insecure to use it without a verified certificate",
                    r.registry
                ),
                false,
            ),
            _ => other(e.to_string(), code >= 500 || code == 429 || code == 408),
        },
        E::RequestError(ref re) => unreachable(re, r),
        E::IoError(ref io) => unreachable(io, r),
        _ => other(error_chain(&e), false),
    }
}

/// At most this many attempts per request ...
const ATTEMPTS: u32 = 6;
/// ... and no new attempt once this much time has passed since the first.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// Connecting to a registry or token server may take this long ...
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and each read of an answer this long.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
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

/// Runs `f` until it succeeds, fails for good, or the retry budget is spent. `f` gives errors
/// already classified (see [`classify`]).
async fn retry<T, F, Fut>(mut f: F) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, (SourceError, bool)>>,
{
    let mut backoff = Backoff::new();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err((err, transient)) => {
                if let Some(e) = backoff.after(err, transient).await {
                    return Err(e);
                }
            }
        }
    }
}

/// How long one manifest request may take, its body included: a registry that drips bytes is
/// cut off.
const DOCUMENT_DEADLINE: Duration = Duration::from_secs(60);
/// The most read of an error answer's body (an OCI error envelope is a few hundred bytes).
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A response body, at most `limit` bytes of it; `true` when that was all of it.
async fn read_bounded(
    res: &mut reqwest::Response,
    limit: u64,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        let room = (limit - out.len() as u64) as usize;
        if chunk.len() > room {
            out.extend_from_slice(&chunk[..room]);
            return Ok((out, false));
        }
        out.extend_from_slice(&chunk);
    }
    Ok((out, true))
}

/// The client error an HTTP error answer stands for (the one `classify` reads): 401, an OCI
/// error envelope, or a bare status.
fn answer_error(
    status: reqwest::StatusCode,
    body: &[u8],
    url: &str,
) -> oci_client::errors::OciDistributionError {
    use oci_client::errors::{OciDistributionError as E, OciEnvelope};
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return E::UnauthorizedError { url: url.into() };
    }
    if status.is_client_error() {
        if let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(body) {
            return E::RegistryError {
                envelope,
                url: url.into(),
            };
        }
    }
    if status.is_success() {
        return E::SpecViolationError(format!("{url} answered {status}, not 200 OK"));
    }
    E::ServerError {
        code: status.as_u16(),
        url: url.into(),
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

struct Registry {
    /// Blobs and the authentication handshake go through oci-client ...
    client: Arc<oci_client::Client>,
    /// ... manifests through a plain HTTP client with the same settings, so their bodies are
    /// read with a bound (oci-client reads a manifest body whole before returning it).
    http: reqwest::Client,
    /// `http` or `https`.
    scheme: &'static str,
    /// The bearer token the handshake gave, if the registry uses them.
    token: Option<String>,
    reference: oci_client::Reference,
    image: ImageRef,
    remote: Remote,
    auth: oci_client::secrets::RegistryAuth,
}

impl Registry {
    /// The manifest or index `digest` (by default the one the image names by tag or digest),
    /// with its digest; at most [`MAX_DOCUMENT`] bytes are read, and the bytes are checked
    /// against the digest asked for and the one the registry states.
    async fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String), SourceError> {
        let target = digest
            .or(self.reference.digest())
            .or(self.reference.tag())
            .unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{target}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        );
        let (bytes, stated) = retry(|| async {
            match tokio::time::timeout(DOCUMENT_DEADLINE, self.fetch_manifest(&url, target)).await
            {
                Ok(r) => r,
                Err(_) => Err((
                    SourceError::Registry {
                        image: self.image.to_string(),
                        message: format!(
                            "the manifest {target} did not arrive within {} s; the registry is too slow or hostile",
                            DOCUMENT_DEADLINE.as_secs()
                        ),
                    },
                    false,
                )),
            }
        })
        .await?;
        let hex = sha256_hex(&bytes);
        let actual = format!("sha256:{hex}");
        let expected = digest
            .map(str::to_string)
            .or_else(|| self.image.digest.clone());
        for exp in expected.into_iter().chain(stated) {
            // A registry may state a digest of another algorithm; only sha256 is checked.
            if exp.starts_with("sha256:") && exp != actual {
                return Err(SourceError::Digest {
                    digest: exp,
                    where_: self.image.to_string(),
                    actual: hex,
                });
            }
        }
        Ok((bytes, actual))
    }

    /// One GET of a manifest: its bytes and the digest the registry states
    /// (`Docker-Content-Digest`), if any.
    async fn fetch_manifest(
        &self,
        url: &str,
        target: &str,
    ) -> Result<(Vec<u8>, Option<String>), (SourceError, bool)> {
        use oci_client::errors::OciDistributionError as E;
        use oci_client::secrets::RegistryAuth;
        let failed = |e: E| classify(e, &self.remote);
        let mut req = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT.join(", "));
        req = match (&self.token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        };
        let mut res = req.send().await.map_err(|e| failed(E::RequestError(e)))?;
        let status = res.status();
        if status != reqwest::StatusCode::OK {
            let (body, _) = read_bounded(&mut res, MAX_ERROR_BODY)
                .await
                .unwrap_or_default();
            return Err(failed(answer_error(status, &body, url)));
        }
        let too_large = || {
            (
                SourceError::DocumentTooLarge {
                    what: "manifest",
                    reference: target.to_string(),
                    image: self.image.to_string(),
                    limit: MAX_DOCUMENT,
                },
                false,
            )
        };
        if res.content_length().is_some_and(|n| n > MAX_DOCUMENT) {
            return Err(too_large());
        }
        let stated = res
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match read_bounded(&mut res, MAX_DOCUMENT).await {
            Ok((bytes, true)) => Ok((bytes, stated)),
            Ok((_, false)) => Err(too_large()),
            Err(e) => Err(failed(E::RequestError(e))),
        }
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
        let over = || SourceError::DocumentTooLarge {
            what: "config",
            reference: digest.to_string(),
            image: self.image.to_string(),
            limit: MAX_DOCUMENT,
        };
        let out = retry(|| async {
            use futures_util::StreamExt;
            let failed = |e| classify(e, &self.remote);
            let mut stream = self
                .client
                .pull_blob_stream(&self.reference, digest)
                .await
                .map_err(failed)?
                .stream;
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk.map_err(|e| failed(e.into()))?);
                if out.len() as u64 > MAX_DOCUMENT {
                    return Err((over(), false));
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
        cache.put(digest, &out)?;
        Ok(out)
    }
}

/// What a download sends its blob writer.
enum Chunk<B> {
    Bytes(B),
    /// Every byte was sent: verify and rename the blob into place.
    End,
}

/// A [`Cache`] blob writer on a blocking thread, fed chunks through the channel: file writes
/// and SHA-256 never run on the runtime's two async workers. Gives the blob's path after
/// [`Chunk::End`], `None` when the channel closes before it (the partial file is removed).
/// At most 16 chunks wait in the channel, so a download never holds the blob in memory.
#[allow(clippy::type_complexity)]
fn blocking_writer<B: AsRef<[u8]> + Send + 'static>(
    cache: Cache,
    digest: String,
    size: Option<u64>,
) -> (
    tokio::sync::mpsc::Sender<Chunk<B>>,
    tokio::task::JoinHandle<Result<Option<PathBuf>, crate::cache::CacheError>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk<B>>(16);
    let task = tokio::task::spawn_blocking(move || {
        let mut w = cache.writer(&digest, size)?;
        while let Some(c) = rx.blocking_recv() {
            match c {
                Chunk::Bytes(b) => w.write_chunk(b.as_ref())?,
                Chunk::End => return w.finish().map(Some),
            }
        }
        Ok(None)
    });
    (tx, task)
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
            let (tx, writer) = blocking_writer(cache.clone(), digest.clone(), size);
            let mut written = 0u64;
            if let Some(b) = &bar {
                b.set_position(0);
            }
            let mut ended = None;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(c) => {
                        let n = c.len() as u64;
                        if tx.send(Chunk::Bytes(c)).await.is_err() {
                            // The writer stopped on an error of its own, returned below.
                            break;
                        }
                        written += n;
                        counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        if let Some(b) = &bar {
                            b.inc(n);
                        }
                    }
                    Err(e) => {
                        ended = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = ended {
                // Closing the channel without `End` drops the partial file.
                drop(tx);
                let _ = writer.await;
                // An error once every byte arrived is the client's digest check.
                let complete = size.is_some_and(|s| written >= s);
                return Err((
                    SourceError::Registry {
                        image: image.to_string(),
                        message: format!("downloading {digest}: {e}"),
                    },
                    !complete,
                ));
            }
            let _ = tx.send(Chunk::End).await;
            drop(tx);
            match writer.await {
                Ok(Ok(Some(p))) => Ok(p),
                Ok(Err(e)) => Err((e.into(), false)),
                // `None` cannot follow a delivered End; both say the writer thread is gone.
                Ok(Ok(None)) | Err(_) => Err((
                    SourceError::Registry {
                        image: image.to_string(),
                        message: format!("the cache writer of {digest} stopped"),
                    },
                    false,
                )),
            }
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
        plain_http: false,
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
    let mut chosen = None;
    for (i, (protocol, accept_invalid_certificates)) in plans.iter().enumerate() {
        let plain_http = matches!(protocol, ClientProtocol::Http);
        let plan_remote = Remote {
            plain_http,
            ..remote.clone()
        };
        let config = oci_client::client::ClientConfig {
            protocol: protocol.clone(),
            accept_invalid_certificates: *accept_invalid_certificates,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..Default::default()
        };
        let setup = |message: String| SourceError::Registry {
            image: r.to_string(),
            message,
        };
        let client = oci_client::Client::try_from(config).map_err(|e| setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(*accept_invalid_certificates)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("ocirootfs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(error_chain(&e)))?;
        // The first request (GET /v2/, then the token server if the registry names one).
        let token = {
            let (c, reference, auth, rem) = (&client, &reference, &auth, &plan_remote);
            rt.block_on(retry(move || async move {
                c.auth(reference, auth, oci_client::RegistryOperation::Pull)
                    .await
                    .map_err(|e| classify(e, rem))
            }))
        };
        match token {
            Ok(token) => {
                chosen = Some(Registry {
                    client: Arc::new(client),
                    http,
                    scheme: if plain_http { "http" } else { "https" },
                    token,
                    reference: reference.clone(),
                    image: r.clone(),
                    remote: plan_remote,
                    auth: auth.clone(),
                });
                break;
            }
            Err(e @ SourceError::Tls { .. }) if i + 1 < plans.len() => {
                tracing::debug!("{e}; trying plain HTTP");
            }
            Err(e) => return Err(e),
        }
    }
    let reg = chosen.expect("the last plan returns or errs");
    let remote = reg.remote.clone();
    let counter: Arc<std::sync::atomic::AtomicU64> = Default::default();
    let progress = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);

    let (digest, platform, config, layer_descs) = rt.block_on(async {
        let (mut bytes, mut digest) = reg.manifest(r.digest.as_deref()).await?;
        let mut desc_type = None;
        let mut depth = 0;
        let manifest = loop {
            let what = format!("manifest {digest}");
            let index = match parse_doc(&bytes, &what, &r.to_string(), desc_type.as_ref())? {
                Document::Manifest(m) => break m,
                Document::Index(index) => index,
            };
            depth += 1;
            if depth > 4 {
                return Err(SourceError::Invalid(format!(
                    "{r}: image indexes nested too deep"
                )));
            }
            let d = select_platform(index.manifests(), &host_or(&opts.platform), &r.to_string())?;
            let (next, size) = (d.digest().to_string(), d.size());
            validate_digest(&next)?;
            if size > MAX_DOCUMENT {
                return Err(SourceError::TooLarge {
                    what: "manifest",
                    path: PathBuf::from(&next),
                    size,
                    limit: MAX_DOCUMENT,
                });
            }
            desc_type = Some(d.media_type().clone());
            (bytes, digest) = match cache.read_verified(&next, Some(size), MAX_DOCUMENT)? {
                Some(b) => (b, next),
                None => {
                    let (b, dg) = reg.manifest(Some(&next)).await?;
                    if b.len() as u64 != size {
                        return Err(SourceError::SizeMismatch {
                            digest: next,
                            where_: r.to_string(),
                            declared: size,
                            actual: b.len() as u64,
                        });
                    }
                    cache.put(&dg, &b)?;
                    (b, dg)
                }
            };
        };
        let cfg_desc = manifest.config();
        let cfg = reg
            .small_blob(cache, cfg_desc.digest().as_ref(), Some(cfg_desc.size()))
            .await?;
        let config = parse_config(
            &cfg,
            &format!("image config {}", cfg_desc.digest()),
            &r.to_string(),
        )?;
        let platform = check_platform(&config, &opts.platform, &r.to_string())?;
        Ok::<_, SourceError>((digest, platform, config, manifest.layers().clone()))
    })?;

    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut layers = Vec::new();
    for (i, l) in layer_descs.iter().enumerate() {
        let (digest, size) = (l.digest().to_string(), Some(l.size()));
        validate_digest(&digest)?;
        let data = match cache.get(&digest, size)? {
            Some(p) => LayerData::File(p),
            None => {
                let (tx, rx) = mpsc::sync_channel(1);
                let bar = progress.as_ref().map(|m| {
                    let b = m.add(indicatif::ProgressBar::new(l.size()));
                    b.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(digest.get(7..19).unwrap_or_default().to_string());
                    b
                });
                let fut = download(Download {
                    client: reg.client.clone(),
                    reference: reg.reference.clone(),
                    remote: remote.clone(),
                    cache: cache.clone(),
                    digest: digest.clone(),
                    size,
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
            digest: Some(digest),
            size,
            media_type: l.media_type().to_string(),
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
        let reg = Some("tls-certificate.example:5000");
        let (hint, transient) = connection_hint(Transport::Refused, reg, &r);
        assert!(transient, "{hint}");
        assert!(
            hint.contains("nothing listens at tls-certificate.example:5000; check that the registry is running"),
            "{hint}"
        );
        let (hint, transient) = connection_hint(Transport::Tls, reg, &r);
        assert!(!transient && hint.contains("--insecure"), "{hint}");
        let (hint, transient) = connection_hint(Transport::Refused, Some("auth.example"), &r);
        assert!(transient, "{hint}");
        assert!(
            hint.contains("nothing listens at auth.example (the token server tls-certificate.example:5000 sends clients to)"),
            "{hint}"
        );
        let (hint, transient) = connection_hint(Transport::NoSuchHost, reg, &r);
        assert!(!transient && hint.contains("does not resolve"), "{hint}");
        let (hint, transient) = connection_hint(Transport::Other, None, &r);
        assert!(transient && hint.contains("check the network"), "{hint}");
        // docker.io's registry host is the registry, not a token server.
        let hub = crate::reference::parse_image_ref("docker.io/library/alpine:3").unwrap();
        let (hint, _) = connection_hint(Transport::Refused, Some("index.docker.io"), &hub);
        assert!(hint.contains("nothing listens at docker.io;"), "{hint}");
    }

    /// An error whose message says one thing and whose cause is another: only the cause's
    /// type counts (the old classifier read the words).
    #[derive(Debug)]
    struct Misleading(io::Error);

    impl std::fmt::Display for Misleading {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("tls handshake: certificate error, dns lookup failed")
        }
    }

    impl std::error::Error for Misleading {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn transport_failures_from_typed_causes() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(transport_failure(&refused()), Transport::Refused);
        assert_eq!(
            transport_failure(&Misleading(refused())),
            Transport::Refused
        );
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(transport_failure(&cert), Transport::Tls);
        // tokio-rustls hands TLS failures over inside an io::Error.
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, cert);
        assert_eq!(transport_failure(&wrapped), Transport::Tls);
        assert_eq!(transport_failure(&Misleading(wrapped)), Transport::Tls);
        let words = io::Error::other("connection refused: certificate, dns");
        assert_eq!(transport_failure(&words), Transport::Other);
        assert_eq!(
            transport_failure(&Misleading(io::Error::from(io::ErrorKind::TimedOut))),
            Transport::Other
        );
    }

    /// The failures of real requests, as reqwest reports them.
    #[test]
    fn transport_failures_of_real_requests() {
        use std::io::{Read, Write};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let get = |url: String| {
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap();
            rt.block_on(client.get(url).send()).unwrap_err()
        };
        // A port nothing listens on.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let e = get(format!("http://127.0.0.1:{port}/v2/"));
        assert_eq!(transport_failure(&e), Transport::Refused, "{e:?}");
        assert_eq!(
            failed_host(&e),
            Some((format!("127.0.0.1:{port}"), "127.0.0.1".into(), port))
        );
        // HTTPS to a server that answers plain HTTP.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = plain.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = plain.accept() {
                let mut buf = [0u8; 512];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let e = get(format!("https://127.0.0.1:{port}/v2/"));
        assert_eq!(transport_failure(&e), Transport::Tls, "{e:?}");
        // A name that never resolves (RFC 2606).
        let e = get("http://no-such-host.invalid/v2/".into());
        assert_eq!(transport_failure(&e), Transport::NoSuchHost, "{e:?}");
        assert_eq!(failed_host(&e).unwrap().0, "no-such-host.invalid");
    }

    #[test]
    fn registry_errors_by_code_and_status() {
        use oci_client::errors::{OciDistributionError as E, OciEnvelope};
        let r = crate::reference::parse_image_ref("127.0.0.1:5000/a/b:1").unwrap();
        let rem = Remote {
            image: r,
            creds: CredsFrom::None,
            plain_http: true,
        };
        let envelope = |code: &str| {
            let text = format!(r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#);
            serde_json::from_str::<OciEnvelope>(&text).unwrap()
        };
        let registry = |code: &str| E::RegistryError {
            envelope: envelope(code),
            url: "u".into(),
        };
        let server = |code: u16| E::ServerError {
            code,
            url: "u".into(),
            message: "m".into(),
        };
        type Is = fn(&SourceError) -> bool;
        let cases: Vec<(E, Is, bool)> = vec![
            (
                registry("NAME_UNKNOWN"),
                |e| matches!(e, SourceError::RepositoryNotFound { .. }),
                false,
            ),
            (
                registry("MANIFEST_UNKNOWN"),
                |e| matches!(e, SourceError::NotFound { .. }),
                false,
            ),
            (
                registry("NOT_FOUND"),
                |e| matches!(e, SourceError::NotFound { .. }),
                false,
            ),
            (
                registry("DENIED"),
                |e| matches!(e, SourceError::Unauthorized { .. }),
                false,
            ),
            (
                registry("UNAUTHORIZED"),
                |e| matches!(e, SourceError::Unauthorized { .. }),
                false,
            ),
            (
                registry("TOOMANYREQUESTS"),
                |e| matches!(e, SourceError::Registry { .. }),
                true,
            ),
            (
                registry("SOMETHING_NEW"),
                |e| matches!(e, SourceError::Registry { .. }),
                false,
            ),
            (
                server(401),
                |e| matches!(e, SourceError::Unauthorized { .. }),
                false,
            ),
            (
                server(403),
                |e| matches!(e, SourceError::Unauthorized { .. }),
                false,
            ),
            (
                server(404),
                |e| matches!(e, SourceError::NotFound { .. }),
                false,
            ),
            (
                server(503),
                |e| matches!(e, SourceError::Registry { .. }),
                true,
            ),
            (
                server(429),
                |e| matches!(e, SourceError::Registry { .. }),
                true,
            ),
            (
                server(418),
                |e| matches!(e, SourceError::Registry { .. }),
                false,
            ),
            (
                E::UnauthorizedError { url: "u".into() },
                |e| matches!(e, SourceError::Unauthorized { .. }),
                false,
            ),
        ];
        for (e, is, retry) in cases {
            let shown = e.to_string();
            let (got, transient) = classify(e, &rem);
            assert!(is(&got), "{shown} → {got:?}");
            assert_eq!(transient, retry, "{shown}");
        }
        // A bare 400 to plain HTTP is what an HTTPS-only server answers; over HTTPS it is not.
        let (e, _) = classify(server(400), &rem);
        assert!(e.to_string().contains("answers HTTPS only"), "{e}");
        let https = Remote {
            plain_http: false,
            ..rem.clone()
        };
        let (e, _) = classify(server(400), &https);
        assert!(!e.to_string().contains("HTTPS only"), "{e}");
        // What an HTTP error answer stands for.
        use reqwest::StatusCode as S;
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"m"}]}"#;
        assert!(matches!(
            answer_error(S::NOT_FOUND, body, "u"),
            E::RegistryError { .. }
        ));
        assert!(matches!(
            answer_error(S::NOT_FOUND, b"<html>", "u"),
            E::ServerError { code: 404, .. }
        ));
        assert!(matches!(
            answer_error(S::UNAUTHORIZED, body, "u"),
            E::UnauthorizedError { .. }
        ));
        assert!(matches!(
            answer_error(S::NO_CONTENT, b"", "u"),
            E::SpecViolationError(_)
        ));
        assert!(matches!(
            answer_error(S::BAD_GATEWAY, body, "u"),
            E::ServerError { code: 502, .. }
        ));
    }
}
