"""``python -m mmae_core``: every job of the dashboard, for batch scripts.

Contract (curators' scripts depend on it): JSON and tables go to stdout alone; progress and messages
go to stderr; a failure prints one line and exits non-zero (1 for a problem with the input or the
store, 2 for a bug, 130 when interrupted). ``--db`` defaults to ``$MMAE_STUDIO_DB``, else
``mmae_studio.duckdb`` in the current folder.
"""
from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

import pandas as pd

from mmae_core.config import DEFAULT_K_GRID, DEFAULT_PRESET, ITEMS_PER_SIZED_EPOCH, MIN_SIZED_EPOCHS, EvalConfig, INPUT_NOISE_HELP, PRESETS, preset
from mmae_core.errors import ConfigError, StudioError
from mmae_core.clustering.graph import AUTO, DEFAULT_RESOLUTION, METHODS, parse_k_grid as parse_k
from mmae_core.clustering.kmeans import EVAL_SAMPLE


def default_db() -> str:
    from store import default_path  # the one rule the dashboard uses too

    return str(default_path())


def default_curator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): still record something honest
        return os.environ.get("USER") or "unknown"


def err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- output

def _clean(v: object) -> object:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return _clean(v.item())
        except (ValueError, AttributeError):
            pass
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "tolist"):
        return _clean(v.tolist())
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return v


