"""Checkpoints: one file that restores a trained model without executing any code.

The file is ``torch.save`` of a dict of plain containers (dict, list, str, int, float, bool, None)
and tensors only, read back with ``torch.load(weights_only=True)``: its restricted unpickler refuses
any other global, so a crafted pickle cannot run code. Everything needed to use the model again
travels inside: weights, config, modality names and dimensions (in order), the standardization
statistics, the dataset name and a format version.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from mmae_core.model.completion import LatentCompletion
from mmae_core.config import TrainConfig
from mmae_core.data.dataset import FeatureSet
from mmae_core.errors import CheckpointError, ConfigError
from mmae_core.model.mmae import MMAE
from mmae_core.model.standardize import Standardizer
from mmae_core.model.train import TrainedModel

FORMAT = "mmae-studio-checkpoint"
VERSION = 1
_KEYS = ("format", "version", "modalities", "config", "standardizer", "state_dict", "dataset_name")


def save_checkpoint(tm: TrainedModel) -> bytes:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "modalities": [[m, int(d)] for m, d in tm.modalities.items()],  # a list keeps the order explicit
        "config": tm.config.to_dict(),
        "standardizer": {
            m: {"mean": torch.from_numpy(np.asarray(tm.standardizer.mean[m], dtype=np.float32).copy()),
                "std": torch.from_numpy(np.asarray(tm.standardizer.std[m], dtype=np.float32).copy())}
            for m in tm.modalities
        },
        "state_dict": {k: v.detach().cpu().clone() for k, v in tm.model.state_dict().items()},
        "dataset_name": str(tm.dataset_name),
        "history": _plain(tm.history),
        "train_seconds": float(tm.train_seconds),
    }
    if tm.completion is not None:
        c = tm.completion
        payload["completion"] = {
            "n_fit": int(c.n_fit),
            "subsets": [[int(j) for j in s] for s in c.subsets()],  # plain ints: the safe loader refuses numpy scalars
            "W": [torch.from_numpy(c.maps[s][0].copy()) for s in c.subsets()],
            "b": [torch.from_numpy(c.maps[s][1].copy()) for s in c.subsets()],
        }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def _plain(obj: object) -> object:
    """History as JSON-like plain values (numpy scalars would be refused by the safe loader)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _read(data: bytes | Path | str) -> dict:
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise CheckpointError(f"{path} is not a file; give the path of a checkpoint saved by MMAE Studio.")
        data = path.read_bytes()
    if not data:
        raise CheckpointError("the checkpoint is empty; choose a checkpoint file saved by MMAE Studio.")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # the safe unpickler refused it, or it is not a torch file at all
        why = "it contains code or objects a checkpoint may not hold" if "weights_only" in str(exc).lower() or "unsupported global" in str(exc).lower() else "it is not a readable checkpoint file"
        raise CheckpointError(f"the checkpoint was refused because {why}; load only checkpoints saved by MMAE Studio.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError("this file is not an MMAE Studio checkpoint; load a checkpoint saved by MMAE Studio.")
    if payload.get("version") != VERSION:
        raise CheckpointError(
            f"the checkpoint has format version {payload.get('version')!r} but this MMAE Studio reads version {VERSION}; "
            "save it again with this version."
        )
    missing = [k for k in _KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"the checkpoint lacks {', '.join(missing)}; it is incomplete, save it again.")
    return payload


def _describe(key: str, names: list[str]) -> str:
    """'enc.1.3.weight' → 'the audio encoder's layer 2 weight' (what a user can relate to)."""
    parts = key.split(".")
    try:
        side = {"enc": "encoder", "dec": "decoder"}[parts[0]]
        i = int(parts[2])
        kind = "batch-norm " if i % 3 == 1 else ""
        return f"the {names[int(parts[1])]} {side}'s layer {i // 3 + 1} {kind}{parts[3]}"
    except (KeyError, IndexError, ValueError):
        return key


def _check_weights(model: MMAE, state: dict, cfg: TrainConfig) -> None:
    expected = model.state_dict()
    arch = f"latent {cfg.latent}, hidden {'x'.join(str(h) for h in cfg.hidden)}"
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        what = f"lack {_describe(missing[0], model.names)}" if missing else f"have an extra {_describe(extra[0], model.names)}"
        raise CheckpointError(f"the checkpoint's weights {what} for the architecture in its config ({arch}); the file is inconsistent, save it again.")
    for k, t in expected.items():
        v = state[k]
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"the checkpoint's {_describe(k, model.names)} is not a tensor; the file is damaged, save it again.")
        if tuple(v.shape) != tuple(t.shape):
            raise CheckpointError(
                f"{_describe(k, model.names)} has shape {tuple(v.shape)} in the checkpoint but its config ({arch}) "
                f"needs {tuple(t.shape)}; the weights come from a different architecture, save the checkpoint again."
            )


def _check_statistics(std: Standardizer) -> None:
    """Means finite, standard deviations finite and positive (training sets a constant column's to 1):
    otherwise every standardized value is NaN and the data would be blamed for it."""
    for m in std.mean:
        if not np.isfinite(std.mean[m]).all():
            raise CheckpointError(f"the checkpoint's mean for {m} holds NaN or infinite values; the file is damaged, save it again.")
        sd = std.std[m]
        bad = np.flatnonzero(~(np.isfinite(sd) & (sd > 0)))
        if bad.size:
            raise CheckpointError(
                f"the checkpoint's standard deviation for {m} is {sd[bad[0]]:g} in column {int(bad[0])}, which cannot "
                "standardize features (it must be finite and above 0); the file is damaged, save it again."
            )


