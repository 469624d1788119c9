//! End to end: the web console in a real browser. A real `berth serve`
//! (auth on) holds an image with two tags and a multi-arch index pushed by
//! skopeo; `tests/console/browser.mjs` then drives Debian's headless
//! Chromium (`/usr/bin/chromium`, through playwright-core from
//! `tests/console/node_modules`) through the console: signs in (a wrong
//! password first), creates a project with the "New project" form, finds
//! the repositories, the artifact with its tags and the index with its
//! platforms, copies a pull command (and reads it back from the clipboard),
//! creates a robot account and reads its secret shown once, sets a quota,
//! deletes a tag with its × button (through `confirm()`), runs GC and sees
//! the run listed, and signs out. Any page error or console error (a
//! Content-Security-Policy violation is one) fails it.
//!
//! This side then checks with skopeo and the API that what the browser did
//! took effect: the robot's secret pulls the image, a push into the project
//! whose quota the browser set to nothing is refused, the deleted tag is
//! gone while the other remains, and the GC history has the run.
//!
//! Screenshots of the main pages go to `$CARGO_TARGET_DIR/console-screenshots`
//! (or `BERTH_CONSOLE_SCREENSHOTS`); with `BERTH_CONSOLE_SCREENSHOT_DOCS=1`
//! the repository page is also saved as `docs/console-repository.png`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `BERTH_CHROMIUM`) and
//! `npm ci --prefix tests/console` (`scripts/install-deps.sh` does all
//! three): without them the test fails, saying which is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_testkit::distribution::basic;
use berth_testkit::oci_layout;
use berth_testkit::server::{api_json, skopeo_ok, TestServer};
use serde_json::{json, Value};

const ADMIN_PW: &str = "console-admin-pw";

/// The repository's root (the root package's manifest directory).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The browser the script drives, checked to be there.
fn chromium() -> PathBuf {
    let path = std::env::var_os("BERTH_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        path.exists(),
        "berth: console test: {} not found: install Debian's chromium \
         (scripts/install-deps.sh does) or point BERTH_CHROMIUM at a Chromium",
        path.display()
    );
    path
}

/// `node`, checked to run, and playwright-core, checked to be installed.
fn node() -> &'static str {
    let out = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "berth: console test: `node` does not run ({out:?}): install Node.js \
         (scripts/install-deps.sh does)"
    );
    let pw = root().join("tests/console/node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "berth: console test: {} is missing: run `npm ci --prefix tests/console` \
         (scripts/install-deps.sh does)",
        pw.display()
    );
    "node"
}

/// Where the screenshots go: `BERTH_CONSOLE_SCREENSHOTS`, else
/// `console-screenshots` in the target directory this test was built in.
fn screenshot_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_CONSOLE_SCREENSHOTS") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> → target
    exe.ancestors()
        .nth(3)
        .map_or_else(std::env::temp_dir, Path::to_path_buf)
        .join("console-screenshots")
}

fn copy(server: &TestServer, creds: &str, all: bool, from: &str, to: &str) {
    let mut args = vec!["copy", "--dest-tls-verify=false", "--dest-creds", creds];
    if all {
        args.push("--all");
    }
    args.extend(["--preserve-digests", from, to]);
    skopeo_ok(server, &args);
}

