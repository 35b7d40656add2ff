"""Cross-modal search as user-level jobs, shared by the CLI (``search``, ``search-eval``) and the Search page.

``search_eval`` measures how well a model's latents retrieve across modalities (``retrieval_metrics``
for every ordered pair and fused -> each modality, under cosine and Euclidean, the better one by
default); ``query_latent`` turns an item id or a raw feature vector into the query latent;
``search_items`` answers the query from an index (``search_index``) built once per model, split,
modality and metric and rebuilt when those latents change; ``with_details`` adds the catalog's
metadata and tags to the results. Every user mistake is one sentence (``StudioError``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, DataError, NotFoundError
from .retrieval import METRICS, encode_query, load_query_vector, retrieval_metrics
from .search_index import IndexCache, IndexFiles, LatentIndex

FUSED = "fused"
K = 10
INSTANCE = {"r_at_1": "recall_at_1", "r_at_5": "recall_at_5", "r_at_10": "recall_at_10"}
EVAL_COLUMNS = ["method", "query", "target", "metric", "split", "queries", "p_at_10", "map",
                "recall_at_1", "recall_at_5", "recall_at_10", "median_rank"]
MODEL_METHOD = "mmae"  # the ``method`` of the model's rows, as in ``evaluate``
BASELINES = ("mcca",)  # what ``search_eval(baseline=...)`` can put beside the model
DEFAULT_METRIC = "cosine"  # what ``search`` ranks by unless told: the better one on every model we measured
CACHE = IndexCache()
DETAIL_SKIP = ("cluster", "model", "curator", "tagged_at")


def model_modalities(store: "object", dataset: str, model: str) -> list[str]:
    """The modalities the model has per-modality latents of; refuses a model without any."""
    kinds = store.latent_kinds(dataset, model)
    mods = [k for k in dict.fromkeys(kinds["kind"]) if k != FUSED]
    if not mods:
        raise NotFoundError(
            f"model '{model}' has no per-modality latents, so there is nothing to search across; retrain it or load its checkpoint again."
        )
    return mods


def model_splits(store: "object", dataset: str, model: str) -> list[str]:
    return list(dict.fromkeys(store.latent_kinds(dataset, model)["split"]))


def _check_split(store: "object", dataset: str, model: str, split: str) -> str:
    have = model_splits(store, dataset, model)
    if split not in have:
        raise ConfigError(f"model '{model}' has no latents for a '{split}' split; choose one of {', '.join(have)}.")
    return split


def _check_kind(kind: str, modalities: list[str], what: str, allow_fused: bool = True) -> str:
    options = modalities + ([FUSED] if allow_fused else [])
    if kind not in options:
        raise ConfigError(f"'{kind}' is not a modality of this model; choose {what} from {', '.join(options)}.")
    return kind


def instance_pairs(attrs: dict | None) -> bool:
    """Whether an item's modalities come from one media item, so instance recall means something.

    True unless the dataset says otherwise (``attrs['instance_pairs'] = False``, e.g. a set like LUMA
    whose image, audio and text of an "item" were paired by class, not taken from one clip)."""
    return bool((attrs or {}).get("instance_pairs", True))


def search_eval(store: "object", dataset: str, model: str, split: str = "test", metric: str = "best",
                k: int = K, baseline: str | None = None) -> pd.DataFrame:
    """Retrieval metrics of a model on a split: one row per ordered modality pair and fused -> modality.

    ``metric``: ``cosine``, ``euclidean``, ``both``, or ``best`` (default: both are computed and the
    one with the higher mean class P@10 is returned, mean instance R@10 without labels). Columns
    ``EVAL_COLUMNS``; the instance ones are dropped where they do not apply (``instance_pairs``).
    ``df.attrs['chosen']`` names the metric returned for the model, ``df.attrs['other']`` holds the
    other one's rows. ``baseline='mcca'`` appends the same rows for MCCA's canonical variates
    (``mcca.search_space``, fitted on the train split's features of the model's modalities; its own
    better metric under ``best``), with ``method`` telling the blocks apart: a linear baseline that
    retrieves as well as the model must be visible where the model's figures are.
    """
    if metric not in (*METRICS, "best", "both"):
        raise ConfigError(f"'{metric}' is not a search metric; choose cosine, euclidean, both or best.")
    if baseline not in (None, *BASELINES):
        raise ConfigError(f"'{baseline}' is not a search baseline; choose {', '.join(BASELINES)}.")
    mods = model_modalities(store, dataset, model)
    _check_split(store, dataset, model, split)
    fs = store.load_dataset(dataset)
    labels = fs.splits[split].labels if split in fs.splits else None
    if labels is not None and not pd.notna(pd.Series(labels, dtype=object)).any():
        labels = None
    per = {}
    for m in mods:
        _, per[m] = store.latents(dataset, model, split, m)
    _, fused = store.latents(dataset, model, split, FUSED)
    out = _eval_rows(per, fused, labels, split, metric, k, MODEL_METHOD)
    if baseline is not None:
        from .mcca import search_space
        from .standardize import Standardizer

        if len(mods) < 2:
            raise ConfigError("MCCA needs at least two modalities; this model has one, so there is no baseline to compare.")
        std = Standardizer.fit({m: fs.splits["train"].features[m] for m in mods})
        views, mean = search_space(std.transform({m: fs.splits["train"].features[m] for m in mods}),
                                   std.transform({m: fs.splits[split].features[m] for m in mods}))
        base = _eval_rows(views, mean, labels, split, metric, k, baseline)
        attrs = dict(out.attrs)
        out = pd.concat([out, base], ignore_index=True)
        out.attrs = attrs
    if not instance_pairs(fs.attrs):
        out = out.drop(columns=["recall_at_1", "recall_at_5", "recall_at_10", "median_rank"])
    return out


def _eval_rows(per: dict[str, np.ndarray], fused: np.ndarray, labels: np.ndarray | None, split: str, metric: str,
               k: int, method: str) -> pd.DataFrame:
    """``retrieval_metrics`` of one representation under ``metric`` (see ``search_eval``), as rows of
    ``EVAL_COLUMNS`` labelled ``method``; attrs ``chosen`` (and ``other`` under ``best``)."""
    wanted = METRICS if metric in ("best", "both") else (metric,)
    tables = {}
    for mt in wanted:
        t = retrieval_metrics(per, labels, fused=fused, k=k, metric=mt).rename(columns=INSTANCE)
        t.insert(0, "method", method)
        t.insert(4, "split", split)
        if f"p_at_{k}" != "p_at_10":
            t = t.rename(columns={f"p_at_{k}": "p_at_10"})
        tables[mt] = t[EVAL_COLUMNS]

    def score(t: pd.DataFrame) -> float:
        return float(t["p_at_10"].mean()) if labels is not None else float(t["recall_at_10"].mean())

    if metric == "both":
        out = pd.concat(list(tables.values()), ignore_index=True)
        chosen = max(METRICS, key=lambda m: (score(tables[m]), m == DEFAULT_METRIC))
    elif metric == "best":
        chosen = max(METRICS, key=lambda m: (score(tables[m]), m == DEFAULT_METRIC))
        out = tables[chosen].copy()
        out.attrs["other"] = tables[[m for m in METRICS if m != chosen][0]]
    else:
        chosen, out = metric, tables[metric].copy()
    out.attrs["chosen"] = chosen
    return out


@dataclass
class Query:
    """A query latent and where it came from (an item of a split, or an uploaded vector)."""

    vector: np.ndarray
    source: str
    split: str
    item: str | None = None


def query_latent(store: "object", dataset: str, model: str, source: str, item: str | None = None,
                 vector: bytes | None = None, split: str | None = None, vector_name: str = "the query file") -> Query:
    """The ``source`` latent of an item (``item``) or of a raw ``source`` feature vector (``.npy`` bytes).

    ``split``: where the results come from; default the item's own split, else ``test`` (else ``train``).
    A vector is checked (shape, NaN, no pickles) and encoded with the model's own standardization.
    """
    mods = model_modalities(store, dataset, model)
    splits = model_splits(store, dataset, model)
    if (item is None) == (vector is None):
        raise ConfigError("give exactly one query: an item id (--item) or a feature vector file (--vector).")
    if vector is not None:
        _check_kind(source, mods, "the query vector's modality", allow_fused=False)
        from .checkpoint import load_checkpoint

        tm = load_checkpoint(store.model_checkpoint(dataset, model))
        dim = int(tm.modalities[source])
        vec = load_query_vector(vector, dim, source, name=vector_name)
        sp = split or ("test" if "test" in splits else splits[0])
        _check_split(store, dataset, model, sp)
        return Query(np.asarray(encode_query(tm, source, vec), dtype=np.float32), source, sp)
    _check_kind(source, mods, "the query modality")
    item = str(item)
    # one item's rows, not the whole catalog and latent matrix: at archive size those take seconds
    if split is None:
        hit = store.catalog(dataset, [item])["split"]
        if not len(hit):
            raise NotFoundError(f"item '{item}' is not in dataset '{dataset}'; check the id (export lists every item id).")
        split = str(hit.iloc[0])
    _check_split(store, dataset, model, split)
    ids, z = store.latents(dataset, model, split, source, ids=[item])
    rows = np.flatnonzero(ids.astype(str) == item)
    if not rows.size:
        raise NotFoundError(f"item '{item}' is not in the {split} split of dataset '{dataset}'; check the id or the --split.")
    q = z[int(rows[0])]
    if not np.isfinite(q).all():
        raise DataError(f"item '{item}' has no {source} features, so it cannot be a {source} query; query from another modality.")
    return Query(q.astype(np.float32), source, split, item)


def _fingerprint(store: "object", dataset: str, model: str, split: str, kind: str) -> tuple:
    """What identifies the stored latents: the model's id and creation time (a store file replaced by
    another, or a model re-created, gives other values) and the row count of that split and kind."""
    models = store.list_models(dataset)
    row = models.loc[models["name"] == model]
    if not len(row):
        raise NotFoundError(f"dataset '{dataset}' has no model named '{model}'; pick one of the registered models.")
    kinds = store.latent_kinds(dataset, model)
    n = kinds.loc[(kinds["split"] == split) & (kinds["kind"] == kind), "items"]
    return (int(row["id"].iloc[0]), str(row["created_at"].iloc[0]), int(n.iloc[0]) if len(n) else 0)


def index_files(store: "object") -> IndexFiles:
    """The on-disk copies of a store's large indexes: a folder beside the store file (``STORE.indexes``)."""
    path = Path(str(store.path))
    return IndexFiles(path.with_name(path.name + ".indexes"))


