//! Registries, through `oci-client` on a `tokio` runtime (the cargo feature `registry`, on by
//! default): credentials, retries with backoff, manifests and configs (at most
//! [`MAX_DOCUMENT`] bytes, cached ones hashed again), layers streamed into the [`Cache`] in
//! parallel, each verified while it downloads. See [`crate::source`] for the rules.
//!
//! This module holds `resolve_registry`, the pull from start to end; `auth` the credentials,
//! `fetch` the bounded manifest and config requests, `blobs` the layer downloads, `errors` what
//! a failed request means, `backoff` the retries and timeouts, `session` a [`Session`] with one
//! repository for artifacts (`sysext push`/`pull`: the upload side, and verified blob fetches).

use std::sync::mpsc;
use std::sync::Arc;

use crate::cache::Cache;
use crate::reference::{validate_digest, ImageRef};
use crate::source::{
    check_platform, host_or, parse_config, parse_doc, select_platform, Document, Image, Layer,
    LayerData, ResolveOptions, SourceError, MAX_DOCUMENT,
};

use auth::{auth_files, registry_auth, CredsFrom};
use backoff::retry;
pub(crate) use backoff::{CONNECT_TIMEOUT, READ_TIMEOUT};
use blobs::{download, Download};
use errors::classify;
pub(crate) use errors::error_chain;

mod auth;
mod backoff;
mod blobs;
mod errors;
mod fetch;
mod session;

pub use session::Session;

pub use auth::creds_from_auth_file;

/// The image being pulled and where its credentials came from: what errors name.
#[derive(Debug, Clone)]
struct Remote {
    image: ImageRef,
    creds: CredsFrom,
    /// Requests go over plain HTTP (a loopback registry, or `--insecure`'s second try).
    plain_http: bool,
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
    let reg = connect(&rt, r, opts.creds.as_deref(), opts.insecure, false)?;
    let remote = reg.remote.clone();
    let counter: Arc<std::sync::atomic::AtomicU64> = Default::default();
    let progress = (opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .then(indicatif::MultiProgress::new);

    // Every blob this pull reads or writes is leased before it is looked up, and stays so
    // while the image lives: no eviction removes it meanwhile (see `crate::cache`'s `limit`).
    let mut leases = Vec::new();
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
            crate::source::document_within_limit("manifest", &next, size)?;
            desc_type = Some(d.media_type().clone());
            leases.push(cache.lease_blob(&next)?);
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
        leases.push(cache.lease_blob(cfg_desc.digest().as_ref())?);
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

    let mut cached = Vec::new();
    for l in &layer_descs {
        let (digest, size) = (l.digest().to_string(), Some(l.size()));
        validate_digest(&digest)?;
        leases.push(cache.lease_blob(&digest)?);
        cached.push(cache.get(&digest, size)?);
    }
    // Room for the layers to download, made before they start.
    let missing: u64 = layer_descs
        .iter()
        .zip(&cached)
        .filter(|(_, c)| c.is_none())
        .map(|(l, _)| l.size())
        .sum();
    if missing > 0 {
        cache.make_room(missing);
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(4));
    let mut layers = Vec::new();
    for ((i, l), cached) in layer_descs.iter().enumerate().zip(cached) {
        let (digest, size) = (l.digest().to_string(), Some(l.size()));
        let data = match cached {
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
            let mut keep: Vec<Box<dyn std::any::Any + Send>> = vec![Box::new(rt), Box::new(leases)];
            if let Some(p) = progress {
                keep.push(Box::new(p));
            }
            keep
        },
    })
}

/// Connects to the registry of `r`: credentials resolved, the transport chosen (see
/// [`crate::source`]), and the first request made (`GET /v2/` and the token server, for pull
/// or, with `push`, for push and pull). Every request of a pull or a push goes through the
/// [`Registry`] it gives.
fn connect(
    rt: &tokio::runtime::Runtime,
    r: &ImageRef,
    creds: Option<&str>,
    insecure: bool,
    push: bool,
) -> Result<Registry, SourceError> {
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
    let (auth, creds_from) = registry_auth(r, creds, &auth_files())?;
    let remote = Remote {
        image: r.clone(),
        creds: creds_from,
        plain_http: false,
    };
    // With --insecure: HTTPS without certificate checks, then plain HTTP when the registry
    // does not speak TLS at all (as skopeo's --tls-verify=false does). Without it: plain HTTP
    // for loopback registries, HTTPS with verified certificates for every other.
    use oci_client::client::ClientProtocol;
    let plans: &[(ClientProtocol, bool)] = if insecure {
        &[(ClientProtocol::Https, true), (ClientProtocol::Http, false)]
    } else if r.is_loopback() {
        &[(ClientProtocol::Http, false)]
    } else {
        &[(ClientProtocol::Https, false)]
    };
    let operation = if push {
        oci_client::RegistryOperation::Push
    } else {
        oci_client::RegistryOperation::Pull
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
                c.auth(reference, auth, operation)
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
    Ok(chosen.expect("the last plan returns or errs"))
}
