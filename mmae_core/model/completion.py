"""Latent completion: the fused latent an item would have with all its modalities, predicted from the
encodings of the ones it has.

Why: the MMAE fuses by the mean of the encodings an item has, so an item that lacks modalities lands
somewhere else than a complete item of its class: its mean is over fewer, different encodings, and
KMeans then groups items by which modalities they kept. On the full demo with half the items missing
one or two modalities, image-only items of the aligned preset clustered at ARI 0.53 against 0.77 for
complete ones (docs/results.md, "Missing modalities"). A linear map per subset S of modalities, fitted on the
train items that have them all (ridge, its strength chosen by 5-fold cross-validation), from
their concatenated encodings [z_m for m in S] to their fused z, puts a partial item where a complete
one of the same content would be. Complete items keep the plain mean, per-modality latents are
untouched, and training is unchanged (the paper preset stays the paper's). Closed form, so the same
data give the same maps.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

# Fewer complete train items than this and a map would be fitted on noise: keep the plain mean.
MIN_COMPLETE_ITEMS = 50
# More than this and the maps are fitted on evenly spaced ones: a few hundred parameters per output
# need no more, and memory stays bounded (float64 copies) on archive-sized train splits.
MAX_FIT_ITEMS = 50_000
# Up to this many modalities every proper subset gets a map (2^M - 2 of them); beyond, only the
# subsets the train split shows plus single modalities, so a checkpoint stays small.
ALL_SUBSETS_UP_TO = 5
# Ridge strengths, relative to the mean eigenvalue of the subset's (centred) Gram matrix, so the
# grid does not depend on the latents' scale; chosen per subset by K-fold cross-validation.
RELATIVE_ALPHAS = tuple(float(a) for a in np.logspace(-6, 0, 7))
FOLDS = 5


@dataclass(frozen=True)
class LatentCompletion:
    """Per subset of modalities (model-order indices), the map (W, b): fused ≈ concat(z_S) @ W + b."""

    maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]]
    n_fit: int  # complete train items the maps were fitted on

    def subsets(self) -> list[tuple[int, ...]]:
        return sorted(self.maps, key=_by_size)


def _by_size(s: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """Order of subsets: single modalities first, then pairs, ...; by index within a size."""
    return len(s), s


def _wanted_subsets(present: np.ndarray) -> list[tuple[int, ...]]:
    M = present.shape[1]
    if M <= ALL_SUBSETS_UP_TO:
        return [s for r in range(1, M) for s in combinations(range(M), r)]
    seen = {tuple(int(j) for j in np.flatnonzero(row)) for row in np.unique(present, axis=0) if 0 < row.sum() < M}
    return sorted(seen | {(j,) for j in range(M)}, key=_by_size)


def fit_completion(per: list[np.ndarray], present: np.ndarray, fused: np.ndarray) -> LatentCompletion | None:
    """Fit the maps on the train items that have every modality; None when too few have.

    ``per``: each modality's latents (n, latent) in model order, NaN rows where missing;
    ``present``: the (n, M) presence mask; ``fused``: the model's fused latents of the same rows,
    the target. The model's own fusion, not the plain mean of ``per``: under reliability fusion a
    complete item sits at the weighted mean, and a partial item must be mapped to where a complete
    one would be. (On the digits the learned weights stayed within 0.9-1.1, so there the two
    targets nearly coincide.)

    Every subset's ridge problem, and its cross-validation, is a sub-block of sufficient statistics
    (Gram matrix, cross-products, sums) gathered in one pass over the complete items per fold, so
    fitting all maps costs one pass plus small solves (a fraction of a second on 21,000 items).
    Folds are items by position modulo ``FOLDS``: no random draw, the same data give the same maps.
    """
    rows = np.flatnonzero(present.all(axis=1))
    if len(rows) < MIN_COMPLETE_ITEMS or present.shape[1] < 2:
        return None
    if len(rows) > MAX_FIT_ITEMS:
        rows = rows[np.linspace(0, len(rows) - 1, MAX_FIT_ITEMS).astype(np.int64)]
    n = len(rows)
    Z = np.concatenate([np.asarray(p[rows], dtype=np.float64) for p in per], axis=1)
    L = per[0].shape[1]
    Y = np.asarray(fused[rows], dtype=np.float64)
    folds = [_Stats.of(Z[f::FOLDS], Y[f::FOLDS]) for f in range(FOLDS)]
    total = _Stats.sum(folds)
    maps: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
    for s in _wanted_subsets(present):
        cols = np.concatenate([np.arange(j * L, (j + 1) * L) for j in s])
        scale = np.trace(total.centred(cols)[0]) / len(cols)
        if not np.isfinite(scale) or scale <= 0:
            continue  # these encodings do not vary: nothing to predict from, keep the mean for S
        try:
            errors = [sum(f.error(*(total - f).solve(cols, a * scale), cols) for f in folds) for a in RELATIVE_ALPHAS]
            W, b = total.solve(cols, RELATIVE_ALPHAS[int(np.argmin(errors))] * scale)
        except np.linalg.LinAlgError:
            continue
        maps[s] = (np.ascontiguousarray(W, dtype=np.float32), b.astype(np.float32))
    return LatentCompletion(maps, n)


@dataclass(frozen=True)
class _Stats:
    """Sufficient statistics of least squares Y ~ Z W + b over a set of rows."""

    n: int
    s: np.ndarray  # Σ z
    G: np.ndarray  # Σ z zᵀ
    C: np.ndarray  # Σ z yᵀ
    t: np.ndarray  # Σ y
    q: float  # Σ ||y||²

    @staticmethod
    def of(Z: np.ndarray, Y: np.ndarray) -> "_Stats":
        return _Stats(len(Z), Z.sum(axis=0), Z.T @ Z, Z.T @ Y, Y.sum(axis=0), float((Y * Y).sum()))

    @staticmethod
    def sum(parts: list["_Stats"]) -> "_Stats":
        return _Stats(sum(p.n for p in parts), sum(p.s for p in parts), sum(p.G for p in parts),
                      sum(p.C for p in parts), sum(p.t for p in parts), sum(p.q for p in parts))

    def __sub__(self, o: "_Stats") -> "_Stats":
        return _Stats(self.n - o.n, self.s - o.s, self.G - o.G, self.C - o.C, self.t - o.t, self.q - o.q)

    def centred(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.s[cols]
        return self.G[np.ix_(cols, cols)] - np.outer(s, s) / self.n, self.C[cols] - np.outer(s, self.t) / self.n

    def solve(self, cols: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Ridge with an unpenalized intercept: W = (Gc + αI)⁻¹ Cc, b = ȳ − z̄ W."""
        G, C = self.centred(cols)
        W = np.linalg.solve(G + alpha * np.eye(len(cols)), C)
        return W, (self.t - self.s[cols] @ W) / self.n

    def error(self, W: np.ndarray, b: np.ndarray, cols: np.ndarray) -> float:
        """Σ ||y − (z W + b)||² over these rows, from the statistics alone."""
        s, G, C = self.s[cols], self.G[np.ix_(cols, cols)], self.C[cols]
        return float(self.q - 2 * (np.sum(W * C) + b @ self.t) + np.sum(W * (G @ W)) + 2 * (s @ W) @ b + self.n * b @ b)


def complete(c: LatentCompletion | None, fused: np.ndarray, per: list[np.ndarray], present: np.ndarray) -> np.ndarray:
    """``fused`` with every partial item that has a map replaced by its predicted complete-item latent."""
    if c is None:
        return fused
    out = fused.copy()
    partial = present.any(axis=1) & ~present.all(axis=1)
    if not partial.any():
        return out
    patterns, which = np.unique(present[partial], axis=0, return_inverse=True)
    idx = np.flatnonzero(partial)
    for p, row in enumerate(patterns):
        s = tuple(int(j) for j in np.flatnonzero(row))
        if s not in c.maps:  # not fitted (unseen in train with > 5 modalities, or constant encodings): the mean
            continue
        W, b = c.maps[s]
        rows = idx[which.reshape(-1) == p]
        out[rows] = np.concatenate([per[j][rows] for j in s], axis=1) @ W + b
    return out
