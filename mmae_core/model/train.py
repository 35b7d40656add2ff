"""Training, encoding and reconstruction error for the MMAE.

One model definition (``model.MMAE``, plain ``torch.nn`` modules), gradients from autograd, the
update from ``torch.optim``, batches from ``batches.BatchSource``: a change to the model or the
objective is made once, and training reads a split from memory or from disk alike.

Why the loop looks the way it does (measured by benchmarks/train_speed.py on a 2-core CPU):

* No DataLoader: a batch is a seeded gather of rows, standardized on the way (``BatchSource``);
  worker processes would copy every batch between processes for no gain on two cores.
* Losses are summed on the device and read back once per epoch (one host sync per epoch).
* Adam is ``torch.optim``'s fused kernel where the build has it (one kernel for every parameter),
  else its multi-tensor (foreach) path; the fused one measured faster here.
* One intra-op thread on a CPU (``STEP_THREADS``), with OpenMP's idle threads sleeping
  (``mmae_core/__init__.py``). Measured by ``benchmarks/train_speed.py --part threads`` on the 2-core
  machine, ms per batch-128 step, alone / beside a busy core: one thread 8.4 / 15.9-19.3; two
  sleeping threads 11.4-19.1 / 10.7-11.3; two spinning threads (OpenMP's default) 30-63 / 12-30,
  and 983 ms under a heavier load. The ops are too short for a second thread to pay on a quiet
  machine, and one thread never waits for a core another program holds. The count is fixed, not
  chosen by load, because it changes how sums are rounded and a seed must give the same model.
* ``torch.compile`` was measured and rejected: tens of seconds of compilation for a small model
  whose step it shortens by about a tenth.

Everything random comes from the config's seed (weights, validation hold-out, shuffling, modality
dropout), so the same seed, data and config give identical latents on the CPU.
"""
from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from mmae_core.model.batches import ArrayRows, BatchSource, RowSource, dropout_mask, inv_count, presence, rows_of, scan, standardized
from mmae_core.model.completion import LatentCompletion, complete, fit_completion
from mmae_core.config import TrainConfig
from mmae_core.data.dataset import FeatureSet
from mmae_core.model.device import resolve_device
from mmae_core.model.distributed import Ranks
from mmae_core.errors import CancelledError, ConfigError, DataError
from mmae_core.model.mmae import AUX, MMAE
from mmae_core.model.standardize import Standardizer

STEP_THREADS = 1  # intra-op threads of a training step on a CPU (see the module docstring)

__all__ = ["Progress", "TrainedModel", "train", "train_rows", "encode", "reconstruction_error", "dropout_mask"]


@dataclass
class Progress:
    """What a progress bar and live loss curves need, sent once per epoch."""

    epoch: int
    epochs: int
    step: int
    steps_per_epoch: int
    losses: dict[str, float]  # modality -> mean reconstruction MSE this epoch, plus 'total' (and each optional term that is on: 'align', 'contrastive', 'cross')
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
    plan: str = ""  # how the step ran, e.g. "autograd, fused Adam, 2 intra-op thread(s)" (for the log)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# ------------------------------------------------------------------------------------------ training


@contextmanager
def _step_threads(device: torch.device) -> Iterator[int]:
    """The intra-op thread count for training on ``device``, restored afterwards (it is per thread,
    so a dashboard's other sessions keep theirs)."""
    prev = torch.get_num_threads()
    n = STEP_THREADS if device.type == "cpu" else prev
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(prev)


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


def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> tuple[torch.optim.Optimizer, str]:
    """Adam (AdamW when there is weight decay) as one fused kernel where the build supports it, else
    the multi-tensor (foreach) path; and which one it is. Plain Adam at 0 keeps the paper preset
    exactly the paper's."""
    kind = torch.optim.AdamW if weight_decay > 0 else torch.optim.Adam
    extra = {"weight_decay": weight_decay} if weight_decay > 0 else {}
    try:
        return kind(params, lr=lr, fused=True, **extra), f"fused {kind.__name__}"
    except (RuntimeError, TypeError, ValueError):
        return kind(params, lr=lr, foreach=True, **extra), f"foreach {kind.__name__}"


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
def _validation_loss(model: MMAE, val: BatchSource, batch: int = 4096) -> float:
    model.eval()
    total = torch.zeros((), device=val.device)
    for b in val.in_order(batch):
        out = model(b.x, b.dec_rows, b.dec_rows, b.inv_count)
        total += out.parts[: len(model.names)].sum() * b.size  # reconstruction only: comparable across presets
    model.train()
    return float(total) / max(val.n, 1)


