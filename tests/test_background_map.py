"""The default map: UMAP of the fused latents, computed once in the background after a training job,
stored under the key the Explore page opens with."""
from __future__ import annotations

import threading

import numpy as np

from studio import background_map
from mmae_core.config import preset
from studio.jobs import JobManager
from mmae_core.evaluation.projection import project_2d

KEY = ("test", "fused", "umap", 42)


def test_a_training_job_leaves_its_umap_map_in_the_store(demo_store):
    store = demo_store.store()
    mgr = JobManager(store, throttle_s=0.0)
    job = mgr.wait(mgr.start_training("demo", preset("paper", epochs=1), "job-map"), timeout=600)
    assert job.status == "done"
    threads = [t for t in threading.enumerate() if t.name == "default-map-job-map"]
    for t in threads:
        t.join(timeout=600)
    xy = store.projection("demo", "job-map", *KEY)
    assert xy is not None and not background_map.pending(store, "demo", "job-map")
    _, z = store.latents("demo", "job-map", "test", "fused")
    np.testing.assert_array_equal(xy, project_2d(z, "umap", seed=42))
    assert not background_map.compute_default_map(store, "demo", "job-map")  # once: the stored map is kept


def test_one_computation_at_a_time_and_pending_until_stored(demo_store):
    store = demo_store.store()
    model = store.list_models("demo")["name"].iloc[0]
    t = background_map.start_default_map(store, "demo", model)
    assert t is not None and background_map.pending(store, "demo", model)
    assert background_map.start_default_map(store, "demo", model) is None
    t.join(timeout=600)
    assert not background_map.pending(store, "demo", model)
    assert store.projection("demo", model, *KEY) is not None


def test_jobs_can_skip_the_default_map(demo_store):
    store = demo_store.store()
    mgr = JobManager(store, throttle_s=0.0)
    mgr.default_maps = False
    assert mgr.wait(mgr.start_training("demo", preset("paper", epochs=1), "job-nomap"), timeout=600).status == "done"
    assert not background_map.pending(store, "demo", "job-nomap")
    assert store.projection("demo", "job-nomap", *KEY) is None