def records(df: pd.DataFrame) -> list[dict]:
    return [{k: _clean(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def emit(df: pd.DataFrame, fmt: str) -> None:
    """Write a result to stdout in the chosen format (the only thing that goes to stdout)."""
    if fmt == "json":
        sys.stdout.write(json.dumps(records(df), indent=1, default=str) + "\n")
    elif fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    else:
        with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
            sys.stdout.write((df.to_string(index=False, float_format=lambda x: f"{x:.3f}") if len(df) else "(none)") + "\n")
    sys.stdout.flush()


class TrainPrinter:
    """Epoch lines on stderr: what a terminal user needs to see that training moves."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, p: object) -> None:
        now = time.monotonic()
        final = p.epoch == p.epochs
        if not final and now - self.last < 1.0:
            return
        self.last = now
        losses = " ".join(f"{k}={v:.4f}" for k, v in p.losses.items())
        err(f"epoch {p.epoch}/{p.epochs}  {losses}  elapsed {p.elapsed_s:.0f}s  eta {p.eta_s:.0f}s")


# ---------------------------------------------------------------- commands

# Commands that create a store when --db names no file; every other command refuses a missing file, so
# a mistyped --db does not leave an empty store (and its folders) behind.
CREATING = frozenset({"demo", "import"})
# Commands that only read the store: opened read-only (no write lock, works on a read-only mount).
# evaluate and propose are not among them: they record their runs and proposals in the store.
READ_ONLY = frozenset({"datasets", "models", "export", "tag history", "search", "search-eval", "novelty", "conflicts"})


def open_store(args: argparse.Namespace, read_only: bool = False, quiet_wait: bool = False) -> "object":
    from store import Store

    def waiting(msg: str) -> None:
        if not quiet_wait:
            err(msg)

    command = args.command if args.command != "tag" else f"tag {args.action}"
    return Store(args.db, on_wait=waiting, create=command in CREATING and not read_only, read_only=read_only or command in READ_ONLY)


def cmd_demo(args: argparse.Namespace) -> int:
    from mmae_core.data.demo import make_demo
    from store.common import check_dataset_name

    name = check_dataset_name(args.name)
    err(f"generating the synthetic demo dataset (seed {args.seed})")
    fs = make_demo(name=name, seed=args.seed, scale=args.scale)
    summary = open_store(args).add_dataset(fs, replace=args.replace)
    err(f"registered dataset {name}")
    _print_summary(fs, args.format, summary)
    return 0


def _print_summary(fs: "object", fmt: str, summary: object = None) -> None:
    df = fs.summary()
    if fmt == "json":
        sys.stdout.write(json.dumps({"dataset": fs.name, "splits": records(df), "ignored": fs.attrs.get("ignored", []),
                                     "missing": _missing(fs), "replaced": (summary or {}).get("replaced")}, indent=1) + "\n")
    else:
        emit(df, fmt)


def cmd_import(args: argparse.Namespace) -> int:
    from mmae_core.data.features import import_bytes, load_path
    from store.common import check_dataset_name

    name = check_dataset_name(args.name)
    store = open_store(args)
    if not args.replace and name in store.dataset_names():
        raise ConfigError(f"a dataset named '{name}' is already in the store; pass --replace to replace it "
                          "(the old one is kept as a backup) or choose another --name.")
    err(f"reading {args.path}")
    store.check_space(import_bytes(args.path))  # before a byte is converted or copied
    with store.staging() as stage:  # Parquet and zip members are converted here; fs reads them until the end
        fs = load_path(args.path, name, stream=True, stage=stage)
        for f in fs.attrs.get("ignored", []):
            err(f"ignored {f}: not a feature, label, id or items file")
        summary = store.add_dataset(fs, replace=args.replace, on_written=ImportPrinter(fs))
        err(f"registered dataset {name}")
        if summary.get("replaced"):
            err(f"the previous '{name}' is kept as the dataset '{summary['replaced']}' (datasets --backups lists it)")
        missing = {m: c for m, c in _missing(fs).items() if c}
        if missing:
            err("items missing a modality: " + ", ".join(f"{m} {c}" for m, c in missing.items())
                + "; train with --preset aligned, which is built for that.")
        _print_summary(fs, args.format, summary)
    return 0


class ImportPrinter:
    """Import progress on stderr: one line per feature file written, with the share of all bytes."""

    def __init__(self, fs: "object") -> None:
        from studio.pipeline import ImportShare

        self.share, self.t0 = ImportShare(fs), time.perf_counter()  # type: ignore[arg-type]

    def __call__(self, split: str, modality: str, rows: int) -> None:
        done = self.share(split, modality, rows)
        err(f"stored {split}/{modality}: {rows:,} rows ({100 * done:.0f}% of the features, "
            f"{time.perf_counter() - self.t0:.0f} s)")


def _missing(fs: "object") -> dict[str, int]:
    from studio.pipeline import missing_summary

    return missing_summary(fs)


def cmd_train(args: argparse.Namespace) -> int:
    """Train and register a model; under torchrun (RANK/WORLD_SIZE set) data-parallel, rank 0 writing."""
    from mmae_core.model.distributed import launched, process_group

    if args.parallel is not None and os.environ.get("RANK", "0") == "0":
        err("note: --parallel no longer does anything (training runs one autograd step on every core); it is accepted so existing scripts keep working.")
    cfg = preset(args.preset, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, lr=args.lr,
                 latent=args.latent, device=args.device, weight_decay=args.weight_decay,
                 modality_dropout=args.modality_dropout, align_weight=args.align_weight, input_noise=args.input_noise)
    launch = launched()
    if launch is None:
        return _train(args, cfg)
    from mmae_core.model.distributed import PeerStopped

    with process_group(launch, cfg.device) as ranks:
        try:
            return _train(args, cfg, ranks)
        except PeerStopped:
            if ranks.is_main:
                raise
            return 1  # rank 0 said why, once


def _train(args: argparse.Namespace, cfg: "object", ranks: "object" = None) -> int:
    """``train``'s work. A rank other than 0 of a torchrun launch opens the store read-only (DuckDB
    has one writer), trains its share and exits without a word on stdout (stderr: only a wait for the store's lock or an error)."""
    from store.export import check_target, write_file

    from mmae_core.errors import StoreError
    from mmae_core.log import silent
    from studio.pipeline import train_and_register

    main = ranks is None or ranks.is_main
    if args.out and main:  # checked before training: a bad path must not cost a run, nor leave a model registered
        check_target(args.out, "checkpoint")
    # the ranks of one launch take turns on the store's lock for their first reads: no message for that
    store = open_store(args, read_only=not main, quiet_wait=ranks is not None)
    said: list[str] = []

    def log(message: str) -> None:
        """stderr, led by which preset runs once training starts (a refusal stays one line)."""
        if not said:
            said.append(cfg.preset)
            err(f"preset {cfg.preset}" + (" (the default; --preset paper trains the paper's method)"
                                          if args.preset == DEFAULT_PRESET and DEFAULT_PRESET != "paper" else ""))
        err(message)

    out = train_and_register(store, args.dataset, cfg, args.model_name, on_progress=TrainPrinter() if main else None,
                             log=log if main else silent, samples=args.samples, batch_given=args.batch_size is not None,
                             epochs_given=args.epochs is not None, ranks=ranks)
    if not out.registered:
        return 0
    if args.out:
        try:
            written = write_file(store.model_checkpoint(args.dataset, out.model_name), args.out, "checkpoint")
        except StoreError as e:
            raise StoreError(
                f"The model '{out.model_name}' was trained and registered, but its checkpoint file was not written "
                f"({getattr(e, 'reason', None) or e}); free some space and download it from the Train page."
            ) from None
        err(f"checkpoint written to {written}")
    result = {"model": out.model_name, "dataset": args.dataset, "train_seconds": round(out.train_seconds, 2),
              "final_losses": out.final_losses, "config": store.model_config(args.dataset, out.model_name),
              "completion_items": out.completion_items}
    if ranks is not None:
        result["processes"] = ranks.world_size
    if args.format == "json":
        sys.stdout.write(json.dumps(result, indent=1) + "\n")
    else:
        sys.stdout.write(f"model {out.model_name} trained in {out.train_seconds:.1f} s\n")
    return 0


def cmd_load_model(args: argparse.Namespace) -> int:
    from studio.pipeline import register_checkpoint

    data = Path(args.checkpoint).read_bytes() if Path(args.checkpoint).is_file() else None
    if data is None:
        raise ConfigError(f"{args.checkpoint} is not a file; give the path of a checkpoint.")
    name = register_checkpoint(open_store(args), args.dataset, data, args.model_name or Path(args.checkpoint).stem, log=err)
    sys.stdout.write((json.dumps({"model": name}) if args.format == "json" else f"model {name} registered") + "\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from studio.pipeline import evaluate_model, resolve_model
    from mmae_core.evaluation.reference import paper_reference

    store = open_store(args)
    model = resolve_model(store, args.dataset, args.model)
    weights = _parse_weights(args.weights) if args.weights else {}
    cfg = EvalConfig(k_grid=parse_k(args.k), split=args.split, seed=args.seed, n_init=args.n_init, fused_weights=weights)
    table = evaluate_model(store, args.dataset, model, cfg, log=err, cluster=args.cluster, resolution=args.resolution,
                           sample_size=args.sample or None)
    for r in table[table["k_found_by"] != "given"].itertuples():
        err(f"{r.method}: k = {r.k}, found by {r.k_found_by} at resolution {r.resolution:g} (clustered by {r.cluster})")
    table = table.assign(model=model)
    if args.paper:
        table = pd.concat([table.assign(source="ours"), paper_reference()], ignore_index=True)
    emit(table, args.format)
    return 0


def _parse_weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ConfigError(f"--weights takes modality=weight pairs, e.g. image=1,audio=0.5 (got '{part}').")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"the weight of {k.strip()} must be a number (got '{v}').") from None
    return out


def cmd_propose(args: argparse.Namespace) -> int:
    from studio.pipeline import propose_tags, resolve_model

    store = open_store(args)
    model = resolve_model(store, args.dataset, args.model)
    table = propose_tags(store, args.dataset, model, args.k, split=args.split, seed=args.seed, log=err,
                         cluster=args.cluster, resolution=args.resolution)
    a = table.attrs
    err(f"clustering {a['cluster']}, k {a['k']} " + ("found by Leiden" if a["k_found_by"] == "leiden" else "given"))
    cols = [c for c in ("cluster", "size", "name", "purity", "cohesion", "majority_label", "representatives") if c in table]
    out = table[cols]
    if args.format == "json":  # every row says which k ran and how it was found
        out = out.assign(k=a["k"], k_found_by=a["k_found_by"], clustering=a["cluster"], resolution=a["resolution"])
    emit(out, args.format)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    store = open_store(args)
    cur = args.curator
    a = args.action
    if a == "accept":
        res = store.accept(args.dataset, args.model, args.cluster, cur, name=args.name, manual=args.manual)
    elif a == "reject":
        res = store.reject(args.dataset, args.model, args.cluster, cur)
    elif a == "rename":
        res = store.rename(args.dataset, args.tag, args.to, cur)
    elif a == "merge":
        res = store.merge(args.dataset, [t.strip() for t in args.tags.split(",") if t.strip()], args.into, cur)
    elif a == "set":
        res = store.set_item(args.dataset, args.item, args.tag, cur)
    elif a == "undo":
        res = store.undo(args.dataset, cur)
    else:  # history
        hist = store.history(args.dataset, curator=args.by, tag=args.tag_filter)
        emit(hist, args.format)
        return 0
    payload = res if isinstance(res, dict) else {"result": res}
    if getattr(args, "format", "table") == "json":
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
    else:
        err(str(payload.get("summary") or f"{a}: " + ", ".join(f"{k}={v}" for k, v in payload.items())))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from store.export import check_target, export_catalog, json_loss

    target = check_target(args.out, "export", args.follow_symlinks)
    if target != Path(args.out).expanduser():
        err(f"following the symbolic link {args.out} to {target}")
    store = open_store(args)
    df = store.catalog(args.dataset)
    if args.tagged_only:
        df = df[df["tag"].notna()]
    out = export_catalog(df, args.format, Path(args.out), follow_symlinks=args.follow_symlinks)
    err(f"wrote {len(df)} items to {out}")
    loss = json_loss(df, args.format)
    if loss:
        err(f"note: {loss}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    emit(open_store(args).list_datasets(backups=args.backups), args.format)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    df = open_store(args).list_models(args.dataset)
    emit(df.drop(columns=[c for c in ("config", "info") if c in df.columns]), args.format)
    return 0


# ---------------------------------------------------------------- parser

def add_cluster_options(s: argparse.ArgumentParser) -> None:
    """``--cluster`` and ``--resolution``, shared by ``evaluate`` and ``propose``."""
    s.add_argument("--cluster", choices=METHODS,
                   help="how clusters are cut: kmeans (the paper's), leiden (on a kNN graph; finds k, needs --k auto) or "
                        "spectral (on a kNN graph). Default: leiden with --k auto, kmeans with a number")
    s.add_argument("--resolution", type=float, default=DEFAULT_RESOLUTION,
                   help="Leiden resolution when k is auto: higher gives more, smaller clusters (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmae_core", description="MMAE Studio from the command line.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=default_db(), help="DuckDB file (default: $MMAE_STUDIO_DB or ./mmae_studio.duckdb)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help: str, fmt: tuple[str, ...] | None = ("table", "json")) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, parents=[common], description=help)
        if fmt:
            sp.add_argument("--format", choices=fmt, default=fmt[0])
        return sp

    s = add("demo", "create and register the synthetic demo dataset")
    s.add_argument("--name", default="demo")
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--scale", type=float, default=1.0, help="fraction of the full size (for quick trials)")
    s.add_argument("--replace", action="store_true", help="replace an existing dataset of that name (a backup is kept)")
    s.set_defaults(fn=cmd_demo)

    s = add("import", "register a dataset from files, a zip or a folder")
    s.add_argument("path")
    s.add_argument("--name", required=True)
    s.add_argument("--replace", action="store_true", help="replace an existing dataset of that name (a backup is kept)")
    s.set_defaults(fn=cmd_import)

    s = add("train", "train an MMAE, register it and write its latents")
    s.add_argument("--dataset", required=True)
    s.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help="%(default)s (the default) or paper: the method exactly as published (docs/design.md, 'The method')")
    s.add_argument("--epochs", type=int,
                   help=f"passes over the train split. Default: the preset's ({PRESETS[DEFAULT_PRESET].epochs}); the "
                        f"reliability preset trains one per {ITEMS_PER_SIZED_EPOCH} train items below "
                        f"{ITEMS_PER_SIZED_EPOCH * PRESETS['reliability'].epochs:,} of them, at least {MIN_SIZED_EPOCHS}, "
                        f"since its {PRESETS['reliability'].epochs} cost clusters on small real sets")
    s.add_argument("--samples", type=int, metavar="N",
                   help="training budget: N items drawn in all, rounded up to whole epochs (replaces --epochs; "
                        "e.g. 2000000 on a 1M-item archive is 2 epochs). Default: --epochs' default, or "
                        "2000000 when the train split has 100,000 items or more and no --epochs is given")
    s.add_argument("--batch-size", type=int,
                   help="items per step (preset default; 2048 when the train split has 100,000 items or more)")
    s.add_argument("--lr", type=float)
    s.add_argument("--weight-decay", type=float, help="AdamW weight decay (paper preset: 0, aligned: 0.3)")
    s.add_argument("--modality-dropout", type=float, metavar="P",
                   help="chance that an item's encoder side loses a random proper subset of its modalities "
                        "(paper preset: 0, aligned: 0.7)")
    s.add_argument("--align-weight", type=float, metavar="LAMBDA",
                   help="weight of the alignment term sum_m ||z_m - z||^2 (paper preset: 0, aligned: 0.1; 0 clusters "
                        "the fused latents better at k above the class count, docs/results.md 'Cross-modal search')")
    s.add_argument("--input-noise", type=float, metavar="SIGMA",
                   help=f"{INPUT_NOISE_HELP} (default preset: {PRESETS[DEFAULT_PRESET].input_noise:g}, the others: 0)")
    s.add_argument("--latent", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--model-name")
    s.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    s.add_argument("--parallel", choices=("modalities", "ops"),
                   help="deprecated, does nothing: training has one step that uses every core (accepted for old scripts)")
    s.add_argument("--out", help="also write the checkpoint to this file")
    s.set_defaults(fn=cmd_train)

    s = add("load-model", "register a checkpoint file for a dataset (checked and loaded without running code)")
    s.add_argument("checkpoint")
    s.add_argument("--dataset", required=True)
    s.add_argument("--model-name")
    s.set_defaults(fn=cmd_load_model)

    s = add("evaluate", "unimodal, fused-PCA, MCCA and MMAE metrics over a k grid", ("table", "csv", "json"))
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="default: the dataset's latest model")
    s.add_argument("--split", default="test")
    s.add_argument("--k", default=",".join(map(str, DEFAULT_K_GRID)))
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--n-init", type=int, default=EvalConfig.n_init,
                   help="KMeans starts per method and k (the lowest inertia is kept); more is steadier and slower: "
                        "10 takes about twice as long as the default %(default)s")
    s.add_argument("--weights", help="fused-PCA weights, e.g. image=1,audio=0.5,text=1")
    s.add_argument("--paper", action="store_true", help="append the paper's Tables II-IV as reference rows")
    add_cluster_options(s)
    s.add_argument("--sample", type=int, default=EVAL_SAMPLE, metavar="N",
                   help="evaluate a split larger than N items on a stratified sample of N (default %(default)s; 0: every item)")
    s.set_defaults(fn=cmd_evaluate)

    s = add("propose", "cluster a model's latents into proposed tags")
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="default: the dataset's latest model")
    s.add_argument("--k", default=AUTO, help="number of tags, or auto (default): found by Leiden on the latents' neighbour graph")
    add_cluster_options(s)
    s.add_argument("--split", default="test")
    s.add_argument("--seed", type=int, default=42)
    s.set_defaults(fn=cmd_propose)

    s = sub.add_parser("tag", help="curator decisions, each one transaction in the audit trail")
    tsub = s.add_subparsers(dest="action", required=True, metavar="ACTION")

    def tadd(name: str, help: str) -> argparse.ArgumentParser:
        t = tsub.add_parser(name, help=help, parents=[common], description=help)
        t.add_argument("--dataset", required=True)
        t.add_argument("--curator", default=default_curator())
        t.add_argument("--format", choices=("table", "json"), default="table")
        t.set_defaults(fn=cmd_tag)
        return t

    t = tadd("accept", "every item of a proposed cluster gets the tag")
    t.add_argument("--model", required=True)
    t.add_argument("--cluster", type=int, required=True)
    t.add_argument("--name", help="tag name (default: the proposed name)")
    hand = t.add_mutually_exclusive_group()
    hand.add_argument("--keep-manual", dest="manual", action="store_const", const="keep",
                      help="items tagged by hand keep their tag (the default); recorded in the audit trail")
    hand.add_argument("--replace-manual", dest="manual", action="store_const", const="replace",
                      help="items tagged by hand get the proposal's tag too; recorded in the audit trail")
    t.set_defaults(manual="keep")
    t = tadd("reject", "reject a proposed cluster")
    t.add_argument("--model", required=True)
    t.add_argument("--cluster", type=int, required=True)
    t = tadd("rename", "rename a tag on every item that has it")
    t.add_argument("--tag", required=True)
    t.add_argument("--to", required=True)
    t = tadd("merge", "merge tags into one")
    t.add_argument("--tags", required=True, help="comma-separated tag names")
    t.add_argument("--into", required=True)
    t = tadd("set", "set the tag of one item")
    t.add_argument("--item", required=True)
    t.add_argument("--tag", required=True)
    tadd("undo", "take back the last decision not yet undone")
    t = tadd("history", "the audit trail")
    t.add_argument("--by", help="only this curator's decisions")
    t.add_argument("--tag", dest="tag_filter", help="only decisions about this tag")

    s = add("export", "export the tagged catalog", fmt=None)
    s.add_argument("--format", choices=("csv", "parquet", "json"), required=True, help="file format")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--tagged-only", action="store_true")
    s.add_argument("--follow-symlinks", action="store_true",
                   help="write through --out when it is a symbolic link (refused otherwise)")
    s.set_defaults(fn=cmd_export)

    s = add("datasets", "list the registered datasets", ("table", "csv", "json"))
    s.add_argument("--backups", action="store_true", help="also list the backups kept by import --replace")
    s.set_defaults(fn=cmd_datasets)
    s = add("models", "list the registered models", ("table", "csv", "json"))
    s.add_argument("--dataset")
    s.set_defaults(fn=cmd_models)
    add_search_commands(sub, common)
    add_archive_commands(add)
    return p


