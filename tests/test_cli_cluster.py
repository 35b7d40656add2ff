"""``propose``/``evaluate`` with ``--k auto``, ``--cluster`` and ``--resolution``: what ran is in the JSON,
``--cluster kmeans --k N`` is the paper's clustering exactly, and bad settings are one sentence."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from studio.cli import parse_k
from mmae_core.errors import ConfigError
from mmae_core.clustering.graph import DEFAULT_RESOLUTION
from mmae_core.clustering.proposals import propose
from store import Store
from tests.test_cli import db, run, trained_db  # noqa: F401  (fixtures)


def test_parse_k_accepts_auto_alone_and_among_numbers() -> None:
    assert parse_k("auto") == ("auto",) and parse_k("Auto, 10,20") == ("auto", 10, 20) and parse_k("5,9") == (5, 9)
    with pytest.raises(ConfigError, match="or auto"):
        parse_k("five")


def test_propose_defaults_to_auto_and_says_which_k_and_how(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, errs = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    k = rows[0]["k"]
    assert {r["k_found_by"] for r in rows} == {"leiden"} and {r["clustering"] for r in rows} == {"leiden"}
    assert {r["resolution"] for r in rows} == {DEFAULT_RESOLUTION} and k >= 2
    named = [r for r in rows if r["name"] != "unassigned"]
    assert len(named) == k and "found by leiden" in errs
    table, assign = Store(db).proposals("demo", "m1")
    assert table.attrs["k"] == k and len(table) == len(rows) and len(assign) == sum(r["size"] for r in rows)


def test_propose_kmeans_k_is_the_papers_clustering(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, errs = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--cluster", "kmeans", "--k", "6",
                          "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    ids, z = Store(db).latents("demo", "m1", "test", "fused")
    fs = Store(db).load_dataset("demo")
    want = propose(z, ids, 6, labels=fs.splits["test"].labels, seed=42, method="kmeans")
    assert [r["size"] for r in rows] == want.table["size"].tolist() and {r["k_found_by"] for r in rows} == {"given"}
    assert [r["representatives"] for r in rows] == want.table["representatives"].tolist()
    code2, out2, _ = run(capsys, db, "propose", "--dataset", "demo", "--model", "m1", "--k", "6", "--format", "json")
    assert [r["size"] for r in json.loads(out2)] == [r["size"] for r in rows]  # a number alone is still KMeans


def test_evaluate_k_auto_rows_carry_the_found_k(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, errs = run(capsys, db, "evaluate", "--dataset", "demo", "--model", "m1", "--k", "auto", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    assert {"image", "fused_pca", "mcca", "spectral_pca", "mmae"} <= {r["method"] for r in rows}
    assert all(r["k_found_by"] == "leiden" and r["resolution"] == DEFAULT_RESOLUTION and r["k"] >= 2 for r in rows)
    assert {r["cluster"] for r in rows if r["method"] != "spectral_pca"} == {"leiden"}
    assert "mmae: k = " in errs and "found by leiden" in errs
    store = Store(db)
    params = store.run_params(int(store.runs("demo")["id"].max()))
    assert params["k_grid"] == ["auto"] and params["cluster"] == "leiden" and params["resolution"] == DEFAULT_RESOLUTION


def test_evaluate_numeric_grid_keeps_the_papers_run_parameters(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, errs = run(capsys, db, "evaluate", "--dataset", "demo", "--model", "m1", "--k", "5", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    assert {r["cluster"] for r in rows if r["method"] != "spectral_pca"} == {"kmeans"}
    assert {r["k_found_by"] for r in rows} == {"given"} and all(r["sample_size"] is None for r in rows)
    store = Store(db)
    assert set(store.run_params(int(store.runs("demo")["id"].max()))) == {"k_grid", "seed", "n_init", "fused_weights"}


@pytest.mark.parametrize("argv, words", [
    (("evaluate", "--cluster", "leiden", "--k", "5"), "Leiden finds the number of clusters itself"),
    (("propose", "--cluster", "leiden", "--k", "5"), "Leiden finds the number of clusters itself"),
    (("propose", "--resolution", "0"), "resolution must be a positive number"),
    (("propose", "--k", "lots"), "k must be a whole number or 'auto'"),
    (("propose", "--resolution", "0.0001"), "finds one cluster"),
])
def test_bad_cluster_settings_are_one_sentence_and_change_nothing(db: Path, capsys: pytest.CaptureFixture[str],
                                                                   argv: tuple[str, ...], words: str) -> None:
    before = Store(db).checksum()
    code, out, errs = run(capsys, db, argv[0], "--dataset", "demo", "--model", "m1", *argv[1:])
    last = errs.strip().splitlines()[-1]  # progress lines may come first, on stderr
    assert code == 1 and out == "" and errs.count("error") == 1 and last.startswith("error: ") and words in last, errs
    assert Store(db).checksum() == before
