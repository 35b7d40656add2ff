"""Where cross-modal search compares a model's per-modality latents: the shared space and the tag space.

Both are plain arrays once fitted, so a CLI call loads them from disk without importing scikit-learn,
and both map one modality's latents to vectors that are compared by cosine (``retrieval``, faiss).

* ``SharedSpace``: the directions the modalities' latents share, each weighted by its canonical
  correlation (``mcca.fit_search_space``). A per-modality latent also carries what only its own
  modality knows, which a search in another modality cannot use.
* ``TagSpace``: what a search that knows the classes does (``supervised``), with the model's own tags
  in place of labels. The model's fused train latents are cut by Leiden (the rule ``propose --k auto``
  uses); per modality a classifier learns those tags from the latent; a query then ranks targets by
  the Bhattacharyya overlap of the two items' tag probabilities, averaged with their cosine in the
  shared space. The overlap asks "do they carry the same tag", which is what a curator searching
  across modalities wants; the shared cosine orders the items within a tag and keeps the same
  item's other modality near the top.

  Why: in the shared space some modality pair's class P@10 stayed .05-.12 below the supervised
  search on every digit set; with the tag space no pair is more than .017-.049 below it, and every
  pair is above MCCA's (10 seeds, ``benchmarks/compare_methods.py``; docs/results.md "Cross-modal
  search"). On the demo the worst pair went from .13 to .23 (``benchmarks/search_spaces.py``). The
  overlap alone was behind in P@10 and about halved instance recall (R@10 .35 on mfeat); averaged
  with the shared cosine, R@10 is .58 against the shared space's .61.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmae_core.errors import ConfigError
from mmae_core.log import Log, silent

FIT_ROWS = 50_000  # a space is fitted on at most this many train items (evenly spaced)
TAG_COMPONENTS = 64  # principal components of a latent the tag classifier sees
TAG_C = 1.0  # inverse regularization of the tag classifier (C 0.1 and 1 were within .005 P@10; 1 a little ahead)
SHARED_WEIGHT = 1.0  # the shared cosine's weight beside the tag overlap (0.3-1.5 measured; 1.0 best or level)
_ABSENT = -30.0  # the logit of a tag a modality's classifier never saw: probability e^-30, i.e. none


def fit_rows(n: int) -> slice:
    """The rows a space is fitted on: evenly spaced, at most ``FIT_ROWS`` of ``n``."""
    return slice(None, None, max(1, -(-n // FIT_ROWS)))


@dataclass(frozen=True)
class SharedSpace:
    """Per modality, the train mean of its latents and the (latent, k) weights of its
    correlation-weighted canonical variates."""

    names: tuple[str, ...]
    means: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]

    def transform_view(self, modality: str, z: np.ndarray) -> np.ndarray:
        """(n, k) projections of one modality's latents; an all-NaN row (a missing modality) stays NaN."""
        z = np.asarray(z, dtype=np.float32)
        ok = np.isfinite(z).all(axis=1)
        out = np.full((z.shape[0], self.weights[modality].shape[1]), np.nan, dtype=np.float32)
        out[ok] = (z[ok] - self.means[modality]) @ self.weights[modality]
        return out

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {**{f"{prefix}mean.{i}": self.means[m] for i, m in enumerate(self.names)},
                **{f"{prefix}weight.{i}": self.weights[m] for i, m in enumerate(self.names)}}

    @classmethod
    def from_arrays(cls, names: list[str], arrays: dict[str, np.ndarray], prefix: str = "") -> "SharedSpace":
        return cls(tuple(names), {m: arrays[f"{prefix}mean.{i}"].astype(np.float32) for i, m in enumerate(names)},
                   {m: arrays[f"{prefix}weight.{i}"].astype(np.float32) for i, m in enumerate(names)})


def fit_shared_space(per: dict[str, np.ndarray]) -> SharedSpace:
    """The shared space of train latents (at most ``FIT_ROWS`` items, evenly spaced). Deterministic
    (one eigendecomposition). Refuses (``ConfigError``) latents that cannot be lined up."""
    from mmae_core.evaluation.mcca import fit_search_space  # scikit-learn's import is paid only when fitting

    names = list(per)
    pick = fit_rows(len(per[names[0]]))
    fitted = fit_search_space({m: z[pick] for m, z in per.items()})
    return SharedSpace(tuple(names), {m: fitted.means_[m].astype(np.float32) for m in names},
                       {m: fitted.weights_[m].astype(np.float32) for m in names})