#[test]
fn the_console_in_a_browser_does_what_its_pages_say() {
    let chromium = chromium();
    let node = node();
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let env = [
        ("BERTH_AUTH_ENABLED", "true"),
        ("BERTH_ADMIN_PASSWORD", ADMIN_PW),
    ];
    let server = TestServer::start(&data, &env);
    let admin = basic("admin", ADMIN_PW);
    let creds = format!("admin:{ADMIN_PW}");
    let api =
        |method: &str, path: &str, body: &Value| api_json(server.addr, &admin, method, path, body);

    // A project with an image under two tags and a multi-arch index.
    let (st, _, err) = api(
        "POST",
        "/api/v2.0/projects",
        &json!({"project_name": "shop"}),
    );
    assert_eq!(st, 201, "{err}");
    let layouts = work.path().join("layouts");
    let image = oci_layout::write_image(&layouts.join("web"), "v1", "console-web", &[2000, 3000]);
    let index = oci_layout::write_multi_arch(&layouts.join("multi"), "m1", "console-multi", 1500);
    let web = format!("oci:{}:v1", layouts.join("web").display());
    for tag in ["v1", "v1.1"] {
        let to = format!("docker://{}/shop/web:{tag}", server.url());
        copy(&server, &creds, false, &web, &to);
    }
    let multi = format!("oci:{}:m1", layouts.join("multi").display());
    let to = format!("docker://{}/shop/multi:m1", server.url());
    copy(&server, &creds, true, &multi, &to);

    // The browser's part.
    let shots = screenshot_dir();
    let result_file = work.path().join("browser-result.json");
    let docs_png = root().join("docs/console-repository.png");
    // Old screenshots would pass the checks below: start empty.
    let _ = std::fs::remove_dir_all(&shots);
    println!("console screenshots: {}", shots.display());
    let out = Command::new(node)
        .arg(root().join("tests/console/browser.mjs"))
        .current_dir(root())
        .env("BERTH_URL", format!("http://{}", server.url()))
        .env("BERTH_ADMIN_USER", "admin")
        .env("BERTH_ADMIN_PASSWORD", ADMIN_PW)
        .env("BERTH_PROJECT", "shop")
        .env("BERTH_REPO", "shop/web")
        .env("BERTH_TAGS", "v1,v1.1")
        .env("BERTH_INDEX_REPO", "shop/multi")
        .env("BERTH_NEW_PROJECT", "made-in-console")
        .env("BERTH_ROBOT", "puller")
        .env("BERTH_RESULT", &result_file)
        .env("BERTH_SCREENSHOTS", &shots)
        .env("BERTH_DOCS_SCREENSHOT", &docs_png)
        .env("BERTH_CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("running node tests/console/browser.mjs");
    let said = format!(
        "--- browser.mjs stdout ---\n{}\n--- browser.mjs stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read(&result_file)
        .unwrap_or_else(|e| panic!("browser.mjs wrote no result ({e})\n{said}"));
    let result: Value = serde_json::from_slice(&written).expect("browser.mjs result is JSON");
    for page in [
        "projects",
        "project",
        "repository",
        "artifact",
        "robots",
        "gc",
    ] {
        let png = shots.join(format!("{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            png.display()
        );
    }

    // The project the browser created is there.
    let (st, _, p) = api("GET", "/api/v2.0/projects/made-in-console", &Value::Null);
    assert_eq!(st, 200, "{p}");

    // The robot's secret, read from the page, pulls the image.
    let robot = result["robot_name"].as_str().expect("robot_name");
    let secret = result["robot_secret"].as_str().expect("robot_secret");
    assert!(robot.contains("puller"), "{robot}");
    let pulled = work.path().join("pulled");
    skopeo_ok(
        &server,
        &[
            "copy",
            "--src-tls-verify=false",
            "--src-creds",
            &format!("{robot}:{secret}"),
            "--preserve-digests",
            &format!("docker://{}/shop/web:v1", server.url()),
            &format!("oci:{}:v1", pulled.display()),
        ],
    );
    let got = oci_layout::tagged_descriptor(&pulled, "v1");
    assert_eq!(got["digest"], image.manifest_digest.as_str());
    // A wrong secret does not.
    let bad = Command::new("skopeo")
        .args(berth_testkit::server::SKOPEO_GLOBAL)
        .args([
            "inspect",
            "--tls-verify=false",
            "--creds",
            &format!("{robot}:not-{secret}"),
            &format!("docker://{}/shop/web:v1", server.url()),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo");
    assert!(!bad.status.success(), "a wrong robot secret pulled");

    // The tag deleted with its × is gone; the other one and the index stay.
    let (st, _, a) = api(
        "GET",
        &format!(
            "/api/v2.0/projects/shop/repositories/web/artifacts/{}?with_tag=true",
            image.manifest_digest
        ),
        &Value::Null,
    );
    assert_eq!(st, 200, "{a}");
    let tags: Vec<&str> = a["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(tags, ["v1"], "{a}");
    let (st, _, _) = api(
        "GET",
        &format!(
            "/api/v2.0/projects/shop/repositories/multi/artifacts/{}",
            index.index_digest
        ),
        &Value::Null,
    );
    assert_eq!(st, 200);

    // The GC run the browser started is in the history.
    let (st, _, runs) = api("GET", "/api/v2.0/system/gc", &Value::Null);
    assert_eq!(st, 200);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs}");
    assert_eq!(runs[0]["job_kind"], "MANUAL", "{runs}");

    // Everything the browser did (above) took effect; now its own verdict.
    assert!(
        out.status.success(),
        "browser.mjs failed ({}); screenshots in {}\n{said}\n--- server stderr ---\n{}",
        out.status,
        shots.display(),
        server.stderr()
    );
    println!("{said}");

    // The quota the browser set (none left) refuses a push.
    let (st, _, summary) = api(
        "GET",
        "/api/v2.0/projects/made-in-console/summary",
        &Value::Null,
    );
    assert_eq!(st, 200, "{summary}");
    assert_eq!(summary["quota"]["hard"]["storage"], 0, "{summary}");
    let refused = Command::new("skopeo")
        .args(berth_testkit::server::SKOPEO_GLOBAL)
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            &creds,
            "--preserve-digests",
            &web,
            &format!("docker://{}/made-in-console/web:v1", server.url()),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("running skopeo");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "a push over the quota succeeded");
    assert!(
        stderr.contains("quota") || stderr.contains("DENIED") || stderr.contains("denied"),
        "the push failed, but not for the quota: {stderr}"
    );
    let (st, _, repos) = api(
        "GET",
        "/api/v2.0/projects/made-in-console/repositories",
        &Value::Null,
    );
    assert_eq!(st, 200);
    assert_eq!(repos, json!([]), "the refused push left a repository");
}
