//! Registry authentication, errors and retries against a real `docker-registry` on loopback:
//! HTTP Basic (htpasswd) with `--creds`, `$REGISTRY_AUTH_FILE` and `~/.docker/config.json`;
//! bearer tokens from a token server written here (RS256 JWTs signed with the `openssl` CLI,
//! verified by the registry against the issuing certificate), anonymous tokens included;
//! missing tags, repositories and digests; a registry or token server that comes up late or
//! never; 503s on manifests and blobs; plain HTTP or a self-signed certificate only with
//! `--insecure`. Every pulled image is a two-platform index, so index, manifest, config and
//! layer requests all have to carry the credentials.
//!
//! Every pull runs with its own empty HOME and cache, so no credentials or blobs of the machine
//! or of another pull take part.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use testkit::registry::{free_port, Registry, RegistryAuth, RegistryConfig};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fn tools(extra: &[&str]) -> bool {
    ["skopeo", "docker-registry"]
        .iter()
        .chain(extra)
        .all(|t| testkit::require_tool(t))
}

/// A two-platform image (an index over amd64 and arm64 manifests, each one small layer whose
/// `etc/arch` names its platform), tagged `multi`.
fn tiny_layout(dir: &Path) -> PathBuf {
    let mut layout = Layout::new(dir);
    let mut amd = LayerTar::new();
    amd.dir("etc", 0o755)
        .file("etc/arch", 0o644, b"amd64")
        .file("etc/motd", 0o644, b"hello from a private registry\n");
    let mut arm = LayerTar::new();
    arm.dir("etc", 0o755)
        .file("etc/arch", 0o644, b"arm64")
        .file("etc/motd", 0o644, b"hello from a private registry\n");
    let m_amd = layout.image(&[amd.finish()], Comp::Gzip, "amd64", None, &[]);
    let m_arm = layout.image(&[arm.finish()], Comp::Gzip, "arm64", Some("v8"), &[]);
    let idx = layout.index(&[m_amd, m_arm]);
    layout.tag(&idx, "multi");
    dir.to_path_buf()
}

/// Pushes the layout's index with every image in it (skopeo `--all`) as `NAME:TAG`, logging
/// in with `creds` if given; returns the pushed reference.
fn push(registry: &Registry, layout: &Path, name_tag: &str, creds: Option<&str>) -> String {
    let dest = format!("{}/{name_tag}", registry.addr());
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    testkit::run_ok(
        cmd.arg(format!("oci:{}:multi", layout.display()))
            .arg(format!("docker://{dest}")),
    );
    dest
}

/// One pull, isolated: HOME is `home`, no auth-file variables but the given ones, a fresh
/// cache under `scratch`.
struct Pull<'a> {
    scratch: &'a Path,
    home: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl<'a> Pull<'a> {
    fn new(scratch: &'a Path) -> Pull<'a> {
        let home = scratch.join("home-empty");
        fs::create_dir_all(&home).unwrap();
        Pull {
            scratch,
            home,
            env: Vec::new(),
        }
    }

    fn home(mut self, home: &Path) -> Self {
        self.home = home.to_path_buf();
        self
    }

    fn env(mut self, k: &'static str, v: &str) -> Self {
        self.env.push((k, v.to_string()));
        self
    }

    fn command(&self, name: &str, args: &[&str]) -> (Command, PathBuf) {
        let folder = self.scratch.join(name);
        let mut cmd = Command::new(bin());
        cmd.env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RUST_LOG")
            .env_remove("OCIROOTFS_CREDS")
            .env("HOME", &self.home)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--cache")
            .arg(self.scratch.join(format!("cache-{name}")))
            .args(args)
            .arg(&folder);
        (cmd, folder)
    }

    /// Runs `ocirootfs [--cache C] ARGS... SCRATCH/NAME`.
    fn run(&self, name: &str, args: &[&str]) -> (Output, PathBuf) {
        let (mut cmd, folder) = self.command(name, args);
        (cmd.output().expect("run ocirootfs"), folder)
    }

    /// A pull that must work and yield the host's image of the index.
    fn works(&self, name: &str, args: &[&str]) -> Output {
        let (out, folder) = self.run(name, args);
        let out = ok(out);
        assert_eq!(
            fs::read_to_string(folder.join("etc/arch")).unwrap(),
            host_arch()
        );
        assert_eq!(
            fs::read(folder.join("etc/motd")).unwrap(),
            b"hello from a private registry\n"
        );
        out
    }

    /// A pull that must fail with exit status 2, leaving no FOLDER; returns stderr.
    fn fails(&self, name: &str, args: &[&str]) -> String {
        let (out, folder) = self.run(name, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should fail:\n{stderr}"
        );
        assert!(!folder.exists(), "a failed pull left {}", folder.display());
        assert_no_temp(self.scratch, name);
        stderr
    }
}

fn host_arch() -> String {
    ocirootfs::reference::Platform::host().architecture
}

fn assert_no_temp(dir: &Path, name: &str) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.")))
        .collect();
    assert!(left.is_empty(), "temporary folders left: {left:?}");
}

