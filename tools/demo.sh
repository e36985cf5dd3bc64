#!/usr/bin/env bash
# Installs dependencies, builds (Release) and runs the main demo.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/install-deps.sh
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DOTPP_BUILD_TESTS=OFF \
  -DOTPP_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j "$(nproc)" --target otpp_demo
./build/demo/examples/demo/otpp_demo
