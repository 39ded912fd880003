#!/usr/bin/env bash
# A bounded run of every cargo-fuzz target in fuzz/ (fuzz/README.md says what each checks).
# Installs cargo-fuzz if it is missing, builds all targets once (a second run with nothing
# changed rebuilds nothing), runs each for FUZZ_SECONDS (default 20) on its corpus under
# fuzz/corpus/ (gitignored; committed seeds come from fuzz/seeds/), and ends with the line
# `fuzz: N passed, M failed`. Exit status is non-zero if a target found a crash; the input
# that crashed it is kept under fuzz/artifacts/<target>/ and the command that replays it is
# printed. Longer runs: FUZZ_SECONDS=3600 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${FUZZ_SECONDS:-20}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "FUZZ_SECONDS must be a whole number of seconds above 0, not '$seconds'" >&2
  exit 2
fi

# cargo fuzz needs nightly rustc flags. Use the nightly toolchain where rustup has one; a
# machine without it cannot download one, so fall back to the default toolchain with
# RUSTC_BOOTSTRAP=1, which accepts the same flags.
if rustup run nightly rustc --version >/dev/null 2>&1; then
  toolchain=(+nightly)
else
  echo "fuzz: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  toolchain=()
fi
cargo_fuzz=(cargo "${toolchain[@]}" fuzz)
# How to type that command, for the replay hints printed on a crash.
shown=${RUSTC_BOOTSTRAP:+RUSTC_BOOTSTRAP=1 }${cargo_fuzz[*]}
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# One build of every target; `cargo fuzz run` below then finds them up to date, because it
# builds with exactly these (default) options.
"${cargo_fuzz[@]}" build
mapfile -t targets < <("${cargo_fuzz[@]}" list)

logs=$root/fuzz/target/logs
mkdir -p "$logs"
passed=0
failed=0
for target in "${targets[@]}"; do
  corpus=$root/fuzz/corpus/$target
  artifacts=$root/fuzz/artifacts/$target
  log=$logs/$target.log
  mkdir -p "$corpus" "$artifacts"
  # Extra inputs: committed seeds (read only: libFuzzer adds new finds to the first
  # directory, the corpus) and a dictionary of the input format's tokens.
  extra_dirs=()
  [[ -d fuzz/seeds/$target ]] && extra_dirs+=("$root/fuzz/seeds/$target")
  dict=()
  [[ -f fuzz/$target.dict ]] && dict+=("-dict=$root/fuzz/$target.dict")
  started=$(mktemp)
  echo "fuzz: $target for ${seconds}s (log: ${log#"$root"/})"
  if "${cargo_fuzz[@]}" run "$target" "$corpus" "${extra_dirs[@]}" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1 "${dict[@]}" >"$log" 2>&1; then
    passed=$((passed + 1))
    # libFuzzer's last status line: "#runs DONE cov: N ft: N corp: N/Nb ... exec/s: N ...".
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    runs=$(sed -nE 's/^stat::number_of_executed_units:[[:space:]]*([0-9]+).*/\1/p' "$log")
    speed=$(sed -nE 's/^stat::average_exec_per_sec:[[:space:]]*([0-9]+).*/\1/p' "$log")
    cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
    features=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.* corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
    echo "fuzz: $target ok: ${runs:-?} runs, ${speed:-?} exec/s, cov ${cov:-?}, ft ${features:-?}, corpus ${corp:-?}"
  else
    failed=$((failed + 1))
    echo "fuzz: $target FAILED (whole log: ${log#"$root"/}); what went wrong:" >&2
    # The panic message (or libFuzzer's report), then the input as the target decoded it.
    awk '/panicked at|==[0-9]+== ?ERROR/ {on = 1}
         on && (/^note: / || /^stack backtrace:/ || /^==[0-9]+==.*(deadly|Shadow|Register)/ || ++n > 30) {exit}
         on' "$log" >&2
    sed -n '/^Output of `std::fmt::Debug`:/,/^Reproduce with:/p' "$log" | head -n 60 >&2
    artifact=$(find "$artifacts" -type f -newer "$started" | head -n 1)
    if [[ -n $artifact ]]; then
      rel=${artifact#"$root"/}
      echo "fuzz: $target crashed on $rel" >&2
      echo "  replay:   $shown run $target $rel" >&2
      echo "  as Rust:  $shown fmt $target $rel" >&2
      echo "  minimise: $shown tmin $target $rel" >&2
    fi
  fi
  rm -f "$started"
done

echo "fuzz: $passed passed, $failed failed"
((failed == 0))
