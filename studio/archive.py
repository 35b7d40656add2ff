"""User-level jobs for incomplete and surprising archives: novelty and conflicting modalities.

Like ``pipeline``, these take a ``Store`` and names and are shared by the CLI and the pages (so the
two cannot drift apart); they live in their own module so the spine's ``pipeline`` stays small.

Both jobs compare items with **reference groups**, chosen in this order (``reference_groups``):

1. the dataset's *accepted tags* (every tagged item, by proposal or by hand, in any split): what the
   curator has said the archive contains;
2. else the model's latest *proposed clusters* (rejected ones left out);
3. else KMeans clusters of the model's train latents (k = the number of train labels, else 10), so a
   fresh model can be scored before anyone has looked at a proposal.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mmae_core.errors import ConfigError, NotFoundError
from mmae_core.log import Log, silent

if TYPE_CHECKING:
    from mmae_core.data.dataset import FeatureSet

FALLBACK_K = 10


@dataclass
class ReferenceGroups:
    item_ids: np.ndarray  # member items (any split)
    assign: np.ndarray  # group index of each member
    names: list[str]
    source: str  # 'accepted tags' | 'proposed clusters' | 'train clusters'


class LatentIndex:
    """All splits' latents of one model, looked up by item id (tags may sit on items of any split)."""

    def __init__(self, store: object, dataset: str, model: str, splits: list[str]) -> None:
        self.store, self.dataset, self.model, self.splits = store, dataset, model, splits
        self._cache: dict[str, tuple[pd.Index, np.ndarray]] = {}

    def split(self, split: str, kind: str) -> tuple[np.ndarray, np.ndarray]:
        return self.store.latents(self.dataset, self.model, split, kind)  # type: ignore[attr-defined]

    def rows(self, kind: str, item_ids: np.ndarray) -> np.ndarray:
        if kind not in self._cache:
            ids, xs = [], []
            for s in self.splits:
                i, x = self.split(s, kind)
                ids.append(i.astype(str))
                xs.append(x)
            self._cache[kind] = (pd.Index(np.concatenate(ids)), np.concatenate(xs))
        index, x = self._cache[kind]
        pos = index.get_indexer(np.asarray(item_ids).astype(str))
        out = np.full((len(pos), x.shape[1]), np.nan, dtype=np.float32)
        out[pos >= 0] = x[pos[pos >= 0]]
        return out


def _model_splits(store: object, dataset: str, model: str) -> list[str]:
    kinds = store.latent_kinds(dataset, model)  # type: ignore[attr-defined]
    return list(dict.fromkeys(kinds.loc[kinds["kind"] == "fused", "split"]))


