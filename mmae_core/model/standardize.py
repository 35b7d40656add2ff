"""Per-feature standardization fitted on the train split.

The statistics travel with every model (inside its checkpoint) so that latents of new uploads are
computed on exactly the scale the model was trained on. Missing rows (all NaN) are ignored when
fitting and stay NaN when transforming.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows per chunk whenever a whole split is streamed (statistics, presence, encoding): about 15 MB of
# the demo's 1,842 float32 columns, small against memory and large enough that numpy's per-call
# cost is negligible. One constant, so memory and disk are chunked alike (same sums, same bits).
CHUNK_ROWS = 2048

@dataclass
class Standardizer:
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def fit(cls, features: dict[str, np.ndarray]) -> "Standardizer":
        """Fitted on in-memory arrays, through the same chunked pass as a source on disk (so the two
        give the same statistics, bit for bit)."""
        fit = cls.fitter({m: x.shape[1] for m, x in features.items()})
        n = min((x.shape[0] for x in features.values()), default=0)
        for s in range(0, n, CHUNK_ROWS):
            chunk = {m: x[s : s + CHUNK_ROWS] for m, x in features.items()}
            fit.add(chunk, np.stack([~np.isnan(x).all(axis=1) for x in chunk.values()], axis=1))
        return fit.result()

    @staticmethod
    def fitter(dims: dict[str, int]) -> "StreamingFit":
        return StreamingFit(dims)

    def transform(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(x - mean) / std as float32, computed in place in one new array (the plain expression
        made three full-size temporaries: a third of a training run's fixed cost on the demo)."""
        out = {}
        for m, x in features.items():
            z = np.subtract(x, self.mean[m], dtype=np.float32)
            z /= self.std[m]
            out[m] = z
        return out

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, list[float]]]) -> "Standardizer":
        return cls(
            {m: np.asarray(v["mean"], dtype=np.float32) for m, v in d.items()},
            {m: np.asarray(v["std"], dtype=np.float32) for m, v in d.items()},
        )


class StreamingFit:
    """Per-feature mean and (population) std in one pass over row chunks, in float64.

    Each chunk's mean and sum of squared deviations are computed exactly (two passes over the chunk,
    which is in cache) and merged with the running ones by Chan et al.'s pairwise update: as
    accurate as two passes over the whole split, without holding it or reading it twice, which an
    archive on disk cannot afford. Rows that lack a modality (all NaN) are skipped for it.
    """

    def __init__(self, dims: dict[str, int]):
        self.n = {m: 0 for m in dims}
        self.mean = {m: np.zeros(d) for m, d in dims.items()}
        self.m2 = {m: np.zeros(d) for m, d in dims.items()}

    def add(self, chunk: dict[str, np.ndarray], present: np.ndarray) -> None:
        """``present``: (rows, M) in the order of ``chunk``'s keys."""
        for j, (m, x) in enumerate(chunk.items()):
            keep = present[:, j]
            rows = x if keep.all() else x[keep]
            nb = rows.shape[0]
            if nb == 0:
                continue
            mb = rows.sum(axis=0, dtype=np.float64) / nb
            d = rows.astype(np.float64) - mb
            m2b = np.einsum("ij,ij->j", d, d)
            na = self.n[m]
            n = na + nb
            delta = mb - self.mean[m]
            self.mean[m] = self.mean[m] + delta * (nb / n)
            self.m2[m] = self.m2[m] + m2b + delta * delta * (na * nb / n)
            self.n[m] = n

    def result(self) -> Standardizer:
        mean: dict[str, np.ndarray] = {}
        std: dict[str, np.ndarray] = {}
        for m, n in self.n.items():
            if n == 0:
                mu, sd = np.zeros_like(self.mean[m]), np.ones_like(self.mean[m])
            else:
                mu, sd = self.mean[m], np.sqrt(self.m2[m] / n)
                sd[~(sd > 1e-12)] = 1.0  # zero-variance feature gets std 1
            mean[m] = mu.astype(np.float32)
            std[m] = sd.astype(np.float32)
        return Standardizer(mean, std)
