"""The default number of clusters, and the k grid Compare starts from, sized from the data.

Why: the defaults used to be the paper's (k = 50, grid 30-60), which fit LUMA's 50 classes and
nothing else; on a real 10-class set of 1,797 items the grid sat far from the data and Tags proposed
50 tags. Until graph clustering that finds k by itself (``--k auto``) is the default, k is sized
from what is known: the number of labels where the data has them, else ``sqrt(n / 2)``, the classic
rule of thumb for an unlabelled set (30 for 1,797 items). That sized k and grid are what a page
offers when a curator turns "auto" off. The default is ``auto``: k found by Leiden on the latents'
neighbour graph (``clustering.graph``), because curators do not know k; the paper's grid stays the
default for LUMA-shaped data, where its reference rows are comparable. Pages ask ``suggest_k``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from mmae_core.clustering.graph import AUTO
from mmae_core.config import DEFAULT_K_GRID

SIZED = "sized"  # the sized k and grid; AUTO (clustering.graph): k found by the method
DEFAULT_MODE = AUTO  # k found by the method; SIZED offers the sized k and grid instead
LUMA_CLASSES = 50
LUMA_MODALITIES = frozenset({"image", "audio", "text"})
GRID_FACTORS = (0.5, 0.75, 1.0, 1.5, 2.0)  # around the centre: under- and over-splitting both show
MAX_SIZED_K = 200  # beyond this, pick k on Compare; a bigger default makes KMeans slow for nothing


@dataclass(frozen=True)
class KSuggestion:
    """A default ``k`` for proposals, the ``grid`` Compare evaluates, and whether the data looks like
    LUMA (then the paper's grid and reference rows are the default). ``mode`` is ``sized`` or ``auto``;
    ``reason`` is one clause a page can show."""

    k: int
    grid: tuple[int, ...]
    luma_shaped: bool
    mode: str
    reason: str

    @property
    def k_text(self) -> str:
        """What a page's k field starts with: ``auto``, or the sized k."""
        return AUTO if self.mode == AUTO else str(self.k)

    @property
    def grid_text(self) -> str:
        """What Compare's k grid starts with: the paper's grid for LUMA-shaped data, else ``auto`` (or
        the sized grid)."""
        return AUTO if self.mode == AUTO and not self.luma_shaped else ", ".join(map(str, self.grid))


def luma_shaped(n_labels: int | None, modalities: set[str] | frozenset[str] | None = None) -> bool:
    """LUMA's shape: 50 label classes, and image, audio and text where the modalities are known."""
    if n_labels != LUMA_CLASSES:
        return False
    return modalities is None or LUMA_MODALITIES <= set(modalities)


def suggest_k(n_items: int, n_labels: int | None = None, modalities: set[str] | frozenset[str] | None = None,
              mode: str = DEFAULT_MODE) -> KSuggestion:
    """The default k and grid for a split of ``n_items`` with ``n_labels`` distinct labels (None: none).

    Every k is at least 2 and below ``n_items`` (KMeans needs fewer clusters than items).
    """
    n = int(n_items)
    top = max(2, n - 1)
    if luma_shaped(n_labels, modalities):
        grid = tuple(k for k in DEFAULT_K_GRID if k <= top) or (min(LUMA_CLASSES, top),)
        return KSuggestion(min(LUMA_CLASSES, top), grid, True, mode, "the paper's grid for LUMA's 50 classes")
    if n_labels and n_labels >= 2:
        centre, why = int(n_labels), f"the {n_labels} labels"
    else:
        centre, why = round(math.sqrt(max(n, 8) / 2)), f"√(n/2) for {n:,} unlabelled items"
    centre = max(2, min(centre, MAX_SIZED_K, top))
    grid = sorted({max(2, min(top, round(centre * f))) for f in GRID_FACTORS})
    return KSuggestion(centre, tuple(grid), False, mode, f"sized from {why}")
