"""The command line end to end on a small demo: the public contract batch scripts depend on.

Most calls run ``main(argv)`` in-process (fast, stdout/stderr captured); a few run the real
``python -m mmae_core`` in a subprocess to pin the environment variable, exit codes and the rule that
stdout holds only the JSON.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from studio.cli import main
from store import Store, copy_store

ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv[:1], *argv[1:], "--db", str(db)] if argv[0] != "tag" else [*argv, "--db", str(db)])
    out, errs = capsys.readouterr()
    return code, out, errs


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a small demo and a 3-epoch model, built once through the CLI itself."""
    db = tmp_path_factory.mktemp("cli") / "cli.duckdb"
    assert main(["demo", "--scale", "0.04", "--db", str(db)]) == 0
    assert main(["train", "--dataset", "demo", "--epochs", "3", "--model-name", "m1", "--db", str(db)]) == 0
    return db


@pytest.fixture()
def db(trained_db: Path, tmp_path: Path) -> Path:
    """A private copy per test, so tests can change the store freely."""
    dst = tmp_path / "store.duckdb"
    copy_store(trained_db, dst)
    return dst


def test_demo_and_train_registered(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "models", "--format", "json")
    assert code == 0
    models = json.loads(out)
    assert [m["name"] for m in models] == ["m1"]
    store = Store(db)
    ids, z = store.latents("demo", "m1", "test", "fused")
    fs = store.load_dataset("demo")
    assert z.shape == (fs.splits["test"].n, 128) and len(ids) == fs.splits["test"].n
    for m in fs.modalities:
        assert store.latents("demo", "m1", "ood", m)[1].shape[1] == 128


