"""The Train page: background training jobs (finish, cancel from another tab, fail with a reason),
configuration checks, checkpoint upload and the model registry."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd

from mmae_core.data.dataset import FeatureSet, Split
from studio.jobs import manager_for


def by_label(items, label: str):
    return next(x for x in items if x.label == label)


def no_bug(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


def newest_job(store) -> dict:
    return store.jobs(limit=1)[0]


def small_set(name: str, modalities: dict[str, int], n: int = 40, missing: int = 0) -> FeatureSet:
    rng = np.random.default_rng(0)
    splits = {}
    for s, k in (("train", n), ("test", n // 4)):
        feats = {m: rng.standard_normal((k, d)).astype(np.float32) for m, d in modalities.items()}
        if missing:
            feats[list(modalities)[-1]][:missing] = np.nan
        splits[s] = Split(np.array([f"{s}-{i}" for i in range(k)], dtype=object), feats,
                          np.array([f"c{i % 2}" for i in range(k)], dtype=object))
    return FeatureSet(name, dict(modalities), splits)


def choose_paper(at) -> None:
    """These tests are about the paper preset's settings (the page opens on the default preset)."""
    if at.selectbox(key="train_preset").value != "paper":
        at.selectbox(key="train_preset").set_value("paper").run()


def test_the_page_opens_on_the_default_preset(demo_store, app):
    from mmae_core.config import DEFAULT_PRESET

    at = app("train")
    no_bug(at)
    assert at.selectbox(key="train_preset").value == DEFAULT_PRESET != "paper"
    epochs = at.number_input(key=f"train_{DEFAULT_PRESET}_epochs")
    assert epochs.value == 100 and not epochs.help  # the preset's own, on the demo's 850 train items too
    noise = at.number_input(key=f"train_{DEFAULT_PRESET}_noise")
    assert noise.value == 1.0 and "clean inputs" in noise.help  # the default trains as a denoising autoencoder
    assert "less on a view of fewer than 32 features" in noise.help
    at.selectbox(key="train_preset").set_value("reliability").run()  # sizes its epochs to a small split
    epochs = at.number_input(key="train_reliability_epochs")
    assert epochs.value == 20 and "cost clusters on small real sets" in epochs.help
    assert at.number_input(key="train_reliability_noise").value == 0.0
    demo_store.store().add_dataset(small_set("mid", {"image": 2, "text": 2}, n=3_000))
    at = app("train", dataset="demo")
    at.selectbox(key="train_preset").set_value("reliability").run()
    at.sidebar.selectbox(key="_sidebar_dataset").set_value("mid").run()  # 3,000 train items: one epoch per 75
    assert at.number_input(key="train_reliability_epochs").value == 40
    at.sidebar.selectbox(key="_sidebar_dataset").set_value("demo").run()
    assert at.number_input(key="train_reliability_epochs").value == 20


def test_train_page_with_an_empty_store_says_what_to_do(empty_store, app):
    at = app("train")
    no_bug(at)
    assert any("no dataset yet" in i.value.lower() for i in at.info)


def test_start_a_job_it_finishes_and_registers_the_model(demo_store, app):
    at = app("train")
    choose_paper(at)
    no_bug(at)
    at.number_input(key="train_paper_epochs").set_value(2).run()
    assert at.number_input(key="train_paper_noise").value == 0.0  # the paper's method has none
    at.number_input(key="train_paper_noise").set_value(0.2).run()
    at.text_input(key="train_paper_name").input("ui-e2").run()
    by_label(at.button, "Start training").click().run()
    no_bug(at)
    assert any("Training job" in s.value and "started" in s.value for s in at.success)
    store = demo_store.store()
    job = newest_job(store)
    assert job["config"]["train"]["epochs"] == 2 and job["config"]["model_name"] == "ui-e2"
    assert job["config"]["train"]["input_noise"] == 0.2
    assert "parallel" not in job["config"]["train"] and not at.radio  # no choice of how cores share a step
    view = manager_for(store).wait(job["id"], timeout=180)
    assert view.status == "done", view.message
    ids, z = store.latents("demo", "ui-e2", "train", "fused")
    assert z.shape == (850, 128) and np.isfinite(z).all()
    at.run()  # the page polls; after the job ends it shows the result and the new model
    no_bug(at)
    assert any("finished" in s.value and "ui-e2" in s.value for s in at.success)
    assert "ui-e2" in at.sidebar.selectbox[1].options
    registry = at.dataframe[-1].value
    assert {"paper-e2-s42", "ui-e2"} <= set(registry["model"])
    assert "final loss image" in registry.columns and registry["epochs"].tolist() == [2, 2]
    # every demo train item has all modalities: the completion for partial uploads is fitted on all of them
    assert registry.set_index("model").loc["ui-e2", "completion fitted on"] == 850
    assert registry.set_index("model").loc["ui-e2", "step"].startswith("autograd, fused Adam")
    assert at.get("vega_lite_chart")  # the loss curves
    # a browser refresh or a second tab: a new session finds the job in the store
    other = app("train")
    assert any("ui-e2" in s.value for s in other.success)


