#!/usr/bin/env python3
"""Old kiln against new kiln on this machine, interleaved in one session.

    python3 bench/ab.py --old OLD/kiln_bench --new build/kiln_bench [--rounds 3] [--seconds 3]

Runs `kiln_bench train` (bench/kiln_bench.c) for every configuration of bench/bench.sh
(the MLP and the CNN, batch 64 and 256, 1 thread and all cores), old and new one after
the other in each round, the order swapped every round so that neither always runs on
a warmer machine; prints per configuration the median training and inference samples/s
of each over the rounds and new/old. Exits 1 when a median training ratio is below
--min-ratio (default 0.97), the acceptance bar for a change that must not cost speed.

Build the old binary from the commit before the change, e.g.
    git worktree add /tmp/kiln-old <commit> && cmake -S /tmp/kiln-old -B /tmp/kiln-old/build \\
        -DCMAKE_BUILD_TYPE=Release && cmake --build /tmp/kiln-old/build --target kiln_bench
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {"mlp": "examples/fashion_mnist_mlp.ini", "cnn": "examples/fashion_mnist_cnn.ini"}


def run(binary, model, batch, threads, seconds):
    cmd = [binary, "train", CONFIGS[model], "--batch", str(batch), "--threads", str(threads), "--seconds",
           str(seconds)]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("ab: %s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()))
    line = [l for l in p.stdout.splitlines() if l.startswith("{")][-1]
    return json.loads(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="the old kiln_bench")
    ap.add_argument("--new", default=os.path.join(ROOT, "build", "kiln_bench"), help="the new kiln_bench")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0, help="timed training seconds per run")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--threads", default="", help="thread counts (default: 1 and all cores)")
    ap.add_argument("--min-ratio", type=float, default=0.97)
    args = ap.parse_args()
    ncpu = len(os.sched_getaffinity(0))
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, ncpu})
    confs = [(m, b, t) for m in args.models.split(",") for b in map(int, args.batches.split(",")) for t in threads]
    res = {c: {"old": [], "new": []} for c in confs}
    for r in range(args.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for c in confs:
            for who in order:
                res[c][who].append(run(getattr(args, who), *c, args.seconds))
        print("round %d of %d done" % (r + 1, args.rounds), file=sys.stderr)
    print("old: %s\nnew: %s\n%d rounds, %.1f s timed per run, medians" % (args.old, args.new, args.rounds,
                                                                          args.seconds))
    print("%-5s %5s %3s  %12s %12s %7s  %12s %12s %7s" % ("model", "batch", "T", "train old", "train new",
                                                           "new/old", "infer old", "infer new", "new/old"))
    worst = None
    for c in confs:
        med = {w: {k: statistics.median(x[k] for x in res[c][w]) for k in ("train_sps",
                                                                          "infer_sps")}
               for w in ("old", "new")}
        tr = med["new"]["train_sps"] / med["old"]["train_sps"]
        ir = med["new"]["infer_sps"] / med["old"]["infer_sps"]
        worst = tr if worst is None else min(worst, tr)
        print("%-5s %5d %3d  %12.0f %12.0f %7.3f  %12.0f %12.0f %7.3f" % (
            c[0], c[1], c[2], med["old"]["train_sps"], med["new"]["train_sps"], tr,
            med["old"]["infer_sps"], med["new"]["infer_sps"], ir))
    print("per round (training samples/s, old / new):")
    for c in confs:
        print("  %-5s %5d %3d  %s" % (c[0], c[1], c[2], "  ".join("%.0f/%.0f" % (o["train_sps"], n["train_sps"])
                                                          for o, n in zip(res[c]["old"], res[c]["new"]))))
    ok = worst >= args.min_ratio
    print("lowest training new/old: %.3f (%s the %.2f bar)" % (worst, "meets" if ok else "BELOW", args.min_ratio))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
