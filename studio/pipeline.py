"""The user-level jobs (train, evaluate, propose, novelty...) shared by the CLI and the dashboard.

Each function takes a ``Store`` and names, does the work with the pure core modules, and writes the
result in one store action. Keeping them here means the CLI and the pages stay thin and cannot drift
apart: a curator clicking "Train" and a batch script running ``train`` execute the same code.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import pandas as pd

from mmae_core.config import EvalConfig, TrainConfig
from mmae_core.data.dataset import FeatureSet
from mmae_core.errors import ConfigError, NotFoundError, StudioError
from mmae_core.clustering.graph import AUTO, DEFAULT_RESOLUTION, check_resolution, check_setting, default_method, parse_k_value
from mmae_core.clustering.kmeans import EVAL_SAMPLE
from mmae_core.log import Log, silent
from store.common import check_name

if TYPE_CHECKING:
    from mmae_core.model.distributed import Ranks


def default_model_name(cfg: TrainConfig, taken: list[str]) -> str:
    """A readable, unique model name such as ``paper-e100-s42``."""
    base = f"{cfg.preset}-e{cfg.epochs}-s{cfg.seed}"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


@dataclass
class TrainOutcome:
    model_name: str
    train_seconds: float
    final_losses: dict[str, float]
    missing: dict[str, int]
    completion_items: int = 0  # complete train items the latent completion was fitted on; 0 = none fitted
    registered: bool = True  # False on the ranks other than 0 of a torchrun launch: they only train


class SlowdownWatch:
    """Notices, once, when training epochs become much slower than the fastest so far.

    Why: intra-op threads wait for each other at the end of every op, so a program that takes a core
    can make epochs several times slower. A curator watching a progress bar crawl should learn why
    and what to do, not guess. The first epoch (which includes the setup) is never the reference.
    """

    def __init__(self, factor: float = 3.0, min_extra_s: float = 1.0):
        self.factor, self.min_extra_s = factor, min_extra_s
        self.best, self.last, self.warned = float("inf"), 0.0, False

    def __call__(self, epoch: int, elapsed_s: float) -> str | None:
        took, self.last = elapsed_s - self.last, elapsed_s
        if epoch < 2:
            return None
        if took < self.best:
            self.best = took
            return None
        if self.warned or epoch < 3 or took <= self.factor * self.best or took - self.best < self.min_extra_s:
            return None  # (a hiccup of a few ms on tiny epochs is not worth a note)
        self.warned = True
        return (f"note: epoch {epoch} took {took:.1f} s, {took / self.best:.0f}x the fastest so far "
                f"({self.best:.2f} s): another program is using the cores. Training continues; close other "
                "CPU-heavy programs to speed it up.")


def missing_summary(fs: FeatureSet) -> dict[str, int]:
    """Items lacking each modality, over all splits (what import and training report)."""
    out = {m: 0 for m in fs.modalities}
    for sp in fs.splits.values():
        for m, c in sp.missing_counts().items():
            out[m] += c
    return out


class ImportShare:
    """The share of an import's feature bytes stored so far, fed by ``Store.add_dataset``'s
    ``on_written(split, modality, rows)``: what the CLI prints on stderr and the Data page's bar shows."""

    def __init__(self, fs: FeatureSet) -> None:
        self.total = sum(sp.n * d for sp in fs.splits.values() for d in fs.modalities.values()) or 1
        self.dims, self.done = dict(fs.modalities), 0

    def __call__(self, split: str, modality: str, rows: int) -> float:
        self.done += rows * self.dims[modality]
        return min(1.0, self.done / self.total)


LARGE_TRAIN = 100_000  # train items from which a dataset counts as large: bigger batches, a sample budget
LARGE_BATCH = 2048  # batch size for a large dataset when none is asked (why: docs/scale.md, train_speed)
# Items drawn when a large dataset is trained with neither epochs nor a budget asked. The preset's 100
# epochs of a million-item archive are 95 million items, over an hour of steps here; at the measured
# ~19,700 items/s (batch 2,048, docs/results.md) two million are under two minutes, and on the
# synthetic archive the loss has flattened by then (benchmarks/scale.py).
LARGE_SAMPLES = 2_000_000
ENCODE_ROWS = 12 * 4096  # items encoded and written at a time (4 latent kinds x 128 dims = 100 MB); a multiple
# of encode's batch, so batches fall where they would in one pass and the latents are the same bits


