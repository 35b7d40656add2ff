"""Novelty: how badly an item fits what the model and the curator already know.

Two signals, both measured against the *train split* (the material the model was fitted on):

* **Reconstruction** (``recon``): per modality, the item's reconstruction MSE from its fused latent,
  log-transformed (errors are positive and right-skewed; their logs are close to normal) and
  standardized with the train split's mean and std of that modality's log error, so a 1024-d audio
  error and a 50-d image error count alike. An item's value is the mean over the modalities it has.
* **Distance** (``distance``): the Mahalanobis distance of the item's fused latent to the nearest
  reference centroid (an accepted tag's centroid; where none is accepted, the proposed clusters'
  centroids; see ``archive.reference_groups``), with one covariance shared by all groups: the
  within-group covariance of the groups' members, shrunk towards a multiple of the identity
  (Ledoit-Wolf) so that a few tagged items are enough. Measured against plain Euclidean distance it
  raised the held-out-class AUROC from 0.86 to 0.93 on the UCI digits and from 0.84 to 0.88 on the
  demo: latent directions along which tags vary a lot should count less than those where they are
  tight. Log-transformed and standardized with the train items' distances to the same centroids.

**How they are combined (``combine``), chosen by measurement** (``benchmarks/novelty.py``, docs/results.md
"Novelty"): ``zsum`` adds the two standardized values (each is a z-score against train, so neither
dominates by its units); ``rank`` averages the two train-percentiles instead; ``recon`` and
``distance`` score one signal alone. Measured AUROC (paper preset): held-out classes on the UCI
digits zsum 0.958, recon 0.958, distance 0.931; held-out classes on the demo zsum 0.845, recon
0.60, distance 0.891; the demo's OOD split zsum 1.000, recon 1.000, distance 0.979. The two signals
fail on different data (reconstruction on the synthetic held-out classes, distance on the digits),
and ``zsum`` is the choice that is never the worst and is best on the real set. ``rank`` turned
out to equal ``distance``: a model trained for 100 epochs reconstructs its own train items better
than any new item, so nearly every test item lies beyond the train split's largest error and its
reconstruction percentile saturates at 1. ``zsum`` does not saturate (a constant shift of one part
leaves the order intact), which is also what a "most unusual first" list needs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmae_core.errors import ConfigError

COMBINATIONS: tuple[str, ...] = ("zsum", "rank", "recon", "distance")
DEFAULT_COMBINE = "zsum"
_EPS = 1e-12


@dataclass
class NoveltyReference:
    """Train-split statistics and the reference centroids a score is measured against."""

    modalities: list[str]
    log_err_mean: dict[str, float]
    log_err_std: dict[str, float]
    centroids: np.ndarray  # (K, latent) fused-space centroids of the reference groups, whitened
    whiten: np.ndarray  # (latent, latent): z @ whiten turns Mahalanobis into Euclidean distance
    names: list[str]  # K group names (tags, or proposed clusters)
    source: str  # where the groups came from: 'tags', 'proposals' or 'train clusters'
    dist_mean: float
    dist_std: float
    recon_train: np.ndarray  # sorted recon values of the train items (for percentiles)
    dist_train: np.ndarray  # sorted distance values of the train items


@dataclass
class NoveltyParts:
    recon: np.ndarray  # (n,) standardized log reconstruction error, mean over present modalities
    distance: np.ndarray  # (n,) standardized log distance to the nearest centroid
    nearest: np.ndarray  # (n,) index of the nearest centroid (-1 when the item has no latent)


def _log_err(err: dict[str, np.ndarray], m: str) -> np.ndarray:
    return np.log(np.asarray(err[m], dtype=np.float64) + _EPS)


def _nearest(z: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distance to, index of) the nearest centroid per row; NaN / -1 for a row without a latent."""
    z = np.asarray(z, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    ok = np.isfinite(z).all(axis=1)
    d = np.full(len(z), np.nan)
    idx = np.full(len(z), -1, dtype=np.int64)
    if ok.any() and len(c):
        sq = (z[ok] ** 2).sum(1)[:, None] - 2.0 * z[ok] @ c.T + (c**2).sum(1)[None, :]
        j = np.argmin(sq, axis=1)
        d[ok] = np.sqrt(np.maximum(sq[np.arange(len(j)), j], 0.0))
        idx[ok] = j
    return d, idx


def _recon_raw(err: dict[str, np.ndarray], modalities: list[str], mean: dict[str, float], std: dict[str, float]) -> np.ndarray:
    zs = np.stack([(_log_err(err, m) - mean[m]) / std[m] for m in modalities], axis=1)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isfinite(zs), zs, np.nan), axis=1) if zs.size else np.zeros(0)


