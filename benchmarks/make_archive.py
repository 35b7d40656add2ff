"""Write a LUMA-shaped archive of N items as a folder that ``python -m mmae_core import`` reads.

Why: the scale work (import, train, encode, propose, map) needs a real 1,000,000-item archive, and the
demo holds every array in memory (``demo --scale 10`` = 290,000 items peaked at 6.5 GiB). This script
draws the same world as the demo (``mmae_core.data.demo.demo_world`` and ``draw_items``: same classes,
same modalities and dimensions, same captions) but one chunk at a time, and appends each chunk to
plain ``.npy`` files through ordinary writes, never a memory map of the whole file, so the kernel's
peak RSS is bounded by the chunk (measured: see docs/results.md's scale table; at 1M items and the default
chunk of 20,000 it stays under 1 GiB while writing 7.4 GB).

Layout (what the import recognises)::

    OUT/train/image.npy  audio.npy  text.npy   float32, one row per item
    OUT/train/items.parquet                    item_id, label, title, caption (one row group per chunk)
    OUT/test/...                               the same for the test split

Deterministic: chunk ``j`` of a split draws from its own seed sequence (the split's, extended by
``j``), so the same ``--seed``, ``--items``, ``--test-fraction`` and ``--chunk`` give the same bytes.
Classes are balanced: item ``i`` of a split has class ``i mod 50``, shuffled within its chunk.

Usage: ``.venv/bin/python benchmarks/make_archive.py --items 1000000 --out /tmp/archive-1m``
(prints one JSON line with the sizes, seconds and peak RSS to stdout; progress to stderr).
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmae_core.data.demo import CLASS_NAMES, MODALITY_DIMS, demo_world, draw_items  # noqa: E402
from mmae_core.errors import ConfigError, StudioError  # noqa: E402

SPLIT_STREAM = {"train": 0, "test": 1}  # which of the demo's split seed sequences each split draws from
_SLACK = 1.05  # items tables and headers on top of the float32 features


@dataclass(frozen=True)
class ArchiveConfig:
    items: int
    out: Path
    seed: int = 42
    test_fraction: float = 0.05
    chunk: int = 20_000

    def checked(self) -> "ArchiveConfig":
        if self.items < 2 * len(CLASS_NAMES):
            raise ConfigError(f"an archive needs at least {2 * len(CLASS_NAMES)} items (got {self.items}); ask for more.")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"the test fraction must be between 0 and 1 (got {self.test_fraction}); 0.05 is usual.")
        if self.chunk < 1:
            raise ConfigError(f"the chunk must hold at least one item (got {self.chunk}).")
        return self

    def sizes(self) -> dict[str, int]:
        test = max(len(CLASS_NAMES), int(round(self.items * self.test_fraction)))
        return {"train": self.items - test, "test": test}


def feature_bytes(items: int) -> int:
    return items * sum(MODALITY_DIMS.values()) * np.dtype(np.float32).itemsize


def _check_disk(cfg: ArchiveConfig) -> None:
    need = int(feature_bytes(cfg.items) * _SLACK)
    cfg.out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cfg.out).free
    if free < need:
        raise ConfigError(f"{cfg.out} has {free / 1e9:.1f} GB free but the archive needs about {need / 1e9:.1f} GB; "
                          "choose another folder or fewer items.")


def _open_npy(path: Path, rows: int, dim: int):
    fp = open(path, "wb")
    np.lib.format.write_array_header_1_0(fp, {"descr": np.dtype(np.float32).str, "fortran_order": False,
                                              "shape": (rows, dim)})
    return fp


def _chunk_rng(split_ss: np.random.SeedSequence, j: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(split_ss.entropy, spawn_key=(*split_ss.spawn_key, j)))


def _write_split(cfg: ArchiveConfig, world: dict[str, object], split_ss: np.random.SeedSequence, split: str,
                 n: int) -> None:
    folder = cfg.out / split
    folder.mkdir(parents=True, exist_ok=True)
    files = {m: _open_npy(folder / f"{m}.npy", n, d) for m, d in MODALITY_DIMS.items()}
    schema = pa.schema([("item_id", pa.string()), ("label", pa.string()), ("title", pa.string()),
                        ("caption", pa.string())])
    k = len(CLASS_NAMES)
    names = np.array(CLASS_NAMES, dtype=object)
    t0 = time.perf_counter()
    try:
        with pq.ParquetWriter(folder / "items.parquet", schema) as items:
            for j, start in enumerate(range(0, n, cfg.chunk)):
                stop = min(n, start + cfg.chunk)
                rng = _chunk_rng(split_ss, j)
                cls = np.arange(start, stop) % k
                cls = cls[rng.permutation(len(cls))]
                feats, titles, captions = draw_items(rng, world, cls, ood=False)
                for m, fp in files.items():
                    fp.write(np.ascontiguousarray(feats[m], dtype=np.float32).tobytes())
                ids = [f"item-{split}-{i:07d}" for i in range(start, stop)]
                items.write_table(pa.table({"item_id": ids, "label": names[cls].tolist(), "title": titles,
                                            "caption": captions}, schema=schema))
                print(f"{split}: {stop:,} of {n:,} items ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    finally:
        for fp in files.values():
            fp.close()


def make_archive(cfg: ArchiveConfig) -> dict[str, object]:
    """Write the archive; returns what was written (items per split, GB, seconds, peak RSS)."""
    cfg = cfg.checked()
    _check_disk(cfg)
    world, split_ss = demo_world(cfg.seed)
    t0 = time.perf_counter()
    sizes = cfg.sizes()
    for split, n in sizes.items():
        _write_split(cfg, world, split_ss[SPLIT_STREAM[split]], split, n)
    on_disk = sum(f.stat().st_size for f in cfg.out.rglob("*") if f.is_file())
    return {"out": str(cfg.out), "items": cfg.items, "splits": sizes, "seed": cfg.seed, "chunk": cfg.chunk,
            "gb_on_disk": round(on_disk / 1e9, 3), "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--test-fraction", type=float, default=0.05)
    ap.add_argument("--chunk", type=int, default=20_000, help="items drawn and written at a time (bounds memory)")
    args = ap.parse_args(argv)
    try:
        report = make_archive(ArchiveConfig(args.items, args.out, args.seed, args.test_fraction, args.chunk))
    except StudioError as err:
        print(str(err), file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
