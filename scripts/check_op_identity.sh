#!/usr/bin/env bash
# Op identity is asked through the op's flags (kn_op_has, KN_OPF_* in src/graph/graph.h),
# never by comparing an op's address or name, outside the op definitions (src/ops/) and
# the graph passes (src/graph/fuse.c). This lists every such comparison in src/ and
# fails if there is one. Emitting an op by name (kn_g_op(ctx, g, &kn_op_conv2d, ...))
# is construction, not a comparison, and is fine.
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(find src -name '*.c' -o -name '*.h' | grep -v '^src/ops/' | grep -v '^src/graph/fuse\.c$' | sort)
# address comparisons: x == &kn_op_foo, &kn_op_foo != x
addr='([!=]=[[:space:]]*&[[:space:]]*kn_op_[a-z0-9_]+)|(&[[:space:]]*kn_op_[a-z0-9_]+[[:space:]]*[!=]=)'
# name comparisons: strcmp/strncmp/strstr/strcasecmp over an op's name
name='(str(n)?(case)?cmp|strstr|memcmp)[[:space:]]*\([^;]*op->name'
found=$(grep -nHE "$addr|$name" $files || true)
if [ -n "$found" ]; then
  echo "check_op_identity: op identity asked by address or name outside src/ops/ and the graph passes;" >&2
  echo "give the op a flag (KN_OPF_* in src/graph/graph.h) and ask kn_op_has(op, flag) instead:" >&2
  echo "$found" >&2
  exit 1
fi
echo "check_op_identity: ok (no op address or name comparisons outside src/ops/ and the graph passes)"
