"""The map a curator sees first: UMAP of the fused latents, computed once in the background after training.

Why: PCA of the latents is instant but a blob (a first real upload, 10 classes, showed one cloud where
t-SNE and UMAP showed ten clean clusters), while UMAP separates them but takes about a minute for
20,000 points. So when a training job has registered its model, the job manager starts this in a
low-priority thread (``studio.jobs``), it stores the map under the key the Explore page opens with
(``DEFAULT_KIND`` latents of ``default_split``, ``DEFAULT_METHOD``, ``DEFAULT_SEED``), and the page
shows PCA, saying UMAP is on its way, until it is stored. Large splits are fitted on a sample (see
``mmae_core.evaluation.projection``). A failure only logs: the page can still compute the map on request.

Application layer (it takes a Store): belongs with jobs.py and pipeline.py.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from mmae_core.evaluation.projection import project_2d

DEFAULT_METHOD = "umap"
DEFAULT_KIND = "fused"
DEFAULT_SEED = 42

log = logging.getLogger("mmae_studio.maps")
_pending: set[tuple[str, str, str]] = set()
_lock = threading.Lock()


def default_split(splits: list[str]) -> str:
    """The split the Explore page opens on: ``test`` when there is one, else the first."""
    return "test" if "test" in splits else splits[0]


def pending(store: Any, dataset: str, model: str) -> bool:
    """True while this process computes the default map of ``model``."""
    with _lock:
        return (str(getattr(store, "path", id(store))), dataset, model) in _pending


def compute_default_map(store: Any, dataset: str, model: str) -> bool:
    """Compute and store the default map unless it is stored already; True when this call stored it."""
    kinds = store.latent_kinds(dataset, model)
    splits = list(dict.fromkeys(kinds.loc[kinds["kind"] == DEFAULT_KIND, "split"]))
    if not splits:
        return False
    split = default_split(splits)
    if store.projection(dataset, model, split, DEFAULT_KIND, DEFAULT_METHOD, DEFAULT_SEED) is not None:
        return False
    t0 = time.perf_counter()
    _, z = store.latents(dataset, model, split, DEFAULT_KIND)
    xy = project_2d(z, DEFAULT_METHOD, seed=DEFAULT_SEED)  # type: ignore[arg-type]
    return bool(store.save_projection(dataset, model, split, DEFAULT_KIND, DEFAULT_METHOD, DEFAULT_SEED, xy,
                                      time.perf_counter() - t0))


def start_default_map(store: Any, dataset: str, model: str) -> threading.Thread | None:
    """Compute the default map in a daemon thread at low priority; None when one is already running."""
    from studio.jobs import lower_thread_priority

    key = (str(getattr(store, "path", id(store))), dataset, model)
    with _lock:
        if key in _pending:
            return None
        _pending.add(key)

    def run() -> None:
        lower_thread_priority()
        try:
            compute_default_map(store, dataset, model)
        except Exception:  # noqa: BLE001 - the page offers the map on request; this is only a head start
            log.exception("the default map of model %s could not be computed in the background", model)
        finally:
            with _lock:
                _pending.discard(key)

    t = threading.Thread(target=run, name=f"default-map-{model}", daemon=True)
    t.start()
    return t
