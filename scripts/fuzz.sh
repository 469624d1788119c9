#!/usr/bin/env bash
# Bounded coverage-guided fuzzing of every parser of untrusted bytes
# (server/fuzz, docs/security.md "Fuzzing"): builds the targets with
# AFL++ instrumentation (cargo-afl, stable toolchain) and runs each for
# SECONDS (default 60), two at a time. Fails, naming each crashing or
# hanging input, if AFL++ found any; a found input becomes a regression
# test by copying it to server/fuzz/regressions/<target>/ with the fix.
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]
#
# cargo-afl is installed into ~/.cargo/bin if missing; the instrumented
# build has its own target dir (~/.cache/berth/fuzz-target), so it never
# invalidates the main one, and builds only the parser crates (no RocksDB).
# Findings and AFL++'s queues of each run are kept in
# ~/.cache/berth/fuzz-out/<target>/ until the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

seconds="${1:-60}"
shift || true
cache="$HOME/.cache/berth"
export CARGO_TARGET_DIR="$cache/fuzz-target"
out_root="$cache/fuzz-out"
fuzz_dir=server/fuzz

afl_version=0.18.2
if [[ "$(cargo afl --version 2>/dev/null)" != "cargo-afl $afl_version"* ]]; then
    echo "berth: installing cargo-afl $afl_version (builds AFL++; needs cc and make)" >&2
    cargo install --locked --force cargo-afl --version "$afl_version"
fi
# AFL++'s runtime for this rustc; cargo-afl builds it at install time, and
# refuses (harmlessly) to build it twice.
cargo afl config --build >/dev/null 2>&1 || true

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(ls "$fuzz_dir/corpus")
fi

cargo afl build --release --locked -p berth-fuzz --features afl
bin="$CARGO_TARGET_DIR/release/berth-fuzz"

# No core-dump handler, CPU governor or terminal in CI; the UI is off.
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1

run() {
    local t="$1" dict=()
    [[ -f "$fuzz_dir/dict/$t.dict" ]] && dict=(-x "$fuzz_dir/dict/$t.dict")
    rm -rf "${out_root:?}/$t"
    mkdir -p "$out_root/$t"
    # -V: stop after SECONDS; -t: an input running past 1 s is a hang;
    # -m: 1 GiB of address space, so an allocation blowup is a crash.
    cargo afl fuzz -V "$seconds" -t 1000 -m 1024 "${dict[@]}" \
        -i "$fuzz_dir/corpus/$t" -o "$out_root/$t" -- "$bin" "$t" \
        >"$out_root/$t.log" 2>&1 || {
        echo "berth: fuzz $t: afl-fuzz failed (log: $out_root/$t.log)" >&2
        tail -20 "$out_root/$t.log" >&2
        return 1
    }
}

status=0
# Two at a time (two cores).
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for t in "${targets[@]:i:2}"; do
        run "$t" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || status=1
    done
done

found=0
for t in "${targets[@]}"; do
    for kind in crashes hangs; do
        for f in "$out_root/$t"/default/"$kind"/id:*; do
            [[ -e "$f" ]] || continue
            echo "berth: fuzz $t: $kind: $f" >&2
            found=1
        done
    done
    execs=$(awk -F': *' '$1 ~ /execs_done/ { print $2 }' "$out_root/$t/default/fuzzer_stats" 2>/dev/null || true)
    echo "berth: fuzz $t: ${seconds}s, ${execs:-?} executions"
done
if ((found)); then
    echo "berth: fuzzing found crashing or hanging inputs (above); reproduce with" >&2
    echo "  $bin TARGET < FILE" >&2
    echo "then copy FILE to $fuzz_dir/regressions/TARGET/ with the fix (replayed by cargo test)" >&2
    exit 1
fi
exit "$status"
