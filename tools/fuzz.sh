#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) and runs each for a bounded number of
# executions. Exits non-zero when a target crashes or a build fails.
#   tools/fuzz.sh [build-dir]        (default: build-fuzz)
#   OTPP_FUZZ_RUNS=200000            executions per target
#   OTPP_FUZZ_MAX_TIME=30            seconds per target at most
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-fuzz}"
runs="${OTPP_FUZZ_RUNS:-200000}"
max_time="${OTPP_FUZZ_MAX_TIME:-30}"
jobs="${OTPP_JOBS:-2}"

CC="${CC:-clang}" CXX="${CXX:-clang++}"
if ! command -v "$CXX" >/dev/null || ! "$CXX" --version | grep -qi clang; then
  CC=clang CXX=clang++
fi
export CC CXX

cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOTPP_BUILD_FUZZ=ON \
  -DOTPP_BUILD_TESTS=ON -DOTPP_BUILD_EXAMPLES=OFF -DOTPP_BUILD_BENCH=OFF -DOTPP_WERROR=ON
targets=(otpp_fuzz_frame_decoder otpp_fuzz_handshake otpp_fuzz_cluster_frames
  otpp_fuzz_registry_frames)
cmake --build "$build" -j"$jobs" --target "${targets[@]}"

status=0
for t in "${targets[@]}"; do
  bin="$(find "$build" -type f -name "$t" -perm -u+x | head -n1)"
  if [[ -z "$bin" ]]; then
    echo "fuzz: $t was not built" >&2
    exit 1
  fi
  corpus_seed="$root/tests/fuzz/corpus/${t#otpp_fuzz_}"
  work="$build/fuzz-corpus/${t#otpp_fuzz_}"
  artifacts="$build/fuzz-artifacts/${t#otpp_fuzz_}/"
  mkdir -p "$work" "$artifacts"
  echo "fuzz: $t ($runs runs, at most ${max_time}s)"
  seeds=()
  [[ -d "$corpus_seed" ]] && seeds+=("$corpus_seed")
  if ! "$bin" -runs="$runs" -max_total_time="$max_time" -max_len=4096 -print_final_stats=1 \
      -artifact_prefix="$artifacts" "$work" "${seeds[@]}" 2>"$build/$t.log"; then
    echo "fuzz: $t FAILED; see $build/$t.log and $artifacts" >&2
    tail -n 40 "$build/$t.log" >&2
    status=1
  else
    grep -E "stat::number_of_executed_units|Done" "$build/$t.log" | tail -n 2 || true
  fi
done
exit $status
