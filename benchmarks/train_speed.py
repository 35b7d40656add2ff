"""How close MMAE training runs to this machine's compute floor (the README quotes its table).

    python benchmarks/train_speed.py [--epochs 100] [--runs 3] [--parallel modalities|ops|both]
    python benchmarks/train_speed.py --busy [--preset paper|aligned]   # seconds per epoch, alone and with a core taken

The paper preset (batch 128, 100 epochs) is trained on the demo-shaped set (21,000 train items,
image 50-d / audio 1024-d / text 768-d). The floor is the time the matmuls alone need:

* FLOPs are counted analytically from the model's Linear layers, 2·in·out per item per forward
  matmul; training needs the forward, the weight gradient and the input gradient (except for an
  encoder's first layer, whose input needs no gradient). The usual "3x forward" estimate is printed
  beside the exact count; the floor uses the exact (smaller, so stricter) count.
* The rate is measured with torch on exactly the matmuls of one training step: same shapes, same
  operand layouts as autograd uses (transposed weights, transposed gradients), distinct operands per
  matmul so caches are as cold as in training. The trainer runs modality groups on their own
  threads (see ``mmae_core.train._Stepper``), so the rate is measured both ways — all cores on each
  matmul (torch intra-op threads) and the trainer's groups on their own threads — and the FASTER
  one sets the floor. A hot loop on one shape (operands in cache) is printed for reference.
* Both of the trainer's thread plans are timed against that one floor (``--parallel``): the default
  "modalities" (groups of modalities on their own threads) and "ops" (one thread, the modalities
  fused into shared ops, every core on each matmul; ``mmae_core.step_fused``).
* The default plan runs its step in C++ when ``mmae_core.native`` could build it (the line "step:"
  ends in "native step"); ``MMAE_NATIVE=0 python benchmarks/train_speed.py`` times the Python step,
  which gives the same bits.
* floor seconds = FLOPs per run / rate; ratio = training seconds / floor seconds. BatchNorm, ReLU,
  the loss, Adam, shuffling and standardization are not in the floor: the ratio charges for them.

The machine may be shared: the load average (1 min) before each run is printed so a reader can tell.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmae_core import native  # noqa: E402
from mmae_core.config import preset  # noqa: E402
from mmae_core.dataset import FeatureSet, Split  # noqa: E402
from mmae_core.model import MMAE  # noqa: E402
from mmae_core.train import cpu_cores, plan_groups, train  # noqa: E402

DIMS = {"image": 50, "audio": 1024, "text": 768}
N_TRAIN = 21_000


def demo_set(seed: int = 42) -> tuple[FeatureSet, str]:
    """The built-in demo if it exists, else random data of the same shape."""
    try:
        from mmae_core.demo import make_demo

        fs = make_demo(seed=seed)
        fs.splits = {"train": fs.splits["train"]}
        return fs, "mmae_core.demo.make_demo"
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


def time_matmuls(groups: list[list], threads: int, repeats: int = 30) -> float:
    """Fastest of ``repeats`` passes over one step's matmuls, in seconds: ``groups`` run on their
    own Python threads (one group = plain sequential), each op with ``threads`` intra-op threads."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    pool = ThreadPoolExecutor(len(groups) - 1, initializer=torch.set_num_threads, initargs=(threads,)) if len(groups) > 1 else None
    try:
        best = float("inf")
        for r in range(repeats + 1):
            t = time.perf_counter()
            futures = [pool.submit(_run, g) for g in groups[1:]] if pool else []
            _run(groups[0])
            for f in futures:
                f.result()
            if r:  # the first pass warms up
                best = min(best, time.perf_counter() - t)
        return best
    finally:
        if pool:
            pool.shutdown()
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


