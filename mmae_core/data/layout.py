"""Recognising which file is what in an uploaded folder, zip or set of files.

Classification works on relative path names only, before any byte is read, so a zip can be planned
(and only the members we will use extracted) and an upload can be checked for unknown or conflicting
files up front. Each recognised file becomes a ``FileRef`` that carries the name we show the user, so
every later error message can name the file the user knows, not a temp path.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mmae_core.data.dataset import SPLITS
from mmae_core.errors import DataError

FEATURE_EXTS: dict[str, str] = {".npy": "npy", ".parquet": "table", ".csv": "table"}
TABLE_EXTS: frozenset[str] = frozenset({".parquet", ".csv"})
SIDE_NAMES: frozenset[str] = frozenset({"labels", "ids", "items"})
# Names that would collide with the item table's own columns if used as a modality.
RESERVED_MODALITIES: frozenset[str] = frozenset({"label", "item_id"})


@dataclass(frozen=True)
class FileRef:
    """A file plus the name the user knows it by (used in every message about it).

    ``member`` is set for a ``.npy`` inside a zip: it is read straight from the archive, which
    saves writing and re-reading hundreds of MB; other members are extracted to ``path`` first.
    """

    path: Path
    shown: str
    member: tuple[zipfile.ZipFile, zipfile.ZipInfo] | None = None


@dataclass(frozen=True)
class Entry:
    """What one file is: its split, its role and (for a modality) the modality's name."""

    split: str
    role: str  # "npz" | "modality" | "labels" | "ids" | "items" | "bad" (a reserved name misused)
    kind: str  # "npz" | "npy" | "table"
    name: str = ""  # the modality name, or for "bad" the rest of the error sentence


@dataclass
class SplitFiles:
    """The files that make up one split, by role."""

    split: str
    npz: FileRef | None = None
    arrays: dict[str, FileRef] = field(default_factory=dict)  # modality -> .npy
    tables: dict[str, FileRef] = field(default_factory=dict)  # modality -> .parquet/.csv with item_id
    labels: FileRef | None = None
    ids: FileRef | None = None
    items: FileRef | None = None

    def refs(self) -> list[FileRef]:
        out = [r for r in (self.npz, self.labels, self.ids, self.items) if r is not None]
        return out + list(self.arrays.values()) + list(self.tables.values())

    def describe(self) -> str:
        return ", ".join(r.shown for r in self.refs())


@dataclass
class Layout:
    splits: dict[str, SplitFiles]
    ignored: list[str]

    def used(self) -> list[FileRef]:
        return [r for sf in self.splits.values() for r in sf.refs()]


def _split_name(stem: str, ext: str, split: str) -> Entry:
    """Classify ``{split}/{stem}{ext}`` or ``{split}_{stem}{ext}``; misuse of a reserved name is role "bad"."""
    if stem in SIDE_NAMES:
        if stem in ("labels", "ids") and ext == ".npy":
            return Entry(split, stem, "npy")
        if stem == "items" and ext in TABLE_EXTS:
            return Entry(split, "items", "table")
        good = f"{split}/items.csv or {split}/items.parquet" if stem == "items" else f"{split}/{stem}.npy"
        return Entry(split, "bad", "", f"uses the reserved name '{stem}' with the wrong file type; provide it as {good}.")
    if stem in RESERVED_MODALITIES:
        return Entry(
            split, "bad", "", f"uses the reserved name '{stem}' as a modality; rename the file or put that column in {split}/items.csv."
        )
    return Entry(split, "modality", FEATURE_EXTS[ext], stem)


def classify(rel: str) -> Entry | None:
    """Classify a path inside a dataset folder or zip; ``None`` means the file is not ours."""
    parts = rel.split("/")
    name = parts[-1]
    ext = Path(name).suffix.lower()
    stem = name[: len(name) - len(ext)]
    if len(parts) == 1:
        if ext == ".npz" and stem.lower() in SPLITS:
            return Entry(stem.lower(), "npz", "npz")
        m = re.fullmatch(r"([A-Za-z]+)_(.+)", stem)
        if ext in FEATURE_EXTS and m and m.group(1).lower() in SPLITS:
            return _split_name(m.group(2), ext, m.group(1).lower())
        return None
    if len(parts) == 2 and parts[0].lower() in SPLITS and ext in FEATURE_EXTS and stem:
        return _split_name(stem, ext, parts[0].lower())
    return None


