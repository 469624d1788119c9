//! The standing attack suite: every finding of the security review,
//! reproduced as an attacker with an account would try it, against the real
//! `berth` binary (started through `berth_testkit::server::TestServer`) with
//! auth on. Each module is one family of attacks; each test fails on the
//! release that had the finding and passes once it is prevented.
//!
//! The threat model and how each attack is prevented by design:
//! `docs/security.md`.

mod blob_bytes;
mod exhaustion;
mod limits;
mod parsers;
mod proxy_cache;
mod refcount;
mod revocation;
mod routes;
mod secrets;
mod tokens;
mod upload_sessions;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_testkit::server::header;
use serde_json::Value;

/// The `Authorization` value of Basic credentials `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// A response, with the request it answers for messages.
pub struct Resp {
    pub what: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.what, self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn challenge(&self) -> &str {
        self.header("www-authenticate").unwrap_or("")
    }

    /// The `error_description` of a Bearer challenge.
    pub fn error_description(&self) -> Option<&str> {
        let c = self.challenge();
        let start = c.find("error_description=\"")? + "error_description=\"".len();
        let len = c[start..].find('"')?;
        Some(&c[start..start + len])
    }

    #[track_caller]
    pub fn expect(&self, status: u16) -> &Resp {
        assert_eq!(self.status, status, "{}: {}", self.what, self.text());
        self
    }

    /// ChartMuseum's error body: `{"error": "…"}` and nothing else.
    #[track_caller]
    pub fn chart_error(&self, status: u16) -> String {
        self.expect(status);
        let v = self.json();
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: not a chart error: {v}", self.what))
            .to_owned();
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(1),
            "{}: {v}",
            self.what
        );
        msg
    }

    /// Harbor's `Errors` body: `{"errors":[{"code","message"}]}`, the
    /// message saying what failed.
    #[track_caller]
    pub fn harbor_error(&self, status: u16, code: &str) -> String {
        self.expect(status);
        let v = self.json();
        let e = &v["errors"][0];
        assert_eq!(e["code"], code, "{}: {v}", self.what);
        assert!(
            e.get("detail").is_none(),
            "{}: not Harbor's shape: {v}",
            self.what
        );
        e["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no message: {v}", self.what))
            .to_owned()
    }
}

pub use berth_testkit::chart_tgz;
