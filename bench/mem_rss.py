#!/usr/bin/env python3
"""Predicted vs measured peak resident memory of `kiln train`.

For each example config and batch size: the prediction is `kiln plan --json`
(process.total), the measurement the peak RSS (ru_maxrss from wait4) of a short
`kiln train` run (max_steps steps, then the validation and test passes, checkpoint
writes included). The prediction is an upper bound: it must be at least the
measured peak and at most 5% above it (also on the AVX2 path: KN_MAX_ISA=avx2).
Also prints the baseline each run implies: measured peak minus every predicted part
except the baseline (which includes the prediction's margin).

    python3 bench/mem_rss.py [--kiln build/kiln] [--steps 30] [--threads 2]
"""
import argparse, json, os, subprocess, sys, tempfile

def run_rss(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_maxrss * 1024, out.decode(), err.decode(), p.returncode

def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--kiln", default=os.path.join(root, "build", "kiln"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", nargs="*", default=["examples/fashion_mnist_mlp.ini", "examples/fashion_mnist_cnn.ini"])
    ap.add_argument("--batches", nargs="*", type=int, default=[64, 512])
    ap.add_argument("--set", action="append", default=[], help="extra SECTION.KEY=VALUE for both plan and train")
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    rows = []
    print("%-32s %6s %12s %12s %8s %12s" % ("config", "batch", "predicted", "measured", "meas/pred", "baseline"))
    for cfg in a.configs:
        path = cfg if os.path.isabs(cfg) else os.path.join(root, cfg)
        for b in a.batches:
            sets = []
            for s in a.set:
                sets += ["--set", s]
            plan = subprocess.run([a.kiln, "plan", path, "--batch", str(b), "--threads", str(a.threads), "--json"] + sets,
                                  capture_output=True, text=True, check=True)
            pj = json.loads(plan.stdout)
            pred = pj["process"]["total"]
            with tempfile.TemporaryDirectory() as d:
                rss, out, err, rc = run_rss([a.kiln, "train", path, "--set", "data.batch_size=%d" % b,
                                             "--set", "train.max_steps=%d" % a.steps, "--set", "train.epochs=1",
                                             "--threads", str(a.threads), "--quiet", "--run-dir", os.path.join(d, "run")] + sets)
            if rc != 0:
                print("kiln train failed:", err, file=sys.stderr)
                sys.exit(1)
            base = rss - (pred - pj["process"]["baseline"])
            rows.append({"config": cfg, "batch": b, "predicted": pred, "measured": rss, "ratio": rss / pred,
                         "implied_baseline": base, "process": pj["process"]})
            print("%-32s %6d %9.1f MiB %9.1f MiB %8.3f %9.1f MiB" % (cfg, b, pred / 2**20, rss / 2**20, rss / pred, base / 2**20))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r for r in rows if not (r["predicted"] >= r["measured"] and r["predicted"] <= 1.05 * r["measured"])]
    print("every prediction >= measured and <= 1.05 x measured: %s" % ("yes" if not bad else "NO"))
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
