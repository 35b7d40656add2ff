"""Checkpoints: exact round trip, refusal of what does not fit, refusal of code payloads."""
from __future__ import annotations

import io
import os
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmae_core.model.checkpoint import check_fits, load_checkpoint, save_checkpoint
from mmae_core.data.dataset import FeatureSet, Split
from mmae_core.errors import CheckpointError
from mmae_core.model.train import TrainedModel, encode, train
from tests.test_train import CFG, make_set


@pytest.fixture(scope="module")
def fs() -> FeatureSet:
    return make_set(200)


@pytest.fixture(scope="module")
def tm(fs: FeatureSet) -> TrainedModel:
    return train(fs, replace(CFG, epochs=2))


def test_round_trip_gives_identical_latents(fs: FeatureSet, tm: TrainedModel, tmp_path: Path) -> None:
    data = save_checkpoint(tm)
    assert isinstance(data, bytes)
    path = tmp_path / "model.pt"
    path.write_bytes(data)
    for source in (data, path):
        back = load_checkpoint(source)
        assert back.modalities == tm.modalities and list(back.modalities) == list(tm.modalities)
        assert back.config == tm.config and back.dataset_name == "toy"
        assert back.history == tm.history
        for m in tm.modalities:
            assert np.array_equal(back.standardizer.mean[m], tm.standardizer.mean[m])
            assert np.array_equal(back.standardizer.std[m], tm.standardizer.std[m])
        z1, per1 = encode(tm, fs.splits["train"].features)
        z2, per2 = encode(back, fs.splits["train"].features)
        assert np.array_equal(z1, z2)
        assert all(np.array_equal(per1[m], per2[m], equal_nan=True) for m in per1)
    check_fits(back, fs)  # fits the data it was trained on


def test_checkpoint_holds_only_plain_containers_and_tensors(tm: TrainedModel) -> None:
    payload = torch.load(io.BytesIO(save_checkpoint(tm)), weights_only=True)

    def walk(obj: object) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                assert isinstance(k, str)
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
        else:
            assert obj is None or isinstance(obj, (str, int, float, bool, torch.Tensor)), type(obj)

    walk(payload)
    assert payload["format"] == "mmae-studio-checkpoint" and payload["version"] == 1


def test_mismatched_dataset_is_refused_naming_the_mismatch(tm: TrainedModel) -> None:
    base = make_set(40, missing=False)
    feats = dict(base.splits["train"].features)
    feats["video"] = feats.pop("text")
    renamed = FeatureSet("other", {"image": 6, "audio": 20, "video": 12}, {"train": Split(base.splits["train"].item_ids, feats)})
    with pytest.raises(CheckpointError, match=r"needs text which the dataset lacks; the dataset has video which the model does not know"):
        check_fits(tm, renamed)
    feats = dict(base.splits["train"].features)
    feats["audio"] = np.zeros((40, 24), np.float32)
    wider = FeatureSet("other", {"image": 6, "audio": 24, "text": 12}, {"train": Split(base.splits["train"].item_ids, feats)})
    with pytest.raises(CheckpointError, match=r"audio is 20-d in the model but 24-d in the dataset"):
        check_fits(tm, wider)


def test_weights_of_another_architecture_are_refused(tm: TrainedModel) -> None:
    payload = torch.load(io.BytesIO(save_checkpoint(tm)), weights_only=True)
    payload["config"]["latent"] = 16  # config says latent 16, the weights were trained with 8
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match=r"the image encoder's layer 3 weight has shape \(8, 16\) .*latent 16"):
        load_checkpoint(buf.getvalue())
    payload["config"]["latent"] = 8
    del payload["state_dict"]["dec.2.6.bias"]
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match="lack the text decoder's layer 3 bias"):
        load_checkpoint(buf.getvalue())


def test_unreadable_foreign_or_old_files_are_refused(tm: TrainedModel, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(b"")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path / "nope.pt")
    buf = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, buf)
    with pytest.raises(CheckpointError, match="not an MMAE Studio checkpoint"):
        load_checkpoint(buf.getvalue())
    payload = torch.load(io.BytesIO(save_checkpoint(tm)), weights_only=True)
    payload["version"] = 99
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(buf.getvalue())
    del payload["standardizer"]
    payload["version"] = 1
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match="lacks standardizer"):
        load_checkpoint(buf.getvalue())


class _Payload:
    """Unpickling this would run ``os.system`` (the classic pickle attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # noqa: D105
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_code_payload_is_refused_without_running(tm: TrainedModel, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # 1) a torch zip file whose pickle carries the payload inside an otherwise valid checkpoint
    payload = torch.load(io.BytesIO(save_checkpoint(tm)), weights_only=True)
    payload["history"] = [_Payload(marker)]
    buf = io.BytesIO()
    torch.save(payload, buf)
    with pytest.raises(CheckpointError, match="contains code or objects"):
        load_checkpoint(buf.getvalue())
    # 2) a bare pickle, as a file path
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)
    assert not marker.exists()
    # the payload is real: unpickling it unsafely does create the file
    pickle.loads(evil.read_bytes())
    assert marker.exists()


def test_a_checkpoint_from_the_multi_threaded_trainer_still_loads(fs: FeatureSet, tm: TrainedModel) -> None:
    """Files saved before training had one step carry a ``parallel`` field in their config: they load,
    the field is dropped, and the model encodes exactly as before."""
    payload = torch.load(io.BytesIO(save_checkpoint(tm)), weights_only=True)
    payload["config"] = {**payload["config"], "parallel": "ops"}
    buf = io.BytesIO()
    torch.save(payload, buf)
    old = load_checkpoint(buf.getvalue())
    assert "parallel" not in old.config.to_dict() and old.config == tm.config
    x = fs.splits["train"].features
    assert np.array_equal(encode(old, x)[0], encode(tm, x)[0], equal_nan=True)
