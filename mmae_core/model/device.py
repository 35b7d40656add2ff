"""Where training runs: the fastest device this machine has, unless the user names one."""
from __future__ import annotations

import torch

from mmae_core.errors import ConfigError


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA, then Apple MPS, then CPU; a named device that is absent is a user error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was chosen but this machine has no usable CUDA GPU; choose auto or cpu.")
    if name == "mps" and not _mps_available():
        raise ConfigError("device mps was chosen but Apple MPS is not available here; choose auto or cpu.")
    if name not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device must be auto, cpu, cuda or mps (got '{name}').")
    return torch.device(name)