def target_index(store: "object", dataset: str, model: str, split: str, target: str, metric: str = DEFAULT_METRIC,
                 cache: IndexCache = CACHE, files: IndexFiles | None = None) -> tuple[np.ndarray, LatentIndex]:
    """(item ids, index) of a model's ``target`` latents of ``split``: built once (kept in the process,
    and on disk when large), rebuilt when they change."""
    if metric not in METRICS:
        raise ConfigError(f"'{metric}' is not a search metric; choose cosine or euclidean.")
    key = (str(store.path), dataset, model, split, target, metric)
    fingerprint = _fingerprint(store, dataset, model, split, target)
    files = index_files(store) if files is None else files

    def build() -> tuple[np.ndarray, LatentIndex]:
        loaded = files.load(key, fingerprint)
        if loaded is not None:
            return loaded
        ids, z = store.latents(dataset, model, split, target)
        index = LatentIndex(z, metric)
        files.save(key, fingerprint, ids, index)
        return ids, index

    return cache.get(key, fingerprint, build)  # type: ignore[return-value]


def search_items(store: "object", dataset: str, model: str, query: Query, target: str, top: int = 10,
                 metric: str = DEFAULT_METRIC, cache: IndexCache = CACHE, files: IndexFiles | None = None) -> pd.DataFrame:
    """The ``top`` items of ``query.split`` nearest the query in the ``target`` latents: rank, item_id, score."""
    mods = model_modalities(store, dataset, model)
    _check_kind(target, mods, "the latents to search in")
    if int(top) < 1:
        raise ConfigError(f"--top must be at least 1 (got {top}).")
    ids, index = target_index(store, dataset, model, query.split, target, metric, cache, files)
    rows, scores = index.search(query.vector, int(top))
    return pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "item_id": ids[rows].astype(str), "score": scores})


def with_details(found: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Results with each item's split, label, metadata, tag and status (catalog order of columns)."""
    cat = catalog.drop(columns=[c for c in DETAIL_SKIP if c in catalog.columns])
    cat = cat.assign(item_id=cat["item_id"].astype(str)).drop_duplicates("item_id")
    return found.merge(cat, on="item_id", how="left")


def search(store: "object", dataset: str, model: str, source: str, target: str, item: str | None = None,
           vector: bytes | None = None, top: int = 10, split: str | None = None, metric: str = DEFAULT_METRIC,
           vector_name: str = "the query file") -> pd.DataFrame:
    """The CLI's ``search``: query, nearest items, their details; ``df.attrs`` says what was asked."""
    q = query_latent(store, dataset, model, source, item=item, vector=vector, split=split, vector_name=vector_name)
    hits = search_items(store, dataset, model, q, target, top, metric)
    # only the found items' catalog rows: the whole catalog of an archive-sized dataset takes seconds
    found = with_details(hits, store.catalog(dataset, hits["item_id"].tolist()))
    found.insert(3, "metric", metric)
    found.attrs.update(query=q.item, source=source, target=target, split=q.split)
    return found
