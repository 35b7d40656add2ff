"""Novelty: the score's parts and combinations, held-out classes with a real (tiny) model, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from studio.cli import main
from mmae_core.config import preset
from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import ConfigError
from mmae_core.archive.novelty import COMBINATIONS, auroc, combine, fit_reference, parts, score_items
from studio.pipeline import train_and_register
from mmae_core.model.train import encode, reconstruction_error, train
from store import Store, copy_store

DIMS = {"image": 8, "audio": 12, "text": 6}


def toy_set(n_classes: int = 5, per_class: dict[str, int] | None = None, seed: int = 0, name: str = "toy",
            ood_noise: float = 3.0) -> FeatureSet:
    """Classes seen by three modalities through different random nonlinear maps; the OOD split is
    the same classes under much heavier noise (as in the demo)."""
    per_class = per_class or {"train": 60, "test": 20, "ood": 10}
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((n_classes, 6)) * 2.0
    maps = {m: rng.standard_normal((6, d)) for m, d in DIMS.items()}
    splits = {}
    for s, k in per_class.items():
        y = np.repeat(np.arange(n_classes), k)
        y = y[rng.permutation(len(y))]
        noise = ood_noise if s == "ood" else 1.0
        concept = protos[y] + 0.4 * noise * rng.standard_normal((len(y), 6))
        feats = {m: (np.tanh(concept @ w / 2) + 0.1 * noise * rng.standard_normal((len(y), w.shape[1]))).astype(np.float32)
                 for m, w in maps.items()}
        ids = np.array([f"{s}-{i}" for i in range(len(y))], dtype=object)
        splits[s] = Split(ids, feats, np.array([f"c{v}" for v in y], dtype=object))
    return FeatureSet(name, dict(DIMS), splits).validate()


TINY = dict(epochs=30, batch_size=32, latent=8, hidden=(32, 32), seed=1)


# -- the score's parts ---------------------------------------------------------------------------------
def test_auroc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(2, 8, 30).astype(float)
    want = roc_auc_score(np.r_[np.zeros(50), np.ones(30)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(want)
    assert auroc(np.zeros(3), np.ones(3)) == 1.0 and auroc(np.ones(3), np.zeros(3)) == 0.0


def test_each_part_rises_with_its_own_signal_and_every_combination_ranks_both() -> None:
    rng = np.random.default_rng(1)
    cents = np.array([[0.0, 0.0], [10.0, 0.0]])
    z_tr = cents[rng.integers(0, 2, 400)] + rng.standard_normal((400, 2))
    err_tr = {"a": rng.lognormal(0, 0.3, 400), "b": rng.lognormal(2, 0.3, 400)}  # b's errors are ~7x larger
    ref = fit_reference(err_tr, z_tr, cents, ["x", "y"], "test")
    # item 0: typical; 1: bad reconstruction of b only; 2: far from both centroids; 3: both; 4: lacks b
    z = np.array([[0.0, 0.5], [0.0, 0.5], [5.0, 8.0], [5.0, 8.0], [10.0, 0.0]])
    err = {"a": np.array([1.0, 1.0, 1.0, 1.0, 1.0]), "b": np.array([7.4, 7.4 * 20, 7.4, 7.4 * 20, np.nan])}
    p = parts(ref, err, z)
    assert p.recon[1] > p.recon[0] + 2 and abs(p.recon[0]) < 1  # standardized per modality: b's size does not matter
    assert p.distance[2] > p.distance[0] + 2
    assert np.isfinite(p.recon[4]) and p.nearest.tolist() == [0, 0, 0, 0, 1]
    for how in COMBINATIONS:
        s = combine(ref, p, how)
        assert s[3] >= max(s[1], s[2]) - 1e-12 or how in ("recon", "distance")
    zs, rk = combine(ref, p, "zsum"), combine(ref, p, "rank")
    assert zs[3] > zs[1] > zs[0] and zs[3] > zs[2] > zs[0]
    assert ((rk >= 0) & (rk <= 1)).all()
    table = score_items(ref, err, z)
    assert table["nearest"].tolist() == ["x", "x", "x", "x", "y"]
    with pytest.raises(ConfigError, match="combination"):
        combine(ref, p, "sum")
    with pytest.raises(ConfigError, match="centroid"):
        fit_reference(err_tr, z_tr, np.empty((0, 2)), [], "none")


def test_held_out_classes_score_higher_than_known_ones_with_a_real_model() -> None:
    fs = toy_set(n_classes=6)
    tr = fs.splits["train"]
    held = ["c4", "c5"]
    keep = ~np.isin(tr.labels.astype(str), held)
    seen = FeatureSet("seen", dict(DIMS), {"train": Split(tr.item_ids[keep], {m: x[keep] for m, x in tr.features.items()},
                                                          tr.labels[keep])}).validate()
    tm = train(seen, preset("paper", **TINY))
    z_tr, _ = encode(tm, seen.splits["train"].features)
    from sklearn.cluster import KMeans

    km = KMeans(4, n_init=4, random_state=0).fit(z_tr)
    ref = fit_reference(reconstruction_error(tm, seen.splits["train"].features), z_tr, km.cluster_centers_,
                        list("abcd"), "train clusters", member_z=z_tr, member_assign=km.labels_)
    te = fs.splits["test"]
    z, _ = encode(tm, te.features)
    s = combine(ref, parts(ref, reconstruction_error(tm, te.features), z), "zsum")
    novel = np.isin(te.labels.astype(str), held)
    # 80 known vs 40 novel items: a random score has AUROC 0.5 +- 0.06, so 0.8 cannot be luck
    assert auroc(s[~novel], s[novel]) > 0.8


# -- the CLI and the reference groups ------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("novelty") / "s.duckdb"
    store = Store(db)
    store.add_dataset(toy_set())
    train_and_register(store, "toy", preset("paper", **TINY), model_name="m")
    return db


def test_cli_novelty_json_contract_and_ood_ranks_first(toy_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.duckdb"
    copy_store(toy_db, db)
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--split", "test,ood", "--format", "json", "--db", str(db)]) == 0
    out, errs = capsys.readouterr()
    rows = json.loads(out)
    assert len(rows) == 100 + 50 and {"item_id", "split", "score"} <= set(rows[0])
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert {r["split"] for r in rows} == {"test", "ood"}
    normal = [r["score"] for r in rows if r["split"] == "test"]
    novel = [r["score"] for r in rows if r["split"] == "ood"]
    assert auroc(np.array(normal), np.array(novel)) > 0.9
    assert "train clusters" in errs  # nothing proposed or accepted yet: clusters of the train latents

    # with proposals, then with an accepted tag, the reference follows the curator
    assert main(["propose", "--dataset", "toy", "--model", "m", "--k", "5", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--split", "ood", "--format", "json", "--db", str(db)]) == 0
    out, errs = capsys.readouterr()
    assert "proposed clusters" in errs and all(r["split"] == "ood" for r in json.loads(out))
    assert main(["tag", "accept", "--dataset", "toy", "--model", "m", "--cluster", "0", "--name", "known", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--split", "test", "--format", "json", "--db", str(db)]) == 0
    out, errs = capsys.readouterr()
    assert "1 accepted tags" in errs and {r["nearest"] for r in json.loads(out)} == {"known"}


def test_cli_novelty_unknown_split_is_one_line(toy_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["novelty", "--dataset", "toy", "--split", "test,nope", "--db", str(toy_db)]) == 1
    out, errs = capsys.readouterr()
    assert out == "" and errs.count("\n") == 1 and "nope" in errs and errs.startswith("error: ")


def _write_split(root: Path, split: str, sp: Split, modalities: list[str]) -> None:
    (root / split).mkdir(parents=True, exist_ok=True)
    for m in modalities:
        np.save(root / split / f"{m}.npy", sp.features[m])
    np.save(root / split / "ids.npy", sp.item_ids.astype(str))


def test_cli_novelty_ranks_new_material_from_a_path_as_if_it_were_stored(toy_db: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """`novelty --path`: items not in the store, scored against the same reference; the store's own
    ood split given as files must score exactly as stored, and nothing is written."""
    db = tmp_path / "s.duckdb"
    copy_store(toy_db, db)
    fs = toy_set()
    up = tmp_path / "new"
    _write_split(up, "ood", fs.splits["ood"], list(DIMS))  # no train split: new material is only scored
    before = Store(db).checksum()
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--split", "ood", "--format", "json", "--db", str(db)]) == 0
    stored = {r["item_id"]: r["score"] for r in json.loads(capsys.readouterr()[0])}
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--path", str(up), "--format", "json", "--db", str(db)]) == 0
    out, errs = capsys.readouterr()
    uploaded = json.loads(out)
    assert [r["split"] for r in uploaded] == ["ood"] * 50 and "encoding and scoring 50 ood items" in errs
    assert {r["item_id"] for r in uploaded} == set(stored)
    np.testing.assert_allclose([r["score"] for r in uploaded], [stored[r["item_id"]] for r in uploaded], rtol=1e-4, atol=1e-5)
    assert Store(db).checksum() == before

    # any non-empty subset of the model's modalities: here no audio
    part = tmp_path / "part"
    _write_split(part, "test", fs.splits["test"], ["image", "text"])
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--path", str(part), "--format", "json", "--db", str(db)]) == 0
    rows = json.loads(capsys.readouterr()[0])
    assert len(rows) == 100 and all(np.isfinite(r["score"]) for r in rows)

    # features the model does not know: one line, exit 1, nothing written
    wrong = tmp_path / "wrong"
    (wrong / "ood").mkdir(parents=True)
    np.save(wrong / "ood" / "image.npy", np.zeros((4, DIMS["image"] + 1), dtype=np.float32))
    assert main(["novelty", "--dataset", "toy", "--model", "m", "--path", str(wrong), "--db", str(db)]) == 1
    out, errs = capsys.readouterr()
    assert out == "" and errs.count("\n") == 1 and "dimension 9" in errs and "expects 8" in errs
    assert Store(db).checksum() == before


def test_calibration_against_a_reference_split_flags_about_the_chosen_share_of_ordinary_items():
    from mmae_core.archive.novelty import calibrate, percentile, review_threshold, triage

    rng = np.random.default_rng(0)
    reference = rng.normal(size=2000)  # ordinary items the model has not seen
    fresh_ordinary = rng.normal(size=4000)
    novel = rng.normal(loc=3.0, size=200)
    cal = calibrate(reference, "test")
    t = review_threshold(cal, 0.05)
    assert abs((fresh_ordinary > t).mean() - 0.05) < 0.015  # the false-alarm rate holds on new ordinary items
    assert (novel > t).mean() > 0.8
    out = triage(np.concatenate([fresh_ordinary[:3], [10.0]]), cal, 0.05)
    assert list(out.columns) == ["percentile", "review"] and out["percentile"].iloc[-1] == 100.0 and out["review"].iloc[-1]
    assert np.isclose(percentile(cal, np.array([np.median(reference)]))[0], 50.0, atol=0.1)
    with pytest.raises(ConfigError, match="false-alarm rate"):
        review_threshold(cal, 0)
