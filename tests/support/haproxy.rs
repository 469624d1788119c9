//! haproxy (Debian's) in front of test servers: started in the foreground
//! from a configuration the test writes, killed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running haproxy; killed and reaped on drop.
pub struct Haproxy {
    child: Child,
    /// The port its frontend listens on (127.0.0.1).
    pub port: u16,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0 to find a free port")
        .port()
}

impl Haproxy {
    /// Runs haproxy on `config` (written to `dir/haproxy-{port}.cfg`),
    /// whose frontend binds 127.0.0.1:`port`, and waits until it listens.
    pub fn start(dir: &Path, port: u16, config: &str) -> Haproxy {
        let path = dir.join(format!("haproxy-{port}.cfg"));
        std::fs::write(&path, config).expect("writing haproxy.cfg");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running haproxy (is it installed?)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Haproxy { child, port }
    }
}