def test_a_second_tab_sees_the_running_job_and_cancels_it(demo_store, app):
    at = app("train")
    choose_paper(at)
    at.number_input(key="train_paper_epochs").set_value(400).run()
    at.text_input(key="train_paper_name").input("too-long").run()
    by_label(at.button, "Start training").click().run()
    store = demo_store.store()
    mgr = manager_for(store)
    job_id = newest_job(store)["id"]
    end = time.monotonic() + 120
    while mgr.get(job_id).progress.get("epoch", 0) < 1:
        assert time.monotonic() < end, mgr.get(job_id)
        time.sleep(0.1)
    tab = app("train")  # another session
    no_bug(tab)
    assert any("epoch" in p.proto.text for p in tab.get("progress"))
    by_label(tab.button, "Cancel this job").click().run()
    no_bug(tab)
    view = mgr.wait(job_id, timeout=60)
    assert view.status == "cancelled"
    assert store.job(job_id)["status"] == "cancelled"
    assert "too-long" not in set(store.list_models("demo")["name"])
    at.run()
    assert any("was cancelled" in i.value for i in at.info)


def test_a_failing_job_shows_failed_with_its_reason(demo_store, app):
    store = demo_store.store()
    store.add_dataset(small_set("solo", {"image": 5}))
    at = app("train", dataset="solo")
    choose_paper(at)
    no_bug(at)
    at.number_input(key="train_paper_epochs").set_value(1).run()
    by_label(at.button, "Start training").click().run()
    job_id = newest_job(store)["id"]
    view = manager_for(store).wait(job_id, timeout=60)
    assert view.status == "failed" and "at least two" in view.message
    at.run()
    no_bug(at)
    assert any("failed" in e.value and "at least two" in e.value for e in at.error)


def test_missing_modalities_recommend_the_aligned_preset(demo_store, app):
    demo_store.store().add_dataset(small_set("gappy", {"image": 5, "text": 3}, missing=4))
    at = app("train", dataset="gappy")
    no_bug(at)
    assert not any("'aligned' preset" in w.value for w in at.warning)  # the default trains with modality dropout
    choose_paper(at)
    assert any("'aligned' preset" in w.value for w in at.warning)
    at.selectbox(key="train_preset").set_value("aligned").run()
    assert not any("'aligned' preset" in w.value for w in at.warning)


def test_bad_settings_are_one_sentence_and_start_nothing(demo_store, app):
    store = demo_store.store()
    before = store.checksum()
    at = app("train")
    choose_paper(at)
    at.text_input(key="train_paper_name").input(demo_store.model).run()
    assert any("already exists" in e.value for e in at.error)
    assert by_label(at.button, "Start training").disabled
    at.text_input(key="train_paper_name").input("tab\there").run()
    assert any("control character" in e.value for e in at.error)
    at.text_input(key="train_paper_name").input("ok-name").run()
    assert not at.error and not by_label(at.button, "Start training").disabled
    assert store.checksum() == before and store.jobs() == []