fn assert_has(text: &str, wanted: &[&str]) {
    for w in wanted {
        assert!(text.contains(w), "expected {w:?} in:\n{text}");
    }
}

// ---------- base64 for the test's own HTTP and JWT plumbing ----------

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64(data: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| (a << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            let c = B64[((n >> (18 - 6 * i)) & 63) as usize] as char;
            out.push(match (url, c) {
                (true, '+') => '-',
                (true, '/') => '_',
                (_, c) => c,
            });
        }
        if !url {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().take_while(|&c| c != b'=') {
        acc = (acc << 6) | B64.iter().position(|&x| x == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn basic(user: &str, password: &str) -> String {
    b64(format!("{user}:{password}").as_bytes(), false)
}

/// `{"auths": {KEY: {"auth": base64("USER:PASSWORD")}}}`, the format skopeo and docker write.
fn write_auth_file(path: &Path, key: &str, user: &str, password: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let v = serde_json::json!({"auths": {key: {"auth": basic(user, password)}}});
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

// ---------- 1. HTTP Basic ----------

fn htpasswd_registry(dir: &Path) -> Registry {
    let out = testkit::run_ok(Command::new("htpasswd").args(["-Bbn", USER, PASSWORD]));
    let file = dir.join("htpasswd");
    fs::write(&file, &out.stdout).unwrap();
    Registry::start_with(&RegistryConfig {
        auth: RegistryAuth::Htpasswd(file),
        ..Default::default()
    })
}

#[test]
fn basic_auth_from_creds_auth_file_and_docker_config() {
    if !tools(&["htpasswd"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let registry = htpasswd_registry(tmp.path());
    let creds = format!("{USER}:{PASSWORD}");
    let image = push(&registry, &layout, "private/tiny:1", Some(&creds));
    let addr = registry.addr();
    let pull = Pull::new(tmp.path());

    // --creds: the index, the manifest, the config and the layer all come through.
    let out = pull.works("with-creds", &["--json", "--creds", &creds, &image]);
    let platform = json(&out)["platform"].as_str().unwrap().to_string();
    assert!(
        platform.starts_with(&format!("linux/{}", host_arch())),
        "{platform}"
    );
    // The same from $OCIROOTFS_CREDS, out of sight of `ps`.
    Pull::new(tmp.path())
        .env("OCIROOTFS_CREDS", &creds)
        .works("with-creds-env", &[&image]);

    // $REGISTRY_AUTH_FILE (skopeo login's format, the registry as a bare host:port).
    let auth_file = tmp.path().join("auth.json");
    write_auth_file(&auth_file, &addr, USER, PASSWORD);
    Pull::new(tmp.path())
        .env("REGISTRY_AUTH_FILE", auth_file.to_str().unwrap())
        .works("with-auth-file", &[&image]);

    // $HOME/.docker/config.json (docker login's format, with a scheme and a slash).
    let home = tmp.path().join("home-docker");
    write_auth_file(
        &home.join(".docker/config.json"),
        &format!("http://{addr}/"),
        USER,
        PASSWORD,
    );
    Pull::new(tmp.path())
        .home(&home)
        .works("with-docker-config", &[&image]);

    // No credentials anywhere: a 401 naming the registry, the image and how to log in.
    let err = pull.fails("anonymous", &[&image]);
    assert_has(
        &err,
        &[
            &format!("registry {addr} denied access to {image} without credentials"),
            "--creds USER:PASSWORD",
            &format!("skopeo login {addr}"),
        ],
    );

    // Wrong password, from each source: the message says whose credentials were refused.
    let err = pull.fails(
        "wrong-creds",
        &["--creds", &format!("{USER}:wrong"), &image],
    );
    assert_has(
        &err,
        &[
            &format!("registry {addr} refused the credentials from --creds for {image}"),
            "check the user name and password",
        ],
    );
    let bad_file = tmp.path().join("bad-auth.json");
    write_auth_file(&bad_file, &addr, USER, "wrong");
    let err = Pull::new(tmp.path())
        .env("REGISTRY_AUTH_FILE", bad_file.to_str().unwrap())
        .fails("wrong-auth-file", &[&image]);
    assert_has(
        &err,
        &[&format!(
            "refused the credentials from {} for {image}",
            bad_file.display()
        )],
    );

    // --creds wins over an auth file; a malformed auth file or --creds value is named.
    Pull::new(tmp.path())
        .env("REGISTRY_AUTH_FILE", bad_file.to_str().unwrap())
        .works("creds-over-file", &["--creds", &creds, &image]);
    let broken = tmp.path().join("broken.json");
    fs::write(&broken, "{\"auths\": ").unwrap();
    let err = Pull::new(tmp.path())
        .env("REGISTRY_AUTH_FILE", broken.to_str().unwrap())
        .fails("broken-auth-file", &[&image]);
    assert_has(
        &err,
        &[&broken.display().to_string(), "not valid JSON", "--creds"],
    );
    let err = pull.fails("creds-no-colon", &["--creds", USER, &image]);
    assert_has(&err, &["--creds", "USER:PASSWORD"]);
}

// ---------- 2. bearer tokens ----------

/// A token server in the spirit of distribution's token auth spec: `GET /token?service=S&
/// scope=repository:NAME:ACTIONS` with optional HTTP Basic credentials. The test user gets
/// every action asked for; anonymous clients get `pull` on `public/...` only; wrong
/// credentials get a 401. Tokens are RS256 JWTs signed by `openssl dgst`, carrying the signing
/// certificate in `x5c`.
struct TokenServer {
    port: u16,
    /// One line per token issued: `SUBJECT NAME:GRANTED-ACTIONS ...`.
    issued: Arc<Mutex<Vec<String>>>,
    /// Requests refused for bad credentials.
    refused: Arc<Mutex<u32>>,
}

struct Signer {
    key: PathBuf,
    cert_der: Vec<u8>,
    issuer: String,
    service: String,
}

/// A new RSA key at `key` and a self-signed certificate for `subject` at `cert` (PEM, valid
/// two days), `extra` passed to `openssl req`.
fn openssl_req(key: &Path, cert: &Path, subject: &str, extra: &[&str]) {
    testkit::run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", subject])
            .args(extra)
            .arg("-keyout")
            .arg(key)
            .arg("-out")
            .arg(cert),
    );
}

/// A registry that wants bearer tokens from `realm`, signed by the certificate `cert` (see
/// [`Signer`]).
fn token_registry(realm: String, cert: PathBuf) -> Registry {
    Registry::start_with(&RegistryConfig {
        auth: RegistryAuth::Token {
            realm,
            service: "ocirootfs-test".into(),
            issuer: "ocirootfs-test-issuer".into(),
            rootcertbundle: cert,
        },
        ..Default::default()
    })
}

/// Reads an HTTP request head (up to the blank line) from `conn`; None when the client goes
/// away first.
fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

impl Signer {
    /// Makes a key and a self-signed certificate; returns the signer and the certificate's
    /// PEM path (the registry's `rootcertbundle`).
    fn new(dir: &Path, issuer: &str, service: &str) -> (Signer, PathBuf) {
        let key = dir.join("token.key");
        let cert = dir.join("token.pem");
        openssl_req(&key, &cert, "/CN=ocirootfs test token issuer", &[]);
        let der = testkit::run_ok(Command::new("openssl").args([
            "x509",
            "-in",
            cert.to_str().unwrap(),
            "-outform",
            "DER",
        ]))
        .stdout;
        (
            Signer {
                key,
                cert_der: der,
                issuer: issuer.into(),
                service: service.into(),
            },
            cert,
        )
    }

    fn token(&self, subject: &str, access: &[serde_json::Value]) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let header = serde_json::json!({
            "typ": "JWT", "alg": "RS256", "x5c": [b64(&self.cert_der, false)],
        });
        let claims = serde_json::json!({
            "iss": self.issuer, "sub": subject, "aud": self.service,
            "exp": now.as_secs() + 300, "nbf": now.as_secs() - 10, "iat": now.as_secs(),
            "jti": format!("{}-{}", now.as_nanos(), std::process::id()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).unwrap(), true),
            b64(&serde_json::to_vec(&claims).unwrap(), true)
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("openssl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst -sign failed");
        format!("{input}.{}", b64(&out.stdout, true))
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match h.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(signer: Signer) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued: Arc<Mutex<Vec<String>>> = Default::default();
        let refused: Arc<Mutex<u32>> = Default::default();
        let signer = Arc::new(signer);
        let (log, bad) = (issued.clone(), refused.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (signer, log, bad) = (signer.clone(), log.clone(), bad.clone());
                std::thread::spawn(move || Self::serve(conn, &signer, &log, &bad));
            }
        });
        TokenServer {
            port,
            issued,
            refused,
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn serve(mut conn: TcpStream, signer: &Signer, log: &Mutex<Vec<String>>, bad: &Mutex<u32>) {
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
        let Some(head) = read_head(&mut conn) else {
            return;
        };
        let mut lines = head.split("\r\n");
        let target = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or("")
            .to_string();
        let authorization = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_string());
        let reply = |conn: &mut TcpStream, status: &str, body: &str| {
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        };
        let subject = match authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
        {
            None => String::new(),
            Some(b) => {
                let pair = unb64(b).map(|v| String::from_utf8_lossy(&v).into_owned());
                if pair.as_deref() != Some(&format!("{USER}:{PASSWORD}")) {
                    *bad.lock().unwrap() += 1;
                    return reply(
                        &mut conn,
                        "401 Unauthorized",
                        r#"{"details":"wrong credentials"}"#,
                    );
                }
                USER.to_string()
            }
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path != "/token" {
            return reply(&mut conn, "404 Not Found", "{}");
        }
        let mut grants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            if k != "scope" {
                continue;
            }
            let scope = percent_decode(v);
            let mut parts = scope.splitn(3, ':');
            let (Some("repository"), Some(name), Some(actions)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let allowed = actions
                .split(',')
                .filter(|a| !subject.is_empty() || (*a == "pull" && name.starts_with("public/")));
            grants
                .entry(name.to_string())
                .or_default()
                .extend(allowed.map(str::to_string));
        }
        let access: Vec<serde_json::Value> = grants
            .iter()
            .filter(|(_, a)| !a.is_empty())
            .map(|(n, a)| serde_json::json!({"type": "repository", "name": n, "actions": a}))
            .collect();
        let token = signer.token(&subject, &access);
        let line = std::iter::once(if subject.is_empty() {
            "anonymous".to_string()
        } else {
            subject.clone()
        })
        .chain(grants.iter().map(|(n, a)| format!("{n}:{}", a.join(","))))
        .collect::<Vec<_>>()
        .join(" ");
        log.lock().unwrap().push(line);
        let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
        reply(&mut conn, "200 OK", &body.to_string());
    }
}

#[test]
fn bearer_tokens_with_creds_and_anonymous() {
    if !tools(&["openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let (signer, cert) = Signer::new(tmp.path(), "ocirootfs-test-issuer", "ocirootfs-test");
    let tokens = TokenServer::start(signer);
    let registry = token_registry(tokens.realm(), cert);
    let creds = format!("{USER}:{PASSWORD}");
    let private = push(&registry, &layout, "private/tiny:1", Some(&creds));
    let public = push(&registry, &layout, "public/tiny:1", Some(&creds));
    let addr = registry.addr();
    let pull = Pull::new(tmp.path());
    let issued_since = |n: usize| tokens.issued.lock().unwrap()[n..].to_vec();

    // With credentials: a token for pulling private/tiny, and the pull works.
    let before = tokens.issued.lock().unwrap().len();
    pull.works("token-creds", &["--creds", &creds, &private]);
    let issued = issued_since(before);
    assert!(
        issued.iter().any(|l| l == "alice private/tiny:pull"),
        "no pull token for alice: {issued:?}"
    );

    // Anonymous: the token server hands out a pull token for public/..., and it is enough.
    let before = tokens.issued.lock().unwrap().len();
    pull.works("token-anonymous", &[&public]);
    let issued = issued_since(before);
    assert!(
        issued.iter().any(|l| l == "anonymous public/tiny:pull"),
        "no anonymous pull token: {issued:?}"
    );

    // Anonymous on a private repository: the token grants nothing, the registry says 401.
    let err = pull.fails("token-anonymous-private", &[&private]);
    assert_has(
        &err,
        &[
            &format!("registry {addr} denied access to {private} without credentials"),
            "--creds USER:PASSWORD",
        ],
    );

    // Wrong password: the token server refuses it.
    let refused = *tokens.refused.lock().unwrap();
    let err = pull.fails(
        "token-wrong-creds",
        &["--creds", &format!("{USER}:wrong"), &private],
    );
    assert_has(
        &err,
        &[&format!(
            "registry {addr} refused the credentials from --creds for {private}"
        )],
    );
    assert!(*tokens.refused.lock().unwrap() > refused);
}

#[test]
fn unreachable_token_server_is_named() {
    if !tools(&["openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_, cert) = Signer::new(tmp.path(), "ocirootfs-test-issuer", "ocirootfs-test");
    let realm_addr = format!("127.0.0.1:{}", free_port());
    let registry = token_registry(format!("http://{realm_addr}/token"), cert);
    let image = format!("{}/tiny:1", registry.addr());
    let err = Pull::new(tmp.path()).fails("no-token-server", &[&image]);
    assert_has(
        &err,
        &[
            &format!(
                "nothing listens at {realm_addr} (the token server {} sends clients to)",
                registry.addr()
            ),
            "check that the token server is running",
        ],
    );
}

// ---------- 3. not found ----------

#[test]
fn missing_tag_repository_and_digest_are_named() {
    if !tools(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let registry = Registry::start();
    let image = push(&registry, &layout, "tiny:1", None);
    let addr = registry.addr();
    let pull = Pull::new(tmp.path());
    pull.works("present", &[&image]);

    let err = pull.fails("no-tag", &[&format!("{addr}/tiny:2")]);
    assert_has(
        &err,
        &[
            &format!("image {addr}/tiny:2 not found"),
            "no tag or digest 2 in tiny",
            &format!("skopeo list-tags docker://{addr}/tiny"),
        ],
    );
    let err = pull.fails("no-repo", &[&format!("{addr}/nothing/here:1")]);
    assert_has(
        &err,
        &[
            &format!("image {addr}/nothing/here:1 not found"),
            &format!("docker://{addr}/nothing/here"),
        ],
    );
    let digest = format!("sha256:{}", "0".repeat(64));
    let err = pull.fails("no-digest", &[&format!("{addr}/tiny@{digest}")]);
    assert_has(
        &err,
        &[&format!("image {addr}/tiny@{digest} not found"), &digest],
    );
}

// ---------- 4. retries ----------

#[test]
fn pull_waits_for_a_registry_that_comes_up_late() {
    if !tools(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let storage = tmp.path().join("storage");
    let port = free_port();
    let config = RegistryConfig {
        port: Some(port),
        storage: Some(storage),
        ..Default::default()
    };
    let image = {
        let first = Registry::start_with(&config);
        push(&first, &layout, "tiny:1", None)
        // Stopped here; its content stays in `storage`.
    };
    let pull = Pull::new(tmp.path());
    let (mut cmd, folder) = pull.command("late", &[&image]);
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _second = Registry::start_with(&config);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the pull gave up:\n{stderr}");
    assert_has(&stderr, &["Connection refused", "retrying in"]);
    assert_eq!(
        fs::read_to_string(folder.join("etc/arch")).unwrap(),
        host_arch()
    );
}

#[test]
fn unreachable_registry_fails_within_the_retry_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let image = format!("{addr}/tiny:1");
    let start = Instant::now();
    let err = Pull::new(tmp.path()).fails("never", &[&image]);
    let took = start.elapsed();
    assert_has(
        &err,
        &[
            &format!("cannot reach registry {addr} for {image} after 6 attempt(s)"),
            "Connection refused",
            &format!("nothing listens at {addr}"),
        ],
    );
    assert_eq!(err.matches("retrying in").count(), 5, "{err}");
    // The backoff sums to under 8 s; far below a minute even on a loaded machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

// ---------- 5. plain HTTP and unverified TLS ----------

/// A self-signed certificate and its key for `ip`.
fn self_signed(dir: &Path, ip: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.pem"), dir.join("tls.key"));
    let san = format!("subjectAltName=IP:{ip}");
    openssl_req(&key, &cert, &format!("/CN={ip}"), &["-addext", &san]);
    (cert, key)
}

#[test]
fn loopback_https_registry_needs_insecure() {
    if !tools(&["openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let registry = Registry::start_with(&RegistryConfig {
        tls: Some(self_signed(tmp.path(), "127.0.0.1")),
        ..Default::default()
    });
    let image = push(&registry, &layout, "tiny:1", None);
    let pull = Pull::new(tmp.path());
    // Loopback means plain HTTP, which this registry refuses: say so, and what to pass.
    let err = pull.fails("https-loopback", &[&image]);
    assert_has(
        &err,
        &[
            &format!("{} answers HTTPS only", registry.addr()),
            "pass --insecure",
        ],
    );
    pull.works("https-loopback-insecure", &["--insecure", &image]);
}

/// A global IPv4 address of this host, if it has one.
fn non_loopback_ipv4() -> Option<String> {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut w = l.split_whitespace();
        w.position(|x| x == "inet")?;
        let ip = w.next()?.split('/').next()?.to_string();
        TcpListener::bind((ip.as_str(), 0)).ok().map(|_| ip)
    })
}

#[test]
fn off_loopback_plain_http_and_self_signed_https_need_insecure() {
    if !tools(&["openssl"]) {
        return;
    }
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("skipping: this host has no non-loopback IPv4 address");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let (cert, key) = self_signed(tmp.path(), &ip);
    let plain = Registry::start_with(&RegistryConfig {
        host: Some(ip.clone()),
        ..Default::default()
    });
    let https = Registry::start_with(&RegistryConfig {
        host: Some(ip.clone()),
        tls: Some((cert, key)),
        ..Default::default()
    });
    let pull = Pull::new(tmp.path());
    for (name, registry, why) in [
        ("plain", &plain, "InvalidContentType"),
        ("self-signed", &https, "certificate"),
    ] {
        let image = push(registry, &layout, "tiny:1", None);
        assert!(image.starts_with(&ip), "{image}");
        // HTTPS with verification fails at once (no retries) and points at --insecure.
        let start = Instant::now();
        let err = pull.fails(&format!("{name}-secure"), &[&image]);
        assert_has(
            &err,
            &[
                &format!("HTTPS to registry {} failed for {image}", registry.addr()),
                why,
                "pass --insecure",
            ],
        );
        assert!(
            !err.contains("retrying in"),
            "a TLS failure was retried:\n{err}"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
        // --insecure: unverified HTTPS, or plain HTTP when the registry has no TLS.
        pull.works(&format!("{name}-insecure"), &["--insecure", &image]);
    }
}

/// A proxy in front of a registry that answers `503 Service Unavailable` to the first
/// `fail_first` tries of each request whose path contains one of `markers`, and forwards
/// everything else
/// (one request per connection: it asks both sides to close after each response).
struct FlakyProxy {
    port: u16,
    failed: Arc<Mutex<Vec<String>>>,
}

impl FlakyProxy {
    fn start(upstream: String, markers: &'static [&'static str], fail_first: usize) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let failed: Arc<Mutex<Vec<String>>> = Default::default();
        let counts: Arc<Mutex<BTreeMap<String, usize>>> = Default::default();
        let log = failed.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (upstream, log, counts) = (upstream.clone(), log.clone(), counts.clone());
                std::thread::spawn(move || {
                    let Some(text) = read_head(&mut conn) else {
                        return;
                    };
                    let request = text.lines().next().unwrap_or("").to_string();
                    let hit = markers.iter().any(|m| request.contains(m)) && {
                        let mut c = counts.lock().unwrap();
                        let n = c.entry(request.clone()).or_default();
                        *n += 1;
                        *n <= fail_first
                    };
                    if hit {
                        log.lock().unwrap().push(request);
                        let _ = conn.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                    let head: String = text
                        .split("\r\n")
                        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
                        .take_while(|l| !l.is_empty())
                        .map(|l| format!("{l}\r\n"))
                        .collect();
                    let Ok(mut up) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    let _ = up.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes());
                    let _ = std::io::copy(&mut up, &mut conn);
                });
            }
        });
        FlakyProxy { port, failed }
    }
}

#[test]
fn server_errors_on_manifests_and_blobs_are_retried() {
    if !tools(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layout = tiny_layout(&tmp.path().join("layout"));
    let registry = Registry::start();
    push(&registry, &layout, "tiny:1", None);
    // Two failures for each of: the index (by tag), the amd64 manifest (by digest), the
    // config and the layer, fetched in turn.
    let proxy = FlakyProxy::start(registry.addr(), &["/manifests/", "/blobs/"], 2);
    let image = format!("127.0.0.1:{}/tiny:1", proxy.port);
    let out = Pull::new(tmp.path()).works("flaky", &[&image]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = proxy.failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 8, "{failed:?}");
    assert_eq!(stderr.matches("retrying in").count(), 8, "{stderr}");
    assert_has(&stderr, &["503"]);
}

/// The upload side (`ocirootfs::registry::Session`, used by `sysext push`) with bearer
/// tokens: a push token is asked for and used for blob uploads (one PUT, and PATCH chunks for
/// a blob over 16 MiB) and the manifest; an anonymous push is refused.
#[test]
fn push_session_with_bearer_tokens() {
    use ocirootfs::registry::Session;
    use sha2::Digest as _;
    if !tools(&["openssl"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (signer, cert) = Signer::new(tmp.path(), "ocirootfs-test-issuer", "ocirootfs-test");
    let tokens = TokenServer::start(signer);
    let registry = token_registry(tokens.realm(), cert);
    let r = ocirootfs::reference::parse_image_ref(&format!("{}/private/art:1", registry.addr()))
        .unwrap();
    let mut opts = ocirootfs::SourceOptions::default();
    opts.cache_dir = Some(tmp.path().join("cache"));

    // Anonymous: the token grants nothing, the upload is refused as a missing login.
    let anon = Session::open(&r, &opts, true).unwrap();
    let err = anon.push_small_blob(b"{}").unwrap_err().to_string();
    assert!(err.contains("denied access"), "{err}");

    opts.creds = Some(format!("{USER}:{PASSWORD}"));
    let before = tokens.issued.lock().unwrap().len();
    let s = Session::open(&r, &opts, true).unwrap();
    let issued = tokens.issued.lock().unwrap()[before..].to_vec();
    assert!(
        issued
            .iter()
            .any(|l| l.starts_with("alice private/art:") && l.contains("push")),
        "no push token: {issued:?}"
    );
    let config = s.push_small_blob(b"{}").unwrap();
    let big = testkit::random_bytes((16 << 20) + 12345, 3);
    let path = tmp.path().join("big");
    std::fs::write(&path, &big).unwrap();
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&big)));
    assert!(s.push_blob(&digest, big.len() as u64, &path).unwrap());
    // Present now: not uploaded again.
    assert!(!s.push_blob(&digest, big.len() as u64, &path).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.example.test",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": digest, "size": big.len()}],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let pushed = s
        .push_manifest("1", "application/vnd.oci.image.manifest.v1+json", &bytes)
        .unwrap();

    // The push session reads back too (oci-client fetches blobs with a pull token).
    let back = tmp.path().join("back");
    s.copy_verified(&digest, big.len() as u64, &back).unwrap();
    assert!(std::fs::read(&back).unwrap() == big);

    // Read back through a pull session: the same manifest, and the blob byte for byte.
    let p = Session::open(&r, &opts, false).unwrap();
    let (got, d) = p.manifest(None).unwrap();
    assert_eq!((got, d), (bytes, pushed));
    let out = tmp.path().join("out");
    std::fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    let p = Session::open(&r, &opts, false).unwrap();
    p.copy_verified(&digest, big.len() as u64, &out).unwrap();
    assert!(std::fs::read(&out).unwrap() == big);
}
