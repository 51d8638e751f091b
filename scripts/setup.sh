#!/usr/bin/env bash
# Installs exactly what lockd needs to build, run and test, from Debian 12's
# packages. Idempotent and non-interactive: when everything is present it
# changes nothing and asks no package server.
set -euo pipefail

packages=(
  # Build
  bazel-bootstrap g++ pkg-config clang-format
  # Libraries (headers + pkg-config files)
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  librocksdb-dev libabsl-dev libssl-dev zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev
  # Test drivers and the comparison baseline: Debian's etcd 3.4, and
  # Patroni, whose etcd v3 client drives the JSON gateway
  etcd-client etcd-server patroni
  # Tools the tests use
  curl iproute2 procps psmisc
  # The comparison with etcd (bench/compare): its tables and charts
  jq gnuplot-nox
)

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root, or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Node.js runs the npm `etcd3` client in tests. Any Node.js >= 12 works; use
# Debian's unless one is already installed.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: installing nodejs and npm" >&2
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq nodejs npm >/dev/null
fi

# The npm etcd3 client the tests drive lockd with, at the version
# tests/node/package-lock.json pins (from the npm registry, once).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
want="$(node -p "require('$root/tests/node/package-lock.json').packages['node_modules/etcd3'].version")"
have="$(node -p "try { require('$root/tests/node/node_modules/etcd3/package.json').version } catch (e) { '' }")"
if [ "$want" != "$have" ]; then
  echo "setup: installing the npm etcd3 client $want into tests/node" >&2
  (cd "$root/tests/node" && npm ci --no-audit --no-fund --loglevel=error)
fi
