#!/usr/bin/env bash
# Installs dependencies, builds and runs every test: the warnings-as-errors build, the installed
# package consumed by an outside project, ASan+UBSan, TSan, and bounded fuzzing.
#   tools/test.sh            # everything (what CI runs)
#   OTPP_TEST_QUICK=1 tools/test.sh   # only the main build and its tests
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/install-deps.sh
jobs="${OTPP_JOBS:-$(nproc)}"
export CTEST_OUTPUT_ON_FAILURE=1

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%T)"; }

step "build (RelWithDebInfo, -Werror)"
cmake -S . -B build/ci -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOTPP_WERROR=ON >/dev/null
cmake --build build/ci -j "$jobs"
step "tests"
ctest --test-dir build/ci -j "$jobs" --timeout 300

if [ -n "${OTPP_TEST_QUICK:-}" ]; then exit 0; fi

step "install + outside consumer project"
prefix="$(mktemp -d)"
trap 'rm -rf "$prefix"' EXIT
cmake --install build/ci --prefix "$prefix" >/dev/null
cmake -S tests/package/consumer -B build/consumer -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build/consumer -j "$jobs"
./build/consumer/otpp_consumer

for san in address thread; do
  step "tests under sanitizer: $san"
  cmake -S . -B "build/$san" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DOTPP_WERROR=ON \
    -DOTPP_SANITIZE="$san" -DOTPP_BUILD_BENCH=OFF -DOTPP_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "build/$san" -j "$jobs"
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    ctest --test-dir "build/$san" -j "$jobs" --timeout 600
done

# Never skipped: a fuzz step that cannot build or run fails the whole run.
step "fuzzing (bounded)"
bash tools/fuzz.sh build/fuzz

step "all tests passed"
