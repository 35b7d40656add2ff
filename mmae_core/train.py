"""Training, encoding and reconstruction error for the MMAE (PRODUCT.md §2).

Why the loop looks the way it does (measured on the shared 2-core CPU this was built on, see
benchmarks/train_speed.py): the model is small (batch 128, 128-wide layers), so everything that
is not a matmul competes with the matmuls themselves.

* No DataLoader: the standardized data sit in tensors; each batch is gathered by index (a seeded
  torch.Generator permutation) into the same small buffers. Losses are summed on the device and
  read back once per epoch (one host sync). Adam is one fused update over one flat tensor.
* Hand-written gradients (``model.stack_forward``/``stack_backward``), checked against autograd by
  the tests: the autograd engine's per-node bookkeeping cost about 20% of a step.
* Cores are used by *modality*, not by op: ``_Stepper`` runs groups of modalities (cost-balanced,
  e.g. audio | image+text) on their own threads with one intra-op thread each, joining three times
  per step. Intra-op threading (OpenMP) needs a barrier in every op and collapsed 5-10x whenever
  another process held a core; the grouped step degrades gracefully. ``_NativeStepper`` runs the
  same step in C++ (``native.py``) where it could be built: Python threads paid a GIL hand-off
  around every kernel, about 40 % of a step.
* ``torch.compile`` was measured and rejected: 7-100 s of compilation here for about 10% per step.
* ``TrainConfig.parallel = "ops"`` is the other plan: one group with every core on each op, and on
  complete batches without dropout or alignment the fused step of ``step_fused.py`` (the modalities'
  BatchNorms, ReLUs and several matmuls as one op each). 10x slower when another program holds a
  core (benchmarks/train_speed.py --busy), hence not the default.

Everything random comes from the config's seed, and the thread plan is a function of the config, the
model and the machine, so two runs on the same machine give identical latents.
"""
from __future__ import annotations

import copy
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .completion import LatentCompletion, complete, fit_completion
from .config import TrainConfig
from .dataset import FeatureSet
from .device import resolve_device
from .errors import CancelledError, ConfigError, DataError
from .model import MMAE, Rows, Stack, stack_backward, stack_forward
from . import native
from .step_fused import FlatAdam, FusedStepper
from .standardize import Standardizer


@dataclass
class Progress:
    """What a progress bar and live loss curves need, sent once per epoch."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    losses: dict[str, float]  # modality -> mean reconstruction MSE this epoch, plus 'total' (and 'align')
    elapsed_s: float
    eta_s: float


@dataclass
class TrainedModel:
    model: MMAE
    config: TrainConfig
    modalities: dict[str, int]
    standardizer: Standardizer
    history: list[dict] = field(default_factory=list)  # per epoch: epoch, losses, elapsed_s (val_total)
    train_seconds: float = 0.0
    dataset_name: str = ""
    completion: LatentCompletion | None = None  # fused latents of items lacking modalities (completion.py)
    plan: str = ""  # how the step used the cores, e.g. "fused step, 2 intra-op thread(s)" (for the log)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# ---------------------------------------------------------------------------------------------- data


def _presence(features: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """The (n, M) mask of rows that are not all NaN; refuses any other NaN or Inf, naming the row.

    Callers may pass unvalidated arrays, and a single Inf would otherwise surface much later as
    a "diverged" loss.
    """
    present = np.stack([~np.isnan(features[m]).all(axis=1) for m in names], axis=1)
    for j, m in enumerate(names):
        _check_finite(m, features[m], present[:, j])
    return present


def _prepare(features: dict[str, np.ndarray], std: Standardizer, names: list[str], present: np.ndarray | None = None) -> tuple[dict[str, Tensor], np.ndarray]:
    """Standardized float32 tensors with missing rows set to 0, and the (n, M) presence mask."""
    if present is None:
        present = _presence(features, names)
    xs = std.transform({m: features[m] for m in names})
    out = {}
    for j, m in enumerate(names):
        x = xs[m]
        x[~present[:, j]] = 0.0
        _check_finite(m, x, present[:, j])  # a value whose standardization overflows float32
        out[m] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return out, present


def _check_finite(m: str, x: np.ndarray, rows: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(axis=1) & rows
    if bad.any():
        r = int(np.argmax(bad))
        raise DataError(f"{m} has a NaN, Inf or out-of-range value in row {r}; fix that row (a whole row of NaN marks a missing modality).")


def _rows(mask: np.ndarray, names: list[str], device: torch.device) -> Rows:
    """Row indices per modality for a batch's presence mask; None where every row has it."""
    return {
        m: None if mask[:, j].all() else torch.from_numpy(np.flatnonzero(mask[:, j])).to(device)
        for j, m in enumerate(names)
    }


