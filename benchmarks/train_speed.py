"""How close MMAE training runs to this machine's compute floor (docs/results.md quotes its table).

    python benchmarks/train_speed.py [--epochs 100] [--runs 3]          # the paper preset on the demo
    python benchmarks/train_speed.py --part batches [--batch-sizes 512,2048]
    python benchmarks/train_speed.py --part adam                         # fused vs foreach Adam
    python benchmarks/train_speed.py --part threads                      # 1 vs 2 threads, spinning vs sleeping, one core busy
    python benchmarks/train_speed.py --device cuda                        # skipped without a GPU

The paper preset (batch 128, 100 epochs) is trained on the demo-shaped set (21,000 train items,
image 50-d / audio 1024-d / text 768-d). The floor is the time the matmuls alone need:

* FLOPs are counted analytically from the model's Linear layers, 2·in·out per item per forward
  matmul; training needs the forward, the weight gradient and the input gradient (except for an
  encoder's first layer, whose input needs no gradient). The usual "3x forward" estimate is printed
  beside the exact count; the floor uses the exact (smaller, so stricter) count.
* The rate is measured with torch on exactly the matmuls of one training step: same shapes, same
  operand layouts as autograd uses (transposed weights, transposed gradients), distinct operands per
  matmul so caches are as cold as in training, with one intra-op thread (the trainer's setting) and
  with every core on each matmul; the FASTER of the two sets the floor, so the ratio also charges
  for the cores the trainer leaves to other work. A hot loop on one shape (operands in cache) is
  printed for reference.
* floor seconds = FLOPs per run / rate; ratio = training seconds / floor seconds. BatchNorm, ReLU,
  the loss, autograd's bookkeeping, Adam, batching and standardization are not in the floor: the
  ratio charges for them.
* The step this trainer replaced (the same model with hand-written gradients, its modalities on
  their own threads, partly in C++) ran at 1.76x the floor on a quiet machine; it is printed beside
  the new ratio so the trade of one autograd step for that speed stays visible.

The machine may be shared: the load average (1 min) before each run is printed so a reader can tell.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mmae_core  # noqa: F401  - first: OpenMP's wait policy is set before torch loads
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmae_core.model.batches import ArrayRows, BatchSource, scan  # noqa: E402
from mmae_core.config import preset  # noqa: E402
from mmae_core.data.dataset import FeatureSet, Split  # noqa: E402
from mmae_core.model.mmae import MMAE  # noqa: E402
from mmae_core.model.train import train  # noqa: E402

PREVIOUS_RATIO = 1.76  # the hand-written, multi-threaded step this trainer replaced (quiet machine)

DIMS = {"image": 50, "audio": 1024, "text": 768}
N_TRAIN = 21_000


def demo_set(seed: int = 42) -> tuple[FeatureSet, str]:
    """The built-in demo if it exists, else random data of the same shape."""
    try:
        from mmae_core.data.demo import make_demo

        fs = make_demo(seed=seed)
        fs.splits = {"train": fs.splits["train"]}
        return fs, "mmae_core.data.demo.make_demo"
    except ImportError:
        rng = np.random.default_rng(seed)
        feats = {m: rng.standard_normal((N_TRAIN, d), dtype=np.float32) for m, d in DIMS.items()}
        ids = np.array([f"item-{i}" for i in range(N_TRAIN)], dtype=object)
        return FeatureSet("random", dict(DIMS), {"train": Split(ids, feats)}), "random normal (demo not available)"


def linear_layers(model: MMAE) -> list[tuple[int, int, bool, int]]:
    """(in, out, needs_input_grad, modality index) for every Linear of the model."""
    out = []
    for side in (model.enc, model.dec):
        for j, seq in enumerate(side):
            lins = [mod for mod in seq if isinstance(mod, torch.nn.Linear)]
            for k, lin in enumerate(lins):
                out.append((lin.in_features, lin.out_features, not (side is model.enc and k == 0), j))
    return out


def flops_per_item(layers: list[tuple[int, int, bool]]) -> tuple[int, int]:
    """(forward FLOPs, exact training FLOPs) per item and step."""
    fwd = sum(2 * i * o for i, o, _, _ in layers)
    train_flops = sum(2 * i * o * (3 if need_in else 2) for i, o, need_in, _ in layers)
    return fwd, train_flops


def step_matmuls(layers: list[tuple[int, int, bool]], batch: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Operands for every matmul of one training step, laid out as autograd lays them out."""
    g = torch.Generator().manual_seed(0)
    mats = []
    for i, o, need_in, _ in layers:
        x = torch.randn(batch, i, generator=g)
        w = torch.randn(o, i, generator=g)
        grad = torch.randn(batch, o, generator=g)
        mats.append((x, w.t(), torch.empty(batch, o)))  # forward: X @ W^T
        mats.append((grad.t(), x, torch.empty(o, i)))  # weight gradient: G^T @ X
        if need_in:
            mats.append((grad, w, torch.empty(batch, i)))  # input gradient: G @ W
    return mats