def _check_finite(state: dict, names: list[str]) -> None:
    """Refuse NaN or infinite weights: every latent would come out NaN, and later steps would fail
    with misleading sentences (no items, no features)."""
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"{_describe(k, names)} holds NaN or infinite values in the checkpoint (its training diverged or the file "
                "is damaged); train the model again or load another checkpoint."
            )


def load_checkpoint(data: bytes | Path | str) -> TrainedModel:
    """Rebuild a trained model from checkpoint bytes or a path, without running any code from it."""
    p = _read(data)
    try:
        modalities = {str(m): int(d) for m, d in p["modalities"]}
        cfg = TrainConfig.from_dict(dict(p["config"]))
        std = Standardizer(
            {m: np.asarray(p["standardizer"][m]["mean"], dtype=np.float32) for m in modalities},
            {m: np.asarray(p["standardizer"][m]["std"], dtype=np.float32) for m in modalities},
        )
    except ConfigError as exc:
        raise CheckpointError(f"the checkpoint's config is invalid ({str(exc).rstrip('.')}); save it again.") from None
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("the checkpoint's modalities, config or standardization statistics are malformed; save it again.") from None
    for m, d in modalities.items():
        if std.mean[m].shape != (d,) or std.std[m].shape != (d,):
            raise CheckpointError(f"the checkpoint's standardization statistics for {m} do not have dimension {d}; save it again.")
    _check_statistics(std)
    state = p["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint's weights are not a state dict; save it again.")
    # The declared architecture is built on the meta device first (shapes only, no memory): a small file
    # declaring hidden=[12000,12000] took 4 GB and 18 s to build for real before its shapes were refused.
    with torch.device("meta"):
        skeleton = MMAE(modalities, cfg.latent, cfg.hidden, cfg.fusion)
    _check_weights(skeleton, state, cfg)
    _check_finite(state, skeleton.names)
    model = MMAE(modalities, cfg.latent, cfg.hidden, cfg.fusion)
    model.load_state_dict(state)
    model.eval()
    history = p.get("history") if isinstance(p.get("history"), list) else []
    return TrainedModel(model, cfg, modalities, std, history, float(p.get("train_seconds", 0.0) or 0.0), str(p["dataset_name"]),
                        _completion(p.get("completion"), len(modalities), cfg.latent))


def _completion(c: object, M: int, latent: int) -> LatentCompletion | None:
    """The latent-completion maps, checked against the architecture; None in older checkpoints."""
    if c is None:
        return None
    bad = "the checkpoint's latent-completion maps are malformed; save it again."
    try:
        subsets = [tuple(int(j) for j in s) for s in c["subsets"]]
        W, b = list(c["W"]), list(c["b"])
        if not (len(subsets) == len(W) == len(b)):
            raise CheckpointError(bad)
        maps = {}
        for s, w, v in zip(subsets, W, b):
            if not s or len(set(s)) != len(s) or len(s) >= M or min(s) < 0 or max(s) >= M:
                raise CheckpointError(bad)
            if tuple(w.shape) != (len(s) * latent, latent) or tuple(v.shape) != (latent,):
                raise CheckpointError(
                    f"the checkpoint's latent-completion map for modalities {list(s)} has shape {tuple(w.shape)} but latent {latent} "
                    f"needs {(len(s) * latent, latent)}; the file is inconsistent, save it again."
                )
            if not (bool(torch.isfinite(w).all()) and bool(torch.isfinite(v).all())):
                raise CheckpointError(
                    f"the checkpoint's latent-completion map for modalities {list(s)} holds NaN or infinite values; "
                    "train the model again or load another checkpoint."
                )
            maps[s] = (w.float().numpy().copy(), v.float().numpy().copy())
        return LatentCompletion(maps, int(c["n_fit"]))
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CheckpointError(bad) from None


def check_fits(tm: TrainedModel, fs: FeatureSet) -> None:
    """Refuse a model whose modalities or dimensions differ from the dataset's, naming the difference."""
    have, want = set(fs.modalities), set(tm.modalities)
    if have != want:
        only_model = sorted(want - have)
        only_data = sorted(have - want)
        bits = []
        if only_model:
            bits.append(f"the model needs {', '.join(only_model)} which the dataset lacks")
        if only_data:
            bits.append(f"the dataset has {', '.join(only_data)} which the model does not know")
        raise CheckpointError(
            f"the checkpoint does not fit {fs.name}: modalities differ ({'; '.join(bits)}); "
            "use a checkpoint trained on the same modalities."
        )
    wrong = [f"{m} is {tm.modalities[m]}-d in the model but {fs.modalities[m]}-d in the dataset" for m in tm.modalities if tm.modalities[m] != fs.modalities[m]]
    if wrong:
        raise CheckpointError(f"the checkpoint does not fit {fs.name}: {'; '.join(wrong)}; use a checkpoint trained on features of the same kind.")
