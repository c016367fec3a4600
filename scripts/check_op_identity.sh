#!/usr/bin/env bash
# Op identity is asked through the op's id (op->id == KN_OP_*) or flags (kn_op_has,
# KN_OPF_* in src/graph/graph.h), never by comparing an op's address or name, outside
# the op definitions (src/ops/) and the graph passes (src/graph/fuse.c). This lists every
# such comparison in src/ and fails if there is one. Emitting an op by name
# (kn_g_op(ctx, g, &kn_op_conv2d, ...)) is construction, not a comparison, and is fine.
# It also checks the backend boundary (src/backend/backend.h): no file in src/ops/
# includes a backend header, and above the backends (src/graph, src/nn, src/train,
# src/api, src/data, src/optim, src/config, src/core) only the interface
# backend/backend.h is included, never one backend's own headers.
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
inc_ops=$(grep -nHE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"backend/' src/ops/*.c src/ops/*.h || true)
if [ -n "$inc_ops" ]; then
  echo "check_op_identity: an op definition includes a backend header; an op's kernels belong in its" >&2
  echo "backend's directory (src/backend/cpu/kernels/), registered by op id:" >&2
  echo "$inc_ops" >&2
  exit 1
fi
above=$(find src -name '*.c' -o -name '*.h' | grep -v '^src/backend/' | grep -v '^src/ops/' | sort)
inc_above=$(grep -nHE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"backend/' $above | grep -v '"backend/backend\.h"' || true)
if [ -n "$inc_above" ]; then
  echo "check_op_identity: code above the backends includes one backend's header; ask the backend" >&2
  echo "interface (g->be, src/backend/backend.h) instead:" >&2
  echo "$inc_above" >&2
  exit 1
fi
echo "check_op_identity: ok (no op address or name comparisons outside src/ops/ and the graph passes; no backend header in src/ops/; only backend/backend.h above the backends)"