def default_samples(n_train: int, samples: int | None, epochs_given: bool) -> int | None:
    """The sample budget to train with: the one asked, else ``LARGE_SAMPLES`` for a large train split
    (``LARGE_TRAIN`` items or more) when no epochs were asked either, else None (the preset's epochs)."""
    if samples is None and not epochs_given and n_train >= LARGE_TRAIN:
        return LARGE_SAMPLES
    return samples


def sized_note(cfg: TrainConfig, n_train: int) -> str | None:
    """Why ``cfg`` trains fewer epochs than its preset's on ``n_train`` items (``config.sized_epochs``),
    or None where it trains the preset's own: the CLI says it on stderr, the Train page beside the field."""
    from mmae_core.config import sized_epochs

    epochs = sized_epochs(cfg, n_train)
    if epochs == cfg.epochs:
        return None
    return f"{epochs} epochs for {n_train:,} train items: the preset's {cfg.epochs} cost clusters on small real sets"


def sized(cfg: TrainConfig, n_train: int, samples: int | None, epochs_given: bool, log: Log = silent) -> TrainConfig:
    """``cfg`` with its epochs sized to a small train split (``config.sized_epochs``) when the user
    asked for no epochs and no budget; says so, since the preset's own number is not what runs."""
    from mmae_core.config import sized_epochs

    note = None if samples is not None or epochs_given else sized_note(cfg, n_train)
    if note is None:
        return cfg
    log(f"{note}; --epochs sets them")
    return replace(cfg, epochs=sized_epochs(cfg, n_train))


