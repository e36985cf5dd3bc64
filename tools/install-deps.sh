#!/usr/bin/env bash
# Installs every build/test dependency of otpp from Debian packages (idempotent).
# Called by the README commands and by .ci/run; a fresh Debian 12 machine needs nothing else.
set -euo pipefail
pkgs=(build-essential cmake ninja-build clang libclang-rt-dev clang-format
      libasio-dev libmsgpack-cxx-dev libssl-dev libgtest-dev libgmock-dev libbenchmark-dev
      libcli11-dev nlohmann-json3-dev pkg-config libsqlite3-dev libcpp-httplib-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "otpp: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
