"""A published multimodal VAE (MoPoE, Sutter et al. 2021; MMVAE+, Palumbo et al. 2023) from the MultiVae
package, trained on our splits so ``compare_methods.py`` can put it beside the default.

MultiVae is an optional extra (``requirements-extra.txt``). Two things stand between it and this
machine, and both are handled here rather than by changing the package:

* its models need ``pydantic`` (their configs are pydantic dataclasses), pinned in the extras;
* every ``multivae`` import goes through its image data sets and plotting helpers, which import
  ``torchvision``. The PyPI torchvision wheels are built against CUDA torch and fail to load beside
  our CPU torch ("operator torchvision::nms does not exist"), and no CPU build is reachable here.
  We use none of those data sets or plots, so when torchvision cannot be imported an inert
  placeholder module stands in for it while MultiVae is imported, and is taken out of
  ``sys.modules`` afterwards, so nothing else in the process mistakes it for torchvision.

The training budget is the MMAE's: the same standardized features (``Standardizer`` fit on train), the
same epochs, batch 128, Adam at 1e-3, the package's default MLP encoders/decoders with Gaussian
likelihoods, latent dimension 32, beta 1. The test items are embedded by the posterior mean given all
modalities (``encode(..., return_mean=True)``), which is what clustering a VAE's latents means.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types
from typing import Any

import numpy as np

VAES = ("mopoe", "mmvaeplus")
LATENT = 32
BATCH = 128
LR = 1e-3


class _Inert(types.ModuleType):
    """Stands in for torchvision: every attribute is another placeholder, calling one returns itself."""

    def __getattr__(self, name: str) -> "_Inert":
        if name.startswith("__"):
            raise AttributeError(name)
        return _Inert(f"{self.__name__}.{name}")

    def __call__(self, *args: object, **kwargs: object) -> "_Inert":
        return self


def _torchvision_or_placeholder() -> list[str]:
    """Make ``import torchvision`` work for MultiVae; the names of the placeholders put in (to remove)."""
    try:
        import torchvision  # noqa: F401
        return []
    except Exception:  # absent, or a CUDA build that cannot load beside CPU torch
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
    names = ["torchvision", "torchvision.transforms", "torchvision.datasets", "torchvision.datasets.utils",
             "torchvision.utils", "torchvision.models"]
    for name in names:
        m = _Inert(name)
        m.__path__ = []
        m.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = m
    return names


def multivae_models() -> tuple[Any | None, str]:
    """``(multivae.models, "")`` when the package is usable, else ``(None, why not)`` in one line."""
    try:
        import pydantic  # noqa: F401
    except ImportError:
        return None, "multivae needs pydantic (pip install -r requirements-extra.txt)"
    try:
        import multivae  # noqa: F401
    except ImportError:
        return None, "multivae is not installed (pip install --no-deps -r requirements-extra.txt)"
    placed = _torchvision_or_placeholder()
    try:
        import multivae.models as mm
        import multivae.data.datasets.base  # noqa: F401  (fit_encode's batches; imported while the placeholder is in)
    except Exception as exc:  # an optional extra: any import failure means "not available here"
        return None, f"multivae does not import here ({type(exc).__name__}: {exc})"
    finally:
        for name in placed:  # MultiVae keeps its references; nothing else in the process sees the placeholder
            sys.modules.pop(name, None)
    return mm, ""


def fit_encode(vae: str, train: dict[str, np.ndarray], test: dict[str, np.ndarray], epochs: int,
               seed: int) -> np.ndarray:
    """Train ``vae`` on the (standardized, complete) train views; the test items' posterior means."""
    import torch

    mm, why = multivae_models()  # first: it puts the torchvision placeholder in place when needed
    if mm is None:
        raise RuntimeError(why)
    from multivae.data import MultimodalBaseDataset
    from multivae.data.datasets.base import DatasetOutput

    torch.manual_seed(seed)
    dims = {m: (int(x.shape[1]),) for m, x in train.items()}
    common = dict(n_modalities=len(dims), latent_dim=LATENT, input_dims=dims)
    if vae == "mopoe":
        model = mm.MoPoE(mm.MoPoEConfig(**common))
    elif vae == "mmvaeplus":
        model = mm.MMVAEPlus(mm.MMVAEPlusConfig(**common, modalities_specific_dim=LATENT // 4, K=1))
    else:
        raise ValueError(f"unknown VAE '{vae}'; choose one of {', '.join(VAES)}")
    x_tr = {m: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for m, v in train.items()}
    n = len(next(iter(x_tr.values())))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, BATCH):
            idx = order[s : s + BATCH]
            out = model(DatasetOutput(data={m: x[idx] for m, x in x_tr.items()}), epoch=epoch + 1)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        model.update()
    model.eval()
    x_te = {m: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for m, v in test.items()}
    with torch.no_grad():
        z = model.encode(MultimodalBaseDataset(x_te), cond_mod="all", return_mean=True).z
    return z.reshape(len(z), -1).numpy().astype(np.float32)
