//! A real registry server (Debian's `docker-registry`, the CNCF distribution server) on
//! 127.0.0.1 with a free port and a private storage folder, stopped when dropped.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry. `addr()` is `127.0.0.1:PORT`.
pub struct Registry {
    child: Child,
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

fn free_port() -> u16 {
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

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
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
