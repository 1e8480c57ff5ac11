"""fluoseg.cluster: tasks here or on Dask workers, and the client they run on."""

from __future__ import annotations

import os
import sys

import pytest

from fluoseg.cluster import dask_client, run_tasks
from fluoseg.errors import FluosegError


def scaled(job: dict, index: int, extra: int) -> int:
    return job["factor"] * index + extra


def test_tasks_here_and_on_workers_give_the_same_results_in_order():
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test modules are not importable by workers
    job, indices, extras = {"factor": 10}, [3, 1, 2], [100, 200, 300]
    here = run_tasks(None, scaled, job, indices, extras)
    assert here == [130, 210, 320]
    with dask_client(workers=2) as client:
        assert run_tasks(client, scaled, job, indices, extras) == here
        assert run_tasks(client, scaled, job, indices, extras, broadcast=True) == here
        assert run_tasks(client, scaled, job, [], []) == []
        # Dask's memory trimming makes numeric tasks page-fault on every large temporary
        assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}


def test_client_choices():
    with dask_client() as client:
        assert client is None  # neither given: tasks run here
    with pytest.raises(FluosegError, match="not both"):
        with dask_client(workers=1, scheduler="tcp://127.0.0.1:1"):
            pass
