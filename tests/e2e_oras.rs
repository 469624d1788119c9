//! End-to-end with oras-py (the `oras` Python OCI client, installed into
//! `~/.cache/berth/venv` by `scripts/install-deps.sh`): push artifacts
//! with monolithic and chunked uploads, one with a `subject`, pull them back
//! bit for bit, delete a tag; the registry API is checked for what the
//! client did (tags, referrers, blob digests).

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_testkit::server::{header, http, TestServer};

/// The client side, run by the venv's python with the registry address and
/// a work directory; prints one JSON object with the digests it saw.
const CLIENT: &str = r#"
import hashlib, json, os, sys
import oras.client, oras.oci

host, work = sys.argv[1], sys.argv[2]
os.chdir(work)
c = oras.client.OrasClient(hostname=host, insecure=True)

def same(a, b):
    return open(a, "rb").read() == open(b, "rb").read()

# Monolithic uploads (POST + PUT), two files and manifest annotations.
r = c.push(target=f"{host}/art/files:v1", files=["big.bin", "small.txt"],
           manifest_annotations={"org.example.kind": "files"})
assert r.status_code == 201, r.text
pulled = c.pull(target=f"{host}/art/files:v1", outdir="out1")
assert sorted(os.path.basename(p) for p in pulled) == ["big.bin", "small.txt"], pulled
assert same("big.bin", "out1/big.bin") and same("small.txt", "out1/small.txt")
files = c.get_manifest(f"{host}/art/files:v1")
assert files["annotations"]["org.example.kind"] == "files", files

# Chunked uploads (POST, PATCH with Content-Range ..., PUT) of 1 MiB chunks.
r = c.push(target=f"{host}/art/chunked:v1", files=["chunky.bin"],
           do_chunked=True, chunk_size=1 << 20)
assert r.status_code == 201, r.text
c.pull(target=f"{host}/art/chunked:v1", outdir="out2")
assert same("chunky.bin", "out2/chunky.bin")

# An artifact whose subject is the first one (referrers API).
raw = json.dumps(files).encode()
subject = oras.oci.Subject(mediaType=files["mediaType"],
                           digest="sha256:" + hashlib.sha256(raw).hexdigest(),
                           size=len(raw))
r = c.push(target=f"{host}/art/files:sig", files=["small.txt"], subject=subject)
assert r.status_code == 201, r.text

# Tag deletion.
assert c.delete_tags(f"{host}/art/chunked", "v1") == ["v1"]

print(json.dumps({
    "layers": [l["digest"] for l in files["layers"]],
    "sig_digest": r.headers.get("Docker-Content-Digest"),
    "tags": c.get_tags(f"{host}/art/files"),
}))
"#;

fn venv_python() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    Path::new(&home).join(".cache/berth/venv/bin/python")
}

#[test]
fn oras_push_pull_chunked_subject_and_delete() {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: run the tests through scripts/test.sh, which installs oras-py",
        python.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let big = berth_testkit::content("oras-big", 3_000_000);
    std::fs::write(work.join("big.bin"), &big).expect("big.bin");
    std::fs::write(work.join("small.txt"), "hello from oras\n").expect("small.txt");
    std::fs::write(
        work.join("chunky.bin"),
        berth_testkit::content("oras-chunky", 2_500_000),
    )
    .expect("chunky.bin");
    let script = tmp.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("client.py");

    let server = TestServer::start(&tmp.path().join("data"), &[]);
    let out = Command::new(&python)
        .arg(&script)
        .arg(server.url())
        .arg(&work)
        .output()
        .expect("run oras-py");
    assert!(
        out.status.success(),
        "oras client failed ({})\n--- stderr ---\n{}\n--- server stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let seen: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("client output {stdout:?}: {e}"));

    // The client's layer digests are the digests of the files it pushed.
    let layers: Vec<&str> = seen["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        layers.contains(&berth_testkit::sha256(&big).as_str()),
        "{layers:?}"
    );
    assert_eq!(seen["tags"], serde_json::json!(["sig", "v1"]));

    let addr = server.url().parse().expect("addr");
    // The referrers index of the first artifact lists the signature.
    let (_, files_headers, _) = http(addr, "HEAD", "/v2/art/files/manifests/v1", &[], b"");
    let files_digest = header(&files_headers, "docker-content-digest").expect("digest");
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("/v2/art/files/referrers/{files_digest}"),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    let index: serde_json::Value = serde_json::from_slice(&body).expect("referrers json");
    let sig = seen["sig_digest"].as_str().expect("sig digest");
    assert!(
        index["manifests"]
            .as_array()
            .is_some_and(|m| m.iter().any(|d| d["digest"] == sig)),
        "referrers of {files_digest}: {index}"
    );
    // The deleted tag is gone; its blobs are still served by digest.
    let (status, _, _) = http(addr, "GET", "/v2/art/chunked/manifests/v1", &[], b"");
    assert_eq!(status, 404);
    let (status, _, body) = http(
        addr,
        "GET",
        &format!("/v2/art/files/blobs/{}", berth_testkit::sha256(&big)),
        &[],
        b"",
    );
    assert_eq!(status, 200);
    assert!(body == big, "big.bin served back differs");
}
