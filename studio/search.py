"""Cross-modal search as user-level jobs, shared by the CLI (``search``, ``search-eval``) and the Search page.

``search_eval`` measures how well a model's latents retrieve across modalities (``retrieval_metrics``
for every ordered pair and fused -> each modality, under cosine and Euclidean, the better one by
default); ``query_latent`` turns an item id or a raw feature vector into the query latent;
``search_items`` answers the query from an index (``search_index``) built once per model, split,
modality and metric and rebuilt when those latents change; ``with_details`` adds the catalog's
metadata and tags to the results. Every user mistake is one sentence (``StudioError``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmae_core.clustering.kmeans import EVAL_SAMPLE
from mmae_core.errors import ConfigError, DataError, NotFoundError
from mmae_core.log import Log, silent
from mmae_core.search.retrieval import METRICS, encode_query, load_query_vector, mean_of_present, retrieval_metrics
from mmae_core.search.index import IndexCache, IndexFiles, LatentIndex
from mmae_core.search.spaces import FIT_ROWS as SPACE_ROWS, SharedSpace, TagSpace, fit_rows as space_rows

FUSED = "fused"
K = 10
INSTANCE = {"r_at_1": "recall_at_1", "r_at_5": "recall_at_5", "r_at_10": "recall_at_10"}
EVAL_COLUMNS = ["method", "query", "target", "metric", "space", "split", "queries", "p_at_10", "map",
                "recall_at_1", "recall_at_5", "recall_at_10", "median_rank"]
SPACES = ("tags", "shared", "latent")  # where search compares: see tag_space and shared_space
DEFAULT_SPACE = "tags"
SPACE_WORDS = {"tags": "tag space", "shared": "shared space", "latent": "raw latents"}  # how messages name them
SPACE_VERSION = 1  # part of every saved file's key in the shared space: a changed fit must not meet old files
MODEL_METHOD = "mmae"  # the ``method`` of the model's rows, as in ``evaluate``
BASELINES = ("mcca", "supervised")  # what ``search_eval(baseline=...)`` can put beside the model
DEFAULT_METRIC = "cosine"  # what ``search`` ranks by unless told: the better one on every model we measured
CACHE = IndexCache()
DETAIL_SKIP = ("cluster", "model", "curator", "tagged_at")


def model_modalities(store: "object", dataset: str, model: str, kinds: pd.DataFrame | None = None) -> list[str]:
    """The modalities the model has per-modality latents of; refuses a model without any. ``kinds``:
    ``store.latent_kinds`` when the caller has already read it."""
    kinds = store.latent_kinds(dataset, model) if kinds is None else kinds
    mods = [k for k in dict.fromkeys(kinds["kind"]) if k != FUSED]
    if not mods:
        raise NotFoundError(
            f"model '{model}' has no per-modality latents, so there is nothing to search across; retrain it or load its checkpoint again."
        )
    return mods


def model_splits(store: "object", dataset: str, model: str, kinds: pd.DataFrame | None = None) -> list[str]:
    return list(dict.fromkeys((store.latent_kinds(dataset, model) if kinds is None else kinds)["split"]))


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


# A split above this many items is measured on a stratified sample of this size (queries and targets
# alike), as the evaluation grid does: every query is ranked against every target, so the work grows as
# n^2 (a 50,000-item test split is 2.5 billion distances per pair and metric).
SAMPLE_SEED = 42


def search_eval(store: "object", dataset: str, model: str, split: str = "test", metric: str = "best",
                k: int = K, baseline: str | Sequence[str] | None = None, space: str = DEFAULT_SPACE,
                log: Log = silent) -> pd.DataFrame:
    """Retrieval metrics of a model on a split: one row per ordered modality pair and fused -> modality.

    ``metric``: ``cosine``, ``euclidean``, ``both``, or ``best`` (default: both are computed and the
    one with the higher mean class P@10 is returned, mean instance R@10 without labels). Columns
    ``EVAL_COLUMNS``; the instance ones are dropped where they do not apply (``instance_pairs``).
    ``df.attrs['chosen']`` names the metric returned for the model, ``df.attrs['other']`` holds the
    other one's rows. ``baseline='mcca'`` appends the same rows for MCCA's canonical variates
    (``mcca.search_space``, fitted on the train split's features of the model's modalities; its own
    better metric under ``best``), with ``method`` telling the blocks apart: a linear baseline that
    retrieves as well as the model must be visible where the model's figures are. ``space``: where
    the model's latents are compared (``shared_space``, or the raw ``latent``s); the ``space`` column
    says it (``features`` for the baseline). ``baseline='supervised'`` appends a search that knows the
    classes (``supervised_search``: what the split's features and labels allow; class metrics of the
    modality pairs only, ``metric`` ``posterior``). Several baselines may be given, in that order.
    ``log`` hears of each phase (seconds each on the full demo). A split of more than ``EVAL_SAMPLE``
    items is measured on a stratified sample of that size (the ``queries`` column says how many), and
    a baseline is fitted on at most ``evaluate.FIT_SAMPLE`` train items.
    """
    if metric not in (*METRICS, "best", "both"):
        raise ConfigError(f"'{metric}' is not a search metric; choose cosine, euclidean, both or best.")
    baselines = () if baseline is None else (baseline,) if isinstance(baseline, str) else tuple(dict.fromkeys(baseline))
    for b in baselines:
        if b not in BASELINES:
            raise ConfigError(f"'{b}' is not a search baseline; choose {', '.join(BASELINES)}.")
    _check_space(space)
    mods = model_modalities(store, dataset, model)
    _check_split(store, dataset, model, split)
    from mmae_core.evaluation.evaluate import fit_rows, stratified_sample
    from mmae_core.evaluation.metrics import encode_labels

    fs = store.load_dataset(dataset, lazy=True)  # features stay on disk: only the rows used are read
    labels = fs.splits[split].labels if split in fs.splits else None
    if labels is not None and not pd.notna(pd.Series(labels, dtype=object)).any():
        labels = None
    if "supervised" in baselines:  # refuse before the model's measurement, not after it
        from mmae_core.search.supervised import check_labels

        check_labels(fs.splits["train"].labels if "train" in fs.splits else None, labels)
    _, vecs, used = _in_space(store, dataset, model, split, [*mods, FUSED], space, log=log)
    n = len(vecs[FUSED])
    pick = slice(0, n)
    if n > EVAL_SAMPLE:  # every query against every target grows as n^2: a stratified sample, stated
        pick = stratified_sample(encode_labels(labels), n, EVAL_SAMPLE, SAMPLE_SEED)
        log(f"measuring on a stratified sample of {EVAL_SAMPLE:,} of the {n:,} {split} items (queries and targets)")
        vecs = {kind: v[pick] for kind, v in vecs.items()}
        labels = None if labels is None else labels[pick]
    out = _eval_rows({m: vecs[m] for m in mods}, vecs[FUSED], labels, split, metric, k, MODEL_METHOD, used, log)
    if baselines:
        from mmae_core.model.standardize import Standardizer

        if len(mods) < 2:
            raise ConfigError("a search baseline needs at least two modalities; this model has one, so there is nothing to compare.")
        tr_split = fs.splits["train"]
        fit = fit_rows(tr_split.n, SAMPLE_SEED)
        train = {m: tr_split.features[m][fit] for m in mods}
        std = Standardizer.fit(train)
        tr, target = std.transform(train), std.transform({m: fs.splits[split].features[m][pick] for m in mods})
        train_labels = None if tr_split.labels is None else tr_split.labels[fit]
        for b in baselines:
            base = _baseline_rows(b, tr, train_labels, target, labels, split, metric, k, log)
            attrs = dict(out.attrs)
            out.attrs, base.attrs = {}, {}  # pandas compares attrs on concat, and a DataFrame in them has no truth value
            out = pd.concat([out, base], ignore_index=True)
            out.attrs = attrs
    if not instance_pairs(fs.attrs):
        out = out.drop(columns=["recall_at_1", "recall_at_5", "recall_at_10", "median_rank"])
    return out


def _baseline_rows(baseline: str, train: dict[str, np.ndarray], train_labels: np.ndarray | None,
                   target: dict[str, np.ndarray], labels: np.ndarray | None, split: str, metric: str, k: int,
                   log: Log) -> pd.DataFrame:
    """One baseline's rows of ``search_eval`` from standardized train and target features."""
    if baseline == "supervised":
        from mmae_core.search.supervised import METHOD, supervised_search

        t = supervised_search(train, train_labels, target, labels, k=k, log=log)
        t = t.rename(columns={f"p_at_{k}": "p_at_10"})
        t.insert(0, "method", METHOD)
        t.insert(4, "space", "features")
        t.insert(5, "split", split)
        return t.reindex(columns=EVAL_COLUMNS)
    from mmae_core.evaluation.mcca import search_space

    log(f"fitting {baseline} on the train split's features ...")
    views, mean = search_space(train, target)
    return _eval_rows(views, mean, labels, split, metric, k, baseline, "features", log)