def budgeted(cfg: TrainConfig, n_train: int, samples: int | None = None, batch_given: bool = True) -> TrainConfig:
    """The config with a training budget: ``samples`` items drawn in all (rounded up to whole epochs
    of the train split, so every item is seen equally often and a seed stays reproducible), and, for
    a large split with no batch size asked, ``LARGE_BATCH``.

    Why samples and not steps: the number of items seen is what the time grows with (a step at batch
    2,048 costs about 16 steps at 128), and it reads the same whatever the batch."""
    from dataclasses import replace

    if samples is not None:
        if samples < 1:
            raise ConfigError(f"the sample budget must be a positive number of items (got {samples}).")
        cfg = replace(cfg, epochs=max(1, -(-int(samples) // max(1, n_train))))
    if not batch_given and n_train >= LARGE_TRAIN and cfg.batch_size < LARGE_BATCH:
        cfg = replace(cfg, batch_size=LARGE_BATCH)
    return cfg


def missing_of(store: "object", dataset: str) -> dict[str, int]:
    """Items lacking each modality, over all splits, read from the stored files in windows."""
    return missing_summary(store.load_dataset(dataset, lazy=True))


def encode_to_files(tm: object, rows: "object", folder: "object", on_rows: Callable[[int], None] | None = None) -> dict[str, object]:
    """Fused and per-modality latents of one split, encoded ``ENCODE_ROWS`` items at a time and
    appended to ``<folder>/<kind>.npy``; returns them as ``NpyWindows`` (what ``Store.add_model`` takes)."""
    from pathlib import Path

    from mmae_core.data.lazy import NpyAppender, NpyWindows
    from mmae_core.model.train import encode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ["fused", *tm.modalities]
    outs = {k: NpyAppender(folder / f"{k}.npy", rows.n, tm.model.latent) for k in kinds}
    try:
        for s, chunk in rows.chunks(ENCODE_ROWS):
            fused, per = encode(tm, chunk)
            outs["fused"].append(fused)
            for m in tm.modalities:
                outs[m].append(per[m])
            if on_rows is not None:
                on_rows(s + len(fused))
        for w in outs.values():
            w.close()
    except BaseException:
        for w in outs.values():
            w._fh.close()
        raise
    return {k: NpyWindows(folder / f"{k}.npy") for k in kinds}


def train_and_register(
    store: "object",
    dataset: str,
    cfg: TrainConfig | None = None,
    model_name: str | None = None,
    on_progress: Callable[[object], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Log = silent,
    samples: int | None = None,
    batch_given: bool = True,
    epochs_given: bool = True,
    ranks: "Ranks | None" = None,
) -> TrainOutcome:
    """Train an MMAE on a stored dataset from its feature files (``Store.feature_rows``: read in
    batches, never whole), encode every split in chunks to temp files, then register checkpoint and
    all latents in one action. ``samples``/``batch_given``/``epochs_given``: the budget
    (``default_samples``, ``budgeted``). ``cfg`` None is the default preset (``config.DEFAULT_PRESET``).

    ``ranks``: a torchrun launch (``mmae_core.model.distributed``). Every rank trains on its share;
    only rank 0 encodes and writes to the store, so the other ranks may hold a read-only ``store``.
    They return the outcome with ``registered`` False."""
    import tempfile

    from mmae_core.config import DEFAULT_PRESET, preset

    from mmae_core.model.checkpoint import save_checkpoint
    from mmae_core.model.train import train_rows

    cfg = preset(DEFAULT_PRESET) if cfg is None else cfg
    if ranks is not None and not ranks.is_main:
        # Rank 0 checks first: a refusal (unknown dataset, name taken) is then said once, by rank 0,
        # and torchrun stops the ranks still waiting here. Their reads then no longer meet rank 0's.
        ranks.barrier()
    listed = store.list_models(dataset)
    taken = list(listed["name"]) if len(listed) else []
    rows = store.feature_rows(dataset, "train")
    asked = samples
    samples = default_samples(rows.n, samples, epochs_given)
    cfg = budgeted(sized(cfg, rows.n, samples, epochs_given, log), rows.n, samples, batch_given)
    name = check_name(model_name, "model name") if model_name else default_model_name(cfg, taken)
    if name in taken:
        raise ConfigError(f"a model named '{name}' already exists for {dataset}; choose another --model-name.")
    missing = missing_of(store, dataset)
    if any(missing.values()) and cfg.modality_dropout == 0:
        log(
            "note: this dataset has items with missing modalities ("
            + ", ".join(f"{m}: {c}" for m, c in missing.items() if c)
            + "); the 'aligned' preset (--preset aligned) is trained for that and is recommended."
        )
    if ranks is not None and ranks.is_main:
        ranks.barrier()  # rank 0's checks passed: the other ranks may go on
    budget = f", {samples:,} samples" if samples is not None else ""
    if samples is not None and asked is None:
        budget += (f" (the budget for a train split of {LARGE_TRAIN:,} items or more when no epochs are asked; "
                   "--epochs or --samples sets another)")
    log(f"training {name} on {dataset} ({rows.n} train items, preset {cfg.preset}, {cfg.epochs} epochs{budget}, batch {cfg.batch_size})")
    watch = SlowdownWatch()

    def progress(p: object) -> None:
        note = watch(p.epoch, p.elapsed_s)
        if note:
            log(note)
        if on_progress is not None:
            on_progress(p)

    tm = train_rows(rows, cfg, dataset, on_progress=progress, should_stop=should_stop, ranks=ranks)
    if ranks is not None and not ranks.is_main:
        return TrainOutcome(name, float(tm.train_seconds), {}, missing, 0, registered=False)
    log(f"trained in {tm.train_seconds:.1f} s ({tm.plan})")
    n_fit = tm.completion.n_fit if tm.completion is not None else 0
    if any(missing.values()):
        log(f"note: items lacking modalities get a completed fused latent (fitted on {n_fit} complete train items)" if n_fit else
            "note: too few train items have every modality to fit latent completion; items lacking modalities are fused by the mean of what they have")
    final = dict(tm.history[-1]["losses"]) if tm.history else {}
    info = {
        "train_seconds": round(float(tm.train_seconds), 3),
        "final_losses": final,
        "history": tm.history,
        "train_items": rows.n,
        "missing": missing,
        "completion_items": n_fit,
        "plan": tm.plan,
        "source": "trained",
    }
    if samples is not None:
        info["samples"] = int(samples)
    if ranks is not None:
        info["processes"] = ranks.world_size
    del rows
    with tempfile.TemporaryDirectory(prefix="mmae-latents-") as tmp:
        latents = encode_splits(store, dataset, tm, tmp, log)
        store.add_model(dataset, name, save_checkpoint(tm), cfg.to_dict(), info, latents)
    log(f"registered model {name}")
    return TrainOutcome(name, float(tm.train_seconds), final, missing, n_fit)


def encode_splits(store: "object", dataset: str, tm: object, tmp: str, log: Log = silent) -> dict[str, dict[str, object]]:
    """Every split of a stored dataset encoded in chunks to files under ``tmp`` (``encode_to_files``)."""
    from pathlib import Path

    latents: dict[str, dict[str, object]] = {}
    for split in store.load_dataset(dataset, lazy=True).splits:
        rows = store.feature_rows(dataset, split)
        t0 = time.perf_counter()
        latents[split] = encode_to_files(tm, rows, Path(tmp) / split)
        log(f"encoded {split}: {rows.n} items in {time.perf_counter() - t0:.1f} s")
    return latents


def register_checkpoint(store: "object", dataset: str, data: bytes, model_name: str, log: Log = silent) -> str:
    """Load a checkpoint (safely), check it fits the dataset, encode and register it."""
    from mmae_core.model.checkpoint import check_fits, load_checkpoint, save_checkpoint

    import tempfile

    name = check_name(model_name, "model name")
    tm = load_checkpoint(data)
    fs = store.load_dataset(dataset, lazy=True)
    check_fits(tm, fs)
    info = {"train_seconds": float(getattr(tm, "train_seconds", 0.0)), "final_losses": {}, "history": tm.history,
            "source": "checkpoint", "missing": missing_summary(fs)}
    with tempfile.TemporaryDirectory(prefix="mmae-latents-") as tmp:
        latents = encode_splits(store, dataset, tm, tmp, log)
        store.add_model(dataset, name, save_checkpoint(tm), tm.config.to_dict(), info, latents)
    log(f"registered model {name} from a checkpoint")
    return name


def _split(fs: FeatureSet, split: str) -> "object":
    if split not in fs.splits:
        raise ConfigError(f"{fs.name} has no {split} split; choose one of {', '.join(fs.splits)}.")
    return fs.splits[split]


def eval_run_params(cfg: EvalConfig, cluster: str, resolution: float, sample_size: int | None) -> dict:
    """The parameters ``evaluate_model`` saves with a run. The clustering keys appear only when they
    differ from the paper's KMeans on every item, so runs made before they existed keep matching."""
    params: dict = {"k_grid": list(cfg.k_grid), "seed": cfg.seed, "n_init": cfg.n_init, "fused_weights": cfg.fused_weights}
    if cluster != "kmeans" or AUTO in cfg.k_grid:
        params.update(cluster=cluster, resolution=resolution)
    if sample_size is not None:
        params["sample_size"] = sample_size
    return params


def evaluate_model(
    store: "object",
    dataset: str,
    model: str | None,
    cfg: EvalConfig | None = None,
    log: Log = silent,
    save: bool = True,
    cluster: str | None = None,
    resolution: float = DEFAULT_RESOLUTION,
    sample_size: int | None = EVAL_SAMPLE,
) -> pd.DataFrame:
    """Unimodal, fused-PCA, MCCA, spectral-PCA and MMAE rows over the k grid, stored as a run.

    ``cfg`` None: k "auto" (found by Leiden). ``cluster`` None: Leiden when the grid is only "auto",
    else KMeans (the paper's). A split above ``sample_size`` items is scored on a stratified sample."""
    from mmae_core.evaluation.evaluate import evaluate_grid

    cfg = cfg if cfg is not None else EvalConfig(k_grid=(AUTO,))
    cfg = replace(cfg, k_grid=tuple(parse_k_value(k) for k in cfg.k_grid))
    cluster = cluster or ("leiden" if set(cfg.k_grid) == {AUTO} else "kmeans")
    fs = store.load_dataset(dataset, lazy=True)  # the features stay on disk; the evaluation reads its rows
    sp = _split(fs, cfg.split)
    latents = None
    if model is not None:
        ids, latents = store.latents(dataset, model, cfg.split, "fused")
        if len(ids) != sp.n:
            raise StudioError(f"model {model} has {len(ids)} latents for {cfg.split} but the split has {sp.n} items; retrain it.")
    t0 = time.perf_counter()
    table = evaluate_grid(
        fs.splits["train"].features, sp.features, sp.labels, latents, cfg, on_progress=log,
        cluster=cluster, resolution=resolution, sample_size=sample_size, raw=True,
    )
    log(f"evaluated in {time.perf_counter() - t0:.1f} s")
    if save:
        run_id = store.add_run(dataset, model, cfg.split, eval_run_params(cfg, cluster, resolution, table.attrs["sample_size"]),
                               table)
        table = table.assign(run=run_id)
    return table


def propose_tags(
    store: "object", dataset: str, model: str, k: int | str = AUTO, split: str = "test", seed: int = 42,
    log: Log = silent, cluster: str | None = None, resolution: float = DEFAULT_RESOLUTION,
) -> pd.DataFrame:
    """Cluster a model's fused latents into proposed tags and store them as the latest proposal set.

    ``k`` "auto" (the default) lets Leiden find it; ``cluster`` None is Leiden for auto, KMeans for a
    given k. ``table.attrs`` says which k ran and how it was found (k, k_found_by, cluster, resolution,
    unassigned)."""
    from mmae_core.clustering.proposals import propose

    method, k = check_setting(cluster or default_method(k), k)  # refused before any work or message
    resolution = check_resolution(resolution)
    fs = store.load_dataset(dataset, lazy=True)  # ids, labels and titles; the features stay on disk
    sp = _split(fs, split)
    ids, z = store.latents(dataset, model, split, "fused")
    texts = None
    if sp.meta is not None:
        cols = [c for c in ("title", "caption", "description", "text") if c in sp.meta.columns]
        if cols:  # column by column: a row-wise agg(" ".join) over a million rows peaked 1.2 GB above this
            parts = [sp.meta[c].fillna("").astype(str) for c in cols]
            joined = parts[0]
            for part in parts[1:]:
                joined = joined + " " + part
            texts = joined.tolist()
            del parts, joined
    how = f"k found by Leiden at resolution {resolution:g}" if k == AUTO else f"k = {k}"
    log(f"clustering {len(ids)} {split} items of {dataset} into proposed tags ({method}, {how})")
    props = propose(z, ids, k, labels=sp.labels, texts=texts, seed=seed, method=method, resolution=resolution)
    log(f"{props.k} proposed tags (k {'found by ' + props.k_found_by if props.k_found_by != 'given' else 'given'})"
        + (f"; {props.n_unassigned} items in no cluster are in the 'unassigned' proposal" if props.n_unassigned else ""))
    store.save_proposals(dataset, model, split, props.k, props.table, ids, props.assignments)
    table = props.table
    table.attrs.update(k=props.k, k_found_by=props.k_found_by, cluster=props.method, resolution=props.resolution,
                       unassigned=props.n_unassigned)
    return table


def resolve_model(store: "object", dataset: str, model: str | None) -> str:
    """The named model, or the latest one of the dataset when none is named."""
    if model:
        return model
    latest = store.latest_model(dataset)
    if latest is None:
        raise NotFoundError(f"dataset {dataset} has no model yet; train one first (python -m mmae_core train --dataset {dataset}).")
    return latest
