"""The user-level jobs (train, evaluate, propose, novelty...) shared by the CLI and the dashboard.

Each function takes a ``Store`` and names, does the work with the pure core modules, and writes the
result in one store action. Keeping them here means the CLI and the pages stay thin and cannot drift
apart: a curator clicking "Train" and a batch script running ``train`` execute the same code.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from mmae_core.config import EvalConfig, TrainConfig
from mmae_core.data.dataset import FeatureSet
from mmae_core.errors import ConfigError, NotFoundError, StudioError
from mmae_core.log import Log, silent
from mmae_core.model.standardize import Standardizer


def default_model_name(cfg: TrainConfig, taken: list[str]) -> str:
    """A readable, unique model name such as ``paper-e100-s42``."""
    base = f"{cfg.preset}-e{cfg.epochs}-s{cfg.seed}"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}-{i}", i + 1
    return name


def check_name(name: str, what: str) -> str:
    """Names are shown everywhere and used in file names of exports: refuse the unprintable ones."""
    if name is None or not str(name).strip():
        raise ConfigError(f"the {what} name is empty; give a name.")
    if re.search(r"[\x00-\x1f\x7f]", name):
        raise ConfigError(f"the {what} name contains control characters; use printable characters only.")
    if len(name) > 200:
        raise ConfigError(f"the {what} name is longer than 200 characters; use a shorter one.")
    return name.strip()


@dataclass
class TrainOutcome:
    model_name: str
    train_seconds: float
    final_losses: dict[str, float]
    missing: dict[str, int]
    completion_items: int = 0  # complete train items the latent completion was fitted on; 0 = none fitted


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


def encode_all_splits(tm: object, fs: FeatureSet) -> dict[str, dict[str, np.ndarray]]:
    """Fused and per-modality latents of every split, in the layout ``Store.add_model`` takes."""
    from mmae_core.model.train import encode

    latents: dict[str, dict[str, np.ndarray]] = {}
    for sname, sp in fs.splits.items():
        fused, per = encode(tm, sp.features)
        latents[sname] = {"fused": fused, **per}
    return latents


def train_and_register(
    store: "object",
    dataset: str,
    cfg: TrainConfig | None = None,
    model_name: str | None = None,
    on_progress: Callable[[object], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    log: Log = silent,
) -> TrainOutcome:
    """Train an MMAE on a stored dataset, then register checkpoint and all latents in one action.
    ``cfg`` None is the default preset (``config.DEFAULT_PRESET``)."""
    from mmae_core.config import DEFAULT_PRESET, preset
    from mmae_core.model.checkpoint import save_checkpoint
    from mmae_core.model.train import train

    cfg = preset(DEFAULT_PRESET) if cfg is None else cfg

    fs = store.load_dataset(dataset)
    taken = list(store.list_models(dataset)["name"]) if len(store.list_models(dataset)) else []
    name = check_name(model_name, "model") if model_name else default_model_name(cfg, taken)
    if name in taken:
        raise ConfigError(f"a model named '{name}' already exists for {dataset}; choose another --model-name.")
    missing = missing_summary(fs)
    if any(missing.values()) and cfg.modality_dropout == 0:
        log(
            "note: this dataset has items with missing modalities ("
            + ", ".join(f"{m}: {c}" for m, c in missing.items() if c)
            + "); the 'aligned' preset (--preset aligned) is trained for that and is recommended."
        )
    log(f"training {name} on {dataset} ({fs.splits['train'].n} train items, preset {cfg.preset}, {cfg.epochs} epochs)")
    watch = SlowdownWatch()

    def progress(p: object) -> None:
        note = watch(p.epoch, p.elapsed_s)
        if note:
            log(note)
        if on_progress is not None:
            on_progress(p)

    tm = train(fs, cfg, on_progress=progress, should_stop=should_stop)
    log(f"trained in {tm.train_seconds:.1f} s ({tm.plan})")
    n_fit = tm.completion.n_fit if tm.completion is not None else 0
    if any(missing.values()):
        log(f"note: items lacking modalities get a completed fused latent (fitted on {n_fit} complete train items)" if n_fit else
            "note: too few train items have every modality to fit latent completion; items lacking modalities are fused by the mean of what they have")
    log("encoding every split")
    latents = encode_all_splits(tm, fs)
    final = dict(tm.history[-1]["losses"]) if tm.history else {}
    info = {
        "train_seconds": round(float(tm.train_seconds), 3),
        "final_losses": final,
        "history": tm.history,
        "train_items": fs.splits["train"].n,
        "missing": missing,
        "completion_items": n_fit,
        "plan": tm.plan,
        "source": "trained",
    }
    store.add_model(dataset, name, save_checkpoint(tm), cfg.to_dict(), info, latents)
    log(f"registered model {name}")
    return TrainOutcome(name, float(tm.train_seconds), final, missing, n_fit)


def register_checkpoint(store: "object", dataset: str, data: bytes, model_name: str, log: Log = silent) -> str:
    """Load a checkpoint (safely), check it fits the dataset, encode and register it."""
    from mmae_core.model.checkpoint import check_fits, load_checkpoint, save_checkpoint

    name = check_name(model_name, "model")
    tm = load_checkpoint(data)
    fs = store.load_dataset(dataset)
    check_fits(tm, fs)
    latents = encode_all_splits(tm, fs)
    info = {"train_seconds": float(getattr(tm, "train_seconds", 0.0)), "final_losses": {}, "history": tm.history,
            "source": "checkpoint", "missing": missing_summary(fs)}
    store.add_model(dataset, name, save_checkpoint(tm), tm.config.to_dict(), info, latents)
    log(f"registered model {name} from a checkpoint")
    return name


def _split(fs: FeatureSet, split: str) -> "object":
    if split not in fs.splits:
        raise ConfigError(f"{fs.name} has no {split} split; choose one of {', '.join(fs.splits)}.")
    return fs.splits[split]


def evaluate_model(
    store: "object",
    dataset: str,
    model: str | None,
    cfg: EvalConfig,
    log: Log = silent,
    save: bool = True,
) -> pd.DataFrame:
    """Unimodal, fused-PCA, MCCA and MMAE rows over the k grid, stored as a run."""
    from mmae_core.evaluation.evaluate import evaluate_grid

    fs = store.load_dataset(dataset)
    sp = _split(fs, cfg.split)
    cfg.checked(sp.n)
    std = Standardizer.fit(fs.splits["train"].features)
    latents = None
    if model is not None:
        ids, latents = store.latents(dataset, model, cfg.split, "fused")
        if len(ids) != sp.n:
            raise StudioError(f"model {model} has {len(ids)} latents for {cfg.split} but the split has {sp.n} items; retrain it.")
    t0 = time.perf_counter()
    table = evaluate_grid(
        std.transform(fs.splits["train"].features), std.transform(sp.features), sp.labels, latents, cfg, on_progress=log
    )
    log(f"evaluated in {time.perf_counter() - t0:.1f} s")
    if save:
        params = {"k_grid": list(cfg.k_grid), "seed": cfg.seed, "n_init": cfg.n_init, "fused_weights": cfg.fused_weights}
        run_id = store.add_run(dataset, model, cfg.split, params, table)
        table = table.assign(run=run_id)
    return table


def propose_tags(
    store: "object", dataset: str, model: str, k: int | str = "auto", split: str = "test", seed: int = 42,
    log: Log = silent, method: str | None = None, resolution: float | None = None,
) -> pd.DataFrame:
    """Cluster a model's fused latents into proposed tags and store them as the latest proposal set.

    The default is ``k="auto"`` with Leiden on the latents' neighbour graph (``clustering.graph``): on
    the real sets a graph cut the same vectors better than KMeans and curators do not know k.
    ``method="kmeans"`` with a number reproduces the paper. ``table.attrs`` says how k came
    (``k``, ``k_found_by``, ``cluster``, ``resolution``, ``n_unassigned``)."""
    from mmae_core.clustering.graph import DEFAULT_RESOLUTION, default_method, parse_k_value
    from mmae_core.clustering.proposals import propose

    k = parse_k_value(k)
    method = method or default_method(k)
    resolution = DEFAULT_RESOLUTION if resolution is None else resolution
    fs = store.load_dataset(dataset)
    sp = _split(fs, split)
    ids, z = store.latents(dataset, model, split, "fused")
    texts = None
    if sp.meta is not None:
        cols = [c for c in ("title", "caption", "description", "text") if c in sp.meta.columns]
        if cols:
            texts = sp.meta[cols].fillna("").astype(str).agg(" ".join, axis=1).tolist()
    props = propose(z, ids, k, labels=sp.labels, texts=texts, seed=seed, method=method, resolution=resolution)
    how = f"{method}, k {k}" + (f" (Leiden at resolution {resolution:g})" if k == "auto" else "")
    log(f"clustered {len(ids)} {split} items of {dataset} into proposed tags: {how}")
    if props.k_found_by == "leiden":
        log(f"Leiden found {props.k} tags" + (f"; {props.n_unassigned} items are in no community and form the "
                                              "'unassigned' proposal" if props.n_unassigned else ""))
    store.save_proposals(dataset, model, split, props.k, props.table, ids, props.assignments)
    table = props.table
    table.attrs.update({"k": props.k, "k_found_by": props.k_found_by, "cluster": props.method,
                        "resolution": props.resolution, "n_unassigned": props.n_unassigned})
    return table


def resolve_model(store: "object", dataset: str, model: str | None) -> str:
    """The named model, or the latest one of the dataset when none is named."""
    if model:
        return model
    latest = store.latest_model(dataset)
    if latest is None:
        raise NotFoundError(f"dataset {dataset} has no model yet; train one first (python -m mmae_core train --dataset {dataset}).")
    return latest