def _eval_rows(per: dict[str, np.ndarray], fused: np.ndarray, labels: np.ndarray | None, split: str, metric: str,
               k: int, method: str, space: str, log: Log = silent) -> pd.DataFrame:
    """``retrieval_metrics`` of one representation under ``metric`` (see ``search_eval``), as rows of
    ``EVAL_COLUMNS`` labelled ``method`` and ``space``; attrs ``chosen`` (and ``other`` under ``best``)."""
    wanted = METRICS if metric in ("best", "both") else (metric,)
    tables = {}
    for mt in wanted:
        log(f"{method}: {mt} retrieval, every ordered pair of {len(per)} modalities and fused ({len(fused):,} queries each) ...")
        t = retrieval_metrics(per, labels, fused=fused, k=k, metric=mt).rename(columns=INSTANCE)
        t.insert(0, "method", method)
        t.insert(4, "space", space)
        t.insert(5, "split", split)
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
        from mmae_core.model.checkpoint import load_checkpoint

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


def worst_pairs(table: pd.DataFrame) -> pd.Series:
    """Per ``method`` of a ``search_eval`` table, the lowest class P@10 over the ordered modality pairs
    (fused queries left out): how well search serves the modality it serves worst."""
    return table[table["query"] != FUSED].groupby("method")["p_at_10"].min()


