//! End-to-end with podman (Debian's podman, a real client of its own image
//! store): build a two-layer image, push it to a real `berth` process, drop
//! it locally, pull it back by tag and by digest, and check the digests the
//! client and the registry agree on. podman keeps its storage in a private
//! temporary root (vfs driver), so the test touches no system state.

use std::path::Path;
use std::process::{Command, Output};

use berth_testkit::server::{header, http, TestServer};

struct Podman {
    root: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        Podman {
            root: tempfile::tempdir().expect("podman root"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let root = self.root.path();
        Command::new("podman")
            .arg("--root")
            .arg(root.join("storage"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "file"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("XDG_RUNTIME_DIR", root.join("xdg"))
            .env("XDG_CONFIG_HOME", root.join("config"))
            .output()
            .expect("run podman (Debian package podman)")
    }

    fn ok(&self, server: &TestServer, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {} failed ({})\n--- podman stderr ---\n{}\n--- server stderr ---\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            server.stderr()
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

fn build_context(dir: &Path) {
    std::fs::create_dir_all(dir).expect("context dir");
    std::fs::write(dir.join("a.txt"), "first layer\n").expect("a.txt");
    std::fs::write(
        dir.join("b.bin"),
        berth_testkit::content("podman-b", 300_000),
    )
    .expect("b.bin");
    std::fs::write(
        dir.join("Containerfile"),
        "FROM scratch\nCOPY a.txt /a.txt\nCOPY b.bin /b.bin\n",
    )
    .expect("Containerfile");
}

#[test]
fn podman_push_pull_by_tag_and_digest() {
    let data = tempfile::tempdir().expect("data dir");
    let server = TestServer::start(data.path(), &[]);
    let podman = Podman::new();
    let ctx = podman.root.path().join("ctx");
    build_context(&ctx);
    let ctx_arg = ctx.to_str().expect("utf-8 path");
    podman.ok(
        &server,
        &[
            "build",
            "-q",
            "--layers=true",
            "-t",
            "localhost/berth-e2e:v1",
            ctx_arg,
        ],
    );

    let remote = format!("{}/proj/podman:v1", server.url());
    let digest_file = podman.root.path().join("digest");
    let digest_arg = digest_file.to_str().expect("utf-8 path");
    podman.ok(
        &server,
        &[
            "push",
            "--tls-verify=false",
            "--digestfile",
            digest_arg,
            "localhost/berth-e2e:v1",
            &format!("docker://{remote}"),
        ],
    );
    let pushed = std::fs::read_to_string(&digest_file).expect("digest file");
    let pushed = pushed.trim();
    assert!(pushed.starts_with("sha256:"), "{pushed}");

    // The registry serves that manifest under the tag.
    let (status, headers, body) = http(server.addr, "GET", "/v2/proj/podman/manifests/v1", &[(
        "Accept",
        "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
    )], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "docker-content-digest"), Some(pushed));
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest json");
    let layers = manifest["layers"].as_array().map_or(0, Vec::len);
    assert_eq!(layers, 2, "two COPY layers: {manifest}");

    // Drop the local image, pull by tag and by digest.
    podman.ok(&server, &["rmi", "-f", "localhost/berth-e2e:v1"]);
    podman.ok(&server, &["pull", "-q", "--tls-verify=false", &remote]);
    let by_tag = podman.ok(
        &server,
        &["image", "inspect", "--format", "{{.Digest}}", &remote],
    );
    assert_eq!(by_tag, pushed, "pulled digest differs from pushed");
    let by_digest = format!("{}/proj/podman@{pushed}", server.url());
    podman.ok(&server, &["pull", "-q", "--tls-verify=false", &by_digest]);

    // Every layer the manifest names is served with its digest.
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let d = layer["digest"].as_str().expect("layer digest");
        let (status, headers, _) = http(
            server.addr,
            "HEAD",
            &format!("/v2/proj/podman/blobs/{d}"),
            &[],
            b"",
        );
        assert_eq!(status, 200, "layer {d}");
        assert_eq!(header(&headers, "docker-content-digest"), Some(d));
    }
}
