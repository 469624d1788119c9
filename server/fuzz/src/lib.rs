//! Coverage-guided fuzz targets for every parser of untrusted bytes.
//!
//! One target per parser family ([`TARGETS`]); each takes the fuzzer's
//! bytes, runs the parser, and asserts the parser's contract where it is
//! cheap to state: whatever parses renders back to what parses the same
//! (digests, names, ranges, paths, credentials), accepted values keep
//! their invariants (a manifest's blobs have sizes, a multipart field is a
//! slice of its body, a verified token is unexpired), errors quote a
//! bounded amount of input, and nothing panics. A panic is a crash for
//! AFL++ and a failed test for `cargo test`.
//!
//! The binary (`src/main.rs`) runs one target: under AFL++ when built
//! with `cargo afl build --features afl` (`scripts/fuzz.sh`), otherwise on
//! files or stdin. `tests/corpus.rs` replays every target's seed corpus
//! (`corpus/<target>/`) and every crash found so far
//! (`regressions/<target>/`) in the ordinary test run. See
//! `docs/security.md`, "Fuzzing".

pub mod targets;

/// A fuzz target: its name (the corpus directory) and its entry point.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "digest",
        run: targets::digest,
    },
    Target {
        name: "names",
        run: targets::names,
    },
    Target {
        name: "range",
        run: targets::range,
    },
    Target {
        name: "path",
        run: targets::path,
    },
    Target {
        name: "manifest",
        run: targets::manifest,
    },
    Target {
        name: "credentials",
        run: targets::credentials,
    },
    Target {
        name: "token",
        run: targets::token,
    },
    Target {
        name: "chart",
        run: targets::chart,
    },
    Target {
        name: "multipart",
        run: targets::multipart,
    },
    Target {
        name: "harbor",
        run: targets::harbor,
    },
    Target {
        name: "token_request",
        run: targets::token_request,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