@dataclass(frozen=True)
class TagSpace:
    """Per modality a linear map of the latent to tag logits (``(z - mean) @ weight + bias``: the
    classifier's principal components folded into its coefficients), and the shared space."""

    shared: SharedSpace
    means: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    biases: dict[str, np.ndarray]
    shared_weight: float = SHARED_WEIGHT

    @property
    def names(self) -> tuple[str, ...]:
        return self.shared.names

    @property
    def n_tags(self) -> int:
        return int(next(iter(self.biases.values())).shape[0])

    def probabilities(self, modality: str, z: np.ndarray) -> np.ndarray:
        """(n, tags) tag probabilities of one modality's latents; NaN rows where it is missing."""
        z = np.asarray(z, dtype=np.float32)
        ok = np.isfinite(z).all(axis=1)
        out = np.full((z.shape[0], self.n_tags), np.nan, dtype=np.float32)
        logits = (z[ok] - self.means[modality]) @ self.weights[modality] + self.biases[modality]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out[ok] = e / e.sum(axis=1, keepdims=True)
        return out

    def transform_view(self, modality: str, z: np.ndarray) -> np.ndarray:
        """Unit rows whose inner product is the average of the tag overlap and the shared cosine:
        [sqrt(p), w * s / |s|] / sqrt(1 + w^2). NaN rows stay NaN."""
        root = np.sqrt(self.probabilities(modality, z))
        s = self.shared.transform_view(modality, z)
        norms = np.linalg.norm(s, axis=1, keepdims=True)
        s = s / np.where(norms > 0, norms, 1.0)
        w = self.shared_weight
        return (np.hstack([root, w * s]) / np.sqrt(1.0 + w * w)).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        out = self.shared.arrays("shared.")
        for i, m in enumerate(self.names):
            out.update({f"tag.mean.{i}": self.means[m], f"tag.weight.{i}": self.weights[m],
                        f"tag.bias.{i}": self.biases[m]})
        out["shared_weight"] = np.array([self.shared_weight], dtype=np.float32)
        return out

    @classmethod
    def from_arrays(cls, names: list[str], arrays: dict[str, np.ndarray]) -> "TagSpace":
        return cls(SharedSpace.from_arrays(names, arrays, "shared."),
                   {m: arrays[f"tag.mean.{i}"].astype(np.float32) for i, m in enumerate(names)},
                   {m: arrays[f"tag.weight.{i}"].astype(np.float32) for i, m in enumerate(names)},
                   {m: arrays[f"tag.bias.{i}"].astype(np.float32) for i, m in enumerate(names)},
                   float(arrays["shared_weight"][0]))


def fit_tag_space(per: dict[str, np.ndarray], fused: np.ndarray, seed: int = 0,
                  shared: SharedSpace | None = None, log: Log = silent) -> TagSpace | None:
    """The tag space of a model's train latents (``per`` modality and ``fused``, row-aligned; at most
    ``FIT_ROWS`` items, evenly spaced). None where the model's latents give fewer than two tags, or a
    modality has latents of fewer than two of them: the shared space is then all there is."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    from mmae_core.clustering.graph import AUTO, UNASSIGNED, graph_labels
    from mmae_core.evaluation.baselines import blas_single_thread

    names = list(per)
    pick = fit_rows(len(fused))
    per = {m: np.asarray(z[pick], dtype=np.float32) for m, z in per.items()}
    fused = np.ascontiguousarray(fused[pick], dtype=np.float32)
    shared = fit_shared_space(per) if shared is None else shared
    ok = np.isfinite(fused).all(axis=1)
    log(f"finding the model's tags on {int(ok.sum()):,} train items (Leiden) for the tag space ...")
    try:
        tags = np.full(len(fused), UNASSIGNED)
        tags[ok] = graph_labels(fused[ok], "leiden", AUTO, seed=seed).labels
    except ConfigError:  # a single community: no tags to learn
        return None
    classes = np.unique(tags[tags != UNASSIGNED])
    if len(classes) < 2:
        return None
    means, weights, biases = {}, {}, {}
    for m in names:
        z = per[m]
        rows = np.flatnonzero((tags != UNASSIGNED) & np.isfinite(z).all(axis=1))
        if len(np.unique(tags[rows])) < 2:
            return None
        log(f"tag space: a classifier of the {len(classes)} tags from the {m} latents ({len(rows):,} items) ...")
        with blas_single_thread():  # reproducible: a multi-threaded BLAS varied the classifier's last bits between runs
            pca = PCA(min(TAG_COMPONENTS, z.shape[1], len(rows)), random_state=seed).fit(z[rows])
            clf = LogisticRegression(C=TAG_C, max_iter=300).fit(pca.transform(z[rows]), tags[rows])
        coef, icpt = clf.coef_, clf.intercept_
        if len(clf.classes_) == 2:  # scikit-learn keeps one logit for two classes: P(second) = sigmoid(s)
            coef, icpt = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], icpt])
        w = np.zeros((z.shape[1], len(classes)), dtype=np.float32)
        b = np.full(len(classes), _ABSENT, dtype=np.float32)
        cols = np.searchsorted(classes, clf.classes_)
        w[:, cols] = pca.components_.T @ coef.T
        b[cols] = icpt
        means[m], weights[m], biases[m] = pca.mean_.astype(np.float32), w, b
    return TagSpace(shared, means, weights, biases)
