//! `berth-fuzz TARGET [FILE…]`: runs one fuzz target (`berth_fuzz::TARGETS`).
//!
//! Built with `--features afl` (by `cargo afl build`, see `scripts/fuzz.sh`)
//! it is an AFL++ persistent-mode harness reading the fuzzer's inputs.
//! Without it, it runs the target once per FILE (or on stdin), which is how
//! a crashing input is reproduced under a debugger.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_default();
    let Some(target) = berth_fuzz::target(&name) else {
        let names: Vec<&str> = berth_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!(
            "berth-fuzz: unknown target {name:?}\nusage: berth-fuzz TARGET [FILE…]; targets: {}",
            names.join(" ")
        );
        return ExitCode::from(2);
    };
    run(target, args.collect())
}

#[cfg(feature = "afl")]
fn run(target: &'static berth_fuzz::Target, _files: Vec<String>) -> ExitCode {
    let run = target.run;
    afl::fuzz!(|data: &[u8]| {
        run(data);
    });
    ExitCode::SUCCESS
}

#[cfg(not(feature = "afl"))]
fn run(target: &'static berth_fuzz::Target, files: Vec<String>) -> ExitCode {
    use std::io::Read;
    if files.is_empty() {
        let mut data = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut data) {
            eprintln!("berth-fuzz: stdin: {e}");
            return ExitCode::FAILURE;
        }
        (target.run)(&data);
        return ExitCode::SUCCESS;
    }
    for f in files {
        match std::fs::read(&f) {
            Ok(data) => {
                (target.run)(&data);
                eprintln!("berth-fuzz: {}: {f}: ok", target.name);
            }
            Err(e) => {
                eprintln!("berth-fuzz: {f}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
