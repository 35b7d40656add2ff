"""``Store``: the one object the CLI and the dashboard use to read and write the DuckDB file.

Each public method is one unit of work: reads run in one snapshot, and each user action is exactly one
transaction, so a failure in the middle leaves every table as it was. Several actions can be made one
by wrapping them in ``with store.transaction():`` (the calls inside join it). The file is opened per
unit of work and released afterwards, so a dashboard and a CLI job can share it (see ``store.db``).
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from mmae_core.data.dataset import FeatureSet
from mmae_core.errors import NotFoundError, StoreError

from . import catalog as _catalog
from . import datasets as _datasets
from . import feature_files as _feature_files
from . import models as _models
from . import proposals as _proposals
from . import runs as _runs
from . import schema as _schema
from . import tags as _tags
from .common import dataset_id
from .db import Database

DEFAULT_FILE = "mmae_studio.duckdb"


def default_path() -> Path:
    """``$MMAE_STUDIO_DB`` if set, else ``mmae_studio.duckdb`` in the current (project) folder."""
    return Path(os.environ.get("MMAE_STUDIO_DB") or DEFAULT_FILE).expanduser()


def default_lock_timeout() -> float:
    """``$MMAE_STUDIO_LOCK_TIMEOUT`` seconds if set (an operator's choice for slow batch jobs), else 10."""
    text = os.environ.get("MMAE_STUDIO_LOCK_TIMEOUT", "").strip()
    try:
        return max(0.0, float(text)) if text else 10.0
    except ValueError:
        raise StoreError(f"MMAE_STUDIO_LOCK_TIMEOUT is '{text}', not a number of seconds; set it to e.g. 10.") from None


class Store:
    """The MMAE Studio store in one DuckDB file.

    ``lock_timeout``: seconds to wait while another process holds the file before giving up with a
    ``StoreError`` (default: ``$MMAE_STUDIO_LOCK_TIMEOUT``, else 10); ``on_wait`` is told once, in a sentence, when such a wait starts (it runs in the waiting
    thread and must not call the store). ``linger`` keeps the
    file open that many seconds after the last unit of work (a dashboard saves reopening; 0 = release at
    once). ``migrations`` exists for tests of the migration machinery; leave it alone otherwise.
    """

    def __init__(self, path: str | Path, lock_timeout: float | None = None, on_wait: Callable[[str], None] | None = None,
                 *, linger: float = 0.0, migrations: Sequence[_schema.Migration] | None = None,
                 create: bool = True, read_only: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; give the store a file path such as {self.path / DEFAULT_FILE}.")
        if not create and not self.path.exists():
            # a mistyped --db for a command that only reads must not leave an empty store (and its folders) behind
            raise StoreError(
                f"There is no store at {self.path}; check --db or MMAE_STUDIO_DB, or create one with the import or demo command."
            )
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise StoreError(f"The folder for the store {self.path} cannot be created ({err.strerror}); choose another path.") from None
        timeout = default_lock_timeout() if lock_timeout is None else lock_timeout
        migrations = _schema.MIGRATIONS if migrations is None else migrations
        if read_only and self.path.exists():
            # A read-only open works on a read-only mount and takes no write lock; a store that needs a
            # migration is reopened read-write below, so the upgrade (after its backup) still happens.
            ro = Database(self.path, timeout, on_wait, linger, read_only=True)
            version = _schema.check_schema(ro, migrations)
            if version == len(migrations):
                self._db, self.version = ro, version
                return
        self._db = Database(self.path, timeout, on_wait, linger)
        self.version = _schema.ensure_schema(self._db, migrations)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- units of work ------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """BEGIN/COMMIT around the block, ROLLBACK on any exception; store calls inside join it."""
        with self._db.transaction() as con:
            yield con

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A consistent read-only snapshot for several queries."""
        with self._db.reader() as con:
            yield con

    def checksum(self) -> str:
        """A digest of every row of every table (tests and the reliability matrix compare it)."""
        return self._db.read(_schema.checksum)

    def schema_version(self) -> int:
        return _schema.schema_version(self._db)

    # -- datasets -------------------------------------------------------------------------------
    def add_dataset(self, fs: FeatureSet, replace: bool = False,
                    on_written: Callable[[str, str, int], None] | None = None) -> dict:
        """Store ``fs``; with ``replace`` the old dataset of that name is kept as ``<name>@replaced-<time>``.

        The features are copied window by window into the features folder beside the store before
        the transaction (``feature_files``), so ``fs`` may hold ``NpyWindows`` over files larger than
        memory. An import that cannot fit on the disk is refused before anything is written.
        ``on_written(split, modality, rows)`` is told after each feature file (progress)."""
        fs.validate()
        needed = sum(_feature_files.copy_bytes(x) for sp in fs.splits.values() for x in sp.features.values())
        _feature_files.check_space(self.path, needed)
        tmp = _feature_files.write_temp(self.path, ((s, sp.features) for s, sp in fs.splits.items()), on_written)
        try:
            return self._db.write(lambda con: _datasets.add(con, fs, replace, (self.path, tmp)))
        finally:
            if tmp.exists():  # the transaction failed before the rename
                _feature_files.remove(self.path, tmp.name)

    def check_space(self, needed: int) -> None:
        """Refuse, in one sentence with the space needed and free, an import of ``needed`` feature
        bytes that cannot fit on the store's disk (call it before reading the files)."""
        _feature_files.check_space(self.path, needed)

    def staging(self) -> AbstractContextManager[Path]:
        """A folder beside the store for a streamed import (``load_path(stage=...)``); keep the
        loaded set inside the ``with`` until it is stored and summarised, since its features live there."""
        return _feature_files.staging(self.path)

    def dataset_names(self, backups: bool = False) -> list[str]:
        """Dataset names; backups left by ``replace`` only when ``backups`` is true."""
        return self._db.read(lambda con: _datasets.names(con, backups))

    def list_datasets(self, backups: bool = False) -> pd.DataFrame:
        return self._db.read(lambda con: _datasets.listing(con, backups))

    def split_sizes(self, name: str) -> dict[str, int]:
        """Items per split, without reading a feature."""
        return self._db.read(lambda con: _datasets.split_sizes(con, name))

    def load_dataset(self, name: str, lazy: bool = False) -> FeatureSet:
        """The dataset with its features in memory; ``lazy``: features stay on disk as
        ``NpyWindows`` (ids, labels and metadata are still read whole)."""
        return self._db.read(lambda con: _datasets.load(con, name, self.path, lazy))

    def feature_rows(self, name: str, split: str) -> "RowSource":
        """One split's features as a row source that training and encoding read in batches: the
        ``.npy`` files themselves (``NpyRows``), or, for a dataset stored as blocks, the arrays in memory."""
        from mmae_core.model.batches import ArrayRows, NpyRows  # (torch: only for the commands that train)

        folder = self._db.read(lambda con: _datasets.feature_folder(con, name, self.path))
        fs = None
        if folder is None:
            fs = self.load_dataset(name)
        names = list(fs.modalities) if fs is not None else list(self.load_dataset(name, lazy=True).modalities)
        if fs is None:
            if not (folder / split).is_dir():
                raise NotFoundError(f"{name} has no {split} split; choose one of {', '.join(sorted(p.name for p in folder.iterdir()))}.")
            return NpyRows.folder(folder / split, names)
        if split not in fs.splits:
            raise NotFoundError(f"{name} has no {split} split; choose one of {', '.join(fs.splits)}.")
        return ArrayRows({m: fs.splits[split].features[m] for m in names})

    def delete_dataset(self, name: str) -> dict:
        """Remove a dataset with its models, latents, runs, proposals, tags and audit trail; its
        feature folder is removed after the COMMIT."""
        out = self._db.write(lambda con: _datasets.delete(con, name, self.path))
        folder = out.pop("_folder", None)
        if folder is not None:
            _feature_files.remove(self.path, folder)
        return out

    # -- models ---------------------------------------------------------------------------------
    def add_model(self, dataset: str, name: str, checkpoint: bytes, config: dict, info: dict,
                  latents: dict[str, dict[str, np.ndarray]]) -> int:
        """Register a model with all its latents (``latents[split][kind]``, kind 'fused' or a modality).

        The latents are written block by block ahead of the model (``store.models`` says why), and
        the model's row claims them in one last transaction: a failure or a kill before it leaves no
        model, and its blocks are deleted by the next registration."""
        _, dim = self._db.read(lambda con: _models.check(con, dataset, name, checkpoint, latents))
        token = self._db.write(lambda con: _models.pending_token(con, dim))
        with _feature_files.pending_marker(self.path, token):
            self._db.write(lambda con: _models.drop_pending(con, _feature_files.live_pending(self.path)))
            for split, kind, start, w in _models.blocks(latents):
                self._db.write(lambda con: _models.add_block(con, dataset, token, split, kind, start, w))
            return self._db.write(lambda con: _models.add(con, dataset, name, checkpoint, config, info, latents, token))

    def list_models(self, dataset: str | None = None) -> pd.DataFrame:
        return self._db.read(lambda con: _models.listing(con, dataset))

    def model_checkpoint(self, dataset: str, model: str) -> bytes:
        return self._db.read(lambda con: _models.checkpoint(con, dataset, model))

    def model_info(self, dataset: str, model: str) -> dict:
        return self._db.read(lambda con: _models.info(con, dataset, model))

    def model_config(self, dataset: str, model: str) -> dict:
        return self._db.read(lambda con: _models.config(con, dataset, model))

    def latents(self, dataset: str, model: str, split: str, kind: str = "fused",
                ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, float32 matrix) in the split's item order; ``ids``: only those items."""
        return self._db.read(lambda con: _models.latents(con, dataset, model, split, kind, ids))

    def latent_kinds(self, dataset: str, model: str) -> pd.DataFrame:
        return self._db.read(lambda con: _models.latent_kinds(con, dataset, model))

    def latest_model(self, dataset: str) -> str | None:
        return self._db.read(lambda con: _models.latest(con, dataset))

    # -- runs -----------------------------------------------------------------------------------
    def add_run(self, dataset: str, model: str | None, split: str, params: dict, table: pd.DataFrame) -> int:
        """Save one evaluation: its parameters and its metrics table (method, k, silhouette, ari, nmi, ...)."""
        return self._db.write(lambda con: _runs.add(con, dataset, model, split, params, table))

    def runs(self, dataset: str | None = None) -> pd.DataFrame:
        return self._db.read(lambda con: _runs.listing(con, dataset))

    def run_metrics(self, run_id: int) -> pd.DataFrame:
        return self._db.read(lambda con: _runs.metrics(con, run_id))

    def run_params(self, run_id: int) -> dict:
        return self._db.read(lambda con: _runs.params(con, run_id))

    # -- proposals and tags -----------------------------------------------------------------------
    def save_proposals(self, dataset: str, model: str, split: str, k: int, table: pd.DataFrame,
                       item_ids: np.ndarray, clusters: np.ndarray) -> int:
        return self._db.write(
            lambda con: _proposals.save(con, dataset, model, split, k, table, item_ids, clusters)
        )

    def proposals(self, dataset: str, model: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The latest proposal set (of ``model``, else of any model): its table and its assignments.

        Both frames are empty when there are no proposals; ``table.attrs`` holds set_id, model, split, k.
        """
        return self._db.read(lambda con: _proposals.get(con, dataset, model))

    def proposal_table(self, dataset: str, model: str | None = None) -> pd.DataFrame:
        """The latest proposal set's table alone (``proposals`` without the per-item assignments)."""
        return self._db.read(lambda con: _proposals.table(con, dataset, model))

    def proposal_members(self, dataset: str, model: str, cluster: int, offset: int = 0, limit: int = 500) -> list[str]:
        """One page of a proposal's item ids (the model's latest set), in id order."""
        return self._db.read(lambda con: _proposals.members(con, dataset, model, cluster, offset, limit))

    def accept(self, dataset: str, model: str, cluster: int, curator: str, name: str | None = None, *,
               manual: str = "keep") -> dict:
        """Tag the cluster's items; items tagged by hand keep their tag unless ``manual='replace'``."""
        return self._db.write(lambda con: _tags.accept(con, dataset, model, cluster, curator, name, manual))

    def reject(self, dataset: str, model: str, cluster: int, curator: str) -> dict:
        return self._db.write(lambda con: _tags.reject(con, dataset, model, cluster, curator))

    def rename(self, dataset: str, old: str, new: str, curator: str) -> dict:
        return self._db.write(lambda con: _tags.rename(con, dataset, old, new, curator))

    def merge(self, dataset: str, tags: list[str], into: str, curator: str) -> dict:
        return self._db.write(lambda con: _tags.merge(con, dataset, tags, into, curator))

    def set_item(self, dataset: str, item_id: str, tag: str | None, curator: str, *, existing: bool = False) -> dict:
        """Tag one item by hand (``tag=None`` removes its tag); ``existing``: refuse a tag that is gone
        (it was picked from a list another curator has changed since)."""
        return self._db.write(lambda con: _tags.set_item(con, dataset, item_id, tag, curator, existing))

    def undo(self, dataset: str, curator: str) -> dict:
        """Undo the newest decision on ``dataset`` that is not undone yet (whoever made it)."""
        return self._db.write(lambda con: _tags.undo(con, dataset, curator))

    def history(self, dataset: str, curator: str | None = None, tag: str | None = None,
                since: dt.datetime | str | None = None) -> pd.DataFrame:
        """The audit trail, newest first: id, at (UTC), action, curator, summary, tags, undone, undoes."""
        return self._db.read(lambda con: _tags.history(con, dataset, curator, tag, since))

    def tag_counts(self, dataset: str) -> pd.DataFrame:
        return self._db.read(lambda con: _tags.tag_counts(con, dataset))

    def catalog(self, dataset: str, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """The tagged catalog, or only the items ``ids`` in that order (see ``store/catalog.py``)."""
        return self._db.read(lambda con: _catalog.catalog(con, dataset, ids))

    def catalog_page(self, dataset: str, flt: "_catalog.CatalogFilter | None" = None, offset: int = 0,
                     limit: int = 100) -> tuple[pd.DataFrame, int]:
        """(one page of the filtered catalog, how many items match): filters, count and page in DuckDB."""
        return self._db.read(lambda con: _catalog.catalog_page(con, dataset, flt or _catalog.CatalogFilter(), offset, limit))

    def catalog_ids(self, dataset: str, flt: "_catalog.CatalogFilter") -> list[str]:
        return self._db.read(lambda con: _catalog.catalog_ids(con, dataset, flt))

    def catalog_rows(self, dataset: str, ids: Sequence[str]) -> pd.DataFrame:
        """Catalog rows of ``ids`` in that order, for display (metadata from each item's JSON)."""
        return self._db.read(lambda con: _catalog.catalog_rows(con, dataset, ids))

    def float_meta(self, dataset: str) -> pd.DataFrame:
        """Only the float metadata columns of the whole catalog (for ``export.json_loss``)."""
        return self._db.read(lambda con: _catalog.float_meta(con, dataset))

    def catalog_choices(self, dataset: str) -> dict:
        """items, tagged, and the tags, curators, splits and statuses the catalog's filters offer."""
        return self._db.read(lambda con: _catalog.catalog_choices(con, dataset))

    # -- Explore / Tags / Search pages: 2-D maps (store/projections.py), batch decisions (store/tag_batch.py)
    def projection(self, dataset: str, model: str, split: str, kind: str, method: str, seed: int) -> np.ndarray | None:
        """The stored (n, 2) map of a model's latents, or None when not computed yet."""
        from . import projections as _projections
        return self._db.read(lambda con: _projections.get(con, dataset, model, split, kind, method, seed))

    def save_projection(self, dataset: str, model: str, split: str, kind: str, method: str, seed: int,
                        xy: np.ndarray, seconds: float | None = None) -> bool:
        """Store a map once; False when the same map was stored meanwhile (the first one stays)."""
        from . import projections as _projections
        return self._db.write(lambda con: _projections.put(con, dataset, model, split, kind, method, seed, xy, seconds))

    def projections(self, dataset: str, model: str) -> pd.DataFrame:
        from . import projections as _projections
        return self._db.read(lambda con: _projections.listing(con, dataset, model))

    def set_items(self, dataset: str, item_ids: Sequence[str], tag: str | None, curator: str, *,
                  existing: bool = False) -> dict:
        """Tag many items by hand in one transaction and one audit event (``tag=None`` untags them);
        ``existing`` as in ``set_item``."""
        from . import tag_batch as _tag_batch
        return self._db.write(lambda con: _tag_batch.set_items(con, dataset, item_ids, tag, curator, existing))

    def accept_many(self, dataset: str, model: str, clusters: Sequence[int] | None, curator: str,
                    min_purity: float | None = None, *, manual: str = "keep") -> dict:
        """Accept several proposals (or, with ``clusters=None``, every pending one with purity ≥ ``min_purity``) as one decision;
        items tagged by hand keep their tag unless ``manual='replace'``."""
        from . import tag_batch as _tag_batch
        return self._db.write(
            lambda con: _tag_batch.accept_many(con, dataset, model, clusters, curator, min_purity, manual))

    def hand_tagged_in(self, dataset: str, model: str, clusters: Sequence[int] | None,
                       min_purity: float | None = None) -> dict:
        """{'items': n, 'tags': [...]}: the hand-tagged items an accept of these proposals would meet."""
        from . import tag_batch as _tag_batch
        return self._db.read(lambda con: _tag_batch.hand_tagged_in(con, dataset, model, clusters, min_purity))

    def tag_exists(self, dataset: str, name: str) -> bool:
        return self._db.read(lambda con: _tags.tag_exists(con, dataset_id(con, dataset), name))

    # -- background jobs (store/jobs.py; used by studio.jobs) ---------------------------------
    def add_job(self, dataset: str, kind: str, config: dict, pid: int, host: str, status: str = "queued",
                message: str | None = None) -> int:
        from . import jobs as _jobs
        return self._db.write(lambda con: _jobs.add(con, dataset, kind, config, pid, host, status, message))

    def update_job(self, job_id: int, *, status: str | None = None, progress: dict | None = None,
                   message: str | None = None, model: str | None = None) -> None:
        """Change a job's status/progress/message/model; a final status stamps ``finished_at``."""
        from . import jobs as _jobs
        return self._db.write(lambda con: _jobs.update(con, job_id, status, progress, message, model))

    def job(self, job_id: int) -> dict:
        from . import jobs as _jobs
        return self._db.read(lambda con: _jobs.get(con, job_id))

    def jobs(self, dataset: str | None = None, statuses: Sequence[str] | None = None, limit: int = 50) -> list[dict]:
        """Job records, newest first (config and progress decoded to dicts)."""
        from . import jobs as _jobs
        st = tuple(statuses) if statuses else None
        return self._db.read(lambda con: _jobs.listing(con, dataset, st, limit))

    def interrupt_jobs(self, job_ids: Sequence[int], message: str) -> int:
        """Mark still-active jobs whose runner is gone as interrupted, with ``message`` as the reason."""
        from . import jobs as _jobs
        return self._db.write(lambda con: _jobs.interrupt(con, list(job_ids), message))