def classify_single(filename: str, shown: str) -> Entry:
    """Classify a file loaded on its own: a lone ``.npz`` not named after a split is the train split."""
    ext = Path(filename).suffix.lower()
    stem = Path(filename).name[: len(Path(filename).name) - len(ext)]
    entry = classify(Path(filename).name)
    if entry is not None and entry.role == "bad":
        raise DataError(f"{shown} {entry.name}")
    if entry is not None:
        if entry.role != "npz" and entry.role != "modality":
            raise DataError(
                f"{shown} holds {entry.role}, not features; load it together with the feature files "
                "(a folder or a zip)."
            )
        return entry
    if ext == ".npz":
        return Entry("train", "npz", "npz")
    if ext in FEATURE_EXTS:
        entry = _split_name(stem, ext, "train")
        if entry.role == "modality":
            return entry
        if entry.role == "bad":
            raise DataError(f"{shown} {entry.name}")
        raise DataError(f"{shown} holds {entry.role}, not features; load it together with the feature files (a folder or a zip).")
    raise DataError(
        f"{shown} is not a supported file type; use .npz, .npy, .parquet, .csv or a .zip of them."
    )


def _is_junk(rel: str) -> bool:
    """Files that archivers and desktops add on their own (macOS resource forks, .DS_Store, ...)."""
    return rel.startswith("__MACOSX/") or any(p.startswith(".") for p in rel.split("/"))


def strip_common_root(rels: list[str]) -> str:
    """The folder prefix to drop when the data sits inside one top folder (``luma/train/...``).

    Loose files next to that folder (a README, notes) do not prevent it; they end up ignored.
    """
    prefix = ""
    names = [r for r in rels if not _is_junk(r)]
    for _ in range(4):
        if not names or any(classify(r) is not None for r in names):
            return prefix
        tops = {r.split("/", 1)[0] for r in names if "/" in r}
        if len(tops) != 1:
            return prefix
        top = tops.pop()
        prefix += top + "/"
        names = [r.split("/", 1)[1] for r in names if r.startswith(top + "/")]
    return prefix


def plan(rels: list[str], ref: Callable[[str], FileRef], where: str) -> Layout:
    """Sort relative paths into splits; conflicting duplicates are refused, unknown files set aside."""
    prefix = strip_common_root(rels)
    splits: dict[str, SplitFiles] = {}
    ignored: list[str] = []
    for rel in sorted(rels):
        inner = rel[len(prefix):] if rel.startswith(prefix) else rel
        entry = classify(inner) if not _is_junk(rel) and rel.startswith(prefix) else None
        fref = ref(rel)
        if entry is None:
            ignored.append(fref.shown)
            continue
        if entry.role == "bad":
            raise DataError(f"{fref.shown} {entry.name}")
        _add(splits.setdefault(entry.split, SplitFiles(entry.split)), entry, fref)
    if not splits:
        seen = f" (ignored: {', '.join(ignored[:5])})" if ignored else ""
        raise DataError(
            f"{where} holds no feature files{seen}; expected train.npz, train/{{modality}}.npy, "
            "train_{modality}.npy or train/{modality}.parquet|csv."
        )
    ordered = {s: splits[s] for s in SPLITS if s in splits}
    return Layout(ordered, ignored)


def _add(sf: SplitFiles, entry: Entry, fref: FileRef) -> None:
    def clash(other: FileRef, what: str) -> DataError:
        return DataError(f"{other.shown} and {fref.shown} both give the {sf.split} {what}; keep only one of them.")

    if entry.role == "npz":
        if sf.npz is not None:
            raise clash(sf.npz, "split")
        sf.npz = fref
    elif entry.role == "modality":
        other = sf.arrays.get(entry.name) or sf.tables.get(entry.name)
        if other is not None:
            raise clash(other, f"modality '{entry.name}'")
        (sf.arrays if entry.kind == "npy" else sf.tables)[entry.name] = fref
    else:
        other = getattr(sf, entry.role)
        if other is not None:
            raise clash(other, entry.role)
        setattr(sf, entry.role, fref)