def reference_groups(store: object, dataset: str, model: str, index: LatentIndex, seed: int = 42) -> ReferenceGroups:
    """The groups novelty and conflicts are measured against (see the module docstring)."""
    cat = store.catalog(dataset)  # type: ignore[attr-defined]
    tagged = cat[cat["tag"].notna() & (cat["tag"].astype(str) != "")]
    if len(tagged):
        names = sorted(set(tagged["tag"].astype(str)))
        code = {n: i for i, n in enumerate(names)}
        return ReferenceGroups(tagged["item_id"].astype(str).to_numpy(), tagged["tag"].astype(str).map(code).to_numpy(),
                               names, "accepted tags")
    table, assign = store.proposals(dataset, model)  # type: ignore[attr-defined]
    if len(table):
        keep = table[table["status"] != "rejected"]
        if len(keep) >= 1:
            names = [str(r.tag) if isinstance(r.tag, str) and r.tag else str(r.name) for r in keep.itertuples()]
            code = {int(c): i for i, c in enumerate(keep["cluster"])}
            a = assign[assign["cluster"].isin(list(code))]
            return ReferenceGroups(a["item_id"].astype(str).to_numpy(), a["cluster"].map(code).to_numpy(),
                                   names, "proposed clusters")
    from mmae_core.evaluation.evaluate import kmeans_labels
    from mmae_core.clustering.proposals import fallback_name

    fs_labels = _train_labels(store, dataset)
    ids, z = index.split("train", "fused")
    ok = np.isfinite(z).all(axis=1)
    k = len(set(fs_labels)) if fs_labels else FALLBACK_K
    k = max(2, min(k, int(ok.sum()) // 2))
    lab = kmeans_labels(np.ascontiguousarray(z[ok]), k, 4, seed)
    return ReferenceGroups(ids[ok].astype(str), lab.astype(np.int64), [fallback_name(c) for c in range(k)], "train clusters")


def _train_labels(store: object, dataset: str) -> list[str]:
    cat = store.catalog(dataset)  # type: ignore[attr-defined]
    lab = cat.loc[(cat["split"] == "train") & cat["label"].notna(), "label"]
    return [str(v) for v in lab if str(v) != ""]


def _dataset_modalities(store: object, dataset: str) -> list[str]:
    """The dataset's modalities in its own order (the listing's 'image:50, audio:1024' text)."""
    ds = store.list_datasets()  # type: ignore[attr-defined]
    row = ds[ds["name"] == dataset]
    if not len(row):
        return []
    return [m.split(":")[0].strip() for m in str(row.iloc[0]["modalities"]).split(",") if m.strip()]


def _check_split(splits: list[str], wanted: list[str], dataset: str, model: str) -> None:
    for s in wanted:
        if s not in splits:
            raise ConfigError(f"model {model} has no latents for a {s} split of {dataset}; choose among {', '.join(splits)}.")


def parse_splits(text: str) -> list[str]:
    out = [s.strip() for s in str(text).split(",") if s.strip()]
    if not out:
        raise ConfigError("no split given; name one or more, e.g. --split test,ood.")
    return list(dict.fromkeys(out))


@dataclass
class _NoveltyContext:
    """What every novelty score of one model is measured against (see ``novelty_scores``)."""

    tm: object  # the TrainedModel
    ref: object  # novelty.NoveltyReference
    how: str
    train_scores: np.ndarray
    source: str
    index: LatentIndex


def _novelty_context(store: object, dataset: str, model: str, combine: str | None, log: Log,
                     splits: list[str] | None = None, tm: object | None = None) -> tuple[_NoveltyContext, object]:
    """The reference of ``model`` (``splits``: checked to have latents; ``tm``: the model, if loaded)."""
    from mmae_core.model.checkpoint import check_fits, load_checkpoint
    from mmae_core.archive.novelty import DEFAULT_COMBINE, combine as combine_parts, fit_reference, parts
    from mmae_core.model.train import reconstruction_error

    how = combine or DEFAULT_COMBINE
    have = _model_splits(store, dataset, model)
    if "train" not in have:
        raise NotFoundError(f"model {model} has no train latents for {dataset}; register it again.")
    if splits:
        _check_split(have, splits, dataset, model)
    fs = store.load_dataset(dataset)  # type: ignore[attr-defined]
    if tm is None:
        tm = load_checkpoint(store.model_checkpoint(dataset, model))  # type: ignore[attr-defined]
    check_fits(tm, fs)
    index = LatentIndex(store, dataset, model, have)
    groups = reference_groups(store, dataset, model, index)
    member_z = index.rows("fused", groups.item_ids)
    k = len(groups.names)
    cents = np.stack([np.nanmean(member_z[groups.assign == g], axis=0) if (groups.assign == g).any()
                      else np.full(member_z.shape[1], np.nan) for g in range(k)])
    ok = np.isfinite(cents).all(axis=1)
    log(f"reference: {int(ok.sum())} {groups.source}; train statistics from {fs.splits['train'].n} items")
    train_err = reconstruction_error(tm, fs.splits["train"].features)
    _, train_z = index.split("train", "fused")
    remap = np.cumsum(ok) - 1  # group index among the groups that have a centroid
    member_assign = np.where(ok[groups.assign], remap[groups.assign], -1)
    ref = fit_reference(train_err, train_z, cents[ok], [n for n, o in zip(groups.names, ok) if o], groups.source,
                        member_z=member_z, member_assign=member_assign)
    train_scores = combine_parts(ref, parts(ref, train_err, train_z), how)
    return _NoveltyContext(tm, ref, how, train_scores, groups.source, index), fs


def _ranked(ctx: _NoveltyContext, frames: list[pd.DataFrame]) -> pd.DataFrame:
    out = pd.concat(frames, ignore_index=True).sort_values(["score", "item_id"], ascending=[False, True], kind="mergesort")
    out = out.reset_index(drop=True)
    q = np.quantile(ctx.train_scores, [0.5, 0.9, 0.99])
    out.attrs.update({"source": ctx.source, "combine": ctx.how, "groups": len(ctx.ref.names),
                      "train_q50": float(q[0]), "train_q90": float(q[1]), "train_q99": float(q[2])})
    return out


def novelty_scores(store: object, dataset: str, model: str, splits: list[str], combine: str | None = None,
                   log: Log = silent) -> pd.DataFrame:
    """Novelty of every item of ``splits``: item_id, split, score (higher = more novel), recon,
    distance, nearest; sorted most novel first. ``attrs``: the reference ``source`` and the train
    split's score quantiles ``train_q50``/``train_q90``/``train_q99`` (what "unusual" means here)."""
    from mmae_core.archive.novelty import score_items
    from mmae_core.model.train import reconstruction_error

    ctx, fs = _novelty_context(store, dataset, model, combine, log, splits=splits)
    frames = []
    for s in splits:
        sp = fs.splits[s]
        ids, z = ctx.index.split(s, "fused")
        if not np.array_equal(ids.astype(str), sp.item_ids.astype(str)):
            raise NotFoundError(f"the {s} latents of model {model} do not match the dataset's items; register it again.")
        log(f"scoring {sp.n} {s} items")
        df = score_items(ctx.ref, reconstruction_error(ctx.tm, sp.features), z, ctx.how)
        df.insert(0, "split", s)
        df.insert(0, "item_id", ids.astype(str))
        frames.append(df)
    return _ranked(ctx, frames)


def novelty_of_features(store: object, dataset: str, model: str, new: "FeatureSet", combine: str | None = None,
                        log: Log = silent) -> pd.DataFrame:
    """The same ranking for items that are not in the store: a new upload or folder (``new``, any
    split names, any non-empty subset of the model's modalities), encoded with the model and scored
    against the dataset's reference. Nothing is written; import the items to tag them."""
    from mmae_core.model.checkpoint import load_checkpoint
    from mmae_core.archive.novelty import score_items
    from mmae_core.model.train import encode, reconstruction_error

    # checked before the reference is built (seconds on a large dataset): a wrong upload fails at once
    tm = load_checkpoint(store.model_checkpoint(dataset, model))  # type: ignore[attr-defined]
    known = tm.modalities
    unknown = [m for m in new.modalities if m not in known]
    if unknown:
        raise ConfigError(f"{new.source or new.name} has the modality '{unknown[0]}', which model {model} does not know; "
                          f"give features of {', '.join(known)} only.")
    wrong = [m for m in new.modalities if int(new.modalities[m]) != int(known[m])]
    if wrong:
        m = wrong[0]
        raise ConfigError(f"{new.source or new.name} has {m} features of dimension {new.modalities[m]} but model {model} "
                          f"expects {known[m]}; give features of the same kind it was trained on.")
    ctx, _ = _novelty_context(store, dataset, model, combine, log, tm=tm)
    frames = []
    for s, sp in new.splits.items():
        log(f"encoding and scoring {sp.n} {s} items of {new.source or new.name}")
        z, _ = encode(ctx.tm, sp.features)
        df = score_items(ctx.ref, reconstruction_error(ctx.tm, sp.features), z, ctx.how)
        df.insert(0, "split", s)
        df.insert(0, "item_id", sp.item_ids.astype(str))
        frames.append(df)
    return _ranked(ctx, frames)


NOVELTY_BANDS: tuple[str, ...] = ("1 usual (below the train median)", "2 above the train median",
                                  "3 unusual (top 10% of train)", "4 very unusual (beyond 99% of train)")


def novelty_band(scores: np.ndarray, attrs: dict) -> np.ndarray:
    """A colour group per score, cut at the train split's 50/90/99% quantiles (the map's legend)."""
    cuts = [attrs["train_q50"], attrs["train_q90"], attrs["train_q99"]]
    idx = np.searchsorted(np.asarray(cuts), np.asarray(scores, dtype=np.float64), side="right")
    bands = np.asarray(NOVELTY_BANDS, dtype=object)[np.clip(idx, 0, 3)]
    return np.where(np.isfinite(scores), bands, None)


def conflict_items(store: object, dataset: str, model: str, split: str = "test", method: str | None = None,
                   log: Log = silent) -> pd.DataFrame:
    """Items of ``split`` ranked by how strongly their modalities disagree: item_id, score, flagged and
    per modality the tag or cluster its latent is nearest to. ``attrs['source']`` names the groups."""
    from functools import partial

    from mmae_core.archive.conflicts import DEFAULT_METHOD, NEEDS_MODEL, USES_TAGS, conflict_table, fit_reference
    from mmae_core.model.checkpoint import load_checkpoint
    from mmae_core.model.train import fuse_latents

    have = _model_splits(store, dataset, model)
    _check_split(have, [split], dataset, model)
    kinds = store.latent_kinds(dataset, model)  # type: ignore[attr-defined]
    have_kinds = [k for k in dict.fromkeys(kinds["kind"]) if k != "fused"]
    order = _dataset_modalities(store, dataset)
    mods = [m for m in order if m in have_kinds] + sorted(m for m in have_kinds if m not in order)
    if len(mods) < 2:
        raise ConfigError(f"model {model} has per-modality latents of {len(mods)} modality; comparing needs two.")
    index = LatentIndex(store, dataset, model, have)
    groups = reference_groups(store, dataset, model, index)
    log(f"reference: {len(groups.names)} {groups.source}")
    method = method or DEFAULT_METHOD
    fuse = partial(fuse_latents, load_checkpoint(store.model_checkpoint(dataset, model))) if method in NEEDS_MODEL else None  # type: ignore[attr-defined]
    tags = None
    if method in USES_TAGS:  # the search's tag space: fitted once per model and saved
        from studio.search import tag_space

        space = tag_space(store, dataset, model, log=log)
        tags = None if space is None else space.probabilities
    ref = fit_reference({m: index.rows(m, groups.item_ids) for m in mods}, groups.assign, groups.names, groups.source,
                        fuse, tags)
    ids, _ = index.split(split, "fused")
    per = {m: index.split(split, m)[1] for m in ref.modalities}
    out = conflict_table(ref, per, ids, method, fuse, tags)
    out.attrs.update({"source": groups.source, "split": split})
    return out
