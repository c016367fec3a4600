#!/usr/bin/env bash
# kiln predict (issue 11): on Fashion-MNIST test images it writes predictions from which
# an independent script (reading the CSV and the IDX labels, no kiln code) computes exactly
# the accuracy kiln eval prints; --logits writes float32 round-trip values whose argmax and
# softmax are the class and probabilities of a plain run; typed CSV runs (breast cancer:
# classes, diabetes: regression) predict on their files; bad input files are clear errors.
set -euo pipefail
PY=${KN_PYTHON:-python3}
if ! "$PY" -c "import numpy" 2>/dev/null; then
  if [ "${KN_REQUIRE_PY:-0}" = 1 ]; then
    echo "FAIL: the Python package numpy is required (scripts/test.sh installs it)"; exit 1
  fi
  echo "SKIP: Python numpy not installed"; exit 77
fi
FM=/usr/share/datasets/fashion-mnist
SK=/usr/lib/python3/dist-packages/sklearn/datasets/data
for f in "$FM/t10k-images-idx3-ubyte.gz" "$SK/breast_cancer.csv" "$SK/diabetes_data_raw.csv.gz"; do
  [ -f "$f" ] || { echo "SKIP: $f not installed"; exit 77; }
done
SRC=${KN_SRC_DIR:-$(cd "$(dirname "$0")/.." && pwd)}
T=${KN_TMP:-/tmp/kiln-tests/cli_predict}
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*"; exit 1; }

