//! What a failed request means: the client's errors and their typed causes classified into
//! [`SourceError`]s (with a hint for connection failures) and whether another try may help.

use std::io;

use crate::reference::ImageRef;
use crate::source::SourceError;

use super::auth::CredsFrom;
use super::Remote;

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
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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
pub(super) fn classify(
    e: oci_client::errors::OciDistributionError,
    rem: &Remote,
) -> (SourceError, bool) {
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

/// The client error an HTTP error answer stands for (the one `classify` reads): 401, an OCI
/// error envelope, or a bare status.
pub(super) fn answer_error(
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