# ---------------------------------------------------------------- cross-modal search

def cmd_search_eval(args: argparse.Namespace) -> int:
    from studio.pipeline import resolve_model
    from studio.search import SPACE_WORDS, fell_back, model_modalities, search_eval, worst_pairs

    store = open_store(args)
    model = resolve_model(store, args.dataset, args.model)
    model_modalities(store, args.dataset, model)  # a bad name fails before any progress line
    err(f"measuring retrieval of {model} on the {args.split} split (every ordered pair of modalities, {SPACE_WORDS[args.space]})")
    for b in args.baseline or ():
        err(f"baseline {b} on the train split's features (its rows have method '{b}')")
    table = search_eval(store, args.dataset, model, split=args.split, metric=args.metric, baseline=args.baseline,
                        space=args.space, log=err)
    used = table.loc[table["method"] == "mmae", "space"].iloc[0]
    if used != args.space:
        err(fell_back(args.space, used))
    if args.metric == "best":
        err(f"{table.attrs['chosen']} similarity retrieves better for this model; its rows are shown (--metric both shows both)")
    if args.baseline:
        worst = worst_pairs(table)
        if worst.notna().all() and len(worst) >= 2:
            err("worst modality pair, class P@10: " + ", ".join(f"{m} {v:.3f}" for m, v in worst.items())
                + ("; supervised knows the classes: about what these data allow" if "supervised" in worst else ""))
    emit(table, args.format)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from studio.pipeline import resolve_model
    from studio.search import SPACE_WORDS, fell_back, search

    store = open_store(args)
    model = resolve_model(store, args.dataset, args.model)
    if args.item is None and args.vector is None:
        raise ConfigError("give a query: --item ID (an item of the dataset) or --vector FILE.npy (a feature vector).")
    if args.item is not None and args.vector is not None:
        raise ConfigError("give one query, --item or --vector, not both.")
    data = None
    if args.vector is not None:
        path = Path(args.vector)
        if not path.is_file():
            raise ConfigError(f"{args.vector} is not a file; give the path of a .npy file holding one {args.from_} feature vector.")
        data = path.read_bytes()
    found = search(store, args.dataset, model, args.from_, args.to, item=args.item, vector=data, top=args.top,
                   split=args.split, metric=args.metric, vector_name=str(args.vector), space=args.space, log=err)
    what = f"item {args.item}" if args.item is not None else f"the vector in {args.vector}"
    err(f"{len(found)} nearest {found.attrs['split']} items to {what} ({args.from_} latent) in the {args.to} latents, "
        f"by {args.metric}, in the {SPACE_WORDS[found.attrs['space']]}")
    if found.attrs["space"] != args.space:
        err(fell_back(args.space, found.attrs['space']))
    emit(found, args.format)
    return 0


