"""The default preset beside the paper preset on the Compare page: which two models, and one table.

A model's preset is in its stored config (``list_models`` spreads it into a ``preset`` column), so a
dataset "has both" when one model was trained with ``config.DEFAULT_PRESET`` and one with the paper's;
the newest of each is the one compared, as the newest model is everywhere else in the tool.
"""
from __future__ import annotations

import pandas as pd

from mmae_core.config import DEFAULT_PRESET

PAPER = "paper"


def preset_pair(models: pd.DataFrame) -> tuple[str, str] | None:
    """(newest default-preset model, newest paper-preset model), or None unless the dataset has both."""
    if DEFAULT_PRESET == PAPER or not len(models) or "preset" not in models:
        return None
    newest = models.sort_values(["created_at", "id"]).groupby("preset")["name"].last()
    if DEFAULT_PRESET not in newest or PAPER not in newest:
        return None
    return str(newest[DEFAULT_PRESET]), str(newest[PAPER])


def row_label(preset: str, model: str) -> str:
    who = "default" if preset == DEFAULT_PRESET else "paper"
    return f"MMAE, {who} preset '{preset}' ({model})"


def side_by_side(default_run: pd.DataFrame, paper_run: pd.DataFrame, pair: tuple[str, str]) -> pd.DataFrame:
    """Both models' MMAE rows and the baselines once, one row per method and k.

    The baselines of the two runs are the same numbers (same split, k grid, seed and starts; they do not
    depend on the model), so they are taken from the default's run."""
    base = default_run[default_run["method"] != "mmae"]
    ours = [run[run["method"] == "mmae"].assign(method=row_label(p, m))
            for run, p, m in ((default_run, DEFAULT_PRESET, pair[0]), (paper_run, PAPER, pair[1]))]
    return pd.concat([*ours, base], ignore_index=True).sort_values(["k", "method"], kind="stable")


def preset_sentences(default_run: pd.DataFrame, paper_run: pd.DataFrame, metric: str, label: str) -> list[str]:
    """Where the paper preset is ahead of the default on ``metric`` (higher is better), in one sentence."""
    d = default_run[default_run["method"] == "mmae"].set_index("k")[metric]
    p = paper_run[paper_run["method"] == "mmae"].set_index("k")[metric]
    both = pd.concat([d.rename("d"), p.rename("p")], axis=1).dropna()
    ahead = both[both["p"] > both["d"]]
    if not len(both):
        return []
    if not len(ahead):
        return [f"On {label}, the default preset is level with or ahead of the paper preset at every k."]
    ks = ", ".join(str(int(k)) for k in ahead.index)
    return [f"On {label}, the paper preset is ahead of the default at k = {ks} "
            f"(by up to {float((ahead['p'] - ahead['d']).max()):.3f})."]