def _inv_count(mask: np.ndarray, device: torch.device) -> Tensor | None:
    """1 / (modalities per row) as (B, 1), or None when every row has all of them (the cheap path)."""
    cnt = mask.sum(axis=1)
    if (cnt == mask.shape[1]).all():
        return None
    with np.errstate(divide="ignore"):
        inv = (1.0 / cnt).astype(np.float32)  # inf for a row with nothing: its latent becomes NaN
    return torch.from_numpy(inv[:, None]).to(device)


def dropout_mask(present: np.ndarray, p: float, gen: torch.Generator) -> np.ndarray:
    """Encoder-side presence under modality dropout.

    With probability p, an item that has at least two modalities keeps a uniformly drawn non-empty
    *proper* subset of them (rejection sampling over random bit masks), so it always keeps one and
    always loses one; items with a single modality are never touched.
    """
    keep = present.copy()
    if p <= 0:
        return keep
    hit = (torch.rand(len(present), generator=gen).numpy() < p) & (present.sum(axis=1) >= 2)
    idx = np.flatnonzero(hit)
    while idx.size:
        draw = (torch.rand(idx.size, present.shape[1], generator=gen).numpy() < 0.5) & present[idx]
        k = draw.sum(axis=1)
        ok = (k >= 1) & (k < present[idx].sum(axis=1))
        keep[idx[ok]] = draw[ok]
        idx = idx[~ok]
    return keep


@dataclass
class _Batch:
    x: dict[str, Tensor]
    enc_rows: Rows
    dec_rows: Rows
    inv_count: Tensor | None


def _epoch_batches(
    X: dict[str, Tensor],
    present: np.ndarray,
    bufs: dict[str, Tensor],
    batch_size: int,
    p_drop: float,
    gen: torch.Generator,
    device: torch.device,
) -> Iterator[_Batch]:
    """One shuffled epoch. Each batch is gathered into the same small buffers right before it is
    used (hot in cache, no allocation); a whole-epoch gather would stream the data through DRAM twice."""
    names = list(X)
    n = present.shape[0]
    perm = torch.randperm(n, generator=gen)
    perm_d = perm.to(device)
    simple = p_drop <= 0 and present.all()  # no missing rows, no dropout: no indices at all
    if not simple:
        P = present[perm.numpy()]
        E = dropout_mask(P, p_drop, gen)
    none: Rows = {m: None for m in names}
    for s in range(0, n, batch_size):
        idx = perm_d[s : s + batch_size]
        xb = {m: torch.index_select(X[m], 0, idx, out=bufs[m][: len(idx)]) for m in names}
        if simple:
            yield _Batch(xb, none, none, None)
        else:
            e, p = E[s : s + batch_size], P[s : s + batch_size]
            dec = _rows(p, names, device)
            enc = dec if p_drop <= 0 else _rows(e, names, device)
            yield _Batch(xb, enc, dec, _inv_count(e, device))


# ------------------------------------------------------------------------------------------ training