def whitening(member_z: np.ndarray, member_assign: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """W with W W^T = inverse of the shrunk pooled within-group covariance (see the module docstring)."""
    from sklearn.covariance import ledoit_wolf

    z = np.asarray(member_z, dtype=np.float64)
    a = np.asarray(member_assign, dtype=np.int64)
    ok = np.isfinite(z).all(axis=1) & (a >= 0) & (a < len(centroids))
    d = z.shape[1]
    if ok.sum() < 2:
        return np.eye(d)
    resid = z[ok] - centroids[a[ok]]
    cov, _ = ledoit_wolf(resid, assume_centered=True)
    vals, vecs = np.linalg.eigh(cov)
    floor = max(float(vals.max()) * 1e-6, 1e-12)
    return vecs / np.sqrt(np.maximum(vals, floor))[None, :]


def fit_reference(
    train_err: dict[str, np.ndarray], train_z: np.ndarray, centroids: np.ndarray, names: list[str], source: str,
    member_z: np.ndarray | None = None, member_assign: np.ndarray | None = None,
) -> NoveltyReference:
    """The statistics of the train split that every later score is standardized with.

    ``member_z``/``member_assign``: the latents of the reference groups' members and their group
    index, for the covariance of the distance; default: the train items, each in its nearest group.
    """
    c = np.asarray(centroids, dtype=np.float64)
    if c.ndim != 2 or len(c) == 0 or not np.isfinite(c).all():
        raise ConfigError("novelty needs at least one reference centroid; accept a tag or propose tags first.")
    if len(names) != len(c):
        raise ConfigError(f"there are {len(names)} names for {len(c)} centroids; give one name per centroid.")
    if member_z is None or member_assign is None:
        member_z = np.asarray(train_z, dtype=np.float64)
        member_assign = _nearest(member_z, c)[1]
    w = whitening(member_z, member_assign, c)
    cw = c @ w
    mods = [m for m in train_err if np.isfinite(train_err[m]).any()]
    if not mods:
        raise ConfigError("no train item has a reconstruction error; the train split needs items with features.")
    mean, std = {}, {}
    for m in mods:
        v = _log_err(train_err, m)
        v = v[np.isfinite(v)]
        mean[m] = float(v.mean())
        std[m] = float(v.std()) if len(v) > 1 and v.std() > _EPS else 1.0
    recon = _recon_raw(train_err, mods, mean, std)
    d, _ = _nearest(np.asarray(train_z, dtype=np.float64) @ w, cw)
    ld = np.log(d[np.isfinite(d)] + _EPS)
    if len(ld) == 0:
        raise ConfigError("no train item has a latent; train the model again.")
    dm, ds = float(ld.mean()), float(ld.std()) if len(ld) > 1 and ld.std() > _EPS else 1.0
    return NoveltyReference(
        modalities=mods, log_err_mean=mean, log_err_std=std, centroids=cw, whiten=w, names=list(names), source=source,
        dist_mean=dm, dist_std=ds, recon_train=np.sort(recon[np.isfinite(recon)]),
        dist_train=np.sort((ld - dm) / ds),
    )


def parts(ref: NoveltyReference, err: dict[str, np.ndarray], z: np.ndarray) -> NoveltyParts:
    """Both standardized signals of every item (see the module docstring)."""
    unknown = [m for m in ref.modalities if m not in err]
    if unknown:
        raise ConfigError(f"reconstruction errors for {', '.join(unknown)} are missing; compute them for every modality.")
    recon = _recon_raw(err, ref.modalities, ref.log_err_mean, ref.log_err_std)
    d, idx = _nearest(np.asarray(z, dtype=np.float64) @ ref.whiten, ref.centroids)
    dist = (np.log(d + _EPS) - ref.dist_mean) / ref.dist_std
    return NoveltyParts(recon=recon, distance=dist, nearest=idx)


def _percentile(sorted_ref: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Share of the train values at or below each value (the train ECDF), NaN stays NaN."""
    out = np.searchsorted(sorted_ref, v, side="right") / max(len(sorted_ref), 1)
    return np.where(np.isfinite(v), out, np.nan)


def combine(ref: NoveltyReference, p: NoveltyParts, how: str = DEFAULT_COMBINE) -> np.ndarray:
    """One score per item, higher = more novel; a missing part counts as average (0 / 0.5)."""
    if how not in COMBINATIONS:
        raise ConfigError(f"unknown novelty combination '{how}'; choose one of {', '.join(COMBINATIONS)}.")
    r, d = p.recon, p.distance
    if how == "recon":
        return np.nan_to_num(r, nan=0.0)
    if how == "distance":
        return np.nan_to_num(d, nan=0.0)
    if how == "zsum":
        return np.nan_to_num(r, nan=0.0) + np.nan_to_num(d, nan=0.0)
    return 0.5 * (np.nan_to_num(_percentile(ref.recon_train, r), nan=0.5)
                  + np.nan_to_num(_percentile(ref.dist_train, d), nan=0.5))


def score_items(ref: NoveltyReference, err: dict[str, np.ndarray], z: np.ndarray, how: str = DEFAULT_COMBINE) -> pd.DataFrame:
    """Per item: ``score`` (combined), ``recon``, ``distance`` and the ``nearest`` group's name."""
    p = parts(ref, err, z)
    names = np.asarray(ref.names + [None], dtype=object)
    return pd.DataFrame({
        "score": combine(ref, p, how),
        "recon": p.recon,
        "distance": p.distance,
        "nearest": names[p.nearest],  # index -1 -> None
    })


def auroc(normal: np.ndarray, novel: np.ndarray) -> float:
    """Area under the ROC curve of scores where ``novel`` should rank above ``normal`` (ties count half)."""
    a, b = np.asarray(normal, dtype=np.float64), np.asarray(novel, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not len(a) or not len(b):
        return float("nan")
    allv = np.concatenate([a, b])
    ranks = pd.Series(allv).rank(method="average").to_numpy()
    rb = ranks[len(a):].sum()
    return float((rb - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


# -- calibration: from a score to a review decision ---------------------------------------------------
DEFAULT_FALSE_ALARM = 0.05


@dataclass(frozen=True)
class Calibration:
    """The scores of a reference split of *known* items, sorted, that other scores are read against.

    Why not the train split: the model was fitted on it, so it reconstructs every train item better
    than any new one, and on a real upload "240 of 240 ood items are more unusual than 99% of the
    train split" ranked nothing. A split of known items the model has not seen (test) has the
    distribution a new ordinary item comes from, so "beyond its 95th percentile" is wrong for about
    5% of ordinary items: a false-alarm rate a curator can choose.
    """

    split: str
    scores: np.ndarray  # sorted, finite

    @property
    def n(self) -> int:
        return int(len(self.scores))


def calibrate(reference_scores: np.ndarray, split: str) -> Calibration:
    v = np.asarray(reference_scores, dtype=np.float64)
    v = np.sort(v[np.isfinite(v)])
    if len(v) < 2:
        raise ConfigError(f"the {split} split has {len(v)} scored items; calibrate against a split with at least two.")
    return Calibration(split, v)


def percentile(cal: Calibration, scores: np.ndarray) -> np.ndarray:
    """Per score, the percentage of reference items scoring at or below it (0-100; NaN stays NaN)."""
    return 100.0 * _percentile(cal.scores, np.asarray(scores, dtype=np.float64))


def review_threshold(cal: Calibration, false_alarm: float = DEFAULT_FALSE_ALARM) -> float:
    """The score above which an item is put up for review, so that a share ``false_alarm`` of
    ordinary items (as the reference split has them) would be flagged too."""
    fa = float(false_alarm)
    if not 0.0 < fa < 1.0:
        raise ConfigError(f"the false-alarm rate must be between 0 and 1 (got {false_alarm}); 0.05 flags 5% of ordinary items.")
    return float(np.quantile(cal.scores, 1.0 - fa, method="higher"))


def triage(scores: np.ndarray, cal: Calibration, false_alarm: float = DEFAULT_FALSE_ALARM) -> pd.DataFrame:
    """``percentile`` against the reference and ``review`` (above the threshold) for every score."""
    s = np.asarray(scores, dtype=np.float64)
    return pd.DataFrame({"percentile": percentile(cal, s), "review": s > review_threshold(cal, false_alarm)})
