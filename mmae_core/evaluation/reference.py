"""The paper's reported numbers (Tables II, III, IV of the paper) as reference rows.

They are shown beside our own grid in the same columns, so an analyst can compare
like with like; ``source='paper'`` and ``table`` mark them. The paper does not say which k Table II
used, so its rows have k = NaN and a note saying so; all three tables are on the LUMA test split.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

TABLE_II_NOTE = "the paper does not say which k Table II used"

# (table, method, k, silhouette, ari, nmi)
_ROWS: tuple[tuple[str, str, float, float, float, float], ...] = (
    ("II", "image", np.nan, 0.418, 0.545, 0.724),
    ("II", "text", np.nan, 0.147, 0.091, 0.380),
    ("II", "audio", np.nan, 0.087, 0.053, 0.227),
    ("III", "fused_pca", 30, 0.392, 0.456, 0.695),
    ("III", "fused_pca", 42, 0.418, 0.545, 0.724),
    ("III", "fused_pca", 50, 0.416, 0.549, 0.724),
    ("IV", "mmae", 30, 0.445, 0.547, 0.888),
    ("IV", "mmae", 40, 0.620, 0.826, 0.949),
    ("IV", "mmae", 42, 0.630, 0.914, 0.962),
    ("IV", "mmae", 50, 0.586, 0.896, 0.948),
)


def paper_reference() -> pd.DataFrame:
    """Columns method, k (float: NaN for Table II), split, silhouette, ari, nmi, source, table, note."""
    df = pd.DataFrame(_ROWS, columns=["table", "method", "k", "silhouette", "ari", "nmi"])
    df["k"] = df["k"].astype(float)
    df["split"] = "test"
    df["source"] = "paper"
    df["note"] = np.where(df["table"] == "II", TABLE_II_NOTE, "")
    return df[["method", "k", "split", "silhouette", "ari", "nmi", "source", "table", "note"]]