def test_load_a_checkpoint(demo_store, app):
    store = demo_store.store()
    data = store.model_checkpoint("demo", demo_store.model)
    at = app("train")
    choose_paper(at)
    at.file_uploader(key="train_ckpt").set_value(("garbage.pt", b"not a checkpoint", "application/octet-stream")).run()
    before = store.checksum()
    by_label(at.button, "Register the checkpoint").click().run()
    no_bug(at)
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert store.checksum() == before
    at.file_uploader(key="train_ckpt").set_value(("reloaded.pt", data, "application/octet-stream")).run()
    assert by_label(at.text_input, "Name for the loaded model").value == "reloaded"
    by_label(at.button, "Register the checkpoint").click().run()
    no_bug(at)
    assert "reloaded" in set(store.list_models("demo")["name"])
    a = store.latents("demo", "reloaded", "test", "fused")[1]
    b = store.latents("demo", demo_store.model, "test", "fused")[1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert at.session_state["model"] == "reloaded"
    assert isinstance(at.dataframe[-1].value, pd.DataFrame)
    # the checkpoint is built on click; a rerun then would drop its answer (see pages/catalog.py)
    assert by_label(at.get("download_button"), "Download the checkpoint of reloaded").proto.ignore_rerun


def test_training_on_gappy_data_says_partial_items_are_completed(demo_store, app):
    demo_store.store().add_dataset(small_set("gaps", {"image": 5, "text": 3}, n=120, missing=30))
    at = app("train", dataset="gaps")
    no_bug(at)
    at.selectbox(key="train_preset").set_value("aligned").run()
    at.number_input(key="train_aligned_epochs").set_value(1).run()
    at.number_input(key="train_aligned_batch").set_value(16).run()
    by_label(at.button, "Start training").click().run()
    no_bug(at)
    store = demo_store.store()
    view = manager_for(store).wait(newest_job(store)["id"], timeout=180)
    assert view.status == "done", view.message
    at.run()
    no_bug(at)
    # 90 of the 120 train items have both modalities: the job panel says so, and the registry shows it
    assert any("completed fused latent (fitted on 90 complete train items)" in c.value for c in at.caption)
    registry = at.dataframe[-1].value
    assert registry["completion fitted on"].tolist() == [90]


def test_one_click_one_job_start_is_disabled_while_the_job_runs(demo_store, app):
    at = app("train")
    choose_paper(at)
    at.number_input(key="train_paper_epochs").set_value(400).run()
    at.text_input(key="train_paper_name").input("once").run()
    by_label(at.button, "Start training").click().run()
    no_bug(at)
    store = demo_store.store()
    mgr = manager_for(store)
    job_id = newest_job(store)["id"]
    try:
        assert by_label(at.button, "Start training").disabled  # the rerun after the click draws it disabled
        assert any(f"Training job {job_id} on demo is" in c.value for c in at.caption)
        assert by_label(app("train").button, "Start training").disabled  # another tab too
        with_the_same = mgr.duplicate_of("demo", "train", store.job(job_id)["config"])
        assert with_the_same is not None and with_the_same.id == job_id
        assert len(store.jobs("demo", statuses=("queued", "running"))) == 1
    finally:
        mgr.cancel(job_id)
        mgr.wait(job_id, timeout=60)
    at.run()
    assert not by_label(at.button, "Start training").disabled


def test_a_large_train_split_is_offered_a_budget_in_items_and_a_larger_batch(demo_store, app):
    from studio.pipeline import LARGE_BATCH, LARGE_SAMPLES, LARGE_TRAIN

    demo_store.store().add_dataset(small_set("big", {"image": 2, "text": 2}, n=LARGE_TRAIN))
    at = app("train", dataset="big")
    no_bug(at)
    choose_paper(at)
    budget = at.number_input(key="train_paper_samples")
    assert budget.value == LARGE_SAMPLES
    assert not any(n.key == "train_paper_epochs" for n in at.number_input)
    assert at.number_input(key="train_paper_batch").value == LARGE_BATCH
    assert any("20 epochs (2,000,000 items drawn) at batch 2,048" in c.value for c in at.caption)
    budget.set_value(250_000).run()  # rounded up to whole passes over the 100,000 train items
    assert any("3 epochs (300,000 items drawn)" in c.value for c in at.caption)
    at = app("train", dataset="demo")  # the demo's 850 train items keep the preset's epochs
    choose_paper(at)
    assert at.number_input(key="train_paper_epochs").value == 100
