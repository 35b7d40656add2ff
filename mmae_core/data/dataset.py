"""The in-memory form of an aligned multimodal feature set.

Every loader (files, zip, folder, demo, the store) produces a ``FeatureSet`` and every consumer
(training, baselines, the store) takes one, so validation happens once, in ``FeatureSet.validate``.
A missing modality for an item is a whole row of NaN in that modality's array: it keeps all arrays
aligned by position, which is what the model, the baselines and the store rely on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mmae_core.data.lazy import row_windows
from mmae_core.errors import DataError

SPLITS: tuple[str, ...] = ("train", "test", "ood")
RESERVED_NAMES: frozenset[str] = frozenset({"labels", "ids", "items", "label", "item_id"})


def _rows_per_window(x: object) -> int:
    """Rows per window of a check: ~4M values, so its temporaries stay a few MB at any size."""
    return max(1, (1 << 22) // max(1, int(x.shape[1]) if len(x.shape) > 1 else 1))


@dataclass
class Split:
    """One split: ``n`` items, aligned by position across modalities, ids, labels and metadata."""

    item_ids: np.ndarray  # (n,) object array of str, unique within the dataset
    features: dict[str, np.ndarray]  # modality -> (n, d) float32; an all-NaN row = modality missing
    labels: np.ndarray | None = None  # (n,) object array of str, or None when unlabelled
    meta: pd.DataFrame | None = None  # n rows, metadata columns (title, caption, uri, ...)

    @property
    def n(self) -> int:
        return int(len(self.item_ids))

    def present(self, modality: str) -> np.ndarray:
        """Boolean mask of the items that have ``modality`` (a row that is not all NaN); read in
        windows, so a modality left on disk (``lazy.NpyWindows``) is never whole in memory."""
        x = self.features[modality]
        out = np.empty(len(x), dtype=bool)
        for s, w in row_windows(x, _rows_per_window(x)):
            out[s : s + len(w)] = ~np.isnan(w).all(axis=1)
        return out

    def missing_counts(self) -> dict[str, int]:
        return {m: int((~self.present(m)).sum()) for m in self.features}


@dataclass
class FeatureSet:
    """A named dataset: modalities (name -> dim, in a fixed order) and splits (train required)."""

    name: str
    modalities: dict[str, int]
    splits: dict[str, Split]
    synthetic: bool = False
    source: str = ""
    attrs: dict[str, object] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return all(s.labels is not None for s in self.splits.values())

    def summary(self) -> pd.DataFrame:
        """Per split and modality: items, dimension, missing rows (what the Data page and CLI show)."""
        rows = []
        for sname, sp in self.splits.items():
            missing = sp.missing_counts()
            for m, d in self.modalities.items():
                rows.append(
                    {
                        "split": sname,
                        "modality": m,
                        "items": sp.n,
                        "dim": d,
                        "missing": missing[m],
                        "labels": 0 if sp.labels is None else int(len(set(sp.labels.tolist()))),
                    }
                )
        return pd.DataFrame(rows)

    def validate(self, source: str | None = None, require_train: bool = True) -> "FeatureSet":
        """Check the whole set; raise ``DataError`` with one sentence naming the problem.
        ``require_train=False``: items only to be scored by a trained model (no split is trained on)."""
        where = source or self.source or self.name
        if not self.name or not str(self.name).strip():
            raise DataError("The dataset has no name; give it one with --name.")
        if len(self.modalities) < 1:
            raise DataError(f"{where}: no modality was found; supply at least one feature array.")
        if require_train and "train" not in self.splits:
            raise DataError(f"{where}: there is no train split; a dataset needs one to fit models on.")
        for m in self.modalities:
            if m in RESERVED_NAMES:
                raise DataError(f"{where}: '{m}' is reserved and cannot be a modality name; rename that file.")
        seen: set[str] = set()
        for sname, sp in self.splits.items():
            if sp.n == 0:
                raise DataError(f"{where}: the {sname} split is empty; remove it or give it rows.")
            if set(sp.features) != set(self.modalities):
                missing = sorted(set(self.modalities) - set(sp.features))
                extra = sorted(set(sp.features) - set(self.modalities))
                what = f"lacks {', '.join(missing)}" if missing else f"has the extra modality {', '.join(extra)}"
                raise DataError(f"{where}: the {sname} split {what}; every split needs the same modalities.")
            for m, d in self.modalities.items():
                x = sp.features[m]
                if x.ndim != 2:
                    raise DataError(f"{where}: {sname}/{m} has {x.ndim} dimensions; a feature array must be 2-D (items x features).")
                if x.shape[0] != sp.n:
                    raise DataError(
                        f"{where}: {sname}/{m} has {x.shape[0]} rows but the {sname} split has {sp.n} items; "
                        "align the files so every modality has one row per item."
                    )
                if x.shape[1] != d:
                    raise DataError(
                        f"{where}: {sname}/{m} has dimension {x.shape[1]} but {m} has dimension {d} elsewhere; "
                        "every split of a modality must have the same dimension."
                    )
                for s, w in row_windows(x, _rows_per_window(x)):
                    nan_rows = np.isnan(w).all(axis=1)
                    bad = ~np.isfinite(w) & ~nan_rows[:, None]
                    if not bad.any():
                        continue
                    r, c = np.argwhere(bad)[0]
                    r = s + r
                    raise DataError(
                        f"{where}: {sname}/{m} has NaN or Inf at row {int(r)}, column {int(c)}; "
                        "fix or drop those values (a whole row of NaN marks a missing modality)."
                    )
            if self.modalities:
                none = np.ones(sp.n, dtype=bool)
                for m in self.modalities:
                    none &= ~sp.present(m)
                if none.any():
                    i = int(np.argmax(none))
                    raise DataError(
                        f"{where}: item '{sp.item_ids[i]}' in {sname} has no modality at all; "
                        "drop it or supply at least one of its feature rows."
                    )
            ids = sp.item_ids.astype(str)
            if len(set(ids.tolist())) != sp.n:
                dup = pd.Series(ids).loc[pd.Series(ids).duplicated()].iloc[0]
                raise DataError(f"{where}: item id '{dup}' appears twice in {sname}; item ids must be unique.")
            overlap = seen.intersection(ids.tolist())
            if overlap:
                raise DataError(
                    f"{where}: item id '{sorted(overlap)[0]}' appears in more than one split; item ids must be unique across splits."
                )
            seen.update(ids.tolist())
            if sp.labels is not None and len(sp.labels) != sp.n:
                raise DataError(
                    f"{where}: the {sname} labels have {len(sp.labels)} rows but the split has {sp.n} items; "
                    "give one label per item."
                )
            if sp.meta is not None and len(sp.meta) != sp.n:
                raise DataError(
                    f"{where}: the {sname} items table has {len(sp.meta)} rows but the split has {sp.n} items; "
                    "give one row per item."
                )
        return self