def contended(plans: list[str], epochs: int, preset_name: str = "paper") -> None:
    """Each plan alone, then beside a busy loop in another process (one core taken): what a curator
    sees when something else runs on the machine while a model trains."""
    fs, _ = demo_set()
    print(f"seconds per epoch (median of epochs 2-{epochs}), {preset_name} preset, demo train split; {cpu_cores()} cores; "
          f"native step {'off (MMAE_NATIVE=0)' if not native.enabled() else 'on where it was built'}")
    print(f"{'plan':>11}  {'alone':>6}  {'one core busy':>13}  {'slowdown':>8}")
    for plan in plans:
        cfg = preset(preset_name, epochs=epochs, device="cpu", parallel=plan)
        alone = epoch_seconds(fs, cfg)
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            busy = epoch_seconds(fs, cfg)
        finally:
            hog.kill()
            hog.wait()
        print(f"{plan:>11}  {alone:>6.2f}  {busy:>13.2f}  {busy / alone:>7.1f}x", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", choices=("modalities", "ops", "both"), default="both", help="which thread plan(s) to time")
    ap.add_argument("--preset", choices=("paper", "aligned"), default="paper",
                    help="with --busy: the preset to time (aligned = modality dropout, alignment, AdamW)")
    ap.add_argument("--busy", action="store_true",
                    help="instead: seconds per epoch of each plan, alone and while another program keeps one core busy")
    args = ap.parse_args()
    plans = ["modalities", "ops"] if args.parallel == "both" else [args.parallel]
    if args.busy:
        contended(plans, epochs=min(args.epochs, 4), preset_name=args.preset)
        return

    fs, source = demo_set()
    cfg = preset("paper", epochs=args.epochs, device="cpu")
    n = fs.splits["train"].n
    model = MMAE(fs.modalities, cfg.latent, cfg.hidden)
    layers = linear_layers(model)
    fwd, exact = flops_per_item(layers)
    groups, intra = plan_groups(model, torch.device("cpu"))
    cores = cpu_cores()
    print(f"data: {source}; train {n} items; dims " + "/".join(str(d) for d in fs.modalities.values()))
    print(f"preset: paper (batch {cfg.batch_size}, {cfg.epochs} epochs, latent {cfg.latent}); torch {torch.__version__}; "
          f"{cores} cores; trainer runs groups {[[model.names[j] for j in g] for g in groups]} "
          f"on {len(groups)} threads x {intra} intra-op thread(s)")
    print(f"FLOPs per item and step: forward {fwd / 1e6:.3f} M; training exact {exact / 1e6:.3f} M (3x forward: {3 * fwd / 1e6:.3f} M)")
    print(f"FLOPs per epoch: {exact * n / 1e12:.4f} T exact ({3 * fwd * n / 1e12:.4f} T by 3x forward); "
          f"per run: {exact * n * cfg.epochs / 1e12:.2f} T")
    mats = step_matmuls(layers, cfg.batch_size)
    per_layer = []  # the operands of each layer's (2 or 3) matmuls, in step order
    for _, _, need_in, j in layers:
        per_layer.append((j, [mats.pop(0) for _ in range(3 if need_in else 2)]))
    every = [mm for _, ms in per_layer for mm in ms]
    by_group = [[mm for j, ms in per_layer if j in g for mm in ms] for g in groups]
    step_flops = exact * cfg.batch_size
    print(f"matmul rate, hot loop per shape (operands in cache): {hot_rate(every, cores) / 1e9:.1f} GFLOP/s with {cores} intra-op threads, "
          f"{hot_rate(every, 1) / 1e9:.1f} with 1")

    def floor_rate() -> tuple[float, float]:
        return step_flops / time_matmuls([every], cores), step_flops / time_matmuls(by_group, intra)

    for plan in plans:
        pcfg = replace(cfg, parallel=plan)
        rows = []
        print(f"\nplan: parallel={plan}")
        print(f"{'run':>3}  {'seconds':>8}  {'floor s':>8}  {'ratio':>6}  {'GFLOP/s intra':>13}  {'GFLOP/s groups':>14}  {'load':>5}")
        for r in range(1, args.runs + 1):
            rate_intra, rate_groups = floor_rate()
            floor = exact * n * cfg.epochs / max(rate_intra, rate_groups)
            load = os.getloadavg()[0]
            t = time.perf_counter()
            tm = train(fs, pcfg)
            secs = time.perf_counter() - t
            rows.append((secs, floor))
            print(f"{r:>3}  {secs:>8.1f}  {floor:>8.1f}  {secs / floor:>6.2f}  {rate_intra / 1e9:>13.1f}  {rate_groups / 1e9:>14.1f}  {load:>5.2f}", flush=True)
        med_s = statistics.median(s for s, _ in rows)
        med_f = statistics.median(f for _, f in rows)
        print(f"median {med_s:>6.1f}  {med_f:>8.1f}  {statistics.median(s / f for s, f in rows):>6.2f}")
        print(f"step: {tm.plan}")
        print(f"final training loss {tm.history[-1]['losses']['total']:.4f}; {med_s / cfg.epochs:.3f} s per epoch")


if __name__ == "__main__":
    main()
