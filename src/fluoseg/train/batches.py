"""Training batches of an epoch, drawn in the training process or in worker processes.

Drawing patches (cutting windows, augmenting them) is numpy work on the CPU. On a CPU-only
machine it is a small share of a training step, but a GPU finishes a step of a small network
faster than one process can draw its batch. ``train.workers`` then draws the batches in
worker processes while the device trains.

Guarantee: with workers, the batches of an epoch depend only on the sampler's data, the
batch size, the number of steps and ``(seed, epoch)``, not on what ran before, so a resumed
run draws the same batches as an uninterrupted one with the same number of workers (the
number of workers changes the draws). Without workers, the batches come from the
training's own random generator, as before workers existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from fluoseg.data.dataset import PatchSampler
from fluoseg.errors import FluosegError

Batch = tuple[Any, Any, dict[str, Any]]


class _EpochStream(IterableDataset):
    """The ``steps`` batches of one epoch; worker ``w`` of ``W`` draws steps ``w, w + W, ...``.

    The loader takes one item from each worker in turn, so the stream arrives in step order.
    """

    def __init__(self, sampler: PatchSampler, batch_size: int, steps: int, seed: tuple[int, ...]) -> None:
        self.sampler, self.batch_size, self.steps, self.seed = sampler, batch_size, steps, seed

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        sampler = self.sampler.reseeded(np.random.default_rng([*self.seed, worker]))
        for _ in range(worker, self.steps, workers):
            yield sampler.batch(self.batch_size)


def epoch_batches(sampler: PatchSampler, batch_size: int, steps: int, *, workers: int, seed: tuple[int, ...],
                  pin_memory: bool = False) -> Iterable[Batch]:
    """The training batches ``(images, availability, targets)`` of one epoch.

    Parameters
    ----------
    sampler
        Draws patches; with ``workers == 0`` from its own random generator.
    batch_size, steps
        Patches per batch and batches in the epoch.
    workers
        Worker processes drawing batches (0: draw them here, one after the other).
    seed
        With workers: the seed of the epoch's draws, e.g. ``(train.seed, epoch)``; worker
        ``w`` draws from ``numpy.random.default_rng([*seed, w])``.
    pin_memory
        Page-lock the batches (faster copies to a GPU).

    Returns
    -------
    Iterable[Batch]
        ``steps`` batches of numpy arrays (no workers) or tensors (workers), in step order.

    Raises
    ------
    FluosegError
        If a worker process dies (killed for memory, or out of shared memory in a container).
    """
    if workers == 0:
        return (sampler.batch(batch_size) for _ in range(steps))
    loader = DataLoader(_EpochStream(sampler, batch_size, steps, seed), batch_size=None,
                        num_workers=min(workers, steps), pin_memory=pin_memory)
    return _reporting_dead_workers(loader, workers)


def _reporting_dead_workers(loader: DataLoader, workers: int) -> Iterator[Batch]:
    """The loader's batches, with a dead worker reported as a user error (it is the machine's limits, not a bug)."""
    try:
        yield from loader
    except RuntimeError as error:
        if "DataLoader worker" not in str(error):
            raise
        raise FluosegError(f"a process drawing training batches died ({str(error).splitlines()[0]}); set "
                           f"train.workers below {workers} (0 draws them in the training process), or give a "
                           "container more shared memory (docker --shm-size)") from None
