"""``search-eval`` and ``search`` end to end: the JSON contract, results that match a brute-force
ranking of the stored latents, vector queries encoded with the model's standardization, and every bad
input as one line on stderr with exit code 1 and nothing on stdout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from studio.cli import main
from mmae_core.config import preset
from mmae_core.evaluation.mcca import fit_search_space
from studio.pipeline import train_and_register
from mmae_core.search.retrieval import nearest, retrieval_metrics
from studio.search import CACHE, index_files, query_latent, search_items
from store import Store, copy_store

ROOT = Path(__file__).resolve().parents[1]
INSTANCE = ("recall_at_1", "recall_at_5", "recall_at_10", "median_rank")


def run(capsys: pytest.CaptureFixture[str], db: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--db", str(db)])
    out, errs = capsys.readouterr()
    return code, out, errs


def shared(store: Store, kinds: list[str], split: str = "test") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's vectors in the shared space, made here from its stored latents: a correlation-weighted
    MCCA fitted on the train split's per-modality latents; fused = the mean of an item's projections."""
    mods = ["image", "audio", "text"]
    space = fit_search_space({m: store.latents("demo", "al", "train", m)[1] for m in mods})
    views = {}
    for m in mods:
        ids, z = store.latents("demo", "al", split, m)
        views[m] = space.transform_view(m, z)
    return ids, {k: (sum(views.values()) / 3 if k == "fused" else views[k]) for k in kinds}


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo with a 3-epoch aligned model, built through the CLI."""
    db = tmp_path_factory.mktemp("search") / "search.duckdb"
    assert main(["demo", "--scale", "0.04", "--db", str(db)]) == 0
    assert main(["train", "--dataset", "demo", "--preset", "aligned", "--epochs", "3", "--model-name", "al",
                 "--db", str(db)]) == 0
    return db


@pytest.fixture()
def db(trained_db: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store.duckdb"
    copy_store(trained_db, dst)
    return dst


def test_search_eval_json_is_every_ordered_pair_with_class_and_instance_metrics(db, capsys):
    code, out, errs = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--space", "shared",
                          "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)  # stdout holds the JSON alone
    pairs = {(r["query"], r["target"]) for r in rows}
    mods = ("image", "audio", "text")
    assert pairs == {(a, b) for a in mods for b in mods if a != b} | {("fused", m) for m in mods}
    for r in rows:
        assert {"query", "target", "p_at_10", "map", "metric", "split", *INSTANCE} <= set(r)
        assert r["split"] == "test" and 0 <= r["p_at_10"] <= 1 and 0 <= r["map"] <= 1
    # the numbers are retrieval_metrics of the model's vectors in the shared space, under the metric it
    # reports; with --space latent, of the stored latents themselves
    store = Store(db)
    labels = store.load_dataset("demo").splits["test"].labels
    _, vecs = shared(store, [*mods, "fused"])
    assert {r["space"] for r in rows} == {"shared"} and "shared space" in errs and "retrieves better" in errs
    latent_rows = json.loads(run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--space", "latent",
                                 "--format", "json")[1])
    assert {r["space"] for r in latent_rows} == {"latent"}
    raw = {m: store.latents("demo", "al", "test", m)[1] for m in (*mods, "fused")}
    for got, per in ((rows, vecs), (latent_rows, raw)):
        ref = retrieval_metrics({m: per[m] for m in mods}, labels, fused=per["fused"], metric=got[0]["metric"])
        ref = ref.set_index(["query", "target"])
        for r in got:
            assert r["p_at_10"] == pytest.approx(ref.loc[(r["query"], r["target"]), "p_at_10"], abs=1e-6)
            assert r["recall_at_10"] == pytest.approx(ref.loc[(r["query"], r["target"]), "r_at_10"], abs=1e-6)
            assert r["median_rank"] == pytest.approx(ref.loc[(r["query"], r["target"]), "median_rank"])


def test_search_eval_best_is_the_metric_with_the_higher_mean_precision(db, capsys):
    code, out, _ = run(capsys, db, "search-eval", "--dataset", "demo", "--metric", "both", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 18 and {r["metric"] for r in rows} == {"cosine", "euclidean"}
    mean = {m: np.mean([r["p_at_10"] for r in rows if r["metric"] == m]) for m in ("cosine", "euclidean")}
    code, out, _ = run(capsys, db, "search-eval", "--dataset", "demo", "--format", "json")
    assert {r["metric"] for r in json.loads(out)} == {max(mean, key=mean.get)}


def test_search_eval_baseline_mcca_adds_its_rows_beside_the_models(db, capsys):
    from mmae_core.evaluation.mcca import search_space
    from mmae_core.model.standardize import Standardizer

    code, out, errs = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--baseline", "mcca",
                          "--metric", "cosine", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    assert [r["method"] for r in rows] == ["mmae"] * 9 + ["mcca"] * 9
    assert "worst modality pair" in errs and "mcca" in errs
    phases = [line.split(" retrieval")[0] for line in errs.splitlines() if " retrieval, every ordered pair" in line]
    assert phases == ["mmae: cosine", "mcca: cosine"]  # each slow phase is announced on stderr
    # the MCCA rows are retrieval_metrics of its correlation-weighted variates, fitted on train
    fs = Store(db).load_dataset("demo")
    std = Standardizer.fit(fs.splits["train"].features)
    views, fused = search_space(std.transform(fs.splits["train"].features), std.transform(fs.splits["test"].features))
    ref = retrieval_metrics(views, fs.splits["test"].labels, fused=fused, metric="cosine").set_index(["query", "target"])
    for r in rows[9:]:
        assert r["p_at_10"] == pytest.approx(ref.loc[(r["query"], r["target"]), "p_at_10"])
        assert r["median_rank"] == pytest.approx(ref.loc[(r["query"], r["target"]), "median_rank"])
    # under the default metric (best) each block is its own better metric
    code, out, errs = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--baseline", "mcca",
                          "--format", "json")
    assert code == 0, errs
    assert [r["method"] for r in json.loads(out)] == ["mmae"] * 9 + ["mcca"] * 9
    # without --baseline the rows are the model's alone, and say so
    code, out, _ = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--format", "json")
    assert {r["method"] for r in json.loads(out)} == {"mmae"}
    with pytest.raises(SystemExit) as exit_:
        run(capsys, db, "search-eval", "--dataset", "demo", "--baseline", "pca")
    out, errs = capsys.readouterr()
    assert exit_.value.code == 2 and out == "" and "invalid choice: 'pca'" in errs


def test_search_eval_baseline_supervised_shows_what_the_labels_allow(db, capsys):
    from mmae_core.model.standardize import Standardizer
    from mmae_core.search.supervised import supervised_search

    code, out, errs = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--baseline", "mcca",
                          "--baseline", "supervised", "--metric", "cosine", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    assert [r["method"] for r in rows] == ["mmae"] * 9 + ["mcca"] * 9 + ["supervised"] * 6  # no fused rows
    sup = [r for r in rows if r["method"] == "supervised"]
    assert {r["metric"] for r in sup} == {"posterior"} and {r["space"] for r in sup} == {"features"}
    assert all(r["recall_at_1"] is None and r["median_rank"] is None for r in sup)  # class metrics only
    assert "supervised knows the classes" in errs and "fitting a classifier of the" in errs
    fs = Store(db).load_dataset("demo")
    std = Standardizer.fit(fs.splits["train"].features)
    ref = supervised_search(std.transform(fs.splits["train"].features), fs.splits["train"].labels,
                            std.transform(fs.splits["test"].features), fs.splits["test"].labels).set_index(["query", "target"])
    for r in sup:
        assert r["p_at_10"] == pytest.approx(ref.loc[(r["query"], r["target"]), "p_at_10"])
    # a set without labels: one sentence, nothing on stdout
    Store(db).add_dataset(replace(fs, name="nolabels", splits={k: replace(v, labels=None) for k, v in fs.splits.items()}))
    code, _, _ = run(capsys, db, "train", "--dataset", "nolabels", "--epochs", "1", "--model-name", "n")
    assert code == 0
    code, out, errs = run(capsys, db, "search-eval", "--dataset", "nolabels", "--baseline", "supervised")
    assert code == 1 and out == "" and errs.strip().splitlines()[-1].startswith("error: the supervised search needs labels")
    assert "retrieval, every ordered pair" not in errs  # refused before the model's measurement


def test_search_item_json_matches_a_brute_force_ranking(db, capsys):
    code, out, errs = run(capsys, db, "search", "--dataset", "demo", "--item", "demo-test-000003", "--from", "text",
                          "--to", "image", "--top", "7", "--space", "shared", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    store = Store(db)
    ids, vecs = shared(store, ["text", "image"])
    idx, scores = nearest(vecs["text"][list(ids).index("demo-test-000003")], vecs["image"], top=7)
    assert [r["item_id"] for r in rows] == list(ids[idx])
    assert [r["rank"] for r in rows] == list(range(1, 8))
    np.testing.assert_allclose([r["score"] for r in rows], scores, atol=1e-5)
    # --space latent ranks by the stored latents themselves
    code, out, errs = run(capsys, db, "search", "--dataset", "demo", "--item", "demo-test-000003", "--from", "text",
                          "--to", "image", "--top", "7", "--space", "latent", "--format", "json")
    ids_q, zq = store.latents("demo", "al", "test", "text")
    ids_t, zt = store.latents("demo", "al", "test", "image")
    idx, scores = nearest(zq[list(ids_q).index("demo-test-000003")], zt, top=7)
    assert code == 0 and "raw latents" in errs and [r["item_id"] for r in json.loads(out)] == list(ids_t[idx])
    np.testing.assert_allclose([r["score"] for r in json.loads(out)], scores, atol=1e-5)
    assert {"label", "title", "caption", "tag", "status", "split", "metric"} <= set(rows[0])
    # table output, fused target, euclidean, another split
    code, out, _ = run(capsys, db, "search", "--dataset", "demo", "--item", "demo-train-000001", "--from", "audio",
                       "--to", "fused", "--metric", "euclidean")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["rank", "item_id", "score"] and len(out.splitlines()) == 11


def test_search_by_vector_encodes_with_the_models_standardization(db, capsys, tmp_path):
    fs = Store(db).load_dataset("demo")
    f = tmp_path / "q.npy"
    np.save(f, fs.splits["test"].features["audio"][5].astype(np.float64))
    code, out, errs = run(capsys, db, "search", "--dataset", "demo", "--vector", str(f), "--from", "audio",
                          "--to", "text", "--format", "json")
    assert code == 0, errs
    by_vector = [r["item_id"] for r in json.loads(out)]
    code, out, _ = run(capsys, db, "search", "--dataset", "demo", "--item", fs.splits["test"].item_ids[5],
                       "--from", "audio", "--to", "text", "--format", "json")
    assert by_vector == [r["item_id"] for r in json.loads(out)]


def bad_vector(tmp_path: Path, arr: np.ndarray) -> str:
    f = tmp_path / f"bad{len(list(tmp_path.glob('bad*.npy')))}.npy"
    np.save(f, arr)
    return str(f)


@pytest.mark.parametrize("case, words", [
    ("unknown from", "'smell' is not a modality"),
    ("unknown to", "'video' is not a modality"),
    ("no item", "item 'nope' is not in dataset 'demo'"),
    ("wrong split", "is not in the train split"),
    ("no split", "no latents for a 'dev' split"),
    ("wrong dim", "shape (7,)"),
    ("nan", "NaN"),
    ("no file", "is not a file"),
    ("no query", "give a query"),
    ("both", "not both"),
    ("top 0", "--top must be at least 1"),
    ("fused vector", "'fused' is not a modality"),
    ("unknown model", "model"),
])
def test_bad_input_is_one_line_and_exit_1(db, capsys, tmp_path, case, words):
    base = ["search", "--dataset", "demo", "--model", "al"]
    item = ["--item", "demo-test-000003"]
    argv = {
        "unknown from": [*base, *item, "--from", "smell", "--to", "image"],
        "unknown to": [*base, *item, "--from", "text", "--to", "video"],
        "no item": [*base, "--item", "nope", "--from", "text", "--to", "image"],
        "wrong split": [*base, *item, "--from", "text", "--to", "image", "--split", "train"],
        "no split": [*base, *item, "--from", "text", "--to", "image", "--split", "dev"],
        "wrong dim": [*base, "--vector", bad_vector(tmp_path, np.zeros(7)), "--from", "audio", "--to", "image"],
        "nan": [*base, "--vector", bad_vector(tmp_path, np.full(1024, np.nan)), "--from", "audio", "--to", "image"],
        "no file": [*base, "--vector", str(tmp_path / "none.npy"), "--from", "audio", "--to", "image"],
        "no query": [*base, "--from", "audio", "--to", "image"],
        "both": [*base, *item, "--vector", bad_vector(tmp_path, np.zeros(7)), "--from", "audio", "--to", "image"],
        "top 0": [*base, *item, "--from", "text", "--to", "image", "--top", "0"],
        "fused vector": [*base, "--vector", bad_vector(tmp_path, np.zeros(7)), "--from", "fused", "--to", "image"],
        "unknown model": ["search-eval", "--dataset", "demo", "--model", "ghost"],
    }[case]
    code, out, errs = run(capsys, db, *argv)
    assert code == 1 and out == ""
    lines = errs.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], errs
    assert lines[0].endswith(".") and lines[0].count(". ") == 0


def test_a_model_without_per_modality_latents_is_refused_in_a_sentence(db, capsys):
    store = Store(db)
    fs = store.load_dataset("demo")
    latents = {s: {"fused": np.zeros((sp.n, 128), dtype=np.float32)} for s, sp in fs.splits.items()}
    store.add_model("demo", "fused-only", b"not used", {}, {}, latents)
    for argv in (["search-eval", "--dataset", "demo", "--model", "fused-only"],
                 ["search", "--dataset", "demo", "--model", "fused-only", "--item", "demo-test-000001",
                  "--from", "text", "--to", "fused"]):
        code, out, errs = run(capsys, db, *argv)
        assert code == 1 and out == "" and "has no per-modality latents" in errs and len(errs.strip().splitlines()) == 1


def test_the_index_is_built_once_and_rebuilt_when_the_latents_change(db, tmp_path):
    CACHE.clear()
    store = Store(db)
    q = query_latent(store, "demo", "al", "text", item="demo-test-000003")
    first = search_items(store, "demo", "al", q, "image", space="shared")
    builds = CACHE.builds
    again = search_items(store, "demo", "al", q, "image", space="shared")
    assert CACHE.builds == builds and again.equals(first)
    # the same file, dataset and model name, but other latents (the store was rebuilt with another seed)
    other = tmp_path / "other.duckdb"
    assert main(["demo", "--scale", "0.04", "--db", str(other)]) == 0
    assert main(["train", "--dataset", "demo", "--preset", "aligned", "--epochs", "1", "--seed", "7",
                 "--model-name", "al", "--db", str(other)]) == 0
    copy_store(other, db)
    store = Store(db)
    ids, vecs = shared(store, ["text", "image"])
    q2 = query_latent(store, "demo", "al", "text", item="demo-test-000003")
    got = search_items(store, "demo", "al", q2, "image", space="shared")
    idx, _ = nearest(vecs["text"][list(ids).index("demo-test-000003")], vecs["image"], top=10)
    # the shared space and the index, both refitted for the new latents
    assert list(got["item_id"]) == list(ids[idx]) and CACHE.builds == builds + 2


def test_search_eval_leaves_out_instance_metrics_where_modalities_are_not_one_media_item(tmp_path, capsys):
    from mmae_core.data.demo import make_demo

    fs = make_demo("paired", seed=1, scale=0.04)
    fs.attrs["instance_pairs"] = False  # e.g. LUMA: image, audio and text of an item were paired by class
    db = tmp_path / "p.duckdb"
    store = Store(db)
    store.add_dataset(fs)
    train_and_register(store, "paired", preset("aligned", epochs=1), model_name="m")
    code, out, _ = run(capsys, db, "search-eval", "--dataset", "paired", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and len(rows) == 9 and not (set(INSTANCE) & set(rows[0])) and "p_at_10" in rows[0]


def test_real_process_keeps_stdout_for_json(db):
    env = {**os.environ, "MMAE_STUDIO_DB": str(db), "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "mmae_core", "search", "--dataset", "demo", "--item", "demo-test-000002",
                        "--from", "image", "--to", "audio", "--top", "3", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    assert [r["rank"] for r in json.loads(p.stdout)] == [1, 2, 3] and "nearest" in p.stderr
    p = subprocess.run([sys.executable, "-m", "mmae_core", "search", "--dataset", "demo", "--item", "x",
                        "--from", "image", "--to", "audio"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 1 and p.stdout == "" and p.stderr.startswith("error: item 'x'")


def test_a_cache_folder_that_cannot_be_written_costs_one_line_not_a_traceback(db):
    """A store on a read-only share, or a file where the cache folder would go: search still answers,
    and stderr says in one line why the next call will be slower."""
    db.with_name(db.name + ".indexes").write_text("not a folder")
    env = {**os.environ, "MMAE_STUDIO_DB": str(db), "PYTHONPATH": str(ROOT)}
    env.pop("MMAE_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "mmae_core", "search", "--dataset", "demo", "--item", "demo-test-000002",
                        "--from", "image", "--to", "audio", "--top", "3", "--format", "json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert p.returncode == 0 and [r["rank"] for r in json.loads(p.stdout)] == [1, 2, 3], p.stderr
    warned = [line for line in p.stderr.splitlines() if "could not be saved" in line]
    assert len(warned) == 1 and "the next call fits it again" in warned[0] and "Traceback" not in p.stderr, p.stderr


def test_a_new_process_loads_the_saved_index_instead_of_rebuilding(db, tmp_path):
    """What a second CLI call does with a large index (files of any size here: min_rows=0)."""
    from mmae_core.search.index import IndexCache, IndexFiles

    store = Store(db)
    q = query_latent(store, "demo", "al", "text", item="demo-test-000003")
    first_files = IndexFiles(tmp_path / "idx", min_rows=0)
    said: list[str] = []
    first = search_items(store, "demo", "al", q, "image", cache=IndexCache(), files=first_files, log=said.append)
    assert first_files.saves == 3 and first_files.loads == 0  # the index, the tag space, the shared space in it
    # the slow first-time work is announced: the two spaces, the model's tags and a classifier per modality
    assert [" ".join(m.split(" ")[:3]) for m in said] == [
        "fitting the tag", "fitting the shared", "finding the model's", "tag space: a", "tag space: a", "tag space: a",
        "building the search"]
    later_files = IndexFiles(tmp_path / "idx", min_rows=0)  # a new process: empty memory cache
    later_cache = IndexCache()
    said.clear()
    again = search_items(store, "demo", "al", q, "image", cache=later_cache, files=later_files, log=said.append)
    # nothing refitted: the index and the tag space, which holds its shared space (that file is not read)
    assert later_files.loads == 2 and later_files.saves == 0 and again.equals(first)
    assert said == []  # nothing slow to announce
    # the raw latents' index is a file of its own
    search_items(store, "demo", "al", q, "image", cache=later_cache, files=later_files, space="latent")
    assert later_files.saves == 1
    assert index_files(store).folder == db.with_name(db.name + ".indexes")


def test_a_damaged_saved_space_is_refitted_not_an_error(db, tmp_path):
    from studio.search import shared_space
    from mmae_core.search.index import IndexCache, IndexFiles

    store = Store(db)
    q = query_latent(store, "demo", "al", "text", item="demo-test-000003")
    files = IndexFiles(tmp_path / "idx", min_rows=0)
    first = search_items(store, "demo", "al", q, "image", cache=IndexCache(), files=files)
    saved = list((tmp_path / "idx").glob("*.arrays.npz"))
    assert len(saved) == 2  # the shared space and the tag space
    for f in saved:
        f.write_bytes(b"not an npz")
    later = IndexFiles(tmp_path / "idx", min_rows=0)
    space = shared_space(store, "demo", "al", cache=IndexCache(), files=later)
    assert later.loads == 0 and space is not None  # refitted from the stored latents
    again = search_items(store, "demo", "al", q, "image", cache=IndexCache(), files=later)
    assert list(again["item_id"]) == list(first["item_id"])


def test_the_shared_space_is_saved_even_when_the_index_is_too_small_to_save(db, tmp_path):
    """Each CLI call is a new process: without the saved space every call below the index threshold
    would refit the CCA (about 2.5 s at 100k items)."""
    from mmae_core.search.index import IndexCache, IndexFiles

    store = Store(db)
    q = query_latent(store, "demo", "al", "text", item="demo-test-000003")
    first_files = IndexFiles(tmp_path / "idx", min_rows=10**9)  # no index is ever large enough
    first = search_items(store, "demo", "al", q, "image", cache=IndexCache(), files=first_files)
    assert first_files.saves == 2 and len(list((tmp_path / "idx").glob("*.arrays.npz"))) == 2
    assert not list((tmp_path / "idx").glob("*.faiss"))
    later_files = IndexFiles(tmp_path / "idx", min_rows=10**9)
    again = search_items(store, "demo", "al", q, "image", cache=IndexCache(), files=later_files)
    assert later_files.loads == 1 and later_files.saves == 0 and again.equals(first)  # the tag space, not refitted


def tagged(store: Store, kinds: list[str], model: str = "al", split: str = "test") -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model's vectors in the tag space, made here from its stored latents: its train latents' tags
    and classifiers (seeded by the model's seed) beside the shared space; fused = the mean of an item's views."""
    from mmae_core.search.spaces import fit_tag_space

    mods = ["image", "audio", "text"]
    space = fit_tag_space({m: store.latents("demo", model, "train", m)[1] for m in mods},
                          store.latents("demo", model, "train", "fused")[1], seed=store.model_config("demo", model)["seed"])
    views = {}
    for m in mods:
        ids, z = store.latents("demo", model, split, m)
        views[m] = space.transform_view(m, z)
    return ids, {k: (sum(views.values()) / 3 if k == "fused" else views[k]) for k in kinds}