SPACE_HELP = ("where latents are compared: tags (default; the chance two items carry the same of the model's own "
              "tags, averaged with the shared-space cosine), shared (the directions the model's per-modality latents "
              "share, by a correlation-weighted CCA fitted on train) or latent (the raw latents)")


def add_search_commands(sub: "argparse._SubParsersAction", common: argparse.ArgumentParser) -> None:
    """``search-eval`` and ``search`` (cross-modal search)."""
    from mmae_core.search.retrieval import METRICS
    from studio.search import BASELINES, DEFAULT_METRIC, DEFAULT_SPACE, SPACES

    h = "retrieval metrics (class P@10, mAP, instance recall@1/5/10, median rank) for every ordered modality pair"
    s = sub.add_parser("search-eval", help=h, parents=[common], description=h)
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="default: the dataset's latest model")
    s.add_argument("--split", default="test")
    s.add_argument("--metric", choices=("best", *METRICS, "both"), default="best",
                   help="similarity (default: cosine and Euclidean are both measured and the better one is shown)")
    s.add_argument("--space", choices=SPACES, default=DEFAULT_SPACE, help=SPACE_HELP)
    s.add_argument("--baseline", choices=BASELINES, default=None, action="append",
                   help="also measure a baseline on the same items; repeat for both. mcca: multiset CCA of the "
                        "features; supervised: a search that knows the classes (classifiers fitted on the train "
                        "split's labels), an estimate of what the data allow")
    s.set_defaults(fn=cmd_search_eval)

    h = "items nearest a query (an item or a feature vector) by another modality's latent, or the fused one"
    s = sub.add_parser("search", help=h, parents=[common], description=h)
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="default: the dataset's latest model")
    s.add_argument("--item", help="query item id")
    s.add_argument("--vector", help="a .npy file holding one feature vector of the --from modality")
    s.add_argument("--from", dest="from_", required=True, metavar="MODALITY", help="the query's modality")
    s.add_argument("--to", required=True, metavar="MODALITY|fused", help="the latents to search in")
    s.add_argument("--top", type=int, default=10)
    s.add_argument("--split", help="split to search (default: the query item's split, else test)")
    s.add_argument("--metric", choices=METRICS, default=DEFAULT_METRIC)
    s.add_argument("--space", choices=SPACES, default=DEFAULT_SPACE, help=SPACE_HELP)
    s.set_defaults(fn=cmd_search)