def train(
    fs: FeatureSet,
    cfg: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainedModel:
    """Train an MMAE on ``fs``'s train split (in memory); raise CancelledError if ``should_stop()``
    turns true. ``train_rows`` checks the modalities and the item count."""
    if "train" not in fs.splits:
        raise DataError(f"{fs.name} has no train split; a model needs one to be fitted on.")
    split = fs.splits["train"]
    return train_rows(ArrayRows({m: split.features[m] for m in fs.modalities}), cfg, fs.name, on_progress, should_stop)


def train_rows(
    source: RowSource,
    cfg: TrainConfig,
    dataset_name: str = "",
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    ranks: Ranks | None = None,
) -> TrainedModel:
    """Train an MMAE on every row of ``source`` (memory or disk; see ``batches``). The config is
    taken as checked: callers validate it once, where it enters.

    ``ranks``: the process group of a torchrun launch (``distributed.process_group``); each process
    then trains on its share of every batch under DistributedDataParallel. Only rank 0 fits the
    latent completion: the other ranks' models are the same weights and are not kept."""
    names = list(source.dims)
    if len(names) < 2:
        raise ConfigError(f"{dataset_name or 'the data'} has only the modality {', '.join(names) or 'none'}; an MMAE needs at least two, use the unimodal baseline instead.")
    if source.n < 2:
        raise DataError(f"the train split of {dataset_name or 'the data'} has {source.n} item; training needs at least two.")
    device = resolve_device(cfg.device) if ranks is None else ranks.device
    t0 = time.perf_counter()
    present, std = scan(source, names)  # one streaming pass: presence mask and statistics
    if ranks is not None:
        std = ranks.same_as_main(std)  # one scale on every rank, whatever a rank's arithmetic
    with _reproducible(cfg.seed), _step_threads(device) as threads:
        gen = torch.Generator().manual_seed(cfg.seed)  # validation split, shuffling, modality dropout
        model = MMAE(source.dims, cfg.latent, cfg.hidden, cfg.fusion).to(device)  # weights from the seeded global RNG
        opt, opt_name = make_optimizer(list(model.parameters()), cfg.lr, cfg.weight_decay)
        tr, va = _split_validation(source.n, cfg, gen)
        shard = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
        batches = BatchSource(source, names, std, present, cfg.batch_size, cfg.modality_dropout, tr, device, shard)
        val = BatchSource(source, names, std, present, cfg.batch_size, 0.0, va, device) if len(va) else None
        history = _fit(model, opt, batches, val, cfg, gen, t0, on_progress, should_stop, ranks)
    model.eval()
    plan = f"autograd, {opt_name}, {threads} intra-op thread(s)" + ("" if device.type == "cpu" else f", {device.type}")
    plan += "" if ranks is None else f", {ranks.describe()}"
    tm = TrainedModel(model, cfg, dict(source.dims), std, history, 0.0, dataset_name, plan=plan)
    if ranks is None or ranks.is_main:
        tm.completion = _fit_completion(tm, source, present)
    tm.train_seconds = time.perf_counter() - t0
    return tm


def _fit_completion(tm: TrainedModel, source: RowSource, present: np.ndarray) -> LatentCompletion | None:
    """Latent completion (``completion.py``), fitted on the encodings of at most
    ``completion.MAX_FIT_ITEMS`` complete train items, evenly spaced, so an archive-sized split is
    never encoded whole in memory for it."""
    from mmae_core.model.completion import MAX_FIT_ITEMS

    complete_rows = np.flatnonzero(present.all(axis=1))
    if len(complete_rows) > MAX_FIT_ITEMS:
        rows = complete_rows[np.linspace(0, len(complete_rows) - 1, MAX_FIT_ITEMS).astype(int)]
        sub = {m: source.take(m, rows) for m in tm.modalities}
        fused, per = encode(tm, sub, complete_missing=False)
        return fit_completion([per[m] for m in tm.model.names], present[rows], fused)
    fused, per = encode(tm, source, complete_missing=False)
    return fit_completion([per[m] for m in tm.model.names], present, fused)


def _fit(
    model: MMAE,
    opt: torch.optim.Optimizer,
    batches: BatchSource,
    val: BatchSource | None,
    cfg: TrainConfig,
    gen: torch.Generator,
    t0: float,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
    ranks: Ranks | None = None,
) -> list[dict]:
    """The epoch loop; returns the history (and restores the best weights under early stopping).

    Under ``ranks`` the step calls the model through DistributedDataParallel (which averages the
    gradients in ``backward``); the epoch's losses are summed over the ranks, validation runs on
    rank 0's BatchNorm statistics and rank 0 decides an early stop, so every rank runs the same
    number of steps. ``should_stop`` is asked on each rank (the dashboard never runs under torchrun)."""
    names = model.names
    M = len(names)
    steps = batches.steps_per_epoch()
    net = model if ranks is None else ranks.wrap(model, may_skip=batches.p_drop > 0 or not batches.present.all())
    shares = 1 if ranks is None else ranks.world_size
    history: list[dict] = []
    best_val, best_state, bad_epochs = float("inf"), None, 0
    model.train()
    for epoch in range(1, cfg.epochs + 1):
        acc = torch.zeros(M + len(AUX) + 1, device=batches.device)
        for b in batches.epoch(gen):
            if should_stop is not None and should_stop():
                raise CancelledError(f"training was cancelled by the user in epoch {epoch} of {cfg.epochs}; nothing was kept.")
            out = net(b.x, b.enc_rows, b.dec_rows, b.inv_count, cfg.align_weight, cfg.contrastive_weight,
                      cfg.temperature, cfg.cross_weight, cfg.input_noise, cfg.noise_full_width)
            opt.zero_grad(set_to_none=False)  # an encoder absent from a batch gets a zero gradient, as Adam expects
            out.loss.backward()
            opt.step()
            acc += out.parts
        if ranks is not None:
            ranks.sum(acc)
        parts = (acc / (steps * shares)).tolist()  # the one host sync of the epoch
        if not np.all(np.isfinite(parts)):
            raise ConfigError(
                f"training diverged at epoch {epoch} (the loss became NaN or infinite); lower the learning rate (now {cfg.lr:g})"
                + (f" or the alignment weight (now {cfg.align_weight:g})" if cfg.align_weight > 0 else "")
                + (f" or the contrastive weight (now {cfg.contrastive_weight:g})" if cfg.contrastive_weight > 0 else "")
                + " and train again."
            )
        losses = {m: parts[j] for j, m in enumerate(names)}
        losses["total"] = parts[-1]
        for i, (term, weight) in enumerate(zip(AUX, (cfg.align_weight, cfg.contrastive_weight, cfg.cross_weight))):
            if weight > 0:
                losses[term] = parts[M + i]
        record: dict = {"epoch": epoch, "losses": losses}
        stop_early = False
        if val is not None:
            if ranks is not None:
                ranks.sync_buffers(model)
            v = _validation_loss(model, val)
            record["val_total"] = v
            if v < best_val - 1e-7:
                best_val, bad_epochs = v, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                stop_early = cfg.early_stopping > 0 and bad_epochs >= cfg.early_stopping
            if ranks is not None:
                stop_early = ranks.agree(stop_early)
        elapsed = time.perf_counter() - t0
        record["elapsed_s"] = elapsed
        history.append(record)
        if on_progress is not None:
            eta = 0.0 if stop_early else elapsed / epoch * (cfg.epochs - epoch)
            on_progress(Progress(epoch, cfg.epochs, epoch * steps, steps, dict(losses), elapsed, eta))
        if stop_early:
            break
    if ranks is not None:
        ranks.sync_buffers(model)  # the kept model is rank 0's, BatchNorm statistics included
    if best_state is not None and cfg.early_stopping > 0:
        model.load_state_dict(best_state)
    return history


# ------------------------------------------------------------------------------------------ encoding


def _inputs(tm: TrainedModel, features: dict[str, np.ndarray] | RowSource) -> tuple[RowSource, list[str]]:
    """A row source over the model's modalities present in ``features`` (in model order); checks dims."""
    dims = features.dims if not isinstance(features, dict) else {m: (x.shape[1] if x.ndim == 2 else -1) for m, x in features.items()}
    unknown = [m for m in dims if m not in tm.modalities]
    if unknown:
        raise DataError(
            f"the model knows the modalities {', '.join(tm.modalities)} but got {', '.join(unknown)}; rename or drop those arrays."
        )
    names = [m for m in tm.modalities if m in dims]
    if not names:
        raise DataError(f"no features to encode; give at least one of {', '.join(tm.modalities)}.")
    for m in names:
        if dims[m] != tm.modalities[m]:
            shape = tuple(features[m].shape) if isinstance(features, dict) else ("items", dims[m])
            raise DataError(f"{m} has shape {shape} but the model expects (items, {tm.modalities[m]}); use features of the same kind it was trained on.")
    if isinstance(features, dict):
        return ArrayRows({m: features[m] for m in names}), names
    return features, names


def _batches_for_inference(tm: TrainedModel, source: RowSource, names: list[str], batch_size: int) -> Iterator[tuple[int, dict[str, torch.Tensor], np.ndarray]]:
    """The source in order, ``batch_size`` rows at a time: start row, standardized tensors, presence."""
    for s, chunk in source.chunks(batch_size):
        present = presence(chunk, names, s)
        X = standardized(chunk, tm.standardizer, names, present)
        yield s, {m: x.to(tm.device) for m, x in X.items()}, present


@torch.inference_mode()
def encode(tm: TrainedModel, features: dict[str, np.ndarray] | RowSource, batch_size: int = 4096, complete_missing: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fused latents (n, latent) and per-modality latents (n, latent), NaN where the item lacks it.

    ``features`` may hold any non-empty subset of the model's modalities; an absent key counts as
    missing for every item. An item with no modality at all gets a NaN fused latent. The fused latent
    of an item lacking modalities is the model's completion of it (``completion.py``) when the model
    has one and ``complete_missing``; else the mean of the encodings it has.
    """
    model = tm.model.eval()
    source, names = _inputs(tm, features)
    n = source.n
    fused = np.full((n, model.latent), np.nan, dtype=np.float32)
    per = {m: np.full((n, model.latent), np.nan, dtype=np.float32) for m in model.names}
    for s, X, present in _batches_for_inference(tm, source, names, batch_size):
        if not present.any():
            continue
        rows = rows_of(present, names, tm.device)
        z, zs = model.fuse(X, rows, inv_count(present, tm.device))
        fused[s : s + len(present)] = z.float().cpu().numpy()
        for j, m in enumerate(names):
            if m in zs:
                per[m][s + np.flatnonzero(present[:, j])] = zs[m].float().cpu().numpy()
    return (_completed(tm, fused, per) if complete_missing else fused), per


def _completed(tm: TrainedModel, fused: np.ndarray, per: dict[str, np.ndarray]) -> np.ndarray:
    """``fused`` with every partial item's latent completed (``completion.py``) when the model has maps;
    ``per``: per-modality latents with NaN rows (or no key) where an item lacks the modality."""
    if tm.completion is None:
        return fused
    model = tm.model
    full = [per[m] if m in per else np.full((len(fused), model.latent), np.nan, dtype=np.float32) for m in model.names]
    present = np.stack([~np.isnan(p[:, 0]) for p in full], axis=1)
    return complete(tm.completion, fused, full, present)


@torch.inference_mode()
def fuse_latents(tm: TrainedModel, per: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """The fused latent ``encode`` gives an item with the modalities ``per`` holds, from per-modality
    latents already encoded (a NaN row: the item lacks that modality; an absent key: every item does).

    The same fusion rule (``MMAE.fuse_encodings``) and the same completion of partial items, without
    the features: the conflict score asks where the item would sit on one modality alone and on the
    others alone, from the latents in the store.
    """
    model = tm.model.eval()
    names = [m for m in model.names if m in per]
    if not names:
        raise DataError(f"no latents to fuse; give at least one of {', '.join(model.names)}.")
    n = len(per[names[0]])
    fused = np.full((n, model.latent), np.nan, dtype=np.float32)
    present = np.stack([np.isfinite(per[m]).all(axis=1) for m in names], axis=1)
    for s in range(0, n, batch_size):
        p = present[s : s + batch_size]
        some = p.any(axis=1)
        if not some.any():
            continue
        p, rows_in = p[some], s + np.flatnonzero(some)
        hs = {m: torch.from_numpy(np.ascontiguousarray(per[m][rows_in[p[:, j]]], dtype=np.float32)).to(tm.device)
              for j, m in enumerate(names) if p[:, j].any()}
        rows = {m: r for m, r in rows_of(p, names, tm.device).items() if m in hs}
        z = model.fuse_encodings(hs, rows, len(p), inv_count=inv_count(p, tm.device))
        fused[rows_in] = z.float().cpu().numpy()
    return _completed(tm, fused, per)


@torch.inference_mode()
def reconstruction_error(tm: TrainedModel, features: dict[str, np.ndarray] | RowSource, batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Per item and modality, the MSE of its reconstruction from the fused latent (standardized units).

    NaN where the item lacks the modality (there is nothing to compare with). High values flag items
    the model has not learned to represent: the novelty signal.
    """
    model = tm.model.eval()
    source, names = _inputs(tm, features)
    err = {m: np.full(source.n, np.nan, dtype=np.float32) for m in model.names}
    fused, _ = encode(tm, source, batch_size)  # completed, so a partial item is decoded from where it sits
    for s, X, present in _batches_for_inference(tm, source, names, batch_size):
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
