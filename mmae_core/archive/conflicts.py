"""Items whose modalities disagree: a caption or a soundtrack that belongs to something else.

For each item and each modality m it has, the per-modality latent z_m = E_m(x_m) is compared with the
reference groups (accepted tags, else proposed clusters; see ``archive.reference_groups``) *in that
modality's own latent space*: each group's centroid for m is the mean z_m of its members that have m.
Per-modality centroids, not the fused ones, because the paper preset does not align the z_m with one
another (its z_image and z_text of one item can lie far apart), while within one modality the members
of a tag still cluster together.

Per modality the distances turn into a posterior over groups, p_m(g) ∝ exp(-d_m(g)² / (2 T_m)),
with T_m the reference items' mean squared distance to their own group's centroid (the within-group
spread of that modality: a weak modality, whose groups overlap, gets flat posteriors and so little
say). The ``agreement`` score is the log Bayes factor of "each modality shows its own group" against "all
the item's modalities show one group" under a uniform prior over the K groups:
``-log Σ_g Π_m p_m(g) - (M_i - 1) log K`` for an item with M_i modalities. It is 0 when the
modalities say nothing (flat posteriors), negative when they confidently agree, positive and growing
when they confidently name different groups, and 0 for an item with a single modality (a plain
"probability that they disagree" would instead call every uncertain item a conflict). ``nearest``
is each modality's most probable group; an item is ``flagged`` when those differ and the score is
positive.

``margin``: over every pair of modalities (m, m') the item has, how much farther z_m is from the
group z_m' points to than from its own nearest group, in units of sqrt(T_m), in both directions,
summed (0 when all point to the same group). It beat ``agreement`` on the digits (AUROC .946 against
.867 on ``mfeat``).

``cross``, an instance score: per modality m, the squared distance between the fused latent the
model gives the item from m alone and from its other modalities alone (``cross_distances``, through
the model's own fusion and latent completion, on the stored per-modality latents), log-transformed
and standardized with the reference items' values of the same modality; the item's score is the
largest over its modalities. Group scores cannot see a caption swapped in from another item *of the
same tag*, and they lean on the groups being right; this one asks whether the modalities describe
the same item.

``tags``: per modality m, the model's own tag probabilities of z_m (the classifiers of the search's
tag space, ``search.spaces.TagSpace``: Leiden tags of the model's fused train latents, learned per
modality) against the mean of the item's other modalities' probabilities; the score is the largest
``1 - overlap`` (Bhattacharyya) over its modalities. Unlike ``margin`` it does not lean on the
reference groups' centroids, and a classifier weighs each direction of a latent by how much it tells
the tags apart, where a distance weighs all alike.

**The default is ``combined``**: ``cross`` plus ``margin`` plus ``tags`` (when the model has a tag
space), each standardized with the reference items' mean and spread, so each counts in units of
what ordinary items score. Measured by swapping one modality of 10% of the test items with an item
of another class (``benchmarks/compare_methods.py --bars all``, 10 seeds, the default preset;
docs/results.md "Conflicts"). ``cross`` and ``combined`` need the model (``fuse``), ``tags`` its tag
space (``tags``); the others work on latents alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from mmae_core.errors import ConfigError

METHODS: tuple[str, ...] = ("agreement", "margin", "cross", "tags", "combined")
NEEDS_MODEL: tuple[str, ...] = ("cross", "combined")  # these fuse subsets of an item's latents
NEEDS_TAGS: tuple[str, ...] = ("tags",)  # this one needs the model's tag classifiers
USES_TAGS: tuple[str, ...] = ("tags", "combined")  # these use them when given (combined adds them to the others)
DEFAULT_METHOD = "combined"  # measured: benchmarks/compare_methods.py --bars all, docs/results.md "Conflicts"

# stored per-modality latents (NaN rows: absent) -> the fused latent the model gives from just those
Fuse = Callable[[dict[str, np.ndarray]], np.ndarray]
# (modality, its latents) -> (n, tags) probabilities of the model's own tags, NaN rows where absent
TagProbabilities = Callable[[str, np.ndarray], np.ndarray]
_EPS = 1e-12
STATS_ITEMS = 50_000  # reference items (evenly spaced) the instance and margin spreads are measured on


@dataclass
class ConflictReference:
    modalities: list[str]
    names: list[str]
    centroids: dict[str, np.ndarray]  # modality -> (K, latent); NaN rows for groups without a member with m
    temperature: dict[str, float]  # modality -> mean squared distance of members to their own centroid
    source: str
    # what the members score, to standardize the instance signal and the margin with (set with ``fuse``)
    cross_log_mean: dict[str, float] | None = None
    cross_log_std: dict[str, float] | None = None
    margin_mean: float = 0.0
    margin_std: float = 1.0
    tags_mean: float | None = None  # what the members score on ``tags`` (set with ``tags``)
    tags_std: float = 1.0


def fit_reference(per: dict[str, np.ndarray], assign: np.ndarray, names: list[str], source: str,
                  fuse: Fuse | None = None, tags: TagProbabilities | None = None) -> ConflictReference:
    """Per-modality centroids and spreads of the reference groups (``assign``: group per row, -1 none).

    With ``fuse`` (the model's ``fuse_latents``), also how the members score on the instance signal
    and the margin, with ``tags`` (its tag space's ``probabilities``) on ``tags``: the ``cross``,
    ``tags`` and ``combined`` scores are standardized against them."""
    assign = np.asarray(assign, dtype=np.int64)
    k = len(names)
    if k < 2:
        raise ConfigError("comparing modalities needs at least two tags or clusters; accept or propose more.")
    cents: dict[str, np.ndarray] = {}
    temps: dict[str, float] = {}
    for m, z in per.items():
        z = np.asarray(z, dtype=np.float64)
        if len(z) != len(assign):
            raise ConfigError(f"{m} has {len(z)} latents for {len(assign)} group assignments; give one per item.")
        has = np.isfinite(z).all(axis=1) & (assign >= 0)
        c = np.full((k, z.shape[1]), np.nan)
        for g in range(k):
            rows = has & (assign == g)
            if rows.any():
                c[g] = z[rows].mean(axis=0)
        own = c[assign[has]]
        ok = np.isfinite(own).all(axis=1)
        if not ok.any():
            continue  # no reference item has m: this modality cannot vote
        temps[m] = float(max(((z[has][ok] - own[ok]) ** 2).sum(axis=1).mean(), 1e-12))
        cents[m] = c
    if len(cents) < 2:
        raise ConfigError("fewer than two modalities have tagged or clustered items to compare; tag more items.")
    ref = ConflictReference(list(cents), list(names), cents, temps, source)
    if fuse is None and tags is None:
        return ref
    members = np.flatnonzero(assign >= 0)
    if len(members) > STATS_ITEMS:  # a spread needs no more; an archive's members would cost GBs of fusions
        members = members[np.linspace(0, len(members) - 1, STATS_ITEMS).astype(np.int64)]
    mem = {m: np.asarray(per[m])[members] for m in ref.modalities}
    if tags is not None:
        t = tag_disagreement(mem, tags)
        ref.tags_mean, ref.tags_std = float(t.mean()), float(t.std()) if t.std() > _EPS else 1.0
    if fuse is None:
        return ref
    logd = {m: np.log(d + _EPS) for m, d in cross_distances(mem, fuse).items()}
    ref.cross_log_mean = {m: float(np.nanmean(v)) if np.isfinite(v).any() else 0.0 for m, v in logd.items()}
    ref.cross_log_std = {m: float(np.nanstd(v)) if np.isfinite(v).sum() > 1 and np.nanstd(v) > _EPS else 1.0
                         for m, v in logd.items()}
    margin, _ = score(ref, mem, "margin")
    ref.margin_mean, ref.margin_std = float(margin.mean()), float(margin.std()) if margin.std() > _EPS else 1.0
    return ref


def cross_distances(per: dict[str, np.ndarray], fuse: Fuse) -> dict[str, np.ndarray]:
    """Per modality m: the squared distance between the fused latent the model gives the item from m
    alone and from its other modalities alone; NaN where the item lacks m or has nothing else.

    An instance signal: a swapped caption names another *item*, so it predicts another latent even
    when both items carry the same tag (which the group-based ``margin`` cannot see)."""
    mods = list(per)
    out: dict[str, np.ndarray] = {}
    for m in mods:
        z = np.asarray(per[m])
        has = np.isfinite(z).all(axis=1)
        others = {o: per[o] for o in mods if o != m}
        some_other = np.any([np.isfinite(np.asarray(v)).all(axis=1) for v in others.values()], axis=0)
        d = np.full(len(z), np.nan)
        rows = np.flatnonzero(has & some_other)
        if len(rows):
            alone = fuse({m: z[rows]})
            rest = fuse({o: np.asarray(v)[rows] for o, v in others.items()})
            d[rows] = ((alone.astype(np.float64) - rest) ** 2).sum(axis=1)
        out[m] = d
    return out


def _sqdist(z: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n, K) squared distances; +inf to a group without a centroid, NaN rows stay NaN."""
    cc = np.nan_to_num(c)
    sq = (z**2).sum(1)[:, None] - 2.0 * z @ cc.T + (cc**2).sum(1)[None, :]
    sq = np.maximum(sq, 0.0)
    sq[:, ~np.isfinite(c).all(axis=1)] = np.inf
    return sq


def score(ref: ConflictReference, per: dict[str, np.ndarray], method: str = DEFAULT_METHOD,
          fuse: Fuse | None = None, tags: TagProbabilities | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(score per item, nearest group index per modality with -1 where the item lacks it).

    ``cross`` and ``combined`` need ``fuse`` and a reference fitted with it; ``tags`` needs ``tags``
    and a reference fitted with them, and ``combined`` adds it when both are there."""
    if method not in METHODS:
        raise ConfigError(f"unknown disagreement score '{method}'; choose one of {', '.join(METHODS)}.")
    if method in NEEDS_MODEL and (fuse is None or ref.cross_log_mean is None):
        raise ConfigError(f"the '{method}' score needs the model that encoded the latents; score with margin or agreement without it.")
    if method in NEEDS_TAGS and (tags is None or ref.tags_mean is None):
        raise ConfigError(f"the '{method}' score needs the model's tags, and this model's latents give fewer than two; "
                          "score with combined or margin.")
    mods = [m for m in ref.modalities if m in per]
    if len(mods) < 2:
        raise ConfigError("comparing modalities needs the latents of at least two modalities.")
    known = {m: per[m] for m in mods}  # the item's modalities the reference has centroids of
    n = len(per[mods[0]])
    k = len(ref.names)
    logp = np.zeros((n, k))  # sum over present modalities of log p_m(g)
    nearest: dict[str, np.ndarray] = {}
    sqs: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for m in mods:
        z = np.asarray(per[m], dtype=np.float64)
        has = np.isfinite(z).all(axis=1)
        sq = np.zeros((n, k))
        sq[has] = _sqdist(z[has], ref.centroids[m])
        a = -sq / (2.0 * ref.temperature[m])
        a[~has] = 0.0
        mx = a.max(axis=1, keepdims=True)
        lp = a - (mx + np.log(np.exp(a - mx).sum(axis=1, keepdims=True)))  # log-softmax
        lp[~has] = 0.0
        logp += lp
        near = np.where(has, np.argmax(a, axis=1), -1)
        nearest[m] = near
        sqs[m], present[m] = sq, has
    count = np.sum([present[m] for m in mods], axis=0)
    if method == "agreement":
        mx = logp.max(axis=1, keepdims=True)
        s = -(mx[:, 0] + np.log(np.exp(logp - mx).sum(axis=1))) - (count - 1) * np.log(k)
    elif method == "margin":
        s = _margin(ref, mods, sqs, nearest, present)
    elif method == "tags":
        s = _tags_z(ref, known, tags)  # type: ignore[arg-type]
    else:
        s = _instance(ref, known, fuse)  # type: ignore[arg-type]
        if method == "combined":
            s = s + (_margin(ref, mods, sqs, nearest, present) - ref.margin_mean) / ref.margin_std
            if tags is not None and ref.tags_mean is not None:
                s = s + _tags_z(ref, known, tags)
    s = np.where(count >= 2, s, 0.0)
    return s, nearest


def _margin(ref: ConflictReference, mods: list[str], sqs: dict[str, np.ndarray], nearest: dict[str, np.ndarray],
            present: dict[str, np.ndarray]) -> np.ndarray:
    """The ``margin`` score from each modality's squared distances to the groups and nearest group."""
    s = np.zeros(len(present[mods[0]]))
    for i, m in enumerate(mods):
        for m2 in mods[i + 1:]:
            r = np.flatnonzero(present[m] & present[m2])
            for a_, b_ in ((m, m2), (m2, m)):
                own = np.sqrt(sqs[a_][r, nearest[a_][r]])
                other = np.sqrt(sqs[a_][r, nearest[b_][r]])
                other = np.where(np.isfinite(other), other, own)  # b's group has no a-centroid: no vote
                s[r] += (other - own) / np.sqrt(ref.temperature[a_])
    return np.maximum(s, 0.0)


def _instance(ref: ConflictReference, per: dict[str, np.ndarray], fuse: Fuse) -> np.ndarray:
    """The largest standardized log ``cross_distances`` over the item's modalities (0 with fewer than two)."""
    zs = [(np.log(d + _EPS) - ref.cross_log_mean[m]) / ref.cross_log_std[m]  # type: ignore[index]
          for m, d in cross_distances(per, fuse).items()]
    stacked = np.stack(zs, axis=1)
    ok = np.isfinite(stacked).any(axis=1)
    out = np.zeros(len(stacked))
    out[ok] = np.nanmax(stacked[ok], axis=1)
    return out


def tag_disagreement(per: dict[str, np.ndarray], tags: TagProbabilities) -> np.ndarray:
    """Per item, the largest ``1 - overlap`` over its modalities between that modality's tag
    probabilities and the mean of its other modalities' (0 with fewer than two modalities)."""
    probs = {m: tags(m, z) for m, z in per.items()}
    has = {m: np.isfinite(p).all(axis=1) for m, p in probs.items()}
    total = sum(np.where(has[m][:, None], p, 0.0) for m, p in probs.items())
    count = sum(h.astype(float) for h in has.values())
    out = np.zeros(len(count))
    for m, p in probs.items():
        ok = has[m] & (count >= 2)
        others = (total[ok] - p[ok]) / (count[ok, None] - 1)  # the mean of the item's other modalities
        out[ok] = np.maximum(out[ok], 1.0 - np.sqrt(np.clip(p[ok] * others, 0.0, None)).sum(axis=1))
    return out


def _tags_z(ref: ConflictReference, per: dict[str, np.ndarray], tags: TagProbabilities) -> np.ndarray:
    """``tag_disagreement`` standardized with what the reference items score."""
    return (tag_disagreement(per, tags) - ref.tags_mean) / ref.tags_std  # type: ignore[operator]


def conflict_table(ref: ConflictReference, per: dict[str, np.ndarray], item_ids: np.ndarray,
                   method: str = DEFAULT_METHOD, fuse: Fuse | None = None,
                   tags: TagProbabilities | None = None) -> pd.DataFrame:
    """item_id, score, flagged, then one column per modality with the group it points to (None: absent)."""
    s, near = score(ref, per, method, fuse, tags)
    names = np.asarray(ref.names + [None], dtype=object)
    df = pd.DataFrame({"item_id": np.asarray(item_ids, dtype=object).astype(str), "score": s})
    picks = np.stack([near[m] for m in near], axis=1)
    distinct = np.array([len({int(v) for v in row if v >= 0}) for row in picks])
    df["flagged"] = (distinct >= 2) & (s > 0)
    for m in near:
        df[m] = names[near[m]]
    return df.sort_values(["score", "item_id"], ascending=[False, True], kind="mergesort").reset_index(drop=True)
