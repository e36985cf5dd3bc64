#!/usr/bin/env bash
# Installs dependencies, builds (Release) and runs the main example: the distributed worker pool
# (examples/worker_pool). The earlier demo, examples/demo, is built and tested as an example.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash tools/install-deps.sh
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DOTPP_BUILD_TESTS=OFF \
  -DOTPP_BUILD_BENCH=OFF >/dev/null
cmake --build build/demo -j "$(nproc)" --target otpp_worker_pool
./build/demo/examples/worker_pool/otpp_worker_pool