def _run(mats: list) -> None:
    for a, b, out in mats:
        torch.mm(a, b, out=out)


def time_matmuls(mats: list, threads: int, repeats: int = 30) -> float:
    """Fastest of ``repeats`` passes over one step's matmuls, in seconds, ``threads`` intra-op threads."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best = float("inf")
        for r in range(repeats + 1):
            t = time.perf_counter()
            _run(mats)
            if r:  # the first pass warms up
                best = min(best, time.perf_counter() - t)
        return best
    finally:
        torch.set_num_threads(prev)


def hot_rate(mats: list, threads: int) -> float:
    """FLOP/s of the same matmuls, each repeated on its own (operands stay in cache)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    total_flops, total_t = 0, 0.0
    for a, b, out in mats:
        for _ in range(5):
            torch.mm(a, b, out=out)
        n = 20
        t = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b, out=out)
        total_t += (time.perf_counter() - t) / n
        total_flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
    torch.set_num_threads(prev)
    return total_flops / total_t


def epoch_seconds(fs: FeatureSet, cfg) -> float:
    """Median seconds per epoch after the first (the trainer's own per-epoch timestamps)."""
    tm = train(fs, cfg)
    stamps = [0.0] + [h["elapsed_s"] for h in tm.history]
    return statistics.median(b - a for a, b in zip(stamps[1:-1], stamps[2:]))


def per_batch_size(sizes: list[int], epochs: int) -> None:
    """Seconds per epoch (and items per second) at the batch sizes archive-scale training uses."""
    fs, _ = demo_set()
    n = fs.splits["train"].n
    print(f"seconds per epoch (median of epochs 2-{epochs}), paper preset, demo train split ({n} items)")
    print(f"{'batch':>6}  {'s/epoch':>8}  {'items/s':>8}  {'final loss':>10}")
    for b in sizes:
        tm = train(fs, preset("paper", epochs=epochs, batch_size=b, device="cpu"))
        stamps = [h["elapsed_s"] for h in tm.history]
        sec = statistics.median(y - x for x, y in zip(stamps[:-1], stamps[1:]))
        print(f"{b:>6}  {sec:>8.2f}  {n / sec:>8.0f}  {tm.history[-1]['losses']['total']:>10.4f}", flush=True)


def adam_kinds(steps: int = 300) -> None:
    """The trainer's step with torch.optim.Adam fused and foreach: seconds per 100 steps at batch 128."""
    fs, _ = demo_set()
    rows = ArrayRows(fs.splits["train"].features)
    names = list(fs.modalities)
    present, std = scan(rows, names)
    src = BatchSource(rows, names, std, present, 128)
    batches = list(src.epoch(torch.Generator().manual_seed(0)))[:steps]
    print(f"{'Adam':>8}  {'s / 100 steps':>13}")
    for kind in ("fused", "foreach"):
        torch.manual_seed(0)
        model = MMAE(fs.modalities).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, **{kind: True})
        t = time.perf_counter()
        for i, b in enumerate(batches):
            if i == 20:
                t = time.perf_counter()  # warm-up done
            out = model(b.x, b.enc_rows, b.dec_rows, b.inv_count)
            opt.zero_grad(set_to_none=False)
            out.loss.backward()
            opt.step()
        print(f"{kind:>8}  {(time.perf_counter() - t) / (len(batches) - 20) * 100:>13.3f}", flush=True)


STEP_TIMER = """
import sys, time, mmae_core, torch
from mmae_core.model.batches import ArrayRows, BatchSource, scan
from mmae_core.data.demo import make_demo
from mmae_core.model.mmae import MMAE
torch.set_num_threads(int(sys.argv[1]))
fs = make_demo(seed=42, scale=0.1)
rows = ArrayRows(fs.splits["train"].features); names = list(fs.modalities)
present, std = scan(rows, names)
batches = list(BatchSource(rows, names, std, present, 128).epoch(torch.Generator().manual_seed(0)))[:20]
torch.manual_seed(0); model = MMAE(fs.modalities).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
for i, b in enumerate(batches):
    if i == 5: t = time.perf_counter()
    out = model(b.x, b.enc_rows, b.dec_rows, b.inv_count); opt.zero_grad(set_to_none=False); out.loss.backward(); opt.step()
print((time.perf_counter() - t) / (len(batches) - 5) * 1000)
"""


