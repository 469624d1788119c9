//! End to end: `berthctl backup` while `berth serve` runs on the data
//! directory, with pushes, deletes and online GC every second going on
//! (grace 1 s: with 0 GC may take a pushed blob before its manifest);
//! `berthctl restore` into a new directory; a second server there serves
//! every tag bit for bit to skopeo. A second backup into the same
//! directory copies only what is new. A backup killed with SIGKILL leaves
//! the previous one whole and does not hold GC up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_testkit::oci_layout::{self, Image};
use berth_testkit::server::{
    http, image_manifest, push_blob, push_manifest, skopeo_ok, TestServer,
};
use berth_testkit::{berthctl, bin_path, content};

const GC_EVERY_SECOND: &[(&str, &str)] = &[
    ("BERTH_GC_INTERVAL_SECONDS", "1"),
    ("BERTH_GC_GRACE_SECONDS", "1"),
];

/// Pushes the OCI layout `src` (tag `v1`) to `repo:tag` on `server`.
fn push(server: &TestServer, src: &Path, image: &str) {
    let from = format!("oci:{}:v1", src.display());
    let to = format!("docker://{}/{image}", server.url());
    skopeo_ok(
        server,
        &[
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &from,
            &to,
        ],
    );
}

/// Pulls `image` from `server` and checks it is `expected`, bit for bit:
/// the manifest and every blob.
fn assert_pulls(server: &TestServer, work: &Path, image: &str, src: &Path, expected: &Image) {
    let remote = format!("docker://{}/{image}", server.url());
    let raw = skopeo_ok(server, &["inspect", "--tls-verify=false", "--raw", &remote]);
    assert_eq!(raw, expected.manifest, "{image}: manifest bit for bit");
    let pulled = work.join(format!("pulled-{}", image.replace(['/', ':'], "-")));
    let _ = std::fs::remove_dir_all(&pulled);
    let to = format!("oci:{}:v1", pulled.display());
    skopeo_ok(
        server,
        &[
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            &remote,
            &to,
        ],
    );
    for d in expected.blob_digests() {
        assert!(
            oci_layout::read_blob(&pulled, &d) == oci_layout::read_blob(src, &d),
            "{image}: blob {d} bit for bit"
        );
    }
}

/// Until `stop`: pushes a manifest over a fresh blob and deletes it again,
/// so online GC always has garbage to claim while the backup runs.
fn churn(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let config = format!("{{\"n\":{n}}}").into_bytes();
            let layer = content(&format!("churn{n}"), 64 << 10);
            let c = (push_blob(addr, "backup/churn", &config), config.len());
            let l = (push_blob(addr, "backup/churn", &layer), layer.len());
            let d = push_manifest(addr, "backup/churn", "t", &image_manifest(&c, &l, n));
            let path = format!("/v2/backup/churn/manifests/{d}");
            assert_eq!(http(addr, "DELETE", &path, &[], b"").0, 202);
            n += 1;
        }
        n
    })
}

#[test]
fn a_backup_taken_while_serving_restores_every_tag_bit_for_bit() {
    let work = tempfile::tempdir().expect("tempdir");
    let w = work.path();
    let data = w.join("berth");
    let server = TestServer::start(&data, GC_EVERY_SECOND);
    let images: Vec<(String, std::path::PathBuf, Image)> = (0..3)
        .map(|i| {
            let src = w.join(format!("layout{i}"));
            let image = oci_layout::write_image(&src, "v1", &format!("img{i}"), &[400_000, 3_000]);
            let name = format!("backup/app{i}:v1");
            push(&server, &src, &name);
            (name, src, image)
        })
        .collect();

    // The first backup, taken while blobs are pushed and deleted and GC
    // runs every second.
    let stop = Arc::new(AtomicBool::new(false));
    let churner = churn(server.addr, stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    let out = w.join("backup");
    let backup_arg = out.to_string_lossy().into_owned();
    let (code, stdout, stderr) = berthctl(&data, &["backup", "--out", &backup_arg]);
    assert_eq!(code, 0, "backup while serving\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 already present"), "{stdout}");
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let churned = churner.join().expect("churn");
    assert!(churned > 0, "the churn ran");
    let mode = std::fs::metadata(&out).expect("backup dir").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o077,
        0,
        "a backup holds password hashes: private"
    );

    // An image pushed after it, then a second backup into the same
    // directory: only its blobs are new.
    let late_src = w.join("late");
    let late = oci_layout::write_image(&late_src, "v1", "late", &[200_000]);
    push(&server, &late_src, "backup/late:v1");
    let (code, stdout, stderr) = berthctl(&data, &["backup", "--out", &backup_arg]);
    assert_eq!(code, 0, "second backup\n{stdout}\n{stderr}");
    let present: u64 = stdout
        .split(" already present")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("already present count in {stdout}"));
    assert!(
        present >= 6,
        "the first backup's blobs are not copied again: {stdout}"
    );

    // A backup killed halfway leaves the second one whole, and its hold
    // (naming a dead process) does not stop GC.
    let mut killed = Command::new(bin_path("berthctl"))
        .args(["backup", "--out", &backup_arg, "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn backup");
    let hold = data.join("backup.hold");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !hold.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = killed.kill();
    let _ = killed.wait();

    // Restore into a new directory while the first server still runs on
    // the old one; a second server serves exactly the backup.
    let restored = w.join("restored");
    let from = backup_arg.as_str();
    let (code, stdout, stderr) =
        berthctl(&restored, &["restore", "--from", from, "--verify-blobs"]);
    assert_eq!(code, 0, "restore and its fsck\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 finding(s)"), "{stdout}");
    let second = TestServer::start(&restored, &[]);
    for (name, src, image) in &images {
        assert_pulls(&second, w, name, src, image);
    }
    assert_pulls(&second, w, "backup/late:v1", &late_src, &late);

    // GC on the first server goes on after the killed backup: a deleted
    // image's blobs leave its store.
    let victim = &images[0];
    let path = format!("/v2/backup/app0/manifests/{}", victim.2.manifest_digest);
    assert_eq!(http(server.addr, "DELETE", &path, &[], b"").0, 202);
    let layer = &victim.2.layer_digests[0];
    let hex = layer.strip_prefix("sha256:").expect("sha256");
    let file = data.join("blobs/sha256").join(&hex[..2]).join(hex);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while file.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !file.exists(),
        "online GC deletes after a killed backup\n{}",
        server.stderr()
    );
    // ... and the restored server still has it: the backup's copy is its own
    // name for the bytes.
    assert_pulls(&second, w, &victim.0, &victim.1, &victim.2);
}