# ---------------------------------------------------------------- archives: novelty and conflicts

def cmd_novelty(args: argparse.Namespace) -> int:
    """Rank items by novelty; JSON: a list of {item_id, split, score, recon, distance, nearest}."""
    from studio.archive import novelty_of_features, novelty_scores, parse_splits
    from studio.pipeline import resolve_model

    store = open_store(args)
    model = resolve_model(store, args.dataset, args.model)
    if args.path:  # new material, not in the store: every split of it is ranked (--split does not apply)
        from mmae_core.data.features import load_path

        new = load_path(args.path, name="new material", require_train=False)
        df = novelty_of_features(store, args.dataset, model, new, combine=args.combine, log=err)
    else:
        df = novelty_scores(store, args.dataset, model, parse_splits(args.split), combine=args.combine, log=err)
    err(f"{len(df)} items scored against {df.attrs['groups']} {df.attrs['source']} ({df.attrs['combine']}); "
        f"the train split's 99th percentile is {df.attrs['train_q99']:.2f}")
    if args.top:
        df = df.head(args.top)
    emit(df, args.format)
    return 0


def cmd_conflicts(args: argparse.Namespace) -> int:
    """Rank items whose modalities point to different tags; JSON: {item_id, score, flagged, <modality>: tag}."""
    from studio.archive import conflict_items
    from studio.pipeline import resolve_model

    store = open_store(args)
    model = resolve_model(store, args.dataset, args.model)
    df = conflict_items(store, args.dataset, model, args.split, method=args.method, log=err)
    err(f"{int(df['flagged'].sum())} of {len(df)} {args.split} items have modalities pointing to different "
        f"{df.attrs['source']}")
    if args.flagged_only:
        df = df[df["flagged"]]
    if args.top:
        df = df.head(args.top)
    emit(df, args.format)
    return 0


