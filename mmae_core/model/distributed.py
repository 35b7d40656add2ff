"""Data-parallel training under ``torchrun``: the one training step of ``train.py`` on several processes.

``torchrun --nproc_per_node N -m mmae_core train ...`` starts N copies of the command with RANK,
WORLD_SIZE and LOCAL_RANK (and a rendezvous address) in the environment. ``launched()`` reads them;
``process_group`` joins the group (gloo on a CPU, NCCL on CUDA) and yields ``Ranks``, the few
collective operations the training loop needs. Everything else stays the single-process code:

* every rank draws the same seeded permutation and modality-dropout masks of each epoch and takes
  its own contiguous share of each batch (``share``), so the ranks together see exactly the batches
  one process would, and ``batch_size`` stays the batch of one optimizer step;
* ``torch.nn.parallel.DistributedDataParallel`` wraps the same ``MMAE`` and averages the gradients
  of ``loss.backward()``; ``torch.optim`` then takes the same step on every rank;
* the standardizer is rank 0's, broadcast, so every rank scales its rows alike;
* BatchNorm statistics are those of each rank's share (DDP sends rank 0's running statistics to
  the others at every forward); the saved model is rank 0's.

Without torchrun (or with one process) none of this runs: the step is the single-process one,
bit for bit. The result is reproducible for a given seed and number of processes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from mmae_core.errors import ConfigError, StudioError
from mmae_core.model.device import resolve_device

__all__ = ["Launch", "PeerStopped", "Ranks", "launched", "process_group", "share"]


class PeerStopped(StudioError):
    """Another process of the launch stopped (it has said why); this one stops too."""


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a torchrun launch."""

    rank: int
    world_size: int
    local_rank: int


def launched(env: Mapping[str, str] | None = None) -> Launch | None:
    """The launch torchrun describes in the environment, or None when there is none (or only one
    process: then training is the plain single-process run)."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(
            f"RANK and WORLD_SIZE must be whole numbers (got {env['RANK']!r} and {env['WORLD_SIZE']!r}); launch with torchrun or unset them."
        ) from None
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK {rank} does not fit WORLD_SIZE {world}; launch with torchrun or unset them.")
    return None if world == 1 else Launch(rank, world, local)


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part [lo, hi) of ``n`` rows split ``world`` ways, the first
    ``n % world`` parts one row longer (``numpy.array_split``'s rule)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


class Ranks:
    """The running process group, as much of it as the training loop uses."""

    def __init__(self, launch: Launch, device: torch.device, backend: str):
        self.rank, self.world_size, self.local_rank = launch.rank, launch.world_size, launch.local_rank
        self.device, self.backend = device, backend

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes (store, checkpoint, stdout)."""
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.world_size} processes (DistributedDataParallel, {self.backend})"

    def wrap(self, model: torch.nn.Module, may_skip: bool) -> DistributedDataParallel:
        """The model under DDP. ``may_skip``: a step may leave parameters out of its graph (an encoder
        whose modality no row of a rank's share has, with missing data or modality dropout); DDP must
        then look for them after every forward, which it otherwise need not."""
        ids = [self.device.index if self.device.index is not None else self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=may_skip)

    def barrier(self) -> None:
        """Wait until every rank has come here; ``PeerStopped`` when one stopped on the way (gloo
        reports a closed connection)."""
        try:
            dist.barrier()
        except RuntimeError as e:
            raise PeerStopped(f"another process of this torchrun launch stopped ({str(e).splitlines()[0][:200]}); its message says why.") from None

    def same_as_main(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable object, e.g. the fitted standardizer)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place (the epoch's loss sums)."""
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's BatchNorm running statistics on every rank, so an evaluation gives the same
        number everywhere and every rank stops early at the same epoch."""
        for b in model.buffers():
            dist.broadcast(b, src=0)

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision on every rank (a loop that ends on one rank only would hang the rest)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device if self.backend == "nccl" else "cpu")
        dist.broadcast(t, src=0)
        return bool(t.item() > 0.5)


@contextmanager
def process_group(launch: Launch, device_name: str = "auto") -> Iterator[Ranks]:
    """Join torchrun's process group for the block: NCCL when training runs on CUDA, else gloo."""
    device = resolve_device(device_name)
    if device.type == "mps":
        raise ConfigError("data-parallel training runs on cpu or cuda, not mps; choose --device cpu or drop torchrun.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(launch.local_rank)
        device = torch.device("cuda", launch.local_rank)
    try:
        dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size)
    except (RuntimeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"RANK and WORLD_SIZE are set but the {backend} process group did not start ({first}); launch with torchrun or unset them."
        ) from None
    try:
        yield Ranks(launch, device, backend)
    finally:
        dist.destroy_process_group()
