#!/usr/bin/env bash
# Checks the dependency rules of ARCHITECTURE.md that visibility alone cannot
# express, with bazel query. Each rule: no path from the first set to the
# second. Prints the offending targets and fails if one is broken.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
check() {  # check <description> <from pattern> <forbidden pattern>
  local what=$1 from=$2 forbidden=$3
  # A pattern that matches nothing yet (a layer not written) is fine.
  bazel query --noshow_progress "$from" >/dev/null 2>&1 || return 0
  bazel query --noshow_progress "$forbidden" >/dev/null 2>&1 || return 0
  local hits
  hits=$(bazel query --noshow_progress \
    "somepath(kind('rule', $from) except attr(testonly, 1, $from), $forbidden)" 2>/dev/null || true)
  if [ -n "$hits" ]; then
    echo "layering: $what:" >&2
    echo "$hits" | sed 's/^/  /' >&2
    fail=1
  fi
}

check "raft/core must not do I/O" "//raft/core/..." "@grpc//:lib + @rocksdb//:lib + @openssl//:lib"
check "kv must not depend on raft" "//kv/..." "//raft/..."
check "kv must not depend on gRPC" "//kv/..." "@grpc//:lib"
check "the client library must not depend on server code" "//lockd/client/..." "//lockd/server/... + //kv/... + //raft/..."
check "lock logic must not depend on gRPC" "//lockd/lock/..." "@grpc//:lib + //raft/..."

[ "$fail" = 0 ] && echo "layering: ok"
exit $fail