def test_search_compares_in_the_tag_space_by_default(db, capsys):
    """Without --space, search-eval measures and search ranks by the tag space: the same numbers as a
    brute-force ranking of the vectors made from the stored latents."""
    code, out, errs = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "al", "--format", "json")
    assert code == 0, errs
    rows = json.loads(out)
    assert {r["space"] for r in rows} == {"tags"} and "tag space" in errs and "no tag space" not in errs
    store = Store(db)
    mods = ["image", "audio", "text"]
    ids, vecs = tagged(store, [*mods, "fused"])
    labels = store.load_dataset("demo").splits["test"].labels
    ref = retrieval_metrics({m: vecs[m] for m in mods}, labels, fused=vecs["fused"], metric=rows[0]["metric"])
    ref = ref.set_index(["query", "target"])
    for r in rows:
        assert r["p_at_10"] == pytest.approx(ref.loc[(r["query"], r["target"]), "p_at_10"], abs=1e-6)
        assert r["recall_at_10"] == pytest.approx(ref.loc[(r["query"], r["target"]), "r_at_10"], abs=1e-6)
    code, out, errs = run(capsys, db, "search", "--dataset", "demo", "--item", "demo-test-000003", "--from", "text",
                          "--to", "image", "--top", "7", "--format", "json")
    assert code == 0 and "in the tag space" in errs, errs
    idx, scores = nearest(vecs["text"][list(ids).index("demo-test-000003")], vecs["image"], top=7)
    assert [r["item_id"] for r in json.loads(out)] == list(ids[idx])
    np.testing.assert_allclose([r["score"] for r in json.loads(out)], scores, atol=1e-5)


def test_a_model_whose_latents_give_no_tags_is_searched_in_the_shared_space_and_says_so(db, capsys):
    """Fused latents that are all alike give Leiden one community: there are no tags to learn, so the
    search falls back to the shared space of the per-modality latents and says it in one line."""
    store = Store(db)
    fs = store.load_dataset("demo")
    latents = {s: {**{m: store.latents("demo", "al", s, m)[1] for m in fs.modalities},
                   "fused": np.zeros((sp.n, 128), dtype=np.float32)} for s, sp in fs.splits.items()}
    store.add_model("demo", "flat", b"not used", {"seed": 1}, {}, latents)
    code, out, errs = run(capsys, db, "search-eval", "--dataset", "demo", "--model", "flat", "--format", "json")
    assert code == 0, errs
    assert {r["space"] for r in json.loads(out)} == {"shared"}
    said = [line for line in errs.splitlines() if "no tag space" in line]
    assert len(said) == 1 and "used the shared space" in said[0], errs
    code, out, errs = run(capsys, db, "search", "--dataset", "demo", "--model", "flat", "--item", "demo-test-000003",
                          "--from", "text", "--to", "image", "--format", "json")
    assert code == 0 and "in the shared space" in errs and "no tag space" in errs, errs
