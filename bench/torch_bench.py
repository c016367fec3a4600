#!/usr/bin/env python3
"""PyTorch side of kiln's benchmark: trains the same model as kiln's example configs
(examples/fashion_mnist_{mlp,cnn}.ini) on Fashion-MNIST with Adam, then runs inference,
and prints one JSON line: training samples/s (after warm-up), inference samples/s and
peak RSS of this process.

  python torch_bench.py --model cnn --batch 64 --threads 2 [--seconds 4] [--data DIR]

The process sets its thread count before importing torch (OMP_NUM_THREADS,
MKL_NUM_THREADS, torch.set_num_threads); run one configuration per process so that
peak RSS and threading are those of that configuration alone.

The data are fed the way a user who wants speed would: the whole set is held as uint8
(as kiln holds it), a seeded permutation per epoch picks each batch, which is
converted to float and normalised with the training set's mean and std."""
import argparse
import gzip
import json
import os
import resource
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--model", choices=["mlp", "cnn"], required=True)
ap.add_argument("--batch", type=int, required=True)
ap.add_argument("--threads", type=int, required=True)
ap.add_argument("--seconds", type=float, default=4.0, help="timed training seconds after warm-up")
ap.add_argument("--warmup", type=float, default=1.5, help="warm-up seconds (at least 3 steps)")
ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
ap.add_argument("--optimizer", default="auto", choices=["auto", "default", "foreach", "fused", "forloop"],
                help="Adam implementation; auto: the fused one where this torch has it on the CPU (the "
                     "fastest), else torch's default")
args = ap.parse_args()

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
try:
    torch.set_num_interop_threads(1)
except RuntimeError:
    pass


def load_idx(path, offset):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return np.frombuffer(raw, dtype=np.uint8, offset=offset)


def load(kind):
    prefix = "train" if kind == "train" else "t10k"
    x = load_idx(os.path.join(args.data, f"{prefix}-images-idx3-ubyte.gz"), 16).reshape(-1, 1, 28, 28)
    y = load_idx(os.path.join(args.data, f"{prefix}-labels-idx1-ubyte.gz"), 8).astype(np.int64)
    return torch.from_numpy(x.copy()), torch.from_numpy(y)


class MLP(nn.Module):  # examples/fashion_mnist_mlp.ini
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x):
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):  # examples/fashion_mnist_cnn.ini
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def main():
    torch.manual_seed(1)
    xtr, ytr = load("train")
    xte, _ = load("test")
    mean = float(xtr.double().div(255).mean())
    std = float(xtr.double().div(255).std())
    scale, shift = 1.0 / (255.0 * std), mean / std
    model = MLP() if args.model == "mlp" else CNN()
    kw = {}
    if args.optimizer == "foreach":
        kw["foreach"] = True
    elif args.optimizer == "forloop":
        kw["foreach"] = False
    elif args.optimizer in ("fused", "auto"):
        kw["fused"] = True
    opt_name = args.optimizer
    try:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **kw)
        if kw.get("fused"):  # an implementation without fused CPU Adam fails at the first step
            probe = CNN() if args.model == "cnn" else MLP()
            popt = torch.optim.Adam(probe.parameters(), lr=1e-3, fused=True)
            for p in probe.parameters():
                p.grad = torch.zeros_like(p)
            popt.step()
        opt_name = "fused" if kw.get("fused") else opt_name
    except (RuntimeError, TypeError, ValueError):
        if args.optimizer != "auto":
            raise
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        opt_name = "default"
    B = args.batch
    n = xtr.shape[0]
    g = torch.Generator().manual_seed(1)
    state = {"perm": torch.randperm(n, generator=g), "pos": 0}

    def batch():
        if state["pos"] + B > n:
            state["perm"] = torch.randperm(n, generator=g)
            state["pos"] = 0
        idx = state["perm"][state["pos"]:state["pos"] + B]
        state["pos"] += B
        x = xtr[idx].to(torch.float32).mul_(scale).sub_(shift)
        return x, ytr[idx]

    def step():
        x, y = batch()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    model.train()
    w, t0 = 0, time.perf_counter()
    while w < 3 or time.perf_counter() - t0 < args.warmup:
        step()
        w += 1
    steps, t0 = 0, time.perf_counter()
    while True:
        loss = step().detach()
        steps += 1
        el = time.perf_counter() - t0
        if el >= args.seconds and steps >= 10:
            break
    train_sps = steps * B / el
    final_loss = float(loss)

    # inference over the test set in batches of B, each converted from uint8 in the loop
    # (as kiln's evaluation loader does)
    model.eval()
    nte = xte.shape[0] // B * B
    with torch.inference_mode():
        for i in range(0, 5 * B, B):
            model(xte[i:i + B].to(torch.float32).mul_(scale).sub_(shift))
        done, t0 = 0, time.perf_counter()
        while True:
            for i in range(0, nte, B):
                model(xte[i:i + B].to(torch.float32).mul_(scale).sub_(shift))
                done += B
            el = time.perf_counter() - t0
            if el >= args.seconds / 2:
                break
    infer_sps = done / el
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "engine": "torch", "torch": torch.__version__, "model": args.model, "batch": B,
        "threads": torch.get_num_threads(), "train_sps": train_sps, "infer_sps": infer_sps,
        "peak_rss": rss, "train_steps": steps, "loss": final_loss, "optimizer": opt_name,
        "python": sys.version.split()[0],
    }))


if __name__ == "__main__":
    main()
