"""The model registry and latents: FLOAT[n] arrays, exact round trip, bulk speed, look-ups."""
from __future__ import annotations

import time

import numpy as np
import pytest

from mmae_core.data.dataset import FeatureSet, Split
from store import NotFoundError, Store, StoreError

from testkit.data import make_featureset, make_latents, one_sentence


def test_latents_are_fixed_size_float_arrays_and_round_trip(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    store.add_dataset(fs)
    lat = make_latents(fs, dim=8, kinds=("fused", "image", "audio", "text"))
    store.add_model("toy", "m1", b"\x00ckpt\xff", {"latent": 8, "preset": "paper"},
                    {"train_seconds": 1.25, "history": [[1.0, 0.5]], "final_loss": 0.5}, lat)
    with store.reader() as con:
        assert con.execute("SELECT DISTINCT typeof(vec) FROM latents_8").fetchall() == [("FLOAT[8]",)]
        col = con.execute(
            "SELECT data_type FROM duckdb_columns() WHERE table_name = 'latents_8' AND column_name = 'vec'"
        ).fetchall()
    assert col == [("FLOAT[8]",)]
    for split, kinds in lat.items():
        for kind, x in kinds.items():
            ids, got = store.latents("toy", "m1", split, kind)
            assert ids.tolist() == fs.splits[split].item_ids.tolist()
            assert got.dtype == np.float32 and got.flags.writeable
            np.testing.assert_array_equal(got, x)
    assert store.model_checkpoint("toy", "m1") == b"\x00ckpt\xff"
    assert store.model_info("toy", "m1") == {"train_seconds": 1.25, "history": [[1.0, 0.5]], "final_loss": 0.5}
    assert store.model_config("toy", "m1") == {"latent": 8, "preset": "paper"}
    kinds = store.latent_kinds("toy", "m1")
    assert len(kinds) == 8 and set(kinds["items"]) == {30, 12}
    # a few items only (a search query), in split order; unknown ids are left out, not an error
    ids, got = store.latents("toy", "m1", "train", "image", ids=["tr005", "nope", "tr002"])
    assert ids.tolist() == ["tr002", "tr005"]
    np.testing.assert_array_equal(got, lat["train"]["image"][[2, 5]])
    ids, got = store.latents("toy", "m1", "train", "image", ids=["nope"])
    assert ids.tolist() == [] and got.shape == (0, 8)


def test_models_of_two_latent_sizes_live_side_by_side(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    store.add_dataset(fs)
    store.add_model("toy", "small", b"a", {}, {}, make_latents(fs, dim=4))
    time.sleep(0.01)
    store.add_model("toy", "large", b"b", {}, {"final_loss": 0.25}, make_latents(fs, dim=16))
    models = store.list_models("toy")
    assert models["name"].tolist() == ["small", "large"]
    assert models["latent_dim"].tolist() == [4, 16] and models["checkpoint_bytes"].tolist() == [1, 1]
    assert store.latest_model("toy") == "large"
    assert store.latents("toy", "small", "train")[1].shape == (30, 4)
    assert store.latents("toy", "large", "test")[1].shape == (12, 16)
    assert len(store.list_models()) == 2


def test_duplicate_and_malformed_models_are_refused(tmp_path):
    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    store.add_dataset(fs)
    store.add_model("toy", "m1", b"w", {}, {}, make_latents(fs))
    before = store.checksum()
    bad_calls = [
        (lambda: store.add_model("toy", "m1", b"w", {}, {}, make_latents(fs)), "already has a model named 'm1'"),
        (lambda: store.add_model("toy", "m2", b"w", {}, {}, {}), "without latents"),
        (lambda: store.add_model("toy", "m2", b"w", {}, {}, {"train": {"smell": np.zeros((30, 8))}}), "'smell'"),
        (lambda: store.add_model("toy", "m2", b"w", {}, {}, {"ood": {"fused": np.zeros((30, 8))}}), "'ood'"),
        (lambda: store.add_model("toy", "m2", "not bytes", {}, {}, make_latents(fs)), "not bytes"),
        (lambda: store.add_model("toy", "", b"w", {}, {}, make_latents(fs)), "model name is empty"),
    ]
    for call, words in bad_calls:
        with pytest.raises(StoreError) as err:
            call()
        assert words in str(err.value) and one_sentence(str(err.value)), str(err.value)
    assert store.checksum() == before
    with pytest.raises(NotFoundError) as err:
        store.model_checkpoint("toy", "ghost")
    assert "m1" in str(err.value) and one_sentence(str(err.value))


def test_latents_at_luma_scale_insert_in_about_a_second(tmp_path):
    n, dim = 29000, 128
    rng = np.random.default_rng(0)
    mods = {"image": 2, "audio": 2, "text": 2}
    fs = FeatureSet(
        name="luma", modalities=mods,
        splits={"train": Split(np.asarray([f"item-{i:05d}" for i in range(n)], dtype=object),
                               {m: rng.normal(size=(n, d)).astype(np.float32) for m, d in mods.items()})},
    )
    store = Store(tmp_path / "s.duckdb")
    store.add_dataset(fs)
    lat = {"train": {k: rng.normal(size=(n, dim)).astype(np.float32) for k in ("fused", *mods)}}
    t0 = time.perf_counter()
    store.add_model("luma", "m", b"w", {}, {}, lat)
    elapsed = time.perf_counter() - t0
    print(f"\n29,000 items x 4 kinds x {dim} floats stored in {elapsed:.2f} s")
    assert elapsed < 6.0  # about 1 s on an idle 2-core machine; generous for a busy CI
    t0 = time.perf_counter()
    ids, x = store.latents("luma", "m", "train", "text")
    print(f"one kind read back in {time.perf_counter() - t0:.2f} s")
    np.testing.assert_array_equal(x, lat["train"]["text"])
    assert ids[-1] == "item-28999"


def _pending_rows(store: Store) -> int:
    with store.reader() as con:
        return int(con.execute("SELECT count(*) FROM latents_8 WHERE model_id < 0").fetchall()[0][0])


def test_latents_go_in_block_by_block_and_only_the_model_row_makes_them_visible(tmp_path, monkeypatch):
    from store import feature_files, models

    store = Store(tmp_path / "s.duckdb")
    fs = make_featureset()
    store.add_dataset(fs)
    lat = make_latents(fs, dim=8, kinds=("fused", "image"))
    monkeypatch.setattr(models, "LATENT_ROWS", 7)  # 30 train items: five blocks, each its own transaction
    store.add_model("toy", "m1", b"c", {}, {}, lat)
    for split, kinds in lat.items():
        for kind, x in kinds.items():
            np.testing.assert_array_equal(store.latents("toy", "m1", split, kind)[1], x)
    assert _pending_rows(store) == 0
    before = store.checksum()
    # a writer that died after two blocks: its rows are nobody's, and the store reads as it was
    dead = store._db.write(lambda con: models.pending_token(con, 8))
    for _, kind, start, w in list(models.blocks(lat))[:2]:
        store._db.write(lambda con: models.add_block(con, "toy", dead, "train", kind, start, w))
    assert _pending_rows(store) == 14 and store.checksum() == before
    assert set(store.list_models("toy")["name"]) == {"m1"}
    # a writer still at work (its marker names a live process) keeps its blocks; the dead one's go
    live = store._db.write(lambda con: models.pending_token(con, 8))
    with feature_files.pending_marker(store.path, live):
        store._db.write(lambda con: models.add_block(con, "toy", live, "train", "fused", 0, lat["train"]["fused"][:7]))
        store.add_model("toy", "m2", b"c", {}, {}, lat)
        assert _pending_rows(store) == 7
    np.testing.assert_array_equal(store.latents("toy", "m2", "test", "image")[1], lat["test"]["image"])
    store.add_model("toy", "m3", b"c", {}, {}, lat)  # its marker is gone: collected by the next registration
    assert _pending_rows(store) == 0