def _check_space(space: str) -> str:
    if space not in SPACES:
        raise ConfigError(f"'{space}' is not a search space; choose {' or '.join(SPACES)}.")
    return space


def _space_key(store: "object", dataset: str, model: str, what: str = "shared space") -> tuple[tuple, tuple, str, list[str]]:
    """(key, fingerprint, split fitted on, modalities) of a model's ``what`` space, from one read of
    its latent kinds (a search asks for this on every call, so the latents table is scanned once)."""
    kinds = store.latent_kinds(dataset, model)
    mods = model_modalities(store, dataset, model, kinds)
    splits = model_splits(store, dataset, model, kinds)
    fit_split = "train" if "train" in splits else splits[0]
    key = (str(store.path), dataset, model, fit_split, what, SPACE_VERSION)
    return key, _fingerprint(store, dataset, model, fit_split, mods[0], kinds), fit_split, mods


def _saved_space(store: "object", dataset: str, model: str, what: str, kind: type, fit: "object",
                 cache: IndexCache, files: IndexFiles | None, log: Log) -> "SharedSpace | TagSpace | None":
    """A model's ``what`` space: from the process, else from its file beside the store, else
    ``fit(model's train latents by kind, fit split)`` and saved (a few kB, at any size: each CLI call
    is a new process). None for a one-modality model or where ``fit`` gives None."""
    key, fingerprint, fit_split, mods = _space_key(store, dataset, model, what)
    if len(mods) < 2:
        return None
    files = index_files(store) if files is None else files

    def build() -> "SharedSpace | TagSpace | None":
        saved = files.load_arrays(key, fingerprint)
        if saved is not None:
            try:
                return kind.from_arrays(mods, saved)
            except KeyError:
                pass  # written for other modalities: refit
        log(f"fitting the {what} of {model} on its {fit_split} latents (once per model) ...")

        def latents(kind_: str) -> np.ndarray:  # a copy of the fit rows: each kind's whole matrix is freed at once
            z = store.latents(dataset, model, fit_split, kind_)[1]
            return np.ascontiguousarray(z[space_rows(len(z))])

        sp = fit(latents, mods)
        if sp is not None:
            files.save_arrays(key, fingerprint, sp.arrays())  # the next process skips the fit
        return sp

    return cache.get(key, fingerprint, build)  # type: ignore[return-value]


def shared_space(store: "object", dataset: str, model: str, cache: IndexCache = CACHE,
                 files: IndexFiles | None = None, log: Log = silent) -> SharedSpace | None:
    """The model's shared search space: multiset CCA of its per-modality latents, fitted on the train
    split (at most ``SPACE_ROWS`` items, evenly spaced), each component weighted by its canonical
    correlation (``spaces.fit_shared_space``). None for a one-modality model, or one whose train
    latents cannot be lined up (a modality no train item has): search then compares the raw latents.

    Why: a per-modality latent also carries what only its own modality knows (the image's style, the
    recording's noise), which a search in another modality's latents cannot use and which swamps what
    the modalities share. The weighted CCA keeps the directions the modalities' latents share, in
    proportion to how strongly they share them. Measured worst-pair class P@10 of the aligned preset:
    full demo 0.26 -> 0.46, digits 0.71 -> 0.72; the paper preset's per-modality latents become
    searchable (digits 0.08 -> 0.67; docs/results.md, "Cross-modal search"). Deterministic (one
    eigendecomposition, no random draw). Refitting cost a CLI call about 2.5 s at 100k items.
    """
    def fit(latents, mods: list[str]) -> SharedSpace | None:
        from mmae_core.search.spaces import fit_shared_space

        try:
            return fit_shared_space({m: latents(m) for m in mods})
        except ConfigError:  # e.g. a modality no train item has: nothing to line up, search the raw latents
            return None

    return _saved_space(store, dataset, model, "shared space", SharedSpace, fit, cache, files, log)  # type: ignore[return-value]


