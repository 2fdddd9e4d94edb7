//! A real registry server (Debian's `docker-registry`, the CNCF distribution server) on
//! 127.0.0.1 with a free port and a private storage folder, stopped when dropped.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry. `addr()` is `127.0.0.1:PORT`.
pub struct Registry {
    child: Child,
    host: String,
    port: u16,
    _dir: tempfile_dir::TempDir,
}

mod tempfile_dir {
    use std::path::{Path, PathBuf};

    /// A scratch folder removed on drop (kept dependency-free).
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let base = std::env::temp_dir();
            for n in 0..1000u32 {
                let p = base.join(format!("{prefix}-{}-{n}", std::process::id()));
                match std::fs::create_dir(&p) {
                    Ok(()) => return Ok(Self(p)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::other("no free temporary folder name"))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A TCP port nothing listens on right now (on 127.0.0.1).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl Registry {
    /// Starts `docker-registry serve` on 127.0.0.1 and waits until it answers.
    pub fn start() -> Registry {
        let dir = tempfile_dir::TempDir::new("testkit-registry").expect("scratch dir");
        let port = free_port();
        let config = dir.path().join("config.yml");
        let mut f = std::fs::File::create(&config).expect("registry config");
        write!(
            f,
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        )
        .unwrap();
        drop(f);
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start docker-registry (scripts/setup.sh installs it)");
        let reg = Registry {
            child,
            host: "127.0.0.1".into(),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// `127.0.0.1:PORT` (`HOST:PORT` for [`RegistryConfig::host`]).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The registry's storage folder (`docker/registry/v2/...` inside), e.g. to corrupt a blob.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Pushes `SRC` (any skopeo transport, e.g. `oci:/path:tag`) as `ADDR/name:tag`;
    /// returns the pushed reference.
    pub fn push(&self, src: &str, name_tag: &str) -> String {
        let dest = format!("{}/{}", self.addr(), name_tag);
        crate::run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            src,
            &format!("docker://{dest}"),
        ]));
        dest
    }

    /// Pushes an OCI layout folder's tag.
    pub fn push_oci_layout(&self, layout: &Path, tag: &str, name_tag: &str) -> String {
        self.push(&format!("oci:{}:{tag}", layout.display()), name_tag)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How clients must authenticate to a registry started with [`Registry::start_with`].
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    /// Anyone may push and pull.
    #[default]
    None,
    /// HTTP Basic against an htpasswd file (bcrypt entries, e.g. from `htpasswd -Bbn`).
    Htpasswd(PathBuf),
    /// Bearer tokens from a token server: distribution's `auth: token:` section.
    Token {
        /// The token server's URL (`http://127.0.0.1:PORT/token`).
        realm: String,
        service: String,
        issuer: String,
        /// PEM certificates trusted to sign tokens.
        rootcertbundle: PathBuf,
    },
}

/// Settings for [`Registry::start_with`]; the default is what [`Registry::start`] runs.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Address to listen on (default 127.0.0.1), e.g. a non-loopback address of the host.
    pub host: Option<String>,
    /// Port (default a free one), e.g. to start a registry where a client already waits.
    pub port: Option<u16>,
    /// Storage folder owned by the caller (default a private one removed on drop), e.g. to
    /// stop a registry and start another over the same content.
    pub storage: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate and key instead of plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: RegistryAuth,
}

impl Registry {
    /// Starts `docker-registry serve` as `config` says and waits until it answers.
    pub fn start_with(config: &RegistryConfig) -> Registry {
        let dir = tempfile_dir::TempDir::new("testkit-registry").expect("scratch dir");
        let host = config.host.clone().unwrap_or_else(|| "127.0.0.1".into());
        let port = config.port.unwrap_or_else(free_port);
        let storage = config
            .storage
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut yml = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}:{port}\n",
            storage.display()
        );
        if let Some((cert, key)) = &config.tls {
            yml.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        match &config.auth {
            RegistryAuth::None => {}
            RegistryAuth::Htpasswd(file) => yml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: testkit-registry\n    path: {}\n",
                file.display()
            )),
            RegistryAuth::Token {
                realm,
                service,
                issuer,
                rootcertbundle,
            } => yml.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
                rootcertbundle.display()
            )),
        }
        let file = dir.path().join("config.yml");
        std::fs::write(&file, yml).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start docker-registry (scripts/setup.sh installs it)");
        let mut reg = Registry {
            child,
            host: host.clone(),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect((host.as_str(), port)).is_err() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                panic!("docker-registry exited ({status}) instead of listening on {host}:{port}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on {host}:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}
