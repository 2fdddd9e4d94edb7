//! A static file server on loopback: `python3 -m http.server`, the way a bake output is
//! served in the tests (`sysext bake` artifacts for systemd-sysupdate, `install-image --from`).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `python3 -m http.server` serving a folder on a free loopback port; killed on drop.
pub struct Server(Child);

impl Server {
    /// Serves `dir`; returns the server and its port once it accepts connections.
    pub fn start(dir: &Path) -> (Server, u16) {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server(child);
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "http.server did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        (server, port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