def tag_space(store: "object", dataset: str, model: str, cache: IndexCache = CACHE,
              files: IndexFiles | None = None, log: Log = silent) -> TagSpace | None:
    """The model's tag space (``spaces.TagSpace``): the model's own Leiden tags of its train latents,
    a classifier of them per modality, and the shared space to order items within a tag. None where
    there is no shared space or the latents give fewer than two tags: search then uses the shared
    space (or the raw latents) and says so. Seeded by the model's own seed, so it is reproducible."""
    def fit(latents, mods: list[str]) -> TagSpace | None:  # the saved tag space holds its shared space
        from mmae_core.search.spaces import fit_tag_space

        shared = shared_space(store, dataset, model, cache, files, log)
        if shared is None:
            return None
        seed = int(store.model_config(dataset, model).get("seed", SAMPLE_SEED))
        return fit_tag_space({m: latents(m) for m in mods}, latents(FUSED), seed=seed, shared=shared, log=log)

    return _saved_space(store, dataset, model, "tag space", TagSpace, fit, cache, files, log)  # type: ignore[return-value]


def _space(store: "object", dataset: str, model: str, space: str, cache: IndexCache = CACHE,
           files: IndexFiles | None = None, log: Log = silent) -> tuple["SharedSpace | TagSpace | None", str]:
    """The fitted space a search in ``space`` compares in, and its name; a space the model cannot
    have falls back to the next one (tags -> shared -> latent), named as what it is."""
    if space == "tags":
        sp = tag_space(store, dataset, model, cache, files, log)
        if sp is not None:
            return sp, "tags"
        space = "shared"
    if space == "shared":
        sp = shared_space(store, dataset, model, cache, files, log)
        if sp is not None:
            return sp, "shared"
    return None, "latent"


def fell_back(asked: str, used: str) -> str:
    """The sentence a user reads when a search could not compare in the space asked (``_space``)."""
    return (f"this model has no {SPACE_WORDS[asked]} (its latents give fewer than two tags, or cannot be lined up "
            f"across modalities), so the search used the {SPACE_WORDS[used]}")


def _in_space(store: "object", dataset: str, model: str, split: str, kinds: list[str], space: str,
              cache: IndexCache = CACHE, files: IndexFiles | None = None,
              log: Log = silent) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """(item ids, {kind: vectors}, the space used) of a split; ``fused`` under ``shared`` or ``tags``
    is the mean of the item's projected modalities (what its latents share), not the fused latent. A
    model without that space (``_space``) gives the next one, and says which."""
    sp, used = _space(store, dataset, model, space, cache, files, log)
    out: dict[str, np.ndarray] = {}
    ids = None
    if sp is None:
        for kind in kinds:
            ids, out[kind] = store.latents(dataset, model, split, kind)
        return ids, out, used
    mods = list(sp.names)
    need = mods if FUSED in kinds else [k for k in kinds if k != FUSED]
    views = {}
    for m in need:
        ids, z = store.latents(dataset, model, split, m)
        views[m] = sp.transform_view(m, z)
    for kind in kinds:
        out[kind] = mean_of_present(views) if kind == FUSED else views[kind]
    return ids, out, used


def _fingerprint(store: "object", dataset: str, model: str, split: str, kind: str,
                 kinds: pd.DataFrame | None = None) -> tuple:
    """What identifies the stored latents: the model's id and creation time (a store file replaced by
    another, or a model re-created, gives other values) and the row count of that split and kind."""
    models = store.list_models(dataset)
    row = models.loc[models["name"] == model]
    if not len(row):
        raise NotFoundError(f"dataset '{dataset}' has no model named '{model}'; pick one of the registered models.")
    kinds = store.latent_kinds(dataset, model) if kinds is None else kinds
    n = kinds.loc[(kinds["split"] == split) & (kinds["kind"] == kind), "items"]
    return (int(row["id"].iloc[0]), str(row["created_at"].iloc[0]), int(n.iloc[0]) if len(n) else 0)


