//! Replays every fuzz target's seed corpus (`corpus/<target>/`) and every
//! crash the fuzzer has found (`regressions/<target>/`, each fixed) in the
//! ordinary test run, so they run on every `cargo test` without cargo-afl.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

fn replay(name: &str) {
    let target = berth_fuzz::target(name).expect("a known target");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = files(&root.join("corpus").join(name));
    assert!(!seeds.is_empty(), "no seed corpus for target {name}");
    let regressions = files(&root.join("regressions").join(name));
    for f in seeds.iter().chain(&regressions) {
        let data = std::fs::read(f).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| (target.run)(&data));
        assert!(outcome.is_ok(), "target {name} panicked on {}", f.display());
    }
}

macro_rules! replay {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(stringify!($name));
            }
        )*

        /// Every target has its replay test above.
        #[test]
        fn every_target_is_replayed() {
            let replayed = [$(stringify!($name)),*];
            for t in berth_fuzz::TARGETS {
                assert!(replayed.contains(&t.name), "target {} is not replayed", t.name);
            }
        }
    };
}

replay!(
    digest,
    names,
    range,
    path,
    manifest,
    credentials,
    token,
    token_request,
    chart,
    multipart,
    harbor
);

/// The token target's seed `valid` verifies (so the fuzzer starts from a
/// token that reaches the claims checks, not only from refusals).
#[test]
fn token_seed_verifies() {
    use berth_formats::token::TokenKey;
    use berth_fuzz::targets::{TOKEN_AUDIENCE, TOKEN_ISSUER, TOKEN_NOW, TOKEN_SEED};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/token/valid");
    let token = std::fs::read_to_string(path).expect("read the token seed");
    let key = TokenKey::from_seed(&TOKEN_SEED);
    let verified = key.verify(token.trim(), TOKEN_ISSUER, TOKEN_AUDIENCE, TOKEN_NOW);
    assert!(verified.is_ok(), "{verified:?}");
}
