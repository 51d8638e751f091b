#!/usr/bin/env bash
# Installs what lockd needs (if missing), builds it and starts one member in
# the foreground: data in ./default.lockd, clients on 2379, peers on 2380.
# Any lockd flag may follow, e.g. scripts/run.sh --name=m1 --data-dir=/var/lib/lockd
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "run: building lockd (the first build takes a few minutes)" >&2
bazel build --config=opt //lockd //lockd:lockctl
exec bazel-bin/lockd/lockd "$@"
