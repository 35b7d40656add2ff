"""Small, hand-made data for the store tests and the fault cases (builders only, no tests).

Built directly with ``FeatureSet``/``Split`` so the store's tests do not depend on the loaders or the
demo generator.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from mmae_core.data.dataset import FeatureSet, Split
from store import Store

MODALITIES = {"image": 6, "audio": 4, "text": 5}


def make_split(prefix: str, n: int, seed: int, labelled: bool = True, meta: bool = True,
               missing: dict[str, list[int]] | None = None) -> Split:
    rng = np.random.default_rng(seed)
    feats = {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in MODALITIES.items()}
    for m, rows in (missing or {}).items():
        feats[m][rows] = np.nan
    labels = np.asarray([f"class-{i % 3}" for i in range(n)], dtype=object) if labelled else None
    table = None
    if meta:
        table = pd.DataFrame({
            "title": [f"{prefix} title {i}" for i in range(n)],
            "year": np.arange(2000, 2000 + n, dtype=np.int64),
            "score": np.where(np.arange(n) % 4 == 0, np.nan, np.linspace(0, 1, n)),
            "caption": [None if i % 5 == 0 else f"caption, with \"quotes\"; {i}" for i in range(n)],
        })
    return Split(
        item_ids=np.asarray([f"{prefix}{i:03d}" for i in range(n)], dtype=object),
        features=feats, labels=labels, meta=table,
    )


def make_featureset(name: str = "toy", n_train: int = 30, n_test: int = 12, seed: int = 0) -> FeatureSet:
    return FeatureSet(
        name=name,
        modalities=dict(MODALITIES),
        splits={
            "train": make_split("tr", n_train, seed, missing={"audio": [1, 7], "text": [3]}),
            "test": make_split("te", n_test, seed + 1, labelled=False, missing={"image": [0]}),
        },
        synthetic=True,
        source="hand-made",
        attrs={"seed": seed, "note": "for tests"},
    )


def make_latents(fs: FeatureSet, dim: int = 8, seed: int = 0, kinds: tuple[str, ...] = ("fused", "image")) -> dict:
    rng = np.random.default_rng(seed)
    return {s: {k: rng.normal(size=(sp.n, dim)).astype(np.float32) for k in kinds} for s, sp in fs.splits.items()}


def proposal_table(k: int) -> pd.DataFrame:
    return pd.DataFrame({
        "cluster": np.arange(k),
        "size": np.zeros(k, dtype=int),
        "name": [f"proposed-{c}" for c in range(k)],
        "purity": np.linspace(0.5, 1.0, k),
        "cohesion": np.linspace(0.1, 0.9, k),
        "majority_label": [f"class-{c}" for c in range(k)],
        "representatives": [[f"tr{c:03d}"] for c in range(k)],
    })


def store_with_proposals(path: Path, k: int = 3, linger: float = 0.0) -> tuple[Store, FeatureSet]:
    """A store with dataset 'toy', model 'm1' and proposals on train: item i is in cluster i % k.

    ``linger`` > 0 keeps the file open between calls, which makes long decision sequences several times
    faster; tests about releasing the file leave it at 0.
    """
    store = Store(path, linger=linger)
    fs = make_featureset()
    store.add_dataset(fs)
    store.add_model("toy", "m1", b"weights", {"latent": 8}, {"train_seconds": 0.1}, make_latents(fs))
    train = fs.splits["train"]
    store.save_proposals("toy", "m1", "train", k, proposal_table(k), train.item_ids, np.arange(train.n) % k)
    return store, fs


def table_rows(store: Store, table: str) -> list[tuple]:
    """Every row of one of our tables, sorted (the table name is a constant of the test)."""
    with store.reader() as con:
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def one_sentence(message: str) -> bool:
    """True when ``message`` reads as one sentence: one line, ending in a period, no inner sentence break."""
    return "\n" not in message and message.endswith(".") and not re.search(r"[.!?] [A-Z]", message)


ARCHIVE, ARCHIVE_MODEL = "archive", "synthetic-128"


def _archive_split(prefix: str, n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    ids = np.asarray([f"{prefix}-{i:07d}" for i in range(n)], dtype=object)
    words = np.asarray(["violin", "dog", "rain", "choir", "engine", "harbour", "market", "train"])
    meta = pd.DataFrame({"title": [f"{w} recording {i}" for i, w in enumerate(words[rng.integers(0, 8, n)])],
                         "year": rng.integers(1950, 2024, n)})
    feats = {"image": rng.normal(size=(n, 2)).astype(np.float32), "audio": rng.normal(size=(n, 2)).astype(np.float32)}
    return Split(item_ids=ids, features=feats, labels=words[np.arange(n) % 8].astype(object), meta=meta)


def synthetic_archive(db: Path, n: int, big: int = 10_000, k: int = 100, dim: int = 128) -> Store:
    """A store of ``n`` items written through the store's own paths, for the pages at archive size:
    a train and a test split (10% test) with tiny features (the pages never read them), a model with
    random ``dim``-d latents (its checkpoint is not a real one) and ``k`` proposals on train whose
    cluster 0 holds ``big`` items. 1,000,000 items take about 50 s."""
    store = Store(db)
    n_test = n // 10
    fs = FeatureSet(name=ARCHIVE, modalities={"image": 2, "audio": 2},
                    splits={"train": _archive_split("tr", n - n_test, 1), "test": _archive_split("te", n_test, 2)},
                    synthetic=True, source="testkit.data.synthetic_archive", attrs={})
    store.add_dataset(fs)
    rng = np.random.default_rng(0)
    latents = {s: {kind: rng.normal(size=(sp.n, dim)).astype(np.float32) for kind in ("fused", "image")}
               for s, sp in fs.splits.items()}
    store.add_model(ARCHIVE, ARCHIVE_MODEL, b"not a checkpoint", {"latent": dim, "seed": 0}, {"train_seconds": 0.0}, latents)
    del latents
    train = fs.splits["train"]
    clusters = np.concatenate([np.zeros(big, dtype=np.int64), 1 + np.arange(train.n - big) % (k - 1)])
    sizes = np.bincount(clusters, minlength=k)
    table = pd.DataFrame({"cluster": np.arange(k), "size": sizes, "name": [f"proposed-{c}" for c in range(k)],
                          "purity": np.linspace(0.5, 1.0, k), "cohesion": np.linspace(0.1, 0.9, k),
                          "majority_label": ["violin"] * k,
                          "representatives": [list(train.item_ids[clusters == c][:5]) for c in range(k)]})
    store.save_proposals(ARCHIVE, ARCHIVE_MODEL, "train", k, table, train.item_ids, clusters)
    return store