def index_files(store: "object") -> IndexFiles:
    """The on-disk copies of a store's large indexes: a folder beside the store file (``STORE.indexes``)."""
    path = Path(str(store.path))
    return IndexFiles(path.with_name(path.name + ".indexes"))


def target_index(store: "object", dataset: str, model: str, split: str, target: str, metric: str = DEFAULT_METRIC,
                 cache: IndexCache = CACHE, files: IndexFiles | None = None,
                 space: str = DEFAULT_SPACE, log: Log = silent) -> tuple[np.ndarray, LatentIndex]:
    """(item ids, index) of a model's ``target`` latents of ``split`` in ``space``: built once (kept in
    the process, and on disk when large), rebuilt when they change."""
    if metric not in METRICS:
        raise ConfigError(f"'{metric}' is not a search metric; choose cosine or euclidean.")
    _check_space(space)
    key = (str(store.path), dataset, model, split, target, metric) + ((space, SPACE_VERSION) if space != "latent" else ())
    fingerprint = _fingerprint(store, dataset, model, split, target)
    files = index_files(store) if files is None else files

    def build() -> tuple[np.ndarray, LatentIndex]:
        loaded = files.load(key, fingerprint)
        if loaded is not None:
            return loaded
        ids, z, _ = _in_space(store, dataset, model, split, [target], space, cache, files, log)
        if files.keeps(len(ids)):  # the large (IVF) index: a minute at 1M; a small exact one is instant
            log(f"building the search index of the {split} {target} latents ({len(ids):,} items; once, then "
                "saved beside the store for later calls) ...")
        index = LatentIndex(z[target], metric)
        files.save(key, fingerprint, ids, index)
        return ids, index

    return cache.get(key, fingerprint, build)  # type: ignore[return-value]


def search_items(store: "object", dataset: str, model: str, query: Query, target: str, top: int = 10,
                 metric: str = DEFAULT_METRIC, cache: IndexCache = CACHE, files: IndexFiles | None = None,
                 space: str = DEFAULT_SPACE, log: Log = silent) -> pd.DataFrame:
    """The ``top`` items of ``query.split`` nearest the query in the ``target`` latents (in ``space``):
    rank, item_id, score."""
    mods = model_modalities(store, dataset, model)
    _check_kind(target, mods, "the latents to search in")
    _check_space(space)
    if int(top) < 1:
        raise ConfigError(f"--top must be at least 1 (got {top}).")
    ids, index = target_index(store, dataset, model, query.split, target, metric, cache, files, space, log)
    vector = query.vector
    sp, used = _space(store, dataset, model, space, cache, files, log)
    if sp is not None:
        vector = sp.transform_view(query.source, vector[None, :])[0]
    rows, scores = index.search(vector, int(top))
    out = pd.DataFrame({"rank": np.arange(1, len(rows) + 1), "item_id": ids[rows].astype(str), "score": scores})
    out.attrs["space"] = used  # the space asked for, or the one it fell back to (``_space``)
    return out


def with_details(found: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Results with each item's split, label, metadata, tag and status (catalog order of columns)."""
    cat = catalog.drop(columns=[c for c in DETAIL_SKIP if c in catalog.columns])
    cat = cat.assign(item_id=cat["item_id"].astype(str)).drop_duplicates("item_id")
    return found.merge(cat, on="item_id", how="left")


def search(store: "object", dataset: str, model: str, source: str, target: str, item: str | None = None,
           vector: bytes | None = None, top: int = 10, split: str | None = None, metric: str = DEFAULT_METRIC,
           vector_name: str = "the query file", space: str = DEFAULT_SPACE, log: Log = silent) -> pd.DataFrame:
    """The CLI's ``search``: query, nearest items, their details; ``df.attrs`` says what was asked.
    ``log`` hears of the slow first-time work (fitting the shared space, building an index)."""
    _check_space(space)
    q = query_latent(store, dataset, model, source, item=item, vector=vector, split=split, vector_name=vector_name)
    hits = search_items(store, dataset, model, q, target, top, metric, space=space, log=log)
    # only the found items' catalog rows: the whole catalog of an archive-sized dataset takes seconds
    found = with_details(hits, store.catalog(dataset, hits["item_id"].tolist()))
    found.insert(3, "metric", metric)
    found.attrs.update(query=q.item, source=source, target=target, split=q.split, space=hits.attrs["space"])
    return found
