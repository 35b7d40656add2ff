"""Loading a feature set from files: a folder, a zip, a single file or a browser upload.

Every entry point ends in the same path (plan the layout from file names, load split by split,
check the splits against each other, ``FeatureSet.validate``), so an upload, a server-side folder
and the CLI accept exactly the same data and refuse it with the same sentences. Structural problems
are caught while loading because only then do we know which file to name; ``validate`` runs last as
the one definition of a well-formed set.
"""
from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import DataError
from mmae_core.data.assemble import Loaded, load_split
from mmae_core.data.layout import FileRef, Layout, SplitFiles, classify_single, plan
from mmae_core.data.zips import extract, open_checked, safe_relpath

DEFAULT_MAX_UNCOMPRESSED = 4 * 2**30

__all__ = ["load_path", "load_files", "check_upload_size", "import_bytes", "DEFAULT_MAX_UNCOMPRESSED"]


F = TypeVar("F", bound=Callable[..., FeatureSet])
_LOWER_STARTS = ("the ", "column ", "array ", "item ")


def _capitalised(fn: F) -> F:
    """Messages are assembled from parts such as "array 'a' in train.npz"; start them with a capital
    (but never touch one that starts with a file name)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> FeatureSet:
        try:
            return fn(*args, **kwargs)
        except DataError as exc:
            msg = str(exc)
            if msg.startswith(_LOWER_STARTS):
                raise DataError(msg[0].upper() + msg[1:]) from exc
            raise

    return wrapper  # type: ignore[return-value]


@_capitalised
def load_path(path: str | Path, name: str, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
              require_train: bool = True, root: str | Path | None = None, stream: bool = False,
              stage: Path | None = None) -> FeatureSet:
    """Load a folder, a ``.zip``, an ``.npz`` (train unless named ``{split}.npz``) or one ``.npy``/``.parquet``/``.csv``.

    ``require_train=False`` is for items that are only scored, never trained on (a new upload ranked
    by novelty): any split names, checked against the first split instead of train.

    ``stream``: the ``.npy`` feature files of a folder stay on disk and are read in windows
    (``lazy.NpyWindows``): the set must be stored (``Store.add_dataset`` copies it window by window)
    before those files change. With ``stage`` too (a folder the caller owns, and removes after
    storing the set), Parquet feature tables are converted there row group by row group, and a
    ``.zip`` member by member (``.npy`` members decompressed window by window, a Parquet member
    extracted there only while it is read), so memory stays near one window whatever the archive's
    size (``stream`` module). CSV tables and ``.npz`` files are read whole as before.

    ``root`` (the dashboard's data root): every file that will be read must resolve inside it, so a
    symbolic link in the folder cannot bring in a file from elsewhere on the server."""
    p = Path(path)
    shown = str(path)
    if not p.exists():
        raise DataError(f"{shown} does not exist; check the path.")
    if p.is_dir():
        top = shown.rstrip("/\\") or shown
        rels = _walk(p)
        layout = plan(rels, lambda rel: FileRef(p / rel, f"{top}/{rel}"), shown)
        if root is not None:
            for ref in layout.used():
                _check_inside(ref.path, ref.shown, Path(root))
        return _build(layout, name, shown, max_uncompressed, require_train, stream, stage)
    if root is not None:
        _check_inside(p, shown, Path(root))
    return _load_file(p, shown, name, max_uncompressed, require_train, stage if stream else None)


def _check_inside(path: Path, shown: str, root: Path) -> None:
    """Refuse a file whose real location (links resolved) is outside ``root``; never reads it."""
    real, top = path.resolve(), root.resolve()
    if real != top and top not in real.parents:
        raise DataError(
            f"{shown} is a link to a file outside the data root {top}, so it was not read and nothing was imported; "
            "copy the file itself under the data root."
        )


@_capitalised
def load_files(
    files: list[tuple[str, bytes]], name: str, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED,
    max_upload_bytes: int | None = None, require_train: bool = True,
) -> FeatureSet:
    """Load what a browser upload gives: several loose files, or one file (often a ``.zip``).

    The bytes are written to a private temp folder and loaded with the same code as a folder on disk,
    so uploads get no separate, less tested path. ``max_upload_bytes`` caps the upload as a whole
    (the dashboard passes its configured upload limit), checked before anything is written.
    """
    if not files:
        raise DataError("No files were given; choose the feature files or one .zip to upload.")
    check_upload_size(files, max_upload_bytes)
    with tempfile.TemporaryDirectory(prefix="mmae-upload-") as tmp:
        root = Path(tmp)
        rels: list[str] = []
        for fname, data in files:
            rel = safe_relpath(fname, "the upload")
            if not rel:
                raise DataError(f"An uploaded file has no usable name ('{fname}'); rename it and upload again.")
            if rel in rels:
                raise DataError(f"{rel} was uploaded twice; upload each file once.")
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            rels.append(rel)
        if len(rels) == 1:
            return _load_file(root / rels[0], rels[0], name, max_uncompressed, require_train)
        zips = [r for r in rels if r.lower().endswith(".zip")]
        if zips:
            raise DataError(f"{zips[0]} was uploaded together with other files; upload either one .zip or the loose files.")
        source = ", ".join(rels[:3]) + (f" and {len(rels) - 3} more" if len(rels) > 3 else "")
        layout = plan(rels, lambda rel: FileRef(root / rel, rel), "the upload")
        return _build(layout, name, f"upload ({source})", max_uncompressed, require_train)


def check_upload_size(files: list[tuple[str, bytes]], max_upload_bytes: int | None) -> None:
    """Refuse an upload whose files add up to more than ``max_upload_bytes`` (None: no limit)."""
    if max_upload_bytes is None:
        return
    total = sum(len(data) for _, data in files)
    if total > max_upload_bytes:
        raise DataError(
            f"The upload is {total / 2**20:.1f} MB, more than the {max_upload_bytes / 2**20:.1f} MB upload limit; "
            "put the data in a folder under the data root and import it from there."
        )


def _walk(root: Path, max_depth: int = 6) -> list[str]:
    """Files under ``root`` as relative posix paths, not descending deeper than any layout needs
    (so pointing at a big parent folder by mistake does not crawl the whole disk)."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        if len(rel_dir.parts) >= max_depth:
            dirnames[:] = []
        out.extend((rel_dir / f).as_posix() for f in filenames)
    return sorted(out)


def _load_file(p: Path, shown: str, name: str, max_uncompressed: int, require_train: bool = True,
               stage: Path | None = None) -> FeatureSet:
    if p.suffix.lower() == ".zip":
        return _load_zip(p, shown, name, max_uncompressed, require_train, stage)
    entry = classify_single(p.name, shown)
    sf = SplitFiles(entry.split)
    ref = FileRef(p, shown)
    if entry.role == "npz":
        sf.npz = ref
    elif entry.kind == "npy":
        sf.arrays[entry.name] = ref
    else:
        sf.tables[entry.name] = ref
    return _build(Layout({entry.split: sf}, []), name, shown, max_uncompressed, require_train,
                  stage is not None, stage)


def _load_zip(p: Path, shown: str, name: str, max_uncompressed: int, require_train: bool = True,
              stage: Path | None = None) -> FeatureSet:
    """Vet the whole archive, plan from member names, then read ``.npy`` members in place and
    extract only the other members the plan uses (npz and Parquet need a seekable file).

    With ``stage``: everything happens in that folder (beside the store, not in the system's temp),
    and the feature members are streamed one at a time (``load_path``)."""
    zf, members = open_checked(p, shown, max_uncompressed)
    tmp_ctx = tempfile.TemporaryDirectory(prefix="mmae-zip-", dir=stage)
    with zf, tmp_ctx as tmp:
        dest = Path(tmp)
        by_shown: dict[str, str] = {}

        def ref(rel: str) -> FileRef:
            shown_rel = f"{rel} in {shown}"
            by_shown[shown_rel] = rel
            direct = (zf, members[rel]) if rel.lower().endswith(".npy") else None
            return FileRef(dest / rel, shown_rel, direct)

        layout = plan(list(members), ref, shown)
        if stage is not None:  # Parquet feature members: extracted one at a time while they are read
            for sf in layout.splits.values():
                for m, r in sf.tables.items():
                    if r.path.suffix.lower() == ".parquet":
                        sf.tables[m] = FileRef(r.path, r.shown, (zf, members[by_shown[r.shown]]))
        if "train" in layout.splits or not require_train:
            for r in layout.used():
                if r.member is None:
                    rel = by_shown[r.shown]
                    extract(zf, members[rel], rel, dest, shown)
        return _build(layout, name, shown, max_uncompressed, require_train, stage is not None, stage)


def _build(layout: Layout, name: str, source: str, max_uncompressed: int, require_train: bool = True,
           stream: bool = False, stage: Path | None = None) -> FeatureSet:
    if require_train and "train" not in layout.splits:
        found = ", ".join(r.shown for r in layout.used()[:4])
        raise DataError(
            f"{source} has no train split (found {found}); add train.npz or train/{{modality}}.npy files, "
            "since models are fitted on train."
        )
    loaded: dict[str, Loaded] = {}
    for s, sf in layout.splits.items():
        loaded[s] = load_split(sf, max_uncompressed, stream, stage)
    modalities = _check_splits(layout, loaded)
    _check_unique_ids(loaded)
    splits: dict[str, Split] = {s: ld.split for s, ld in loaded.items()}
    kinds = sorted(
        {k for sf in layout.splits.values() for k, on in (("npz", sf.npz), ("npy", sf.arrays), ("table", sf.tables)) if on}
    )
    fs = FeatureSet(
        name=name,
        modalities=modalities,
        splits=splits,
        source=source,
        attrs={"ignored": list(layout.ignored), "files": [r.shown for r in layout.used()], "layout": "+".join(kinds)},
    )
    return fs.validate(source, require_train=require_train)


def _check_splits(layout: Layout, loaded: dict[str, Loaded]) -> dict[str, int]:
    """Every split has train's modalities with train's dimensions; features are put in one order, the
    modalities' names sorted. (Without a train split, the first split plays its part; the messages
    then name that split.)

    Why sorted: the model builds, and seeds, one encoder per modality in the dataset's order, so the
    order is part of what a seed reproduces. A folder lists its files sorted but an ``.npz`` keeps the
    order its arrays were saved in; without one order the same features imported from two layouts
    would train two different models from one seed."""
    ref_name = "train" if "train" in loaded else next(iter(loaded))
    train = loaded[ref_name]
    modalities = {m: int(train.split.features[m].shape[1]) for m in sorted(train.split.features)}
    train.split.features = {m: train.split.features[m] for m in modalities}
    for s, ld in loaded.items():
        if s == ref_name:
            continue
        feats = ld.split.features
        missing = [m for m in modalities if m not in feats]
        if missing:
            m = missing[0]
            raise DataError(
                f"the {s} split ({layout.splits[s].describe()}) lacks the modality '{m}' that {ref_name} has in "
                f"{train.where[m]}; add it to {s} (all-NaN rows if unknown) or remove it from {ref_name}."
            )
        extra = [m for m in feats if m not in modalities]
        if extra:
            m = extra[0]
            raise DataError(f"{ld.where[m]} gives the modality '{m}', which the {ref_name} split lacks; add it to {ref_name} or remove that file.")
        for m, d in modalities.items():
            if feats[m].shape[1] != d:
                raise DataError(
                    f"{ld.where[m]} has dimension {feats[m].shape[1]} but {train.where[m]} has dimension {d}; "
                    "every split of a modality must have the same dimension."
                )
        ld.split.features = {m: feats[m] for m in modalities}
    return modalities


def _check_unique_ids(loaded: dict[str, Loaded]) -> None:
    seen: dict[str, str] = {}
    for ld in loaded.values():
        ids = ld.split.item_ids.tolist()
        clash = set(seen).intersection(ids)
        if clash:
            i = next(x for x in ids if x in clash)
            raise DataError(
                f"item id '{i}' appears in both {seen[i]} and {ld.ids_where}; item ids must be unique across splits."
            )
        seen.update(dict.fromkeys(ids, ld.ids_where))



def import_bytes(path: str | Path, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED) -> int:
    """The disk a streamed import of ``path`` needs beside the store, from headers, Parquet footers
    and zip directories alone (nothing is read whole): the features as float32, plus, for a zip,
    its largest non-``.npy`` member, which is extracted there while it is read. An unreadable file
    counts as its size; loading it says what is wrong with it."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path} does not exist; check the path.")
    if p.is_dir():
        layout = plan(_walk(p), lambda rel: FileRef(p / rel, rel), str(path))
        return sum(_ref_bytes(r) for sf in layout.splits.values() for r in _feature_refs(sf))
    if p.suffix.lower() != ".zip":
        return _ref_bytes(FileRef(p, str(path)))
    zf, members = open_checked(p, str(path), max_uncompressed)
    with zf:
        layout = plan(list(members), lambda rel: FileRef(Path(rel), rel, (zf, members[rel])), str(path))
        refs = [r for sf in layout.splits.values() for r in _feature_refs(sf)]
        extracted = [r.member[1].file_size for r in refs if r.member and not r.path.suffix.lower() == ".npy"]
        return sum(_ref_bytes(r) for r in refs) + max(extracted, default=0)


def _feature_refs(sf: SplitFiles) -> list[FileRef]:
    return [r for r in [sf.npz, *sf.arrays.values(), *sf.tables.values()] if r is not None]


def _ref_bytes(ref: FileRef) -> int:
    """One feature file's float32 size: from a ``.npy`` header or a Parquet footer, else its size."""
    import pyarrow.parquet as pq

    from mmae_core.data.npy import READ_ERRORS, _header
    from mmae_core.data.tables import TABLE_ERRORS

    suffix = ref.path.suffix.lower()
    size = ref.member[1].file_size if ref.member else ref.path.stat().st_size
    try:
        if suffix == ".npy":
            with (ref.member[0].open(ref.member[1]) if ref.member else open(ref.path, "rb")) as fp:
                shape, _, _ = _header(fp, ref.shown)
            return 4 * int(np.prod([int(k) for k in shape], dtype=np.int64))
        if suffix == ".parquet" and ref.member is None:
            meta = pq.ParquetFile(ref.path).metadata
            return 4 * meta.num_rows * max(1, meta.num_columns - 1)
    except (DataError, *READ_ERRORS, *TABLE_ERRORS):
        pass
    return size