def add_archive_commands(add: "object") -> None:
    """``novelty`` and ``conflicts`` (kept in one block, apart from the spine's commands)."""
    from mmae_core.archive.conflicts import DEFAULT_METHOD, METHODS
    from mmae_core.archive.novelty import COMBINATIONS

    s = add("novelty", "score items by how novel they are (reconstruction error + distance to the nearest tag)",
            ("table", "csv", "json"))
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="default: the dataset's latest model")
    s.add_argument("--split", default="test,ood", help="comma-separated splits (default test,ood; absent ones are an error)")
    s.add_argument("--combine", choices=COMBINATIONS, help="how the two signals are combined (default: zsum)")
    s.add_argument("--top", type=int, help="only the N most novel items")
    s.add_argument("--path", metavar="PATH", help="rank new material that is not in the store (a folder, zip or "
                   "file in any import layout, any split names) against the dataset instead of its splits")
    s.set_defaults(fn=cmd_novelty)

    s = add("conflicts", "rank items whose modalities point to different tags or clusters", ("table", "csv", "json"))
    s.add_argument("--dataset", required=True)
    s.add_argument("--model", help="default: the dataset's latest model")
    s.add_argument("--split", default="test")
    s.add_argument("--method", choices=METHODS, help=f"disagreement score (default: {DEFAULT_METHOD})")
    s.add_argument("--flagged-only", action="store_true", help="only items whose modalities point to different tags")
    s.add_argument("--top", type=int, help="only the N strongest disagreements")
    s.set_defaults(fn=cmd_conflicts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except StudioError as e:
        err(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        err("interrupted; nothing half-written was kept.")
        return 130
    except BrokenPipeError:
        return 0
    except (MemoryError, RuntimeError, OSError) as e:
        return _resource_failure(e)
    except Exception as e:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("MMAE_DEBUG"):
            traceback.print_exc()
        err(f"internal error: {type(e).__name__}: {e} (set MMAE_DEBUG=1 for the traceback and report it)")
        return 2


# ---------------------------------------------------------------- reliability

def _resource_failure(e: BaseException) -> int:
    """Out of memory or disk is the machine, not a bug: one sentence and exit 1; anything else stays a bug (2)."""
    from mmae_core.errors import resource_error

    known = resource_error(e)
    if known is not None:
        err(f"error: {known}")
        return 1
    if os.environ.get("MMAE_DEBUG"):
        traceback.print_exception(e)
    err(f"internal error: {type(e).__name__}: {e} (set MMAE_DEBUG=1 for the traceback and report it)")
    return 2