def test_evaluate_json_contract(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, errs = run(capsys, db, "evaluate", "--dataset", "demo", "--model", "m1", "--k", "5,10", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)  # stdout holds the JSON alone
    methods = {r["method"] for r in rows}
    assert {"image", "audio", "text", "fused_pca", "mcca", "mmae"} <= methods
    for r in rows:
        assert {"method", "k", "split", "silhouette", "ari", "nmi"} <= set(r)
        assert r["split"] == "test" and r["k"] in (5, 10)
        assert 0 <= r["nmi"] <= 1
    assert len(Store(db).runs("demo")) == 1


def test_evaluate_csv_and_paper_rows(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "evaluate", "--dataset", "demo", "--k", "5", "--format", "csv", "--paper")
    assert code == 0
    from io import StringIO

    df = pd.read_csv(StringIO(out))
    assert (df["source"] == "paper").sum() >= 9
    assert "mmae" in set(df["method"])


def test_evaluate_n_init_reaches_the_grid_and_the_run(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--n-init`` is the KMeans starts of every method; the stored run records it."""
    from mmae_core.config import EvalConfig
    from studio.pipeline import evaluate_model

    code, out, errs = run(capsys, db, "evaluate", "--dataset", "demo", "--model", "m1", "--k", "5,9", "--n-init", "7",
                          "--format", "json")
    assert code == 0, errs
    got = pd.DataFrame(json.loads(out)).set_index(["method", "k"]).sort_index()
    want = evaluate_model(Store(db), "demo", "m1", EvalConfig(k_grid=(5, 9), n_init=7), save=False)
    want = want.set_index(["method", "k"]).sort_index()
    np.testing.assert_allclose(got[["ari", "nmi"]].to_numpy(float), want[["ari", "nmi"]].to_numpy(float), atol=1e-12)
    store = Store(db)
    assert store.run_params(int(store.runs("demo")["id"].max()))["n_init"] == 7
    before = store.checksum()
    code, out, errs = run(capsys, db, "evaluate", "--dataset", "demo", "--n-init", "0")
    assert code == 1 and out == "" and errs.count("\n") == 1 and "KMeans starts" in errs
    assert Store(db).checksum() == before


def test_k_too_large_is_one_sentence(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = Store(db).checksum()
    code, out, errs = run(capsys, db, "evaluate", "--dataset", "demo", "--k", "100000", "--format", "json")
    assert code == 1 and out == ""
    assert errs.count("\n") == 1 and "k=100000" in errs
    assert Store(db).checksum() == before


def test_propose_tag_undo_export(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--k", "8", "--format", "json")
    assert code == 0
    props = json.loads(out)
    assert len(props) == 8 and {"cluster", "size", "name", "purity", "cohesion"} <= set(props[0])
    c0, c1 = props[0]["cluster"], props[1]["cluster"]

    assert main(["tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", str(c0), "--curator", "ana", "--db", str(db)]) == 0
    assert main(["tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", str(c1), "--name", "birds",
                 "--curator", "ben", "--db", str(db)]) == 0
    assert main(["tag", "rename", "--dataset", "demo", "--tag", "birds", "--to", "=cmd|calc", "--curator", "ana", "--db", str(db)]) == 0
    capsys.readouterr()
    cat = Store(db).catalog("demo")
    assert (cat["tag"] == "=cmd|calc").sum() == props[1]["size"]
    assert (cat["tag"] == props[0]["name"]).sum() == props[0]["size"]

    code, out, _ = run(capsys, db, "tag", "undo", "--dataset", "demo", "--curator", "ana")
    assert code == 0
    cat = Store(db).catalog("demo")
    assert (cat["tag"] == "birds").sum() == props[1]["size"] and not (cat["tag"] == "=cmd|calc").any()

    code, out, _ = run(capsys, db, "tag", "history", "--dataset", "demo", "--format", "json")
    hist = json.loads(out)
    assert [h["action"] for h in hist][:2] == ["undo", "rename"]
    assert {h["curator"] for h in hist} == {"ana", "ben"}

    item = cat["item_id"].iloc[0]
    assert main(["tag", "set", "--dataset", "demo", "--item", item, "--tag", "special", "--curator", "cy", "--db", str(db)]) == 0
    assert main(["tag", "merge", "--dataset", "demo", "--tags", f"birds,special", "--into", "animals", "--curator", "cy", "--db", str(db)]) == 0
    capsys.readouterr()

    for fmt in ("csv", "parquet", "json"):
        out_file = tmp_path / f"catalog.{fmt}"
        code, _, errs = run(capsys, db, "export", "--dataset", "demo", "--format", fmt, "--out", str(out_file))
        assert code == 0, errs
        assert out_file.exists()
    back = pd.read_parquet(tmp_path / "catalog.parquet")
    tagged = back[back["tag"].notna()]
    assert (tagged["tag"] == "animals").sum() == props[1]["size"] + 1
    assert {"item_id", "tag", "cluster", "model", "curator", "tagged_at"} <= set(back.columns)
    csv_text = (tmp_path / "catalog.csv").read_text()
    assert "animals" in csv_text


def test_reject_and_unknown_cluster(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--k", "4")
    assert main(["tag", "reject", "--dataset", "demo", "--model", "m1", "--cluster", "0", "--db", str(db)]) == 0
    capsys.readouterr()
    code = main(["tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", "99", "--db", str(db)])
    _, errs = capsys.readouterr()
    assert code == 1 and errs.startswith("error: ") and errs.count("\n") == 1


def test_import_folder_and_refuse_duplicate_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 20)):
        (tmp_path / "src" / split).mkdir(parents=True)
        np.save(tmp_path / "src" / split / "video.npy", rng.normal(size=(n, 7)).astype(np.float32))
        np.save(tmp_path / "src" / split / "speech.npy", rng.normal(size=(n, 5)).astype(np.float32))
        np.save(tmp_path / "src" / split / "labels.npy", rng.integers(0, 3, n))
    db = tmp_path / "s.duckdb"
    code, out, _ = run(capsys, db, "import", str(tmp_path / "src"), "--name", "mine", "--format", "json")
    assert code == 0
    assert json.loads(out)["dataset"] == "mine"
    before = Store(db).checksum()
    code, out, errs = run(capsys, db, "import", str(tmp_path / "src"), "--name", "mine")
    assert code == 1 and "--replace" in errs and errs.count("error:") == 1 and errs.endswith(".\n")
    assert Store(db).checksum() == before
    code, _, _ = run(capsys, db, "import", str(tmp_path / "src"), "--name", "mine", "--replace")
    assert code == 0


def test_bad_import_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad" / "train").mkdir(parents=True)
    np.save(tmp_path / "bad" / "train" / "a.npy", np.zeros((10, 3), np.float32))
    np.save(tmp_path / "bad" / "train" / "b.npy", np.zeros((9, 3), np.float32))
    db = tmp_path / "s.duckdb"
    Store(db)  # an empty store exists first
    before = Store(db).checksum()
    code, out, errs = run(capsys, db, "import", str(tmp_path / "bad"), "--name", "x")
    assert code == 1 and out == ""
    assert "b.npy" in errs or "a.npy" in errs
    assert Store(db).checksum() == before


def test_subprocess_env_db_and_stdout_is_json(trained_db: Path, tmp_path: Path) -> None:
    db = tmp_path / "env.duckdb"
    copy_store(trained_db, db)
    env = {**os.environ, "MMAE_STUDIO_DB": str(db)}
    p = subprocess.run([sys.executable, "-m", "mmae_core", "propose", "--dataset", "demo", "--k", "3", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)) == 3  # nothing but JSON on stdout
    assert "clustering" in p.stderr  # progress went to stderr
    p = subprocess.run([sys.executable, "-m", "mmae_core", "train", "--dataset", "nope"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip().count("\n") == 0 and "nope" in p.stderr


def test_train_without_epochs_sizes_them_to_a_small_split_and_says_so(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n = Store(db).split_sizes("demo")["train"]
    code, out, errs = run(capsys, db, "train", "--dataset", "demo", "--preset", "reliability", "--model-name", "sized",
                          "--format", "json")
    assert code == 0 and json.loads(out)["config"]["epochs"] == 20 and n < 1_500
    assert f"20 epochs for {n:,} train items" in errs and "--epochs sets them" in errs


def test_train_takes_a_weight_decay_and_records_it(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--weight-decay", "0.05",
                       "--model-name", "wd", "--format", "json")
    assert code == 0 and json.loads(out)["config"]["weight_decay"] == 0.05
    assert Store(db).model_config("demo", "wd")["weight_decay"] == 0.05
    code, _, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--weight-decay", "-1")
    assert code != 0 and "weight decay must be in [0, 10)" in errs


def test_train_takes_modality_dropout_and_alignment_weight_over_the_preset(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--preset", "aligned",
                       "--align-weight", "0", "--modality-dropout", "0.3", "--model-name", "a0", "--format", "json")
    cfg = json.loads(out)["config"]
    assert code == 0 and (cfg["align_weight"], cfg["modality_dropout"], cfg["weight_decay"]) == (0.0, 0.3, 0.3)
    assert Store(db).model_config("demo", "a0")["align_weight"] == 0.0
    code, _, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--modality-dropout", "1")
    assert code != 0 and "modality dropout must be in [0, 1)" in errs and errs.strip().count("\n") == 0
    code, _, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--align-weight", "-0.5")
    assert code != 0 and "alignment weight must be non-negative" in errs


def test_train_takes_input_noise_over_the_preset_and_refuses_a_negative_one(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmae_core.config import DEFAULT_PRESET, PRESETS

    assert PRESETS[DEFAULT_PRESET].input_noise > 0 and PRESETS["paper"].input_noise == 0
    code, out, _ = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--input-noise", "0",
                       "--model-name", "clean", "--format", "json")
    assert code == 0 and json.loads(out)["config"]["input_noise"] == 0.0
    assert Store(db).model_config("demo", "clean")["input_noise"] == 0.0
    before = Store(db).list_models("demo")["name"].tolist()
    code, out, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--input-noise", "-0.1")
    assert code != 0 and out == "" and errs.strip().count("\n") == 0 and "input noise must be in [0, 10)" in errs
    assert Store(db).list_models("demo")["name"].tolist() == before


def test_train_still_accepts_parallel_and_says_on_stderr_that_it_does_nothing(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--parallel", "ops",
                          "--model-name", "ops", "--format", "json")
    assert code == 0 and "parallel" not in json.loads(out)["config"]
    notice = [line for line in errs.splitlines() if "--parallel" in line]
    assert notice == ["note: --parallel no longer does anything (training runs one autograd step on every core); it is accepted so existing scripts keep working."]
    assert "(autograd, fused Adam" in errs
    code, _, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--model-name", "default")
    assert code == 0 and "--parallel" not in errs


def test_tag_accept_keeps_hand_set_tags_unless_replace_manual(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--k", "4", "--format", "json")
    props = json.loads(out)
    c0 = props[0]["cluster"]
    _, members = Store(db).proposals("demo", "m1")
    item = str(members.loc[members["cluster"] == c0, "item_id"].iloc[0])
    assert main(["tag", "set", "--dataset", "demo", "--item", item, "--tag", "by-hand", "--curator", "cy", "--db", str(db)]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, db, "tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", str(c0),
                       "--curator", "ana", "--format", "json")
    res = json.loads(out)
    assert code == 0 and res["manual"] == "keep" and res["kept_manual"] == 1
    assert Store(db).catalog("demo").set_index("item_id").loc[item, "tag"] == "by-hand"
    run(capsys, db, "tag", "undo", "--dataset", "demo", "--curator", "ana")
    code, out, _ = run(capsys, db, "tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", str(c0),
                       "--curator", "ana", "--replace-manual", "--format", "json")
    assert code == 0 and json.loads(out)["replaced_manual"] == 1
    assert Store(db).catalog("demo").set_index("item_id").loc[item, "tag"] == props[0]["name"]
    code, out, _ = run(capsys, db, "tag", "history", "--dataset", "demo", "--format", "json")
    assert "replaced 1 hand-set tag" in json.loads(out)[0]["summary"]
    with pytest.raises(SystemExit):  # argparse: the two choices exclude each other
        main(["tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", "0", "--keep-manual",
              "--replace-manual", "--db", str(db)])


def test_tag_rename_onto_an_existing_tag_is_refused_as_on_the_dashboard(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One tag semantics: a rename that would merge two tags is refused in one sentence (the
    dashboard refuses it too); ``tag merge`` is the way to combine them."""
    run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--k", "4")
    for cluster, name in ((0, "dogs"), (1, "cats")):
        assert run(capsys, db, "tag", "accept", "--dataset", "demo", "--model", "m1", "--cluster", str(cluster),
                   "--name", name, "--curator", "ana")[0] == 0
    before = Store(db).checksum()
    code, out, errs = run(capsys, db, "tag", "rename", "--dataset", "demo", "--tag", "dogs", "--to", "cats", "--curator", "ana")
    assert code == 1 and out == "" and errs.count("\n") == 1
    assert "A tag named 'cats' already exists" in errs and "`tag merge`" in errs
    assert Store(db).checksum() == before
    code, _, _ = run(capsys, db, "tag", "merge", "--dataset", "demo", "--tags", "dogs", "--into", "cats", "--curator", "ana")
    assert code == 0 and set(Store(db).catalog("demo")["tag"].dropna()) == {"cats"}


def test_train_defaults_to_the_new_preset_and_says_so_paper_is_one_option_away(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmae_core.config import DEFAULT_PRESET, PRESETS

    code, out, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--model-name", "d", "--format", "json")
    assert code == 0 and DEFAULT_PRESET != "paper"
    assert json.loads(out)["config"] == {**PRESETS[DEFAULT_PRESET].to_dict(), "epochs": 1}
    assert f"preset {DEFAULT_PRESET} (the default" in errs
    code, out, errs = run(capsys, db, "train", "--dataset", "demo", "--epochs", "1", "--preset", "paper", "--model-name", "p",
                          "--format", "json")
    assert code == 0 and json.loads(out)["config"] == {**PRESETS["paper"].to_dict(), "epochs": 1}
    assert "preset paper\n" in errs


def test_propose_defaults_to_k_auto_by_leiden_and_kmeans_k_reproduces_the_paper(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mmae_core.clustering.proposals import propose

    code, out, errs = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and {r["k_found_by"] for r in rows} == {"leiden"} and {r["clustering"] for r in rows} == {"leiden"}
    assert "clustering leiden, k " in errs and "found by Leiden" in errs
    assert rows[0]["k"] == len([r for r in rows if r["name"] != "unassigned"]) >= 2
    code, out, errs = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--cluster", "kmeans", "--k", "5",
                          "--format", "json")
    rows = json.loads(out)
    assert code == 0 and "clustering kmeans, k 5 given" in errs and {r["k_found_by"] for r in rows} == {"given"}
    store = Store(db)
    ids, z = store.latents("demo", "m1", "test", "fused")
    want = propose(z, ids, 5, labels=store.load_dataset("demo").splits["test"].labels, seed=42, method="kmeans")
    assert [r["size"] for r in rows] == want.table["size"].tolist()
    assert [r["representatives"] for r in rows] == want.table["representatives"].tolist()
    code, _, errs = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--cluster", "leiden", "--k", "5")
    assert code != 0 and "Leiden finds the number of clusters itself" in errs and errs.strip().count("\n") == 0
