"""Per-feature standardization fitted on the train split (PRODUCT.md §2).

The statistics travel with every model (inside its checkpoint) so that latents of new uploads are
computed on exactly the scale the model was trained on. Missing rows (all NaN) are ignored when
fitting and stay NaN when transforming.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Standardizer:
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]

    @classmethod
    def fit(cls, features: dict[str, np.ndarray]) -> "Standardizer":
        mean: dict[str, np.ndarray] = {}
        std: dict[str, np.ndarray] = {}
        for m, x in features.items():
            rows = x[~np.isnan(x).all(axis=1)].astype(np.float64)
            if len(rows) == 0:
                mu = np.zeros(x.shape[1])
                sd = np.ones(x.shape[1])
            else:
                mu = rows.mean(axis=0)
                sd = rows.std(axis=0)
                sd[~(sd > 1e-12)] = 1.0  # zero-variance feature gets std 1
            mean[m] = mu.astype(np.float32)
            std[m] = sd.astype(np.float32)
        return cls(mean, std)

    def transform(self, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {m: ((x - self.mean[m]) / self.std[m]).astype(np.float32) for m, x in features.items()}

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {m: {"mean": self.mean[m].tolist(), "std": self.std[m].tolist()} for m in self.mean}

    @classmethod
    def from_dict(cls, d: dict[str, dict[str, list[float]]]) -> "Standardizer":
        return cls(
            {m: np.asarray(v["mean"], dtype=np.float32) for m, v in d.items()},
            {m: np.asarray(v["std"], dtype=np.float32) for m, v in d.items()},
        )
