"""Tasks in this process or on a Dask cluster: the one way fluoseg shares out work.

:func:`dask_client` starts a local cluster of worker processes or connects to a running
scheduler (e.g. one that dask-jobqueue started on a cluster); :func:`run_tasks` runs
``function(job, index, ...)`` for a list of indices there, or here when there is no client.
Jobs carry paths, not open arrays, so nothing large travels with a task; a job holding
networks is sent to every worker once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fluoseg.errors import FluosegError

__all__ = ["TASK_RETRIES", "dask_client", "run_tasks"]

TASK_RETRIES = 3
"""How often a task whose worker process died (killed, out of memory) runs again elsewhere."""


def run_tasks(client: Any, function: Callable[..., Any], job: Any, indices: Sequence[int],
              *per_index: Sequence[Any], progress: bool = False, desc: str = "tasks", unit: str = "task",
              broadcast: bool = False) -> list[Any]:
    """``function(job, index, *extras)`` for every index, here or as tasks of a Dask client.

    Parameters
    ----------
    client
        A ``dask.distributed.Client``, or None to run the tasks here one after another.
    function
        Module-level (picklable) function of the job, an index and the extras.
    job
        What every task needs; picklable.
    indices
        One task per index.
    per_index
        Extra arguments, one sequence per argument with one item per index.
    progress, desc, unit
        A progress bar here (local runs).
    broadcast
        Send the job to every worker once (for a large job, e.g. one holding networks)
        instead of with every task.

    Returns
    -------
    list
        The results in the order of ``indices``. Every task must be idempotent: a retried
        task writes the same data again.
    """
    if client is None:
        from tqdm.auto import tqdm

        return [function(job, i, *extras) for i, *extras in
                tqdm(list(zip(indices, *per_index)), desc=desc, unit=unit, disable=not progress)]
    if not indices:
        return []
    shared = client.scatter(job, broadcast=True, hash=False) if broadcast else job
    futures = client.map(function, [shared] * len(indices), list(indices), *[list(p) for p in per_index],
                         pure=False, retries=TASK_RETRIES)
    return client.gather(futures)


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``dask.distributed.Client``, closed (with its local cluster) on exit.

    Parameters
    ----------
    workers
        Start a local cluster of this many worker processes, one thread each (the network
        and the decoding then run one per process, which scales where threads of one
        process contend for the interpreter).
    scheduler
        Address of a running scheduler instead (``tcp://host:8786``), e.g. one that
        dask-jobqueue started on a cluster; its workers must reach the input and output files.

    Yields
    ------
    Client or None
        None when neither is given (tasks then run in this process).

    Raises
    ------
    FluosegError
        When both are given, dask.distributed is not installed, or the scheduler cannot
        be reached.
    """
    if workers is None and scheduler is None:
        yield None
        return
    if workers is not None and scheduler is not None:
        raise FluosegError("give either --workers (a local cluster) or --scheduler (a running one), not both")
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise FluosegError("distributed prediction needs dask.distributed; install it with "
                           "pip install 'dask[distributed]'") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise FluosegError(f"cannot reach the Dask scheduler at {scheduler!r} ({error}); check the address "
                               "and that the scheduler is running") from None
        try:
            yield client
        finally:
            client.close()
        return
    # Dask starts its workers with MALLOC_TRIM_THRESHOLD_ set (to hand memory back to the OS);
    # that also fixes glibc's mmap threshold, so every tile-sized temporary is mapped and
    # page-faulted anew: the network pass ran 1.9x slower in a worker than in a plain process.
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    # no dashboard: a second cluster on this machine would fight for its port
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None,
                         env={"OMP_NUM_THREADS": "1"}) as cluster, Client(cluster) as client:
        yield client
