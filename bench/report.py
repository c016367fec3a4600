#!/usr/bin/env python3
"""Runs kiln and PyTorch side by side (bench/bench.sh installs and builds first) and
prints the tables of docs/PERFORMANCE.md: training and inference samples/s, peak RSS
and the ratios kiln/PyTorch, for the MLP and CNN examples, batch 64 and 256, 1 thread
and all cores; then kiln's per-layer GFLOP/s against the machine's FMA peak, and which
of the issue's acceptance points hold on this run.

Every measurement is its own process (so peak RSS and thread settings are those of one
configuration); the engines are interleaved per configuration so that a change in
machine load hits them alike. Standard library only (runs under any python3)."""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CONFIGS = {"mlp": "examples/fashion_mnist_mlp.ini", "cnn": "examples/fashion_mnist_cnn.ini"}


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def cpu_model():
    out = sh(["lscpu"]).stdout
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def busy_fraction(seconds=0.5):
    """Share of the CPUs' time spent outside the idle task over `seconds` (other work)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
        return 1.0 - (i1 - i0) / max(1, t1 - t0)
    except OSError:
        return float("nan")


def wait_quiet(limit, max_wait):
    """Wait (up to max_wait seconds) until other work uses less than `limit` of the CPUs."""
    t0 = time.time()
    b = busy_fraction()
    while b > limit and time.time() - t0 < max_wait:
        b = busy_fraction(2.0)
    return b


def run_json(cmd, env=None):
    p = sh(cmd, env=env, cwd=ROOT)
    for line in reversed(p.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no result from %s:\n%s\n%s" % (" ".join(cmd), p.stdout[-2000:], p.stderr[-2000:]))


def torch_version(python):
    p = sh([python, "-c", "import torch; print(torch.__version__)"])
    return p.stdout.strip() if p.returncode == 0 else None


class Tee:
    """Everything printed also goes to a file (the report, for docs/PERFORMANCE.md)."""
    def __init__(self, path):
        self.f = open(path, "w")
        self.out = sys.stdout

    def write(self, s):
        self.out.write(s)
        self.f.write(s)

    def flush(self):
        self.out.flush()
        self.f.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "build", "kiln_bench"))
    ap.add_argument("--torch-pypi", default="", help="python with PyPI's torch ('' = not available)")
    ap.add_argument("--pypi-note", default="", help="why PyPI's torch is not available")
    ap.add_argument("--torch-debian", default="/usr/bin/python3", help="python with Debian's python3-torch")
    libdir = "/usr/lib/x86_64-linux-gnu"
    ap.add_argument("--blas-openmp", default=libdir + "/openblas-openmp", help="dir of OpenBLAS's OpenMP libblas.so.3")
    ap.add_argument("--blas-pthread", default="", help="dir of OpenBLAS's pthreads libblas.so.3 ('' = skip)")
    ap.add_argument("--blas-reference", default=libdir + "/blas", help="dir of the reference libblas.so.3")
    ap.add_argument("--no-blas-variants", action="store_true",
                    help="run Debian's torch with the OpenMP OpenBLAS only")
    ap.add_argument("--seconds", type=float, default=3.0, help="timed training seconds per run")
    ap.add_argument("--repeat", type=int, default=2,
                    help="rounds per configuration; each engine keeps its best samples/s (and largest RSS)")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--no-fused", action="store_true", help="skip the PyPI torch run with fused Adam")
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--threads", default="", help="thread counts (default: 1 and all cores)")
    ap.add_argument("--json", default=os.path.join(ROOT, "build", "bench-results.json"))
    ap.add_argument("--quiet-below", type=float, default=0.1,
                    help="before each run, wait until other work uses less than this share of the CPUs")
    ap.add_argument("--max-wait", type=float, default=60, help="longest wait for a quiet machine (seconds)")
    ap.add_argument("--report", default=os.path.join(ROOT, "build", "bench-report.txt"),
                    help="a copy of everything printed")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.report), exist_ok=True)
    sys.stdout = Tee(args.report)

    ncpu = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, ncpu})
    models = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]

    # (key, label, python, extra torch_bench.py arguments). PyTorch as a user writes it:
    # eager mode, torch.optim.Adam with its default implementation. PyPI's torch is also
    # run with fused Adam (opt-in, fastest on the CPU), shown as an extra column.
    peers = []
    if args.torch_pypi:
        v = torch_version(args.torch_pypi)
        if v:
            peers.append(("pypi", "PyPI torch %s, default Adam" % v, args.torch_pypi, ["--optimizer", "default"]))
            if not args.no_fused:
                peers.append(("pypi-fused", "PyPI torch %s, Adam(fused=True)" % v, args.torch_pypi,
                              ["--optimizer", "fused"]))
        else:
            args.pypi_note = args.pypi_note or "import torch failed in %s" % args.torch_pypi
    # Debian's torch takes its BLAS (used by its linear layers) from the libblas.so.3
    # alternative: each variant is picked with LD_LIBRARY_PATH. `debian` is the fastest,
    # OpenBLAS's OpenMP build (installed by bench.sh), against which the acceptance
    # points are judged; the other two are shown for reference: Debian's default
    # OpenBLAS build (pthreads; what `apt-get install libopenblas0` gives, and the one
    # the figures match) and the reference BLAS that `apt-get install
    # python3-torch` alone pulls in.
    dv = torch_version(args.torch_debian) if args.torch_debian else None
    peer_env = {}
    if dv:
        variants = [("debian", "OpenBLAS 0.3.21, OpenMP build", args.blas_openmp),
                    ("deb-pthr", "OpenBLAS 0.3.21, pthreads build (Debian's default)", args.blas_pthread),
                    ("deb-ref", "reference BLAS (libblas3, python3-torch's first dependency)", args.blas_reference)]
        for key, blas, libdir in variants:
            if key != "debian" and args.no_blas_variants:
                continue
            if not libdir or not os.path.exists(os.path.join(libdir, "libblas.so.3")):
                print("peer %s: not run (no libblas.so.3 in %r)" % (key, libdir))
                continue
            peers.append((key, "Debian python3-torch %s, default Adam, %s" % (dv, blas), args.torch_debian,
                          ["--optimizer", "default"]))
            # the reference BLAS with the reference LAPACK: OpenBLAS's liblapack.so.3
            # would load libopenblas too (which also exports sgemm)
            lapack = os.path.join(os.path.dirname(libdir), "lapack") if key == "deb-ref" else ""
            peer_env[key] = {"LD_LIBRARY_PATH": libdir + (":" + lapack if lapack and os.path.isdir(lapack) else "")}
    commit = sh(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT).stdout.strip() or "?"

    print("kiln vs PyTorch, %s" % datetime.datetime.now().strftime("%Y-%m-%d %H:%M"))
    print("machine: %s, %d cores (lscpu), Linux %s" % (cpu_model(), ncpu, platform.release()))
    print("kiln: commit %s, %s" % (commit, args.kiln))
    for key, label, py, _ in peers:
        print("peer %-10s %s (%s)" % (key + ":", label, py))
    if not any(k == "pypi" for k, _, _, _ in peers):
        print("peer: PyPI torch NOT AVAILABLE%s — the strongest peer is Debian's" %
              (" (%s)" % args.pypi_note if args.pypi_note else ""))
    print("load average at start: %.2f" % loadavg())
    sys.stdout.flush()

    results = []
    for model in models:
        for batch in batches:
            for t in threads:
                row = {"model": model, "batch": batch, "threads": t, "load": loadavg()}
                row["busy"] = 0.0
                for rep in range(args.repeat):
                    # every engine once per round, interleaved; each keeps its best round
                    runs = {}
                    row["busy"] = max(row["busy"], wait_quiet(args.quiet_below, args.max_wait))
                    runs["kiln"] = run_json([args.kiln, "train", CONFIGS[model], "--batch", str(batch), "--threads",
                                             str(t), "--seconds", str(args.seconds)])
                    for key, _, py, extra in peers:
                        row["busy"] = max(row["busy"], wait_quiet(args.quiet_below, args.max_wait))
                        env = dict(os.environ, OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t),
                                   **peer_env.get(key, {}))
                        runs[key] = run_json([py, os.path.join(HERE, "torch_bench.py"), "--model", model, "--batch",
                                              str(batch), "--threads", str(t), "--seconds", str(args.seconds)] + extra,
                                             env=env)
                    for key, r in runs.items():
                        if key not in row:
                            row[key] = dict(r)
                            row[key]["rounds"] = []
                        best = row[key]
                        best["rounds"].append({k: r[k] for k in ("train_sps", "infer_sps", "peak_rss")})
                        best["train_sps"] = max(best["train_sps"], r["train_sps"])
                        best["infer_sps"] = max(best["infer_sps"], r["infer_sps"])
                        best["peak_rss"] = max(best["peak_rss"], r["peak_rss"])
                results.append(row)
                msg = "  %s batch %d, %d thread%s: kiln %.0f/s" % (model, batch, t, "s" if t > 1 else "",
                                                                  row["kiln"]["train_sps"])
                for key, _, _, _ in peers:
                    msg += ", %s %.0f/s" % (key, row[key]["train_sps"])
                print(msg + " (other work before the runs: up to %.0f%% of the CPUs)" % (100 * row["busy"]))
                sys.stdout.flush()

    def table(title, field, fmt, ratio_name):
        print("\n" + title)
        hdr = "%-5s %5s %7s %11s" % ("model", "batch", "threads", "kiln")
        for key, _, _, _ in peers:
            hdr += " %11s" % key
        for key, _, _, _ in peers:
            hdr += " %16s" % ("kiln/%s" % key)
        print(hdr)
        for r in results:
            line = "%-5s %5d %7d %11s" % (r["model"], r["batch"], r["threads"], fmt(r["kiln"][field]))
            for key, _, _, _ in peers:
                line += " %11s" % fmt(r[key][field])
            for key, _, _, _ in peers:
                line += " %15.2f%s" % (r["kiln"][field] / r[key][field], ratio_name)
            print(line)

    num = lambda v: "%.0f" % v  # noqa: E731
    mib = lambda v: "%.0f MiB" % (v / 1048576.0)  # noqa: E731
    print("\nEach figure is the best of %d rounds (engines interleaved); peak RSS the largest." % args.repeat)
    table("Training samples/s (after warm-up; Adam, real Fashion-MNIST batches)", "train_sps", num, "x")
    table("Inference samples/s (test set, evaluation graph / torch.inference_mode)", "infer_sps", num, "x")
    table("Peak RSS of the process (train + inference)", "peak_rss", mib, "x")

    # Per-layer GFLOP/s of the CNN at batch 256, all cores: as it trains (Winograd where
    # `algorithm = auto` takes it: fewer multiplications than counted, so not a measure
    # of the hardware's efficiency), then with every convolution on the direct algorithm,
    # whose counted FLOPs are the ones computed: that run is the one against the peak.
    def best_micro(extra):
        best = None
        for rep in range(args.repeat):  # the round with the highest fraction of the peak
            wait_quiet(args.quiet_below, args.max_wait)
            m = sh([args.kiln, "micro", CONFIGS["cnn"], "--batch", "256", "--threads", str(ncpu)] + extra,
                   cwd=ROOT).stdout
            frac = [ln for ln in m.splitlines() if ln.startswith("conv+linear total")]
            f = float(frac[0].rsplit("=", 1)[1].split("%")[0]) if frac else -1
            if best is None or f > best[0]:
                best = (f, m)
        return best[1]

    micro_train = best_micro([])
    print("\nAs trained (conv2d algorithm = auto):\n" + micro_train.rstrip())
    micro = best_micro(["--conv-algorithm", "direct"])
    print("\nEvery convolution direct (the hardware's efficiency):\n" + micro.rstrip())

    # acceptance points of the issue, as measured in this run
    print("\nAcceptance (this run):")
    keys = [k for k, _, _, _ in peers]
    strongest = "pypi" if "pypi" in keys else ("debian" if "debian" in keys else None)
    ok_all = True

    def point(name, ok, detail, info=False):
        nonlocal ok_all
        if not info:
            ok_all &= bool(ok)
        print("  [%s] %s: %s" % ("ok" if ok else ("below" if info else "NOT MET"), name, detail))

    def lowest(key, rows):
        w = min(rows, key=lambda r: r["kiln"]["train_sps"] / r[key]["train_sps"])
        return w["kiln"]["train_sps"] / w[key]["train_sps"], w

    if strongest:
        for model in models:
            wr, w = lowest(strongest, [r for r in results if r["model"] == model])
            point("%s training >= 1.5x the strongest PyTorch (%s), every configuration" % (model, strongest),
                  wr >= 1.5, "lowest ratio %.2fx (batch %d, %d threads)" % (wr, w["batch"], w["threads"]))
    if "pypi-fused" in keys:
        for model in models:
            wr, w = lowest("pypi-fused", [r for r in results if r["model"] == model])
            point("(informational) %s training >= 1.5x PyPI torch with fused Adam" % model, wr >= 1.5,
                  "lowest ratio %.2fx (batch %d, %d threads)" % (wr, w["batch"], w["threads"]), info=True)
    if "debian" in keys:
        for model, need in (("mlp", 2.0), ("cnn", 5.0)):
            rs = [r for r in results if r["model"] == model]
            if rs:
                w = min(r["kiln"]["train_sps"] / r["debian"]["train_sps"] for r in rs)
                point("%s training >= %.0fx Debian's PyTorch (OpenMP OpenBLAS)" % (model, need), w >= need,
                      "lowest ratio %.2fx" % w)
                for key in ("deb-pthr", "deb-ref"):
                    if key in keys and rs:
                        w = min(r["kiln"]["train_sps"] / r[key]["train_sps"] for r in rs)
                        point("(informational) %s training >= %.0fx Debian's PyTorch, %s" %
                              (model, need, "pthreads OpenBLAS" if key == "deb-pthr" else "reference BLAS"),
                              w >= need, "lowest ratio %.2fx" % w, info=True)
    c1 = [r for r in results if r["model"] == "cnn" and r["batch"] == 256 and r["threads"] == 1]
    cn = [r for r in results if r["model"] == "cnn" and r["batch"] == 256 and r["threads"] == ncpu]
    if c1 and cn and ncpu > 1:
        s = cn[0]["kiln"]["train_sps"] / c1[0]["kiln"]["train_sps"]
        point("kiln CNN batch 256: %d threads >= 1.7x 1 thread" % ncpu, s >= 1.7, "%.2fx" % s)
    if peers:
        worst = max((r["kiln"]["peak_rss"] / min(r[k]["peak_rss"] for k in keys), r["model"], r["batch"],
                     r["threads"]) for r in results)
        point("kiln peak RSS <= 0.25x PyTorch's (the smaller of the peers')", worst[0] <= 0.25,
              "highest ratio %.3f (%s batch %d, %d threads)" % worst)
    for line in micro.splitlines():
        if line.startswith("conv+linear total"):
            fracs = [float(part.split("%")[0].split()[-1]) for part in line.split("=")[1:]]
            nominal, effective = fracs[0], fracs[-1]
            point("CNN conv+linear fwd+bwd (direct), batch 256, all cores >= 70% of peak", effective >= 70.0,
                  "%.1f%% counting only the computed taps (%.1f%% nominal FLOPs)" % (effective, nominal))
    busiest = max(r["busy"] for r in results) if results else 0.0
    print("other work on the machine just before the runs (from /proc/stat): at most %.0f%% of the CPUs%s"
          % (100 * busiest, "" if busiest <= args.quiet_below else
             " — above --quiet-below after waiting --max-wait: those figures are noisy"))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"peers": [[k, l] for k, l, _, _ in peers], "results": results, "micro": micro,
                   "micro_as_trained": micro_train}, f, indent=1)
    print("raw results: %s; this report: %s" % (args.json, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
