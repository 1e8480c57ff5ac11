"""fluoseg.instance.blockjobs: blockwise decoding through a work folder, resumable, as tasks."""

from __future__ import annotations

import functools
import os
import signal
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from fluoseg.errors import FluosegError
from fluoseg.cluster import dask_client
from fluoseg.instance.blockjobs import decode_blocks, finished_blocks, open_work, write_blocks
from fluoseg.instance.blocks import plan_blocks
from fluoseg.instance.postprocess import labels_from_threshold


def blob_maps(seed: int, shape: tuple[int, ...], n: int = 12) -> np.ndarray:
    """``(1, ...)`` probability map of blurred random discs of radius 2-6, some touching."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape[-2:])
    planes = []
    for _ in range(shape[0] if len(shape) == 3 else 1):
        plane = np.zeros(shape[-2:], np.float32)
        for _ in range(n):
            centre = rng.uniform(0, shape[-2:])
            radius = rng.uniform(2, 6)
            plane[((grid - centre[:, None, None]) ** 2).sum(0) <= radius**2] = 1
        planes.append(ndi.gaussian_filter(plane, 1.0))
    maps = np.stack(planes) if len(shape) == 3 else planes[0]
    return maps[None]


def threshold_decoder(window: np.ndarray) -> np.ndarray:
    return labels_from_threshold(window[0], threshold=0.5, min_size=3)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return pairs.shape[1] == len(np.unique(a)) == len(np.unique(b)) and bool(np.all((a == 0) == (b == 0)))


def run_job(tmp_path, maps, *, block, halo, resume=False, decoder=threshold_decoder, spec=None):
    plan = plan_blocks(maps.shape[1:], block_shape=block, halo=halo)
    job = open_work(tmp_path / "w.work", spec or {"image": "x"}, plan, decoder, resume=resume)
    if not job.maps_done:
        job.create_maps(maps.shape[0])[...] = maps
        job.mark_maps_done()
    relabelling = decode_blocks(job)
    out = np.zeros(plan.shape, np.uint32)
    write_blocks(job, relabelling, out)
    return job, out


@pytest.mark.parametrize("shape,block,halo", [((70, 90), 16, 16), ((3, 40, 50), (1, 12, 12), (0, 16, 16))],
                         ids=["2d", "3d"])
def test_work_folder_decoding_equals_whole_image(tmp_path, shape, block, halo):
    maps = blob_maps(1, shape)
    whole = threshold_decoder(maps)
    job, out = run_job(tmp_path, maps, block=block, halo=halo)
    assert len(job.plan) > 12
    assert whole.max() >= 8 and same_partition(out, whole)
    assert np.array_equal(np.unique(out), np.arange(out.max() + 1))  # consecutive ids
    assert finished_blocks(job) == list(range(len(job.plan)))


class Interrupted(Exception):
    pass


def flaky_decoder(window: np.ndarray, *, calls: list, fail_at: int) -> np.ndarray:
    calls.append(window.shape)
    if len(calls) == fail_at:
        raise Interrupted
    return threshold_decoder(window)


def test_interrupted_work_resumes_from_finished_blocks(tmp_path):
    maps = blob_maps(2, (64, 64))
    calls: list = []
    decoder = functools.partial(flaky_decoder, calls=calls, fail_at=6)
    with pytest.raises(Interrupted):
        run_job(tmp_path, maps, block=16, halo=16, decoder=decoder)
    job_blocks = 16
    with pytest.raises(FluosegError, match="--resume"):
        run_job(tmp_path, maps, block=16, halo=16)
    calls.clear()
    decoder = functools.partial(flaky_decoder, calls=calls, fail_at=-1)
    job, out = run_job(tmp_path, maps, block=16, halo=16, resume=True, decoder=decoder)
    assert len(calls) == job_blocks - 5  # blocks 0-4 were recorded before the interruption
    assert same_partition(out, threshold_decoder(maps))
    fresh_job, fresh = run_job(tmp_path / "fresh", maps, block=16, halo=16)
    assert np.array_equal(out, fresh)  # identical, not only up to renumbering


def test_resuming_other_settings_is_refused(tmp_path):
    maps = blob_maps(3, (40, 40))
    run_job(tmp_path, maps, block=16, halo=8, spec={"image": "a.tif"})
    with pytest.raises(FluosegError, match=r"other settings \(halo\)"):
        run_job(tmp_path, maps, block=16, halo=12, spec={"image": "a.tif"}, resume=True)
    with pytest.raises(FluosegError, match=r"other settings \(image\)"):
        run_job(tmp_path, maps, block=16, halo=8, spec={"image": "b.tif"}, resume=True)


def test_a_folder_killed_during_its_setup_is_set_up_again(tmp_path):
    maps = blob_maps(5, (40, 40))
    (tmp_path / "w.work" / "blocks").mkdir(parents=True)  # no spec.json: set-up never finished
    _, out = run_job(tmp_path, maps, block=16, halo=16)
    assert same_partition(out, threshold_decoder(maps))


def test_incomplete_maps_are_not_decoded(tmp_path):
    plan = plan_blocks((20, 20), block_shape=10, halo=4)
    job = open_work(tmp_path / "w", {}, plan, threshold_decoder, resume=False)
    job.create_maps(1)
    with pytest.raises(FluosegError, match="maps are incomplete"):
        decode_blocks(job)


def test_halo_too_small_warns(tmp_path):
    maps = np.zeros((1, 40, 40), np.float32)
    maps[0, 5:35, 18:22] = 1  # a bar 30 px long crossing block borders
    with pytest.warns(UserWarning, match="halo"):
        run_job(tmp_path, maps, block=10, halo=4)


def decoder_killing_its_worker(window: np.ndarray, *, marker: str) -> np.ndarray:
    """Kills the process it runs in (SIGKILL) the first time any block is decoded."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return threshold_decoder(window)


def test_dask_workers_survive_a_killed_worker_and_match_one_process(tmp_path):
    import cloudpickle
    import zarr

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test modules are not importable by workers
    maps = blob_maps(4, (64, 80))
    _, expected = run_job(tmp_path / "here", maps, block=16, halo=16)
    plan = plan_blocks(maps.shape[1:], block_shape=16, halo=16)
    marker = tmp_path / "killed-once"
    decoder = functools.partial(decoder_killing_its_worker, marker=str(marker))
    job = open_work(tmp_path / "tasks.work", {"image": "x"}, plan, decoder, resume=False)
    job.create_maps(1)[...] = maps
    job.mark_maps_done()
    out = zarr.create_array(store=str(tmp_path / "labels.zarr"), shape=plan.shape, chunks=(16, 16), dtype="uint32",
                            fill_value=0)
    with dask_client(workers=2) as client:
        write_blocks(job, decode_blocks(job, client=client), out, client=client)
    assert marker.exists()  # a worker process died mid-task (this process would not have survived it)
    assert np.array_equal(np.asarray(out), expected)
