"""Missing modalities end to end: every upload layout, the import summary, refusal of empty items, the
store round trip, training with missing rows and encoding from every subset of modalities."""
from __future__ import annotations

import io
import json
import zipfile
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studio.cli import main
from mmae_core.config import TrainConfig, preset
from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import DataError
from mmae_core.data.features import load_files, load_path
from mmae_core.model.train import encode, train
from store import Store

DIMS = {"image": 4, "audio": 6, "text": 3}
N = {"train": 10, "test": 6}
# item rows that lack a modality, per split: train lacks audio in rows 1, 4 and text in 4, 7; test lacks image in 0
GAPS = {"train": {"audio": [1, 4], "text": [4, 7]}, "test": {"image": [0]}}
EXPECTED = {"image": 1, "audio": 2, "text": 2}


def arrays(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {s: {m: rng.standard_normal((n, d)).astype(np.float32) for m, d in DIMS.items()} for s, n in N.items()}
    for s, gaps in GAPS.items():
        for m, rows in gaps.items():
            out[s][m][rows] = np.nan
    return out


def ids(s: str) -> list[str]:
    return [f"{s}-{i}" for i in range(N[s])]


def write(layout: str, root: Path) -> Path:
    """The same data, with the same gaps, in one of the accepted layouts; returns the path to import."""
    data = arrays()
    root.mkdir(parents=True, exist_ok=True)
    if layout == "npz":
        for s, a in data.items():
            np.savez(root / f"{s}.npz", **a, ids=np.array(ids(s)))
    elif layout in ("npy-folders", "npy-flat", "zip"):
        for s, a in data.items():
            for m, x in a.items():
                target = root / (f"{s}_{m}.npy" if layout == "npy-flat" else f"{s}/{m}.npy")
                target.parent.mkdir(exist_ok=True)
                np.save(target, x)
            np.save(root / (f"{s}_ids.npy" if layout == "npy-flat" else f"{s}/ids.npy"), np.array(ids(s)))
        if layout == "zip":
            z = root.parent / f"{root.name}.zip"
            with zipfile.ZipFile(z, "w") as zf:
                for f in sorted(root.rglob("*.npy")):
                    zf.write(f, f.relative_to(root).as_posix())
            return z
    else:  # parquet / csv: an absent item_id is the missing row; the items table fixes the order
        ext = layout.split("-")[0]
        for s, a in data.items():
            for m, x in a.items():
                have = ~np.isnan(x).all(axis=1)
                df = pd.DataFrame(x[have], columns=[f"{m}{j}" for j in range(x.shape[1])])
                df.insert(0, "item_id", np.array(ids(s))[have])
                df = df.iloc[::-1]  # rows in another order than the items table: aligned by id
                target = root / (f"{s}/{m}.{ext}" if layout.endswith("folders") else f"{s}_{m}.{ext}")
                target.parent.mkdir(exist_ok=True)
                df.to_csv(target, index=False) if ext == "csv" else df.to_parquet(target, index=False)
            items = pd.DataFrame({"item_id": ids(s), "title": [f"t{i}" for i in range(N[s])]})
            items.to_csv(root / (f"{s}/items.csv" if layout.endswith("folders") else f"{s}_items.csv"), index=False)
    return root


LAYOUTS = ["npz", "npy-folders", "npy-flat", "zip", "parquet-folders", "parquet-flat", "csv-folders", "csv-flat"]


def check(fs: FeatureSet) -> None:
    data = arrays()
    for s in N:
        sp = fs.splits[s]
        assert sp.item_ids.tolist() == ids(s)
        for m in DIMS:
            np.testing.assert_allclose(sp.features[m], data[s][m], rtol=1e-6, equal_nan=True)
            want = [i not in GAPS.get(s, {}).get(m, []) for i in range(N[s])]
            assert sp.present(m).tolist() == want
    from studio.pipeline import missing_summary

    assert missing_summary(fs) == EXPECTED


@pytest.mark.parametrize("layout", LAYOUTS)
def test_missing_rows_in_every_layout(tmp_path: Path, layout: str) -> None:
    check(load_path(write(layout, tmp_path / "data"), "gappy"))


@pytest.mark.parametrize("layout", ["npz", "parquet-flat", "csv-folders"])
def test_missing_rows_in_a_browser_upload(tmp_path: Path, layout: str) -> None:
    root = write(layout, tmp_path / "data")
    files = [(f.relative_to(root).as_posix(), f.read_bytes()) for f in sorted(root.rglob("*")) if f.is_file()]
    check(load_files(files, "gappy"))


@pytest.mark.parametrize("layout", ["npz", "zip", "parquet-folders", "csv-flat"])
def test_cli_import_reports_missing_counts(tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(layout, tmp_path / "data")
    db = tmp_path / "s.duckdb"
    assert main(["import", str(path), "--name", "gappy", "--format", "json", "--db", str(db)]) == 0
    out, errs = capsys.readouterr()
    doc = json.loads(out)
    assert doc["missing"] == EXPECTED
    per = {(r["split"], r["modality"]): r["missing"] for r in doc["splits"]}
    assert per[("train", "audio")] == 2 and per[("test", "image")] == 1 and per[("test", "text")] == 0
    line = next(l for l in errs.splitlines() if l.startswith("items missing a modality: "))
    assert {"image 1", "audio 2", "text 2"} <= set(line.split(": ", 1)[1].split(";")[0].split(", "))
    assert "--preset aligned" in line
    back = Store(db).load_dataset("gappy")  # the store keeps the gaps
    check(back)


def _no_modality(layout: str, root: Path) -> Path:
    """Like ``write`` but test item 3 has no modality at all."""
    path = write(layout, root)
    if layout == "npz":
        a = dict(np.load(root / "test.npz"))
        for m in DIMS:
            a[m][3] = np.nan
        np.savez(root / "test.npz", **a)
    elif layout.startswith(("npy", "zip")):
        for m in DIMS:
            f = root / "test" / f"{m}.npy" if layout != "npy-flat" else root / f"test_{m}.npy"
            x = np.load(f)
            x[3] = np.nan
            np.save(f, x)
        if layout == "zip":
            path.unlink()
            with zipfile.ZipFile(path, "w") as zf:
                for f in sorted(root.rglob("*.npy")):
                    zf.write(f, f.relative_to(root).as_posix())
    else:
        ext = layout.split("-")[0]
        for m in DIMS:
            f = root / (f"test/{m}.{ext}" if layout.endswith("folders") else f"test_{m}.{ext}")
            df = pd.read_csv(f, dtype={"item_id": str}) if ext == "csv" else pd.read_parquet(f)
            df = df[df["item_id"] != "test-3"]
            df.to_csv(f, index=False) if ext == "csv" else df.to_parquet(f, index=False)
    return path


@pytest.mark.parametrize("layout", LAYOUTS)
def test_item_with_no_modality_is_refused_in_one_sentence(tmp_path: Path, layout: str) -> None:
    with pytest.raises(DataError) as e:
        load_path(_no_modality(layout, tmp_path / "data"), "bad")
    msg = str(e.value)
    assert "'test-3'" in msg and "no modality at all" in msg and "\n" not in msg
    assert msg.count(". ") == 0 and msg.endswith(".")


def test_cli_refuses_an_item_with_no_modality_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.duckdb"
    Store(db).add_dataset(load_path(write("npz", tmp_path / "ok"), "ok"))
    before = Store(db).checksum()
    assert main(["import", str(_no_modality("csv-flat", tmp_path / "bad")), "--name", "bad", "--db", str(db)]) == 1
    out, errs = capsys.readouterr()
    error = [l for l in errs.splitlines() if l.startswith("error: ")]
    assert out == "" and len(error) == 1 and "no modality at all" in error[0]
    assert Store(db).checksum() == before


# -- training and encoding with missing rows ---------------------------------------------------------


def clustered(n: int = 240, missing: float = 0.4, seed: int = 0) -> FeatureSet:
    """Four classes seen by three modalities; ``missing`` of the items lose one or two of them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    protos = rng.standard_normal((4, 5)) * 2.0
    feats = {}
    for m, d in DIMS.items():
        w = rng.standard_normal((5, d))
        feats[m] = (np.tanh((protos[y] + 0.3 * rng.standard_normal((n, 5))) @ w) + 0.1 * rng.standard_normal((n, d))).astype(np.float32)
    hit = np.flatnonzero(rng.random(n) < missing)
    mods = list(DIMS)
    for i in hit:
        drop = rng.choice(3, size=int(rng.integers(1, 3)), replace=False)
        for j in drop:
            feats[mods[j]][i] = np.nan
    ids_ = np.array([f"i{i}" for i in range(n)], dtype=object)
    return FeatureSet("c", dict(DIMS), {"train": Split(ids_, feats, np.array([str(v) for v in y], dtype=object))}).validate()


CFG = TrainConfig(epochs=3, batch_size=32, latent=8, hidden=(16, 16), seed=3)


@pytest.mark.parametrize("name", ["paper", "aligned"])
def test_training_with_missing_rows_and_encoding_from_every_subset(name: str) -> None:
    fs = clustered()
    cfg = preset(name, epochs=3, batch_size=32, latent=8, hidden=(16, 16), seed=3)
    tm = train(fs, cfg)
    assert all(np.isfinite(v) for v in tm.history[-1]["losses"].values())
    x = fs.splits["train"].features
    for r in (1, 2, 3):
        for subset in combinations(DIMS, r):
            feats = {m: x[m] for m in subset}
            fused, per = encode(tm, feats)
            has_any = np.zeros(len(fused), dtype=bool)
            for m in subset:
                has = ~np.isnan(x[m]).all(axis=1)
                has_any |= has
                assert np.isfinite(per[m][has]).all() and np.isnan(per[m][~has]).all()
            for m in set(DIMS) - set(subset):
                assert np.isnan(per[m]).all()  # a modality not given is missing for every item
            assert np.isfinite(fused[has_any]).all() and np.isnan(fused[~has_any]).all()
            # without completion the fused latent is the mean of the present per-modality latents
            stack = np.stack([per[m] for m in subset])
            mean_fused, _ = encode(tm, feats, complete_missing=False)
            np.testing.assert_allclose(mean_fused[has_any], np.nanmean(stack[:, has_any], axis=0), rtol=1e-4, atol=1e-5)
            # with it, an item that has every modality keeps the mean; one lacking some is completed
            has_all = np.all([~np.isnan(per[m][:, 0]) for m in DIMS], axis=0)
            np.testing.assert_allclose(fused[has_all], mean_fused[has_all], rtol=1e-5, atol=1e-6)
            partial = has_any & ~has_all
            assert tm.completion is not None and partial.any()
            assert not np.allclose(fused[partial], mean_fused[partial])


def test_cli_train_says_missing_and_recommends_aligned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.duckdb"
    Store(db).add_dataset(load_path(write("npz", tmp_path / "d"), "gappy"))
    assert main(["train", "--dataset", "gappy", "--preset", "paper", "--epochs", "1", "--batch-size", "4", "--latent", "4",
                 "--db", str(db)]) == 0  # the paper preset has no modality dropout, so the aligned one is advised
    _, errs = capsys.readouterr()
    assert "missing modalities (audio: 2, image: 1, text: 2)" in errs and "--preset aligned" in errs
    assert "too few train items have every modality to fit latent completion" in errs
    assert main(["train", "--dataset", "gappy", "--preset", "aligned", "--epochs", "1", "--batch-size", "4",
                 "--latent", "4", "--db", str(db)]) == 0
    _, errs = capsys.readouterr()
    assert "--preset aligned" not in errs


def test_cli_train_reports_latent_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.duckdb"
    fs = clustered()
    Store(db).add_dataset(fs)
    complete = int(np.all([~np.isnan(x).all(axis=1) for x in fs.splits["train"].features.values()], axis=0).sum())
    assert main(["train", "--dataset", "c", "--epochs", "2", "--batch-size", "32", "--latent", "8", "--format", "json",
                 "--db", str(db)]) == 0
    out, errs = capsys.readouterr()
    assert json.loads(out)["completion_items"] == complete > 50
    assert f"completed fused latent (fitted on {complete} complete train items)" in errs
