//! Parser findings of the fuzz targets (`server/fuzz`), reproduced against
//! the real binary (`docs/security.md`, "Fuzzing").

use berth_testkit::server::{http, TestServer};
use serde_json::Value;

const ADMIN_PW: &str = "attack-admin-pw-1";

/// A refused manifest's error detail quotes a bounded cut of the client's
/// string, not the string: a 2 MiB `schemaVersion` string (serde_json
/// quotes a mistyped string value) or `mediaType` came back whole in the
/// `MANIFEST_INVALID` body before the fix. Nothing is stored.
#[test]
fn manifest_refusals_do_not_echo_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        dir.path(),
        &[
            ("BERTH_AUTH_ENABLED", "true"),
            ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
        ],
    );
    let auth = crate::basic("admin", ADMIN_PW);
    let long = "x".repeat(2 << 20);
    let oci = "application/vnd.oci.image.manifest.v1+json";
    for body in [
        format!(r#"{{"schemaVersion":"{long}"}}"#),
        format!(r#"{{"schemaVersion":2,"mediaType":"application/{long}"}}"#),
    ] {
        let (status, _, res) = http(
            server.addr,
            "PUT",
            "/v2/library/app/manifests/v1",
            &[("Authorization", &auth), ("Content-Type", oci)],
            body.as_bytes(),
        );
        assert_eq!(status, 400, "{:.200}", String::from_utf8_lossy(&res));
        assert!(
            res.len() < 4096,
            "a {} byte error body for a {} byte manifest",
            res.len(),
            body.len()
        );
        let v: Value = serde_json::from_slice(&res).expect("a JSON error body");
        assert_eq!(v["errors"][0]["code"], "MANIFEST_INVALID", "{v}");
    }
    let (status, _, _) = http(
        server.addr,
        "GET",
        "/v2/library/app/manifests/v1",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(status, 404, "a refused manifest was stored");
}
