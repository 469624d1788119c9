//! End to end: `berthctl sync` from the real CNCF distribution 2.8.2
//! (Debian's `docker-registry`) with htpasswd auth in front, fed by skopeo,
//! into berth with auth on (Docker token auth). Every tag of the selected
//! repositories arrives bit for bit — a multi-arch index with its children,
//! a referrer kept in distribution's `sha256-<hex>` fallback tag with its
//! subject — a repository outside the pattern does not, a second run
//! copies nothing, and wrong source credentials fail clearly.

use std::path::Path;

use berth_testkit::berthctl_with;
use berth_testkit::distribution::{
    basic, AuthDistribution as Source, PASSWORD as SRC_PW, USER as SRC_USER,
};
use berth_testkit::oci_layout::{self, sha256_digest, MEDIA_TYPE_MANIFEST};
use berth_testkit::server::{http, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "sync-admin-password";

fn sync(to: &TestServer, src: &Source, extra: &[&str], src_pw: &str) -> (i32, String, String) {
    let from = format!("http://{}", src.addr);
    let dest = format!("http://{}", to.addr);
    let mut args = vec![
        "sync",
        "--from",
        &from,
        "--to",
        &dest,
        "--from-user",
        SRC_USER,
        "--to-user",
        "admin",
    ];
    args.extend_from_slice(extra);
    let env = [
        ("BERTH_SYNC_FROM_PASSWORD".to_owned(), src_pw.to_owned()),
        ("BERTH_SYNC_TO_PASSWORD".to_owned(), ADMIN_PW.to_owned()),
    ];
    berthctl_with(Path::new("/nonexistent"), &args, &env)
}

#[test]
fn a_registry_with_auth_syncs_into_berth_bit_for_bit_and_only_once() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let src = Source::start(w);
    let single = w.join("single");
    let image = oci_layout::write_image(&single, "v1", "sync/app", &[300_000, 4_000]);
    let multi = w.join("multi");
    let index = oci_layout::write_multi_arch(&multi, "v2", "sync/multi", 100_000);
    src.push(&single, "v1", "team/app:v1");
    src.push(&single, "v1", "team/app:stable");
    src.push(&multi, "v2", "team/multi:v2");
    src.push(&single, "v1", "other/skipped:v1");

    // A signature-like referrer of team/app:v1, kept the way clients keep
    // one on a registry without the referrers API: by digest, listed in an
    // index tagged `sha256-<hex of the subject>`.
    let empty = src.blob("team/app", b"{}");
    let sig = src.blob("team/app", b"a signature");
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [{"mediaType": "application/octet-stream", "digest": sig, "size": 11}],
        "subject": {"mediaType": MEDIA_TYPE_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len()},
    }))
    .expect("json");
    let referrer_digest = sha256_digest(&referrer);
    let path = format!("/v2/team/app/manifests/{referrer_digest}");
    assert_eq!(src.put(&path, MEDIA_TYPE_MANIFEST, &referrer), 201);
    let fallback = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MEDIA_TYPE_MANIFEST, "digest": referrer_digest,
                       "size": referrer.len(), "artifactType": "application/vnd.example.signature"}],
    }))
    .expect("json");
    let fallback_tag = image.manifest_digest.replace(':', "-");
    let path = format!("/v2/team/app/manifests/{fallback_tag}");
    let index_type = "application/vnd.oci.image.index.v1+json";
    assert_eq!(src.put(&path, index_type, &fallback), 201);

    let data = w.join("berth");
    let server = TestServer::start(
        &data,
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ],
    );
    let admin = basic("admin", ADMIN_PW);
    let (st, _, _) = http(
        server.addr,
        "POST",
        "/api/v2.0/projects",
        &[
            ("Authorization", &admin),
            ("Content-Type", "application/json"),
        ],
        br#"{"project_name":"team","metadata":{"public":"false"}}"#,
    );
    assert_eq!(st, 201, "project team");

    // Wrong source credentials: a clear failure, nothing copied.
    let (code, out, err) = sync(&server, &src, &[], "not-the-password");
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(format!("{out}{err}").contains("401"), "{out}\n{err}");

    let (code, out, err) = sync(&server, &src, &["--repos", "team/**"], SRC_PW);
    assert_eq!(code, 0, "sync\n{out}\n{err}");
    assert!(
        out.contains("synced 2 repositories: 4 tags copied"),
        "{out}"
    );

    // Every tag bit for bit, pulled with skopeo through berth's token auth.
    let berth_creds = format!("admin:{ADMIN_PW}");
    let raw = |repo_tag: &str| {
        let remote = format!("docker://{}/{repo_tag}", server.url());
        skopeo_ok(
            &server,
            &[
                "inspect",
                "--tls-verify=false",
                "--creds",
                &berth_creds,
                "--raw",
                &remote,
            ],
        )
    };
    assert_eq!(raw("team/app:v1"), image.manifest);
    assert_eq!(raw("team/app:stable"), image.manifest);
    assert_eq!(raw("team/multi:v2"), index.index);
    assert_eq!(raw(&format!("team/app:{fallback_tag}")), fallback);
    let pulled = w.join("pulled");
    let remote = format!("docker://{}/team/multi:v2", server.url());
    let to = format!("oci:{}:v2", pulled.display());
    skopeo_ok(
        &server,
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            &berth_creds,
            "--preserve-digests",
            &remote,
            &to,
        ],
    );
    for d in index.blob_digests() {
        assert!(
            oci_layout::read_blob(&pulled, &d) == oci_layout::read_blob(&multi, &d),
            "blob {d} bit for bit"
        );
    }
    // The referrer arrived with its subject: berth lists it.
    let token_path = format!("/v2/team/app/referrers/{}", image.manifest_digest);
    let (st, _, body) = http(
        server.addr,
        "GET",
        &token_path,
        &[("Authorization", &admin)],
        b"",
    );
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let listed: Value = serde_json::from_slice(&body).expect("referrers json");
    let digests: Vec<&str> = listed["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["digest"].as_str())
        .collect();
    assert_eq!(digests, vec![referrer_digest.as_str()]);
    // Outside the pattern: not copied.
    let (st, _, _) = http(
        server.addr,
        "GET",
        "/v2/other/skipped/tags/list",
        &[("Authorization", &admin)],
        b"",
    );
    assert_ne!(st, 200, "other/skipped is outside --repos");

    // A second run copies nothing; a tag moved at the source moves.
    let (code, out, err) = sync(&server, &src, &["--repos", "team/**"], SRC_PW);
    assert_eq!(code, 0, "second sync\n{out}\n{err}");
    assert!(out.contains("0 tags copied, 4 already present"), "{out}");
    assert!(out.contains("blobs: 0 copied (0 bytes)"), "{out}");
    let moved = w.join("moved");
    oci_layout::write_image(&moved, "v1", "sync/moved", &[2_000]);
    src.push(&moved, "v1", "team/app:stable");
    let (code, out, err) = sync(
        &server,
        &src,
        &["--repos", "team/app", "--tags", "stable"],
        SRC_PW,
    );
    assert_eq!(code, 0, "third sync\n{out}\n{err}");
    assert!(out.contains("1 tags copied, 0 already present"), "{out}");
    assert_ne!(raw("team/app:stable"), image.manifest, "the tag moved");
}