@contextmanager
def _reproducible(seed: int) -> Iterator[None]:
    """Seed torch's global RNG (for weight init) without leaking the seed or settings to the caller.

    Deterministic algorithms matter on CUDA (index_add); the NaN-filling of fresh allocations that
    comes with them would cost a memory pass per op and buys nothing here (buffers are always fully
    written), so it is switched off for the run.
    """
    import torch.utils.deterministic as det

    prev, prev_fill = torch.are_deterministic_algorithms_enabled(), det.fill_uninitialized_memory
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = False
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev)
            det.fill_uninitialized_memory = prev_fill


def _make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam (AdamW when there is weight decay) as one fused kernel where the build supports it, else
    the multi-tensor (foreach) path. Plain Adam at 0 keeps the paper preset exactly the paper's."""
    kind = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    extra = {"weight_decay": weight_decay} if weight_decay > 0 else {}
    try:
        return kind(params, lr=lr, fused=True, **extra)
    except (RuntimeError, TypeError, ValueError):
        return kind(params, lr=lr, foreach=True, **extra)


def cpu_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def plan_groups(model: MMAE, device: torch.device, parallel: str = "modalities") -> tuple[list[list[int]], int]:
    """Modalities split into one group per worker thread, balanced by matmul cost, and the
    intra-op threads each group gets (``parallel="ops"``: one group, every core on each op). A pure
    function of the model, the plan and the machine, so runs with the same seed on the same machine
    stay bitwise identical."""
    n_mod = len(model.names)
    if device.type != "cpu":
        return [list(range(n_mod))], torch.get_num_threads()
    cores = cpu_cores()
    if parallel == "ops":
        return [list(range(n_mod))], cores
    n_groups = max(1, min(cores, n_mod))
    sizes = [*model.hidden, model.latent]
    inner = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    cost = [d * model.hidden[0] + inner for d in model.modalities.values()]  # encoder = decoder
    groups: list[list[int]] = [[] for _ in range(n_groups)]
    load = [0] * n_groups
    for j in sorted(range(n_mod), key=lambda j: (-cost[j], j)):  # largest first, to the lightest group
        g = min(range(n_groups), key=lambda g: (load[g], g))
        groups[g].append(j)
        load[g] += cost[j]
    return [sorted(g) for g in groups], max(1, cores // n_groups)


class _Stepper:
    """One optimization step with hand-written gradients, the modalities split into groups that run
    on their own threads.

    Why threads by modality: on a few CPU cores the matmuls are small, so intra-op threading
    (OpenMP) pays a barrier per op and collapses as soon as another process holds a core; giving each
    core whole modalities (encoders, decoders, their gradients and their Adam update) needs three
    joins per step. Why no autograd: see ``model.stack_backward``. The fused latent couples the
    groups, so a step has three phases:

    1. each group encodes its modalities and sums the encodings row-wise;
    2. z = that sum / count; each group decodes, scores and backpropagates its reconstructions
       down to dL/dz (its share);
    3. dL/dz, summed over groups in a fixed order (deterministic), goes back through each group's
       encoders with the alignment term, whose gradient through z is exactly zero (z is the mean
       of the z_m, so Σ_m (z_m − z) = 0); then each group's Adam steps.

    A parameter whose modality is absent from a whole batch gets a zero gradient that step (as
    with ``zero_grad(set_to_none=False)``).
    """

    def __init__(self, model: MMAE, groups: list[list[int]], lr: float, align_weight: float, weight_decay: float = 0.0, intra_threads: int = 1, native: bool = False):
        # native: the C++ step (``_NativeStepper``) runs the groups and Adam itself; it needs the
        # flat buffers and stacks built here, not the thread pool or torch.optim objects
        self.model, self.groups, self.align_weight = model, groups, align_weight
        self.flat: list[tuple[list[torch.nn.Parameter], Tensor]] = []
        self.leaves: list[torch.nn.Parameter] = []
        self.opts = []
        for g in groups:
            params = [p for j in g for part in (model.enc[j], model.dec[j]) for p in part.parameters()]
            flat, grad = self._flatten(params)
            self.flat.append((params, grad))
            self.leaves.append(flat)
            if not native:
                self.opts.append(_make_optimizer([flat], lr, weight_decay))
        with torch.no_grad():
            self.enc = [Stack(seq) for seq in model.enc]
            self.dec = [Stack(seq) for seq in model.dec]
        # The intra-op thread count is per thread: without the initializer each worker's ops would
        # use every core (OpenMP's default), oversubscribing them (measured: 2 threads' matmuls at
        # a third of the rate of 2 threads set to 1).
        self.pool = (
            ThreadPoolExecutor(len(groups) - 1, thread_name_prefix="mmae-train", initializer=torch.set_num_threads, initargs=(intra_threads,))
            if not native and len(groups) > 1 else None
        )
        order = [j for g in groups for j in g]
        self.order = torch.tensor([order.index(j) for j in range(len(order))])  # group order -> model order

    @staticmethod
    def _flatten(params: list[torch.nn.Parameter]) -> tuple[torch.nn.Parameter, Tensor]:
        """One buffer for a group's weights and one for their gradients, the parameters being views
        of them: Adam is then one fused update over one tensor, and the backward pass writes each
        gradient straight into its view."""
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        grad = torch.zeros_like(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.data = flat[offset : offset + n].view_as(p)
            p.grad = grad[offset : offset + n].view_as(p)
            offset += n
        leaf = torch.nn.Parameter(flat)
        leaf.grad = grad
        return leaf, grad

    def close(self) -> None:
        """Give the parameters their own storage again, so the trained model holds no hidden aliasing."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        for params, _ in self.flat:
            for p in params:
                p.data = p.data.clone()
                p.grad = None

    def _each(self, fn: Callable[[int], object]) -> list:
        """fn(i) for every group, without autograd: group 0 on this thread, the others on the pool
        (grad mode is per thread, hence the ``no_grad`` inside); results in group order."""

        def run(i: int) -> object:
            with torch.no_grad():
                return fn(i)

        futures = [self.pool.submit(run, i) for i in range(1, len(self.groups))] if self.pool else []
        try:
            first = run(0)
        finally:
            done = [f.exception() for f in futures]  # always wait: the next phase needs them all
        for e in done:
            if e is not None:
                raise e
        return [first, *[f.result() for f in futures]]

    def __call__(self, b: _Batch) -> Tensor:
        model, w = self.model, self.align_weight
        n_rows = next(iter(b.x.values())).shape[0]
        inv = b.inv_count if b.inv_count is not None else 1.0 / len(model.names)

        def encode(i: int) -> tuple[list, Tensor | None]:
            done, total = [], None
            for j in self.groups[i]:
                m = model.names[j]
                r = b.enc_rows.get(m)
                if r is not None and r.numel() == 0:
                    continue
                h, tape = stack_forward(self.enc[j], b.x[m] if r is None else b.x[m].index_select(0, r))
                done.append((j, r, h, tape))
                if r is None:
                    total = h if total is None else total + h
                elif total is None:
                    total = h.new_zeros(n_rows, model.latent).index_add_(0, r, h)
                else:  # not in place: total may still be an earlier modality's h, which alignment reads
                    total = total.index_add(0, r, h)
            return done, total

        enc = self._each(encode)
        with torch.no_grad():
            sums = [s for _, s in enc if s is not None]
            total = sums[0]
            for s in sums[1:]:
                total = total + s
            z = total * inv

        def decode(i: int) -> tuple[Tensor, Tensor | None]:
            self.flat[i][1].zero_()
            losses, g_z = [], None
            for j in self.groups[i]:
                m = model.names[j]
                r = b.dec_rows.get(m)
                if r is not None and r.numel() == 0:
                    losses.append(z.new_zeros(()))  # nobody in this batch has m: nothing to score
                    continue
                out, tape = stack_forward(self.dec[j], z if r is None else z.index_select(0, r))
                diff = out.sub_(b.x[m] if r is None else b.x[m].index_select(0, r)).view(-1)
                losses.append(torch.dot(diff, diff) / diff.numel())  # MSE over the rows that have m
                g = stack_backward(self.dec[j], tape, diff.mul_(2.0 / diff.numel()).view_as(out), need_input=True)
                if r is None:
                    g_z = g if g_z is None else g_z.add_(g)
                else:
                    g_z = (torch.zeros_like(z) if g_z is None else g_z).index_add_(0, r, g)
            return torch.stack(losses), g_z

        dec = self._each(decode)
        with torch.no_grad():
            grads = [g for _, g in dec if g is not None]
            g_sum = grads[0]
            for g in grads[1:]:
                g_sum = g_sum + g
            g_sum = g_sum * inv  # dL/d(row-sum of encodings) = dL/dz / count

        def encode_backward(i: int) -> Tensor:
            align = z.new_zeros(())
            for j, r, h, tape in enc[i][0]:
                g = g_sum if r is None else g_sum.index_select(0, r)
                if w > 0:
                    diff = (h - (z if r is None else z.index_select(0, r))).view(-1)
                    align = align + torch.dot(diff, diff) / n_rows
                    g = g + diff.view_as(h) * (2.0 * w / n_rows)
                stack_backward(self.enc[j], tape, g, need_input=False)
            self.opts[i].step()
            return align

        aligns = self._each(encode_backward)
        with torch.no_grad():
            recon = torch.cat([l for l, _ in dec])[self.order]
            align = torch.stack(aligns).sum()
            return torch.cat([recon, align[None], (recon.sum() + w * align)[None]])


class _NativeStepper(_Stepper):
    """The same step as ``_Stepper``, run by ``csrc/group_step.cpp``: its group threads are plain
    C++ threads, so no kernel call waits for the GIL (see ``mmae_core.native``). Same kernels in
    the same order, so the same bits; the tests check it step for step."""

    def __init__(self, ext: ModuleType, model: MMAE, groups: list[list[int]], lr: float, align_weight: float, weight_decay: float = 0.0, intra_threads: int = 1):
        super().__init__(model, groups, lr, align_weight, weight_decay, intra_threads, native=True)
        # torch.optim's fused Adam, as FlatAdam calls it (bit for bit); its state lives here
        self.adams = [FlatAdam(leaf.data, grad, lr, weight_decay) for leaf, (_, grad) in zip(self.leaves, self.flat)]
        kw = self.adams[0].kw
        self.native = ext.GroupStep(
            [_stack_tuple(s) for s in self.enc], [_stack_tuple(s) for s in self.dec], groups,
            [[a.param, a.grad, a.exp_avg, a.exp_avg_sq, a.steps] for a in self.adams],
            kw["lr"], kw["beta1"], kw["beta2"], weight_decay, kw["eps"], align_weight, intra_threads, self.order,
        )

    def __call__(self, b: _Batch) -> Tensor:
        names = self.model.names
        xs = [b.x[m] for m in names]
        if b.inv_count is None and all(b.enc_rows[m] is None and b.dec_rows[m] is None for m in names):
            return self.native.step(xs, [], [], None)  # complete batch: no row lists to convert
        return self.native.step(xs, [b.enc_rows[m] for m in names], [b.dec_rows[m] for m in names], b.inv_count)

    def close(self) -> None:
        self.native.close()
        super().close()


def _stack_tuple(st: Stack) -> tuple:
    """A ``Stack`` as the C++ step takes it."""
    bns = [[g, b, mean, var, gg, gb] for (g, b, mean, var, _, _), (gg, gb) in zip(st.bns, st.bn_grads)]
    return (st.weights, st.weights_t, st.weight_grads, st.bias, st.bias_grad, bns,
            [float(bn[4]) for bn in st.bns], [float(bn[5]) for bn in st.bns])


def _split_validation(n: int, cfg: TrainConfig, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training part and of the validation part used for early stopping."""
    frac = cfg.val_fraction if cfg.val_fraction > 0 else (0.1 if cfg.early_stopping > 0 else 0.0)
    if frac <= 0:
        return np.arange(n), np.arange(0)
    perm = torch.randperm(n, generator=gen).numpy()
    n_val = min(max(1, int(round(n * frac))), n - 2)
    if n_val < 1:
        raise ConfigError(f"the train split has {n} items, too few to hold out a validation part; turn early stopping off.")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


@torch.no_grad()
def _validation_loss(model: MMAE, X: dict[str, Tensor], present: np.ndarray, device: torch.device, batch: int = 4096) -> float:
    model.eval()
    names = list(X)
    total, n = torch.zeros((), device=device), present.shape[0]
    for s in range(0, n, batch):
        p = present[s : s + batch]
        rows = _rows(p, names, device)
        out = model({m: X[m][s : s + batch] for m in names}, rows, rows, _inv_count(p, device))
        total += out.parts[:-2].sum() * p.shape[0]
    model.train()
    return float(total) / n


def train(
    fs: FeatureSet,
    cfg: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedModel:
    """Train an MMAE on ``fs``'s train split; raise CancelledError if ``should_stop()`` turns true.
    ``log`` hears about the native step's one-time build or why it is not used (default: stderr)."""
    cfg = cfg.checked()
    if len(fs.modalities) < 2:
        raise ConfigError(
            f"{fs.name} has only the modality {', '.join(fs.modalities) or 'none'}; an MMAE needs at least two, use the unimodal baseline instead."
        )
    if "train" not in fs.splits:
        raise DataError(f"{fs.name} has no train split; a model needs one to be fitted on.")
    split = fs.splits["train"]
    if split.n < 2:
        raise DataError(f"the train split of {fs.name} has {split.n} item; training needs at least two.")
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    present = _presence(split.features, list(fs.modalities))
    std = Standardizer.fit(split.features)
    X, present = _prepare(split.features, std, list(fs.modalities), present)
    prev_threads = torch.get_num_threads()
    with _reproducible(cfg.seed):
        gen = torch.Generator().manual_seed(cfg.seed)  # shuffling, validation split, modality dropout
        model = MMAE(fs.modalities, cfg.latent, cfg.hidden).to(device)  # weights from the seeded global RNG
        groups, threads = plan_groups(model, device, cfg.parallel)
        stepper: _Stepper | FusedStepper
        # The fused step is measured and tested on CPUs only; a GPU keeps the per-modality step.
        if device.type == "cpu" and len(groups) == 1 and cfg.modality_dropout <= 0 and cfg.align_weight <= 0 and present.all():
            stepper = FusedStepper(model, cfg.lr, cfg.weight_decay)
            X = torch.cat([X[m] for m in model.names], 1)  # the batches' layout; the per-modality tensors are freed
            plan = f"fused step, {threads} intra-op thread(s)"
        else:
            names = " | ".join("+".join(model.names[j] for j in g) for g in groups)
            plan = f"{names} on {len(groups)} thread(s), {threads} intra-op thread(s) each"
            ext = native.load(say=log) if device.type == "cpu" and len(groups) > 1 else None
            if ext is not None:
                stepper = _NativeStepper(ext, model, groups, cfg.lr, cfg.align_weight, cfg.weight_decay, threads)
                plan += ", native step"
            else:
                stepper = _Stepper(model, groups, cfg.lr, cfg.align_weight, cfg.weight_decay, threads)
        torch.set_num_threads(threads)
        try:
            history = _fit(model, stepper, X, present, cfg, gen, device, t0, on_progress, should_stop)
        finally:
            stepper.close()
            torch.set_num_threads(prev_threads)
    model.eval()
    tm = TrainedModel(model, cfg, dict(fs.modalities), std, history, 0.0, fs.name, plan=plan)
    _, per = encode(tm, split.features, complete_missing=False)
    tm.completion = fit_completion([per[m] for m in model.names], present)
    tm.train_seconds = time.perf_counter() - t0
    return tm


def _fit(
    model: MMAE,
    step: _Stepper | FusedStepper,
    X_all: dict[str, Tensor] | Tensor,
    present_all: np.ndarray,
    cfg: TrainConfig,
    gen: torch.Generator,
    device: torch.device,
    t0: float,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> list[dict]:
    """The epoch loop; returns the history (and restores the best weights under early stopping)."""
    names = model.names
    M = len(names)
    tr, va = _split_validation(len(present_all), cfg, gen)
    fused = isinstance(step, FusedStepper)  # then X_all is the (n, D) side-by-side tensor
    if len(va):
        if fused:
            X, X_val = X_all[tr].to(device), step.columns(X_all[va].to(device))
        else:
            X = {m: x[tr].to(device) for m, x in X_all.items()}
            X_val = {m: x[va].to(device) for m, x in X_all.items()}
        present, present_val = present_all[tr], present_all[va]
    else:
        X = X_all.to(device) if fused else {m: x.to(device) for m, x in X_all.items()}
        present = present_all
    bufs = {} if fused else {m: x.new_empty(min(cfg.batch_size, len(x)), x.shape[1]) for m, x in X.items()}
    steps = (len(present) + cfg.batch_size - 1) // cfg.batch_size
    history: list[dict] = []
    best_val, best_state, bad_epochs = float("inf"), None, 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        acc = torch.zeros(M + 2, device=device)
        batches = step.batches(X, cfg.batch_size, gen) if fused else _epoch_batches(X, present, bufs, cfg.batch_size, cfg.modality_dropout, gen, device)
        for batch in batches:
            if should_stop is not None and should_stop():
                raise CancelledError(f"training was cancelled by the user in epoch {epoch} of {cfg.epochs}; nothing was kept.")
            acc += step(batch)
        parts = (acc / steps).tolist()  # the one host sync of the epoch
        if not np.all(np.isfinite(parts)):
            raise ConfigError(
                f"training diverged at epoch {epoch} (the loss became NaN or infinite); lower the learning rate (now {cfg.lr:g})"
                + (f" or the alignment weight (now {cfg.align_weight:g})" if cfg.align_weight > 0 else "")
                + " and train again."
            )
        losses = {m: parts[j] for j, m in enumerate(names)}
        losses["total"] = parts[M + 1]
        if cfg.align_weight > 0:
            losses["align"] = parts[M]
        record: dict = {"epoch": epoch, "losses": losses}
        stop_early = False
        if len(va):
            val = _validation_loss(model, X_val, present_val, device)
            record["val_total"] = val
            if val < best_val - 1e-7:
                best_val, bad_epochs = val, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                stop_early = cfg.early_stopping > 0 and bad_epochs >= cfg.early_stopping
        elapsed = time.perf_counter() - t0
        record["elapsed_s"] = elapsed
        history.append(record)
        if on_progress is not None:
            eta = 0.0 if stop_early else elapsed / epoch * (cfg.epochs - epoch)
            on_progress(Progress(epoch, cfg.epochs, epoch * steps, steps, dict(losses), elapsed, eta))
        if stop_early:
            break
    if best_state is not None and cfg.early_stopping > 0:
        model.load_state_dict(best_state)
    return history


# ------------------------------------------------------------------------------------------ encoding


def _inputs(tm: TrainedModel, features: dict[str, np.ndarray]) -> tuple[list[str], int]:
    """The model's modalities present in ``features`` (in model order) and the item count; checks dims."""
    unknown = [m for m in features if m not in tm.modalities]
    if unknown:
        raise DataError(
            f"the model knows the modalities {', '.join(tm.modalities)} but got {', '.join(unknown)}; rename or drop those arrays."
        )
    names = [m for m in tm.modalities if m in features]
    if not names:
        raise DataError(f"no features to encode; give at least one of {', '.join(tm.modalities)}.")
    ns = {m: features[m].shape[0] for m in names}
    if len(set(ns.values())) > 1:
        raise DataError("the feature arrays have different row counts (" + ", ".join(f"{m}: {k}" for m, k in ns.items()) + "); align them by item.")
    for m in names:
        x = features[m]
        if x.ndim != 2 or x.shape[1] != tm.modalities[m]:
            raise DataError(f"{m} has shape {tuple(x.shape)} but the model expects (items, {tm.modalities[m]}); use features of the same kind it was trained on.")
    return names, ns[names[0]]


def _batches_for_inference(tm: TrainedModel, features: dict[str, np.ndarray], batch_size: int) -> Iterator[tuple[int, dict[str, Tensor], np.ndarray, list[str]]]:
    names, n = _inputs(tm, features)
    device = tm.device
    for s in range(0, n, batch_size):
        chunk = {m: features[m][s : s + batch_size] for m in names}
        X, present = _prepare(chunk, tm.standardizer, names)
        yield s, {m: x.to(device) for m, x in X.items()}, present, names


@torch.inference_mode()
def encode(tm: TrainedModel, features: dict[str, np.ndarray], batch_size: int = 4096, complete_missing: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused latents (n, latent) and per-modality latents (n, latent), NaN where the item lacks it.

    ``features`` may hold any non-empty subset of the model's modalities; an absent key counts as
    missing for every item. An item with no modality at all gets a NaN fused latent. The fused latent
    of an item lacking modalities is the model's completion of it (``completion.py``) when the model
    has one and ``complete_missing``; else the mean of the encodings it has.
    """
    model = tm.model.eval()
    _, n = _inputs(tm, features)
    fused = np.full((n, model.latent), np.nan, dtype=np.float32)
    per = {m: np.full((n, model.latent), np.nan, dtype=np.float32) for m in model.names}
    for s, X, present, names in _batches_for_inference(tm, features, batch_size):
        if not present.any():
            continue
        rows = _rows(present, names, tm.device)
        z, zs = model.fuse(X, rows, _inv_count(present, tm.device))
        fused[s : s + len(present)] = z.float().cpu().numpy()
        for j, m in enumerate(names):
            if m in zs:
                per[m][s + np.flatnonzero(present[:, j])] = zs[m].float().cpu().numpy()
    if complete_missing and tm.completion is not None:
        present_all = np.stack([~np.isnan(per[m][:, 0]) for m in model.names], axis=1)
        fused = complete(tm.completion, fused, [per[m] for m in model.names], present_all)
    return fused, per


@torch.inference_mode()
def reconstruction_error(tm: TrainedModel, features: dict[str, np.ndarray], batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Per item and modality, the MSE of its reconstruction from the fused latent (standardized units).

    NaN where the item lacks the modality (there is nothing to compare with). High values flag items
    the model has not learned to represent: the novelty signal of PRODUCT.md §4.
    """
    model = tm.model.eval()
    _, n = _inputs(tm, features)
    err = {m: np.full(n, np.nan, dtype=np.float32) for m in model.names}
    fused, _ = encode(tm, features, batch_size)  # completed, so a partial item is decoded from where it sits
    for s, X, present, names in _batches_for_inference(tm, features, batch_size):
        if not present.any():
            continue
        z = torch.from_numpy(np.nan_to_num(fused[s : s + len(present)])).to(tm.device)
        for j, m in enumerate(names):
            idx = np.flatnonzero(present[:, j])
            if idx.size == 0:
                continue
            r = torch.from_numpy(idx).to(tm.device)
            rec = model.dec[model.names.index(m)](z.index_select(0, r))
            err[m][s + idx] = ((rec - X[m].index_select(0, r)) ** 2).mean(dim=1).float().cpu().numpy()
    return err
