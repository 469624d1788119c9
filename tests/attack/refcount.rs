//! Finding 1: a tenant drains another project's reference counts.
//!
//! The attacker is projectAdmin of `evil` only. The victim image lives in
//! the public project `library`. The attacker mounts the victim's config and
//! layer into an own repository, pushes a body that is both an image
//! manifest (the victim's config and layers) and an index (a child of their
//! own), with no `mediaType`, as an image manifest; then pushes the same
//! bytes by digest as an index into another own repository and deletes
//! them there, three times. On the release with the finding each round took
//! one reference off the victim's blobs without ever adding one, and GC
//! then deleted the victim's layer while its manifest still pointed at it.
//!
//! Prevented by design (`docs/security.md`, "Reference counts cannot be
//! drained by a tenant"): one digest has one record and one parse, the
//! references counted on put are the record's, the ones released on delete;
//! a body that reads as both is refused; counts never go below zero.

use berth_testkit::server::{header, http, TestServer};
use berth_testkit::{berthctl, content, sha256};
use serde_json::{json, Value};

use super::basic;

const ADMIN_PW: &str = "attack-admin-pw";
const MALLORY_PW: &str = "mallory-pw-123";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One request as `auth` (a Basic header value, or none); returns status,
/// headers and body.
fn call(
    s: &TestServer,
    auth: Option<&str>,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http(s.addr, method, path, &headers, body)
}

