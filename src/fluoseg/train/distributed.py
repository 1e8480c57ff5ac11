"""Data-parallel training over several processes with ``torch.distributed`` (DDP).

Every process (rank) holds the whole network, wrapped in
:class:`~torch.nn.parallel.DistributedDataParallel`, which averages the gradients of the ranks
after each backward pass (gloo on CPU, NCCL on CUDA, one GPU per rank). The processes are
started by torch's own launchers: ``fluoseg train --nproc N`` uses
:func:`torch.multiprocessing.spawn`, and ``torchrun --nproc-per-node N -m fluoseg train ...``
starts them itself (its ``RANK``/``WORLD_SIZE`` environment is read here).

Batches: every rank draws the same *global* batch of ``train.batch_size`` patches from the same
seeded generator and keeps its share, chosen by :class:`~torch.utils.data.DistributedSampler`
(rank ``r`` of ``N`` keeps patches ``r, r + N, ...``). Patches are drawn at random rather than
indexed, which is why the sampler shares out a batch rather than a dataset; drawing the whole
batch on every rank costs only the patch sampling, and it keeps every rank's random state
equal to the single-process one. DDP's mean of the ranks' mean losses is then the loss of the
global batch whenever every patch has as many annotated pixels (patches inside the image; a
mean over patches), so the gradients, the weights and the loss curve equal single-process
training with the same seed and global batch up to float rounding. Batch-norm layers see
their rank's patches only (on CUDA they are converted to
:class:`~torch.nn.SyncBatchNorm`, which sees the global batch).

Rank 0 alone validates (and shares the scores), writes checkpoints, ``metrics.csv`` and
``train.log``, so ``--resume`` works exactly as for one process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from fluoseg.errors import FluosegError

__all__ = ["Ranks", "SINGLE", "free_port", "launched_ranks", "spawn"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes.

    Attributes
    ----------
    rank
        0 for the process that writes the run directory.
    world
        Number of processes (1: ordinary training, no process group).
    local_rank
        Rank on this machine: the index of its GPU.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: its own GPU when training on CUDA."""
        if self.distributed and device.type == "cuda":
            if torch.cuda.device_count() < self.world:
                raise FluosegError(f"{self.world} CUDA training processes need {self.world} GPUs, but "
                                   f"{torch.cuda.device_count()} are visible; lower --nproc")
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, batch_size: int) -> list[int]:
        """Indices of this rank's patches in a global batch of ``batch_size``."""
        if not self.distributed:
            return list(range(batch_size))
        from torch.utils.data.distributed import DistributedSampler

        return list(DistributedSampler(range(batch_size), num_replicas=self.world, rank=self.rank, shuffle=False))

    def wrap(self, model: torch.nn.Module, *, find_unused: bool = False) -> torch.nn.Module:
        """``model`` under DDP (unchanged for one process)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return DistributedDataParallel(model, device_ids=[device.index], find_unused_parameters=find_unused)
        return DistributedDataParallel(model, find_unused_parameters=find_unused)

    def mean(self, values: Sequence[float]) -> list[float]:
        """Element-wise mean of ``values`` over the ranks."""
        if not self.distributed:
            return [float(v) for v in values]
        import torch.distributed as dist

        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(v) / self.world for v in tensor.cpu()]

    def share(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def _collective_device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


SINGLE = Ranks()
"""One process: no process group, every call above is a no-op."""


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA training, ``gloo`` on CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def launched_ranks() -> Ranks | None:
    """The ranks a launcher such as ``torchrun`` set in the environment (None: not launched so)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or "RANK" not in os.environ:
        return None
    return Ranks(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_process_group(ranks: Ranks, device: torch.device, address: str | None = None) -> None:
    """Join the process group of ``ranks`` (``address``: ``tcp://host:port``; None: the launcher's environment)."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend_for(device), init_method=address or "env://", rank=ranks.rank,
                            world_size=ranks.world)


def free_port() -> int:
    """A TCP port on this machine that is free now (for the rendezvous of spawned ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(work: Callable[..., None], nproc: int, args: tuple[Any, ...]) -> None:
    """Run ``work(rank, *args)`` in ``nproc`` new processes with :func:`torch.multiprocessing.spawn`.

    A rank that fails ends the others; its error comes back as one line.

    Raises
    ------
    FluosegError
        With the failed rank's last error line.
    """
    import torch.multiprocessing as mp

    try:
        mp.spawn(work, args=args, nprocs=nproc, join=True)
    except mp.ProcessRaisedException as error:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        raise FluosegError(f"a training process failed: {lines[-1].strip() if lines else error}") from None
    except mp.ProcessExitedException as error:
        raise FluosegError(f"a training process ended unexpectedly ({error})") from None
