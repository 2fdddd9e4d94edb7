//! Documents: manifests fetched with a bound on their size and time (read by a plain HTTP
//! client, checked against the digests asked for and stated), and small blobs (configs).

use std::time::Duration;

use crate::cache::Cache;
use crate::source::{sha256_hex, SourceError, MAX_DOCUMENT};

use super::backoff::retry;
use super::errors::{answer_error, classify};
use super::Registry;

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How long one manifest request may take, its body included: a registry that drips bytes is
/// cut off.
const DOCUMENT_DEADLINE: Duration = Duration::from_secs(60);
/// The most read of an error answer's body (an OCI error envelope is a few hundred bytes).
pub(super) const MAX_ERROR_BODY: u64 = 64 << 10;

/// A response body, at most `limit` bytes of it; `true` when that was all of it.
pub(super) async fn read_bounded(
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

impl Registry {
    /// `req` with the registry's credentials: the bearer token of the handshake, else the
    /// basic credentials, else none. Every request made outside oci-client goes through it.
    pub(super) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        use oci_client::secrets::RegistryAuth;
        match (&self.token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        }
    }

    /// `https://HOST/v2/REPOSITORY/` + `tail`.
    pub(super) fn url(&self, tail: &str) -> String {
        format!(
            "{}://{}/v2/{}/{tail}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        )
    }

    /// The manifest or index `digest` (by default the one the image names by tag or digest),
    /// with its digest; at most [`MAX_DOCUMENT`] bytes are read, and the bytes are checked
    /// against the digest asked for and the one the registry states.
    pub(super) async fn manifest(
        &self,
        digest: Option<&str>,
    ) -> Result<(Vec<u8>, String), SourceError> {
        let target = digest
            .or(self.reference.digest())
            .or(self.reference.tag())
            .unwrap_or("latest");
        let url = self.url(&format!("manifests/{target}"));
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
        let failed = |e: E| classify(e, &self.remote);
        let req = self.authorize(
            self.http
                .get(url)
                .header(reqwest::header::ACCEPT, ACCEPT.join(", ")),
        );
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

    pub(super) async fn small_blob(
        &self,
        cache: &Cache,
        digest: &str,
        size: Option<u64>,
    ) -> Result<Vec<u8>, SourceError> {
        if let Some(s) = size {
            crate::source::document_within_limit("blob", digest, s)?;
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