def threads_and_waiting() -> None:
    """Milliseconds per batch-128 step with 1 or 2 intra-op threads, OpenMP's idle threads spinning
    (ACTIVE) or sleeping (PASSIVE), alone and while another process keeps one core busy. Each setting
    runs in a fresh process, because OpenMP reads its wait policy when torch loads."""
    print(f"{'threads':>7}  {'OpenMP wait':>11}  {'alone ms':>8}  {'one core busy ms':>16}")
    for threads, policy in ((1, "PASSIVE"), (2, "ACTIVE"), (2, "PASSIVE")):
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        times = []
        for busy in (False, True):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                out = subprocess.run([sys.executable, "-c", STEP_TIMER, str(threads)], env=env, capture_output=True,
                                     text=True, timeout=1800)
                times.append(float(out.stdout.strip().splitlines()[-1]))
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
        print(f"{threads:>7}  {policy:>11}  {times[0]:>8.1f}  {times[1]:>16.1f}", flush=True)


def on_cuda(epochs: int) -> None:
    if not torch.cuda.is_available():
        print("--device cuda: skipped, this machine has no CUDA device")
        return
    fs, _ = demo_set()
    t = time.perf_counter()
    tm = train(fs, preset("paper", epochs=epochs, device="cuda"))
    secs = time.perf_counter() - t
    print(f"cuda ({torch.cuda.get_device_name(0)}): {epochs} epochs in {secs:.1f} s, {secs / epochs:.3f} s per epoch; {tm.plan}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--part", choices=("floor", "batches", "adam", "threads"), default="floor",
                    help="floor: the paper preset against the matmul floor; batches: seconds per epoch at --batch-sizes; "
                         "adam: fused against foreach Adam")
    ap.add_argument("--batch-sizes", default="512,2048")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = ap.parse_args()
    if args.device == "cuda":
        on_cuda(min(args.epochs, 20))
        return
    if args.part == "batches":
        per_batch_size([int(b) for b in args.batch_sizes.split(",")], epochs=min(args.epochs, 5))
        return
    if args.part == "adam":
        adam_kinds()
        return
    if args.part == "threads":
        threads_and_waiting()
        return

    fs, source = demo_set()
    cfg = preset("paper", epochs=args.epochs, device="cpu")
    n = fs.splits["train"].n
    model = MMAE(fs.modalities, cfg.latent, cfg.hidden)
    layers = linear_layers(model)
    fwd, exact = flops_per_item(layers)
    cores = torch.get_num_threads()
    print(f"data: {source}; train {n} items; dims " + "/".join(str(d) for d in fs.modalities.values()))
    print(f"preset: paper (batch {cfg.batch_size}, {cfg.epochs} epochs, latent {cfg.latent}); torch {torch.__version__}; {cores} cores")
    print(f"FLOPs per item and step: forward {fwd / 1e6:.3f} M; training exact {exact / 1e6:.3f} M (3x forward: {3 * fwd / 1e6:.3f} M)")
    print(f"FLOPs per epoch: {exact * n / 1e12:.4f} T exact ({3 * fwd * n / 1e12:.4f} T by 3x forward); "
          f"per run: {exact * n * cfg.epochs / 1e12:.2f} T")
    every = step_matmuls(layers, cfg.batch_size)
    step_flops = exact * cfg.batch_size
    print(f"matmul rate, hot loop per shape (operands in cache): {hot_rate(every, cores) / 1e9:.1f} GFLOP/s with {cores} intra-op threads, "
          f"{hot_rate(every, 1) / 1e9:.1f} with 1")
    rows = []
    print(f"{'run':>3}  {'seconds':>8}  {'floor s':>8}  {'ratio':>6}  {'GFLOP/s':>8}  {'load':>5}")
    for r in range(1, args.runs + 1):
        rate = max(step_flops / time_matmuls(every, cores), step_flops / time_matmuls(every, 1))
        floor = exact * n * cfg.epochs / rate
        load = os.getloadavg()[0]
        t = time.perf_counter()
        tm = train(fs, cfg)
        secs = time.perf_counter() - t
        rows.append((secs, floor))
        print(f"{r:>3}  {secs:>8.1f}  {floor:>8.1f}  {secs / floor:>6.2f}  {rate / 1e9:>8.1f}  {load:>5.2f}", flush=True)
    med_s = statistics.median(s for s, _ in rows)
    med_f = statistics.median(f for _, f in rows)
    ratio = statistics.median(s / f for s, f in rows)
    print(f"median {med_s:>6.1f}  {med_f:>8.1f}  {ratio:>6.2f}")
    print(f"ratio to the floor: {ratio:.2f}x now (one autograd step, {tm.plan}); "
          f"{PREVIOUS_RATIO:.2f}x for the hand-written multi-threaded step it replaced")
    print(f"final training loss {tm.history[-1]['losses']['total']:.4f}; {med_s / cfg.epochs:.3f} s per epoch")


if __name__ == "__main__":
    main()