# ---- Fashion-MNIST: a test file of the first 1990 test images (the last eval batch is padded)
"$PY" - "$FM" <<'PY'
import gzip, struct, sys
fm = sys.argv[1]
n = 1990
img = gzip.open(f"{fm}/t10k-images-idx3-ubyte.gz").read()
lab = gzip.open(f"{fm}/t10k-labels-idx1-ubyte.gz").read()
_, _, r, c = struct.unpack(">IIII", img[:16])
with gzip.open("test-images.gz", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, r, c) + img[16:16 + n * r * c])
with gzip.open("test-labels.gz", "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + lab[8:8 + n])
# bad inputs: 20x20 images; the test images cut short (a truncated gzip)
with gzip.open("small-images.gz", "wb") as f:
    f.write(struct.pack(">IIII", 0x803, 5, 20, 20) + bytes(5 * 400))
data = open("test-images.gz", "rb").read()
open("truncated-images.gz", "wb").write(data[: len(data) // 2])
PY
"$KN_BIN" train "$SRC/examples/fashion_mnist_mlp.ini" --run-dir fm --threads 2 --quiet \
  --set data.test_images="$T/test-images.gz" --set data.test_labels="$T/test-labels.gz" \
  --set data.limit_train=4000 --set train.epochs=1 --set train.max_steps=40
"$KN_BIN" eval fm --threads 2 > eval.txt
cat eval.txt
"$KN_BIN" predict fm test-images.gz -o preds.csv --threads 2
"$KN_BIN" predict fm test-images.gz --output logits.csv --logits
[ ! -e preds.csv.tmp ] || fail "predict left preds.csv.tmp behind"
"$PY" - <<'PY'
import csv, gzip, math, re, struct
import numpy as np
raw = gzip.open("test-labels.gz").read()
magic, n = struct.unpack(">II", raw[:8])
labels = list(raw[8:8 + n])
rows = list(csv.reader(open("preds.csv")))
assert rows[0] == ["index", "class"] + [f"prob_{k}" for k in range(10)], rows[0]
rows = rows[1:]
assert len(rows) == n, (len(rows), n)
assert [int(r[0]) for r in rows] == list(range(n))
correct = sum(int(r[1]) == y for r, y in zip(rows, labels))
mine = "%.2f" % (100.0 * correct / n)
ev = re.search(r"accuracy ([0-9.]+)%", open("eval.txt").read()).group(1)
print(f"independent: {correct}/{n} = {mine}%, kiln eval: {ev}%")
assert mine == ev, (mine, ev)
for r in rows:
    p = [float(v) for v in r[2:]]
    assert abs(sum(p) - 1) < 1e-6, r
lg = list(csv.reader(open("logits.csv")))
assert lg[0] == ["index", "class"] + [f"logit_{k}" for k in range(10)], lg[0]
lg = lg[1:]
assert len(lg) == n
for r, q in zip(lg, rows):
    z = [float(v) for v in r[2:]]
    for s in r[2:]:  # float32 values, written with round-trip precision
        assert "%.9g" % np.float32(float(s)) == s, s
    arg = max(range(10), key=lambda k: (z[k], -k))  # the first maximum
    assert int(r[1]) == arg == int(q[1]), (r, q)
    mx = max(z)
    e = [math.exp(v - mx) for v in z]
    for k in range(10):
        assert abs(e[k] / sum(e) - float(q[2 + k])) <= 1e-6, (k, r, q)
print("fashion-mnist: ok")
PY

# ---- breast cancer (typed CSV, classes): the original file (preamble, label column) and a
# features-only copy give the same predictions
"$KN_BIN" train "$SRC/examples/breast_cancer.ini" --run-dir bc --threads 2 --quiet
"$KN_BIN" predict bc "$SK/breast_cancer.csv" -o bc.csv
"$PY" - "$SK/breast_cancer.csv" <<'PY'
import sys
lines = open(sys.argv[1]).read().splitlines()
with open("bc-features.csv", "w") as f:
    f.write(lines[0] + "\n")
    for l in lines[1:]:
        if l.strip(): f.write(",".join(l.split(",")[:-1]) + "\n")
with open("bc-5cols.csv", "w") as f:
    f.write(lines[0] + "\n")
    for l in lines[1:6]: f.write(",".join(l.split(",")[:5]) + "\n")
PY
"$KN_BIN" predict bc bc-features.csv -o bc2.csv
cmp bc.csv bc2.csv || fail "predictions from the features-only CSV differ from those of the training file's columns"
"$PY" - "$SK/breast_cancer.csv" <<'PY'
import csv, sys
labels = [int(l.split(",")[-1]) for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
rows = list(csv.reader(open("bc.csv")))
assert rows[0] == ["index", "class", "prob_0", "prob_1"], rows[0]
rows = rows[1:]
assert len(rows) == 569 == len(labels), len(rows)
assert {r[1] for r in rows} <= {"0", "1"}
acc = sum(int(r[1]) == y for r, y in zip(rows, labels)) / len(rows)
print(f"breast cancer: accuracy {acc:.4f} on all 569 rows")
assert acc > 0.9, acc
PY

# ---- diabetes (typed CSV, regression; targets in another file)
"$KN_BIN" train "$SRC/examples/diabetes.ini" --run-dir db --threads 2 --quiet 2>/dev/null
"$KN_BIN" predict db "$SK/diabetes_data_raw.csv.gz" -o db.csv
"$PY" - "$SK/diabetes_target.csv.gz" <<'PY'
import csv, gzip, sys
y = [float(v) for v in gzip.open(sys.argv[1], "rt").read().split()]
rows = list(csv.reader(open("db.csv")))
assert rows[0] == ["index", "value"], rows[0]
p = [float(r[1]) for r in rows[1:]]
assert len(p) == len(y) == 442, (len(p), len(y))
m = sum(y) / len(y)
r2 = 1 - sum((a - b) ** 2 for a, b in zip(p, y)) / sum((a - m) ** 2 for a in y)
print(f"diabetes: R^2 {r2:.4f} on all 442 rows")
assert r2 > 0.3, r2
PY

# ---- bad inputs: a clear message naming the file, exit status 1, no output file
expect_error() { # PATTERN ARGS...
  local pat=$1; shift
  set +e
  "$KN_BIN" predict "$@" -o bad.csv > err.out 2> err.txt
  local st=$?
  set -e
  [ "$st" = 1 ] || fail "kiln predict $*: exit $st (expected 1): $(cat err.txt)"
  grep -q "kiln: error: .*$pat" err.txt || fail "kiln predict $*: message lacks '$pat': $(cat err.txt)"
  [ ! -e bad.csv ] && [ ! -e bad.csv.tmp ] || fail "kiln predict $*: left an output file"
  echo "ok: $(head -c 300 err.txt)"
}
expect_error "missing.idx.gz.*No such file" fm missing.idx.gz
expect_error "small-images.gz.*28x28" fm small-images.gz
expect_error "truncated-images.gz" fm truncated-images.gz
expect_error "bc-5cols.csv has 5 columns, but the model .* takes 30 features.*exactly 30 feature columns" bc bc-5cols.csv
expect_error "breast_cancer.csv has 1 column, but the model .* takes 10 features" db "$SK/breast_cancer.csv"
# a model without the dataset check: 20x20 images do not fit its first linear layer
sed 's/^dataset = fashion-mnist/dataset = idx\ndir = \/usr\/share\/datasets\/fashion-mnist/' "$SRC/examples/fashion_mnist_mlp.ini" > idx_mlp.ini
"$KN_BIN" train idx_mlp.ini --run-dir idx --threads 2 --quiet --set data.limit_train=500 --set data.limit_test=100 \
  --set train.epochs=1 --set train.max_steps=2
expect_error "small-images.gz: samples of shape .1,20,20. do not fit the model.*fc1.weight" idx small-images.gz
echo "PASS"