fn api_json(s: &TestServer, auth: &str, path: &str, body: Value) {
    let (st, _, b) = call(
        s,
        Some(auth),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(st, 201, "POST {path}: {}", String::from_utf8_lossy(&b));
}

/// Uploads `data` monolithically into `repo`; returns its descriptor.
fn push_blob(s: &TestServer, auth: &str, repo: &str, media_type: &str, data: &[u8]) -> Value {
    let d = sha256(data);
    let (st, _, b) = call(
        s,
        Some(auth),
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        data,
    );
    assert_eq!(st, 201, "blob into {repo}: {}", String::from_utf8_lossy(&b));
    json!({"mediaType": media_type, "digest": d.as_str(), "size": data.len()})
}

fn put_manifest(
    s: &TestServer,
    auth: &str,
    repo: &str,
    reference: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let (st, _, b) = call(
        s,
        Some(auth),
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", content_type)],
        body,
    );
    (st, b)
}

/// Asserts an OCI error answer: `status` and a JSON body whose first
/// error has `code`.
fn assert_oci_error(st: u16, body: &[u8], status: u16, code: &str, what: &str) {
    assert_eq!(st, status, "{what}: {}", String::from_utf8_lossy(body));
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
    assert_eq!(v["errors"][0]["code"], code, "{what}: {v}");
}

/// Runs one GC through Harbor's API as admin and waits (bounded) for it.
fn run_gc(s: &TestServer, admin: &str) {
    let (st, h, b) = call(
        s,
        Some(admin),
        "POST",
        "/api/v2.0/system/gc/schedule",
        &[("Content-Type", "application/json")],
        br#"{"schedule":{"type":"Manual"},"parameters":{"delete_untagged":false,"dry_run":false}}"#,
    );
    assert_eq!(st, 201, "GC schedule: {}", String::from_utf8_lossy(&b));
    let location = header(&h, "location").expect("GC run location").to_owned();
    for _ in 0..600 {
        let (st, _, b) = call(s, Some(admin), "GET", &location, &[], b"");
        assert_eq!(st, 200);
        let run: Value = serde_json::from_slice(&b).expect("GC run JSON");
        match run["job_status"].as_str().or(run["status"].as_str()) {
            Some("Success") => {
                // Its log says what it did.
                let (st, h, log) =
                    call(s, Some(admin), "GET", &format!("{location}/log"), &[], b"");
                assert_eq!(st, 200);
                assert!(header(&h, "content-type").is_some_and(|t| t.starts_with("text/plain")));
                let log = String::from_utf8_lossy(&log);
                assert!(
                    log.contains("candidates scanned") && log.contains("finished: success"),
                    "{log}"
                );
                return;
            }
            Some("Error") => panic!("GC failed: {run}"),
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    panic!("GC run {location} did not finish");
}

#[test]
fn a_tenant_cannot_drain_another_projects_refcounts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let mut s = TestServer::start(
        &data,
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
            ("BERTH_GC_GRACE_SECONDS", "0"),
        ],
    );
    let admin = basic("admin", ADMIN_PW);
    let mallory = basic("mallory", MALLORY_PW);

    // The attacker: projectAdmin of `evil` and nothing else.
    api_json(
        &s,
        &admin,
        "/api/v2.0/users",
        json!({"username": "mallory", "password": MALLORY_PW}),
    );
    api_json(
        &s,
        &admin,
        "/api/v2.0/projects",
        json!({"project_name": "evil", "metadata": {"public": "false"}}),
    );
    api_json(
        &s,
        &admin,
        "/api/v2.0/projects/evil/members",
        json!({"role_id": 1, "member_user": {"username": "mallory"}}),
    );

    // The victim: an image in the public project `library`.
    let config = push_blob(
        &s,
        &admin,
        "library/app",
        "application/vnd.oci.image.config.v1+json",
        br#"{"architecture":"amd64","os":"linux"}"#,
    );
    let layer_bytes = content("victim layer", 4096);
    let layer = push_blob(
        &s,
        &admin,
        "library/app",
        "application/vnd.oci.image.layer.v1.tar",
        &layer_bytes,
    );
    let victim = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config, "layers": [layer]})
    .to_string()
    .into_bytes();
    let (st, b) = put_manifest(&s, &admin, "library/app", "v1", OCI_MANIFEST, &victim);
    assert_eq!(st, 201, "victim manifest: {}", String::from_utf8_lossy(&b));

    // Mallory mounts the victim's blobs (public: readable) into evil/a.
    for d in [&config["digest"], &layer["digest"]] {
        let d = d.as_str().expect("digest");
        let (st, _, b) = call(
            &s,
            Some(mallory.as_str()),
            "POST",
            &format!("/v2/evil/a/blobs/uploads/?mount={d}&from=library/app"),
            &[],
            b"",
        );
        assert_eq!(st, 201, "mount {d}: {}", String::from_utf8_lossy(&b));
    }
    // A child manifest of her own in evil/b, for the index reading.
    let own = push_blob(
        &s,
        &mallory,
        "evil/b",
        "application/vnd.oci.image.config.v1+json",
        b"{}",
    );
    let child = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": own, "layers": []})
    .to_string()
    .into_bytes();
    let (st, b) = put_manifest(&s, &mallory, "evil/b", "child", OCI_MANIFEST, &child);
    assert_eq!(st, 201, "child: {}", String::from_utf8_lossy(&b));
    let child_desc = json!({"mediaType": OCI_MANIFEST,
        "digest": sha256(&child).as_str(), "size": child.len()});

    // The two-faced body: no mediaType; image and index at once.
    let evil = json!({"schemaVersion": 2, "config": config, "layers": [layer],
        "manifests": [child_desc]})
    .to_string()
    .into_bytes();
    let ed = sha256(&evil);
    // Every answer is checked after the damage check, so a failure shows
    // the damage first.
    let mut answers = Vec::new();
    let (st, b) = put_manifest(&s, &mallory, "evil/a", ed.as_str(), OCI_MANIFEST, &evil);
    answers.push((
        "image reading of the two-faced body",
        st,
        b,
        400,
        "MANIFEST_INVALID",
    ));
    for _round in 0..3 {
        let (st, b) = put_manifest(&s, &mallory, "evil/b", ed.as_str(), OCI_INDEX, &evil);
        answers.push((
            "index reading of the two-faced body",
            st,
            b,
            400,
            "MANIFEST_INVALID",
        ));
        let (st, _, b) = call(
            &s,
            Some(mallory.as_str()),
            "DELETE",
            &format!("/v2/evil/b/manifests/{ed}"),
            &[],
            b"",
        );
        answers.push((
            "delete of the index reading",
            st,
            b,
            404,
            "MANIFEST_UNKNOWN",
        ));
    }
    // Unambiguous bytes stored once keep their media type: the same bytes
    // as another type are refused (the engine's rule, behind the parser's).
    let plain = json!({"schemaVersion": 2, "config": own, "layers": []})
        .to_string()
        .into_bytes();
    let pd = sha256(&plain);
    let (st, b) = put_manifest(&s, &mallory, "evil/b", pd.as_str(), OCI_MANIFEST, &plain);
    assert_eq!(st, 201, "plain manifest: {}", String::from_utf8_lossy(&b));
    let docker = "application/vnd.docker.distribution.manifest.v2+json";
    let (st, b) = put_manifest(&s, &mallory, "evil/b", pd.as_str(), docker, &plain);
    answers.push((
        "the same bytes as another media type",
        st,
        b,
        400,
        "MANIFEST_INVALID",
    ));

    run_gc(&s, &admin);

    // The victim's image is whole: manifest and every blob, anonymously.
    let (st, _, _) = http(s.addr, "GET", "/v2/library/app/manifests/v1", &[], b"");
    assert_eq!(st, 200, "victim manifest after GC");
    for (what, d, bytes) in [
        ("config", &config["digest"], None),
        ("layer", &layer["digest"], Some(&layer_bytes)),
    ] {
        let d = d.as_str().expect("digest");
        let (st, _, b) = http(
            s.addr,
            "GET",
            &format!("/v2/library/app/blobs/{d}"),
            &[],
            b"",
        );
        assert_eq!(
            st,
            200,
            "victim {what} {d} after GC: {}",
            String::from_utf8_lossy(&b)
        );
        if let Some(want) = bytes {
            assert_eq!(&b, want, "victim {what} bytes");
        }
    }

    s.stop();
    let (code, stdout, stderr) = berthctl(&data, &["fsck", "--verify-blobs"]);
    let out = format!("{stdout}{stderr}");
    assert_eq!(code, 0, "berthctl fsck after the attack:\n{out}");

    for (what, st, body, status, code) in answers {
        assert_oci_error(st, &body, status, code, what);
    }
}
