//! A [`Session`] with one repository of a registry, for publishing and fetching artifacts
//! (`sysext push`/`pull`): the same connection, credentials, retries, bounded manifest reads
//! and blob cache as a pull of an image, plus the upload side of the distribution API — blob
//! `HEAD`, upload sessions (`POST`, then one `PUT` for a small blob or `PATCH` chunks and a
//! closing `PUT` for a large one) and manifest `PUT`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cache::{Cache, Lease};
use crate::reference::{validate_digest, ImageRef};
use crate::source::{SourceError, MAX_DOCUMENT};

use super::backoff::retry;
use super::blobs::{download, Download};
use super::errors::{answer_error, classify};
use super::fetch::{read_bounded, MAX_ERROR_BODY};
use super::{connect, Registry};

/// Blobs up to this size are uploaded with one `PUT`; larger ones in `PATCH` chunks of this
/// size, so an upload never holds more than this in memory.
const CHUNK: u64 = 16 << 20;

/// A connection to the repository of an image reference (see the module docs).
pub struct Session {
    rt: tokio::runtime::Runtime,
    reg: Registry,
    cache: Cache,
}

/// A failed request's answer as our error; `true` when another try may help.
async fn refused(reg: &Registry, mut res: reqwest::Response, url: &str) -> (SourceError, bool) {
    let status = res.status();
    let (body, _) = read_bounded(&mut res, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    classify(answer_error(status, &body, url), &reg.remote)
}

fn transport(reg: &Registry, e: reqwest::Error) -> (SourceError, bool) {
    classify(
        oci_client::errors::OciDistributionError::RequestError(e),
        &reg.remote,
    )
}

/// The `Location` of an upload answer, resolved against the request's URL.
fn location(reg: &Registry, res: &reqwest::Response) -> Result<reqwest::Url, (SourceError, bool)> {
    let bad = |m: &str| {
        (
            SourceError::Registry {
                image: reg.image.to_string(),
                message: format!(
                    "the upload answer {m}; the registry does not follow the distribution API"
                ),
            },
            false,
        )
    };
    let loc = res
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| bad("has no Location header"))?;
    res.url()
        .join(loc)
        .map_err(|_| bad("has a Location that is not a URL"))
}

