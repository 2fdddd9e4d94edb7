//! Plain file downloads over HTTP(S) (a bake output as `sysext bake` or the Flatcar bakery
//! serve it: `SHA256SUMS` and the files it names), with the registry client's rules: verified
//! HTTPS, plain HTTP only to loopback hosts or with `insecure`, the same timeouts, a few
//! retries on connection errors and 5xx answers, every body bounded, files streamed to disk
//! with their SHA-256 computed on the way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::registry::{error_chain as chain, CONNECT_TIMEOUT, READ_TIMEOUT};

const ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: only http and https URLs can be downloaded")]
    Scheme { url: String },
    #[error("{url}: plain HTTP to a host that is not on the loopback interface; use https, or pass --insecure to allow it")]
    PlainHttp { url: String },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: more than {limit} bytes")]
    TooBig { url: String, limit: u64 },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP client: {0}")]
    Setup(String),
}

/// The scheme rule: https, or plain http to a loopback host (or with `insecure`). Checked for
/// the URL asked for and for every redirect.
fn check_url(u: &url::Url, insecure: bool) -> Result<(), DownloadError> {
    match u.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback || insecure {
                Ok(())
            } else {
                Err(DownloadError::PlainHttp { url: u.to_string() })
            }
        }
        _ => Err(DownloadError::Scheme { url: u.to_string() }),
    }
}

/// A client for a series of downloads.
pub struct Downloader {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    insecure: bool,
}

impl Downloader {
    pub fn new(insecure: bool) -> Result<Downloader, DownloadError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DownloadError::Setup(e.to_string()))?;
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(insecure)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("sysext-tools/", env!("CARGO_PKG_VERSION")))
            // A redirect is held to the same scheme rule as the URL asked for.
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= 10 {
                    attempt.error("more than 10 redirects")
                } else if let Err(e) = check_url(attempt.url(), insecure) {
                    attempt.error(e)
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| DownloadError::Setup(e.to_string()))?;
        Ok(Downloader { rt, http, insecure })
    }

    fn check_url(&self, url: &str) -> Result<(), DownloadError> {
        let u = url::Url::parse(url).map_err(|e| DownloadError::Http {
            url: url.into(),
            message: e.to_string(),
        })?;
        check_url(&u, self.insecure)
    }

    /// GETs `url` with retries; `None` for 404 (the file is not there).
    async fn get(&self, url: &str) -> Result<Option<reqwest::Response>, DownloadError> {
        let mut wait = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let r = self.http.get(url).send().await;
            let transient = match &r {
                Ok(resp) if resp.status().is_server_error() => true,
                Ok(_) => false,
                Err(e) => e.is_connect() || e.is_timeout(),
            };
            if transient && attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
                continue;
            }
            let resp = r.map_err(|e| DownloadError::Http {
                url: url.into(),
                message: chain(&e),
            })?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(DownloadError::Http {
                    url: url.into(),
                    message: format!("the server answered {}", resp.status()),
                });
            }
            return Ok(Some(resp));
        }
    }

    /// The body of `url`, at most `limit` bytes; `None` when the server has no such file.
    pub fn get_bytes(&self, url: &str, limit: u64) -> Result<Option<Vec<u8>>, DownloadError> {
        self.check_url(url)?;
        self.rt.block_on(async {
            let Some(mut resp) = self.get(url).await? else {
                return Ok(None);
            };
            let mut out = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| DownloadError::Http {
                url: url.into(),
                message: chain(&e),
            })? {
                if out.len() as u64 + chunk.len() as u64 > limit {
                    return Err(DownloadError::TooBig {
                        url: url.into(),
                        limit,
                    });
                }
                out.extend_from_slice(&chunk);
            }
            Ok(Some(out))
        })
    }

    /// Streams `url` into the new file `dest` (at most `limit` bytes) and returns its size and
    /// SHA-256 (hex); `None` when the server has no such file (nothing is created then).
    pub fn get_file(
        &self,
        url: &str,
        dest: &Path,
        limit: u64,
    ) -> Result<Option<(u64, String)>, DownloadError> {
        self.check_url(url)?;
        self.rt.block_on(async {
            let Some(mut resp) = self.get(url).await? else {
                return Ok(None);
            };
            let io = |source| DownloadError::Io {
                path: dest.to_path_buf(),
                source,
            };
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dest)
                .map_err(io)?;
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(chunk) = resp.chunk().await.map_err(|e| DownloadError::Http {
                url: url.into(),
                message: chain(&e),
            })? {
                n += chunk.len() as u64;
                if n > limit {
                    return Err(DownloadError::TooBig {
                        url: url.into(),
                        limit,
                    });
                }
                h.update(&chunk);
                f.write_all(&chunk).map_err(io)?;
            }
            f.sync_all().map_err(io)?;
            Ok(Some((n, hex::encode(h.finalize()))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_unless_insecure() {
        let d = Downloader::new(false).unwrap();
        for ok in [
            "https://example.org/x",
            "http://127.0.0.1:8080/out/",
            "http://[::1]/a",
            "http://localhost/a",
        ] {
            d.check_url(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let e = d.check_url("http://example.org/out/").unwrap_err();
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(matches!(
            d.check_url("ftp://example.org/x"),
            Err(DownloadError::Scheme { .. })
        ));
        let d = Downloader::new(true).unwrap();
        d.check_url("http://example.org/out/").unwrap();
    }

    /// A loopback server that redirects to plain HTTP on another host: the redirect is refused
    /// by the same rule, not followed.
    #[test]
    fn a_redirect_to_plain_http_elsewhere_is_refused() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().unwrap();
            let mut req = [0u8; 4096];
            let _ = c.read(&mut req);
            c.write_all(
                b"HTTP/1.1 302 Found\r\nLocation: http://downgrade.example/SHA256SUMS\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .unwrap();
        });
        let d = Downloader::new(false).unwrap();
        let e = d
            .get_bytes(&format!("http://127.0.0.1:{port}/SHA256SUMS"), 1024)
            .unwrap_err()
            .to_string();
        assert!(e.contains("loopback"), "{e}");
        server.join().unwrap();
    }
}
