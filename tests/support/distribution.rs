//! The reference registry (CNCF distribution 2.8.2, Debian's
//! `docker-registry`) with htpasswd auth on a filesystem root: the source
//! of `berthctl sync` and the upstream of proxy cache projects in the
//! end-to-end tests. Its access log (one line per request) is kept, so a
//! test can count what berth asked it for. Killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::haproxy::free_port;
use crate::oci_layout::sha256_digest;
use crate::server::{header, http, skopeo};

/// The user distribution's htpasswd file holds.
pub const USER: &str = "source";
pub const PASSWORD: &str = "source-password";

pub struct AuthDistribution {
    child: Option<Child>,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl AuthDistribution {
    /// Starts it on a free port; storage under `dir/root`.
    pub fn start(dir: &Path) -> AuthDistribution {
        Self::start_on(dir, free_port())
    }

    /// Starts it on `port` (again, after [`AuthDistribution::stop`]: the
    /// same storage, the same address).
    pub fn start_on(dir: &Path, port: u16) -> AuthDistribution {
        let htpasswd = dir.join("htpasswd");
        if !htpasswd.exists() {
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (apache2-utils)");
            assert!(out.status.success(), "htpasswd");
            std::fs::write(&htpasswd, out.stdout).expect("htpasswd file");
        }
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nauth:\n  htpasswd:\n    realm: source\n    path: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("root").display(),
                htpasswd.display()
            ),
        )
        .expect("config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("registry.log"))
            .expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "distribution did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        AuthDistribution {
            child: Some(child),
            addr,
            dir: dir.to_owned(),
        }
    }

    /// Kills it (the storage stays).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far: the access log's lines hold `"METHOD PATH HTTP/1.1"`.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// Pushes tag `tag` of the OCI layout at `layout` (every platform,
    /// digests kept) as `image` (`repo:tag`), with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, image: &str) {
        let from = format!("oci:{}:{tag}", layout.display());
        let to = format!("docker://{}/{image}", self.addr);
        let creds = format!("{USER}:{PASSWORD}");
        skopeo(&[
            "copy",
            "--all",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            "--preserve-digests",
            &from,
            &to,
        ]);
    }

    /// A PUT with Basic auth; its status.
    pub fn put(&self, path: &str, content_type: &str, body: &[u8]) -> u16 {
        let auth = basic(USER, PASSWORD);
        http(
            self.addr,
            "PUT",
            path,
            &[("Authorization", &auth), ("Content-Type", content_type)],
            body,
        )
        .0
    }

    /// A blob into `repo` (POST, PUT); its digest.
    pub fn blob(&self, repo: &str, data: &[u8]) -> String {
        let auth = basic(USER, PASSWORD);
        let (st, h, _) = http(
            self.addr,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[("Authorization", &auth)],
            b"",
        );
        assert_eq!(st, 202);
        let loc = header(&h, "location").expect("location");
        let path = loc
            .split_once("://")
            .map_or(loc, |(_, rest)| rest.find('/').map_or(rest, |i| &rest[i..]));
        let d = sha256_digest(data);
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = format!("{path}{sep}digest={d}");
        assert_eq!(self.put(&put, "application/octet-stream", data), 201);
        d
    }
}

impl Drop for AuthDistribution {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An `Authorization: Basic …` value.
pub fn basic(user: &str, pw: &str) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    format!("Basic {b}")
}