impl Session {
    /// Connects to the registry of `r` (for pushing too when `push`), with the credentials,
    /// `--insecure` and cache of `opts` (its platform is not used).
    pub fn open(
        r: &ImageRef,
        opts: &crate::SourceOptions,
        push: bool,
    ) -> Result<Session, SourceError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(SourceError::Runtime)?;
        let dir = opts
            .cache_dir
            .clone()
            .unwrap_or_else(crate::cache::default_dir);
        let cache =
            Cache::open(&dir)?.with_max(opts.cache_max.unwrap_or(crate::cache::DEFAULT_MAX));
        let reg = connect(&rt, r, opts.creds.as_deref(), opts.insecure, push)?;
        Ok(Session { rt, reg, cache })
    }

    /// The reference the session was opened for.
    pub fn image(&self) -> &ImageRef {
        &self.reg.image
    }

    /// The blob cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The manifest or index `digest` (by default the one the reference names), at most
    /// [`MAX_DOCUMENT`] bytes, checked against the digest asked for and the one the registry
    /// states; with its digest.
    pub fn manifest(&self, digest: Option<&str>) -> Result<(Vec<u8>, String), SourceError> {
        self.rt.block_on(self.reg.manifest(digest))
    }

    /// [`Session::manifest`] of the reference, or `None` when the registry has no such tag
    /// (or repository).
    pub fn manifest_if_any(&self) -> Result<Option<(Vec<u8>, String)>, SourceError> {
        match self.manifest(None) {
            Ok(m) => Ok(Some(m)),
            Err(SourceError::NotFound { .. } | SourceError::RepositoryNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The blob `digest` of `size` bytes in the cache, downloaded if missing (streamed,
    /// verified against digest and size while it arrives, retried); leased so no eviction
    /// removes it while the lease lives. A cached blob is not hashed again here: readers
    /// verify what they read (see [`Session::copy_verified`]).
    pub fn blob(&self, digest: &str, size: u64) -> Result<(PathBuf, Lease), SourceError> {
        validate_digest(digest)?;
        let lease = self.cache.lease_blob(digest)?;
        if let Some(p) = self.cache.get(digest, Some(size))? {
            return Ok((p, lease));
        }
        self.cache.make_room(size);
        let path = self.rt.block_on(download(Download {
            client: self.reg.client.clone(),
            reference: self.reg.reference.clone(),
            remote: self.reg.remote.clone(),
            cache: self.cache.clone(),
            digest: digest.to_string(),
            size: Some(size),
            bar: None,
            counter: Arc::default(),
        }))?;
        Ok((path, lease))
    }

    /// Copies the blob `digest` of `size` bytes (fetched into the cache first) to `to`,
    /// hashing what it copies: a cached blob found damaged is evicted and fetched once more;
    /// a registry that serves wrong bytes is an error (and `to` may hold a partial copy: the
    /// caller writes to a temporary name).
    pub fn copy_verified(&self, digest: &str, size: u64, to: &Path) -> Result<(), SourceError> {
        let mut retried = false;
        loop {
            let (path, _lease) = self.blob(digest, size)?;
            let rd = |source| SourceError::Read {
                path: path.clone(),
                source,
            };
            let mut from = std::fs::File::open(&path).map_err(rd)?;
            let wr = |source| SourceError::Read {
                path: to.to_path_buf(),
                source,
            };
            let mut out = std::fs::File::create(to).map_err(wr)?;
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let k = from.read(&mut buf).map_err(rd)?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                h.update(&buf[..k]);
                std::io::Write::write_all(&mut out, &buf[..k]).map_err(wr)?;
            }
            let actual = hex::encode(h.finalize());
            if n == size && Some(actual.as_str()) == digest.strip_prefix("sha256:") {
                return out.sync_all().map_err(wr);
            }
            tracing::warn!("cached blob {digest} is damaged; removed, fetching it again");
            self.cache.evict(digest);
            if retried {
                return Err(SourceError::Digest {
                    digest: digest.to_string(),
                    where_: self.reg.image.to_string(),
                    actual,
                });
            }
            retried = true;
        }
    }

    /// Whether the repository holds the blob `digest` with `size` bytes (`HEAD`).
    pub fn has_blob(&self, digest: &str, size: u64) -> Result<bool, SourceError> {
        validate_digest(digest)?;
        let reg = &self.reg;
        let url = reg.url(&format!("blobs/{digest}"));
        self.rt.block_on(retry(|| async {
            let res = reg
                .authorize(reg.http.head(&url))
                .send()
                .await
                .map_err(|e| transport(reg, e))?;
            match res.status() {
                // The header itself: a HEAD answer has no body to size.
                reqwest::StatusCode::OK => Ok(res
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    == Some(size)),
                reqwest::StatusCode::NOT_FOUND => Ok(false),
                _ => Err(refused(reg, res, &url).await),
            }
        }))
    }

    /// Uploads the file `path` as the blob `digest` of `size` bytes, unless the repository
    /// has it already; `true` when it was uploaded. The registry checks the digest when the
    /// upload closes. A failed attempt starts a new upload.
    pub fn push_blob(&self, digest: &str, size: u64, path: &Path) -> Result<bool, SourceError> {
        if self.has_blob(digest, size)? {
            return Ok(false);
        }
        let reg = &self.reg;
        let start = reg.url("blobs/uploads/");
        self.rt.block_on(retry(|| async {
            let res = reg
                .authorize(reg.http.post(&start))
                .header(reqwest::header::CONTENT_LENGTH, 0)
                .send()
                .await
                .map_err(|e| transport(reg, e))?;
            if res.status() != reqwest::StatusCode::ACCEPTED {
                return Err(refused(reg, res, &start).await);
            }
            let mut at = location(reg, &res)?;
            let rd = |source| {
                (
                    SourceError::Read {
                        path: path.to_path_buf(),
                        source,
                    },
                    false,
                )
            };
            let mut file = std::fs::File::open(path).map_err(rd)?;
            let mut sent = 0u64;
            let mut last = Vec::new();
            if size <= CHUNK {
                file.read_to_end(&mut last).map_err(rd)?;
            } else {
                while sent < size {
                    let mut chunk = Vec::with_capacity(CHUNK as usize);
                    (&mut file)
                        .take(CHUNK)
                        .read_to_end(&mut chunk)
                        .map_err(rd)?;
                    if chunk.is_empty() {
                        break;
                    }
                    let end = sent + chunk.len() as u64 - 1;
                    let res = reg
                        .authorize(reg.http.patch(at.clone()))
                        .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_RANGE, format!("{sent}-{end}"))
                        .body(chunk)
                        .send()
                        .await
                        .map_err(|e| transport(reg, e))?;
                    if res.status() != reqwest::StatusCode::ACCEPTED {
                        return Err(refused(reg, res, at.as_str()).await);
                    }
                    at = location(reg, &res)?;
                    sent = end + 1;
                }
            }
            if sent + last.len() as u64 != size {
                return Err((
                    SourceError::SizeMismatch {
                        digest: digest.to_string(),
                        where_: path.display().to_string(),
                        declared: size,
                        actual: sent + last.len() as u64,
                    },
                    false,
                ));
            }
            at.query_pairs_mut().append_pair("digest", digest);
            let res = reg
                .authorize(reg.http.put(at.clone()))
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(last)
                .send()
                .await
                .map_err(|e| transport(reg, e))?;
            if res.status() != reqwest::StatusCode::CREATED {
                return Err(refused(reg, res, at.as_str()).await);
            }
            Ok(())
        }))?;
        Ok(true)
    }

    /// Uploads a blob held in memory (a config); see [`Session::push_blob`].
    pub fn push_small_blob(&self, bytes: &[u8]) -> Result<String, SourceError> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let tmp = self.cache.put(&digest, bytes)?;
        self.push_blob(&digest, bytes.len() as u64, &tmp)?;
        Ok(digest)
    }

    /// Stores `bytes` (at most [`MAX_DOCUMENT`]) as a manifest of `media_type` under
    /// `reference` (a tag, or the manifest's own digest); gives its digest.
    pub fn push_manifest(
        &self,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, SourceError> {
        crate::source::document_within_limit("manifest", reference, bytes.len() as u64)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
        let reg = &self.reg;
        let url = reg.url(&format!("manifests/{reference}"));
        self.rt.block_on(retry(|| async {
            let res = reg
                .authorize(reg.http.put(&url))
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
                .send()
                .await
                .map_err(|e| transport(reg, e))?;
            if res.status() != reqwest::StatusCode::CREATED {
                return Err(refused(reg, res, &url).await);
            }
            Ok(())
        }))?;
        debug_assert!(bytes.len() as u64 <= MAX_DOCUMENT);
        Ok(digest)
    }
}
