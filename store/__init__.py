"""The MMAE Studio store: datasets, models, latents, runs, proposals, tags and their audit trail in one
DuckDB file. Use ``Store``; ``export`` writes the tagged catalog as CSV/Parquet/JSON."""
from mmae_core.errors import NotFoundError, StoreError

from .api import DEFAULT_FILE, Store, default_path
from .catalog import CatalogFilter
from .feature_files import copy_store
from .export import FORMATS, export_catalog, to_bytes
from .schema import SCHEMA_VERSION

__all__ = [
    "CatalogFilter",
    "DEFAULT_FILE",
    "FORMATS",
    "NotFoundError",
    "SCHEMA_VERSION",
    "Store",
    "StoreError",
    "copy_store",
    "default_path",
    "export_catalog",
    "to_bytes",
]
