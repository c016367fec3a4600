#!/usr/bin/env bash
# A kiln checkpoint opens with the real `safetensors` Python package, its metadata
# says format=pt, and every tensor equals the values kiln itself reads
# (`kiln inspect --dump`, printed with 9 significant digits: exact for float32).
set -euo pipefail
PY=${KN_PYTHON:-python3}
if ! "$PY" -c "import safetensors, numpy" 2>/dev/null; then
  if [ "${KN_REQUIRE_PY:-0}" = 1 ]; then
    echo "FAIL: the Python packages safetensors and numpy are required (scripts/test.sh installs them)"; exit 1
  fi
  echo "SKIP: Python safetensors/numpy not installed"; exit 77
fi
T=${KN_TMP:-/tmp/kiln-tests/cli_safetensors}
rm -rf "$T"; mkdir -p "$T/data"; cd "$T"
"$PY" - <<'PY'
import gzip, struct, random
random.seed(3)
n, r, c = 300, 10, 10
imgs = bytes(random.randrange(256) for _ in range(n * r * c))
labs = bytes(random.randrange(10) for _ in range(n))
for split in ("train", "t10k"):
    with gzip.open(f"data/{split}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, r, c) + imgs)
    with gzip.open(f"data/{split}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labs)
PY
cat > cfg.ini <<'INI'
[data]
dir = data
batch_size = 20
[train]
epochs = 1
[optimizer]
type = adamw
[conv1]
type = conv2d
out_channels = 3
kernel = 3
[bn1]
type = batchnorm
activation = relu
[flat]
type = flatten
[fc1]
type = linear
out = 10
INI
"$KN_BIN" train cfg.ini --run-dir run --threads 1 --quiet
CK=run/checkpoints/best.safetensors
names=$("$PY" -c "
from safetensors import safe_open
with safe_open('$CK', framework='numpy') as f:
    print(' '.join(f.keys()))")
for name in $names; do "$KN_BIN" inspect "$CK" --dump "$name" > "dump_$name.txt"; done
"$PY" - "$CK" <<'PY'
import sys, numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file
path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="numpy") as f:
    meta = f.metadata()
assert meta["format"] == "pt", meta.get("format")
for key in ("kiln_crc32", "step", "config", "kind"):
    assert key in meta, f"metadata lacks {key}"
want = {"conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
        "fc1.weight", "fc1.bias", "optimizer.m.fc1.weight", "optimizer.v.fc1.weight"}
missing = want - set(tensors)
assert not missing, f"missing tensors {missing}"
assert tensors["conv1.weight"].shape == (3, 1, 3, 3), tensors["conv1.weight"].shape
bad = 0
for name, arr in tensors.items():
    assert arr.dtype == np.float32, (name, arr.dtype)
    kiln = np.array([float(x) for x in open(f"dump_{name}.txt")], dtype=np.float32)
    if kiln.shape[0] != arr.size or not np.array_equal(kiln, arr.reshape(-1)):
        print(f"MISMATCH {name}"); bad += 1
print(f"{len(tensors)} tensors checked with safetensors {__import__('safetensors').__version__}: {bad} mismatches")
sys.exit(1 if bad else 0)
PY
# A training checkpoint written by another program (no kiln checksum) resumes, with a
# warning that its tensors and metadata are unverified
status=0
KILN_TEST_HOOK=step:6:kill "$KN_BIN" train cfg.ini --run-dir run2 --threads 1 --quiet --set checkpoint.every_steps=5 || status=$?
[ "$status" = 137 ] || { echo "FAIL: run2 was not killed at step 6 (exit $status)"; exit 1; }
"$PY" - run2/checkpoints/step-000000005.safetensors <<'PY'
import sys
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
path = sys.argv[1]
tensors = load_file(path)
with safe_open(path, framework="numpy") as f:
    meta = dict(f.metadata())
for k in ("kiln_file_crc32", "kiln_crc32"):
    meta.pop(k, None)
save_file(tensors, path, metadata=meta)
PY
"$KN_BIN" resume run2 --threads 1 --no-progress > resume2.out 2> resume2.err || { echo "FAIL: resume of a CRC-less checkpoint"; cat resume2.err; exit 1; }
grep -q "carries no kiln checksum" resume2.err || { echo "FAIL: no warning for a checkpoint without kiln's checksum"; cat resume2.err; exit 1; }
grep -q "resuming from run2/checkpoints/step-000000005.safetensors" resume2.out || { echo "FAIL: did not resume from the rewritten step 5"; cat resume2.out; exit 1; }
echo "a checkpoint rewritten by Python's safetensors (no kiln checksum) resumed with a warning"
