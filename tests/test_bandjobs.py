"""fluoseg.bandjobs: the network pass in bands of rows, recorded, resumable, on Dask workers."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

import numpy as np
import pytest
import zarr

from fluoseg.bandjobs import (Band, BandJob, ImageSource, band_overhead, default_band_rows, finished_bands, plan_bands,
                              run_bands)
from fluoseg.cluster import dask_client
from fluoseg.infer import PredictOptions
from fluoseg.io import write_image
from fluoseg.network_pass import NetworkPass
from test_network_pass import two_member_segmenter

NAMES = ["DAPI", "CD31"]


def test_bands_cover_every_row_once_on_chunk_borders():
    bands = plan_bands((100, 7), chunk_rows=16, band_rows=20)  # rounded up to 32
    assert [(b.start, b.stop, b.plane) for b in bands] == [(0, 32, None), (32, 64, None), (64, 96, None),
                                                           (96, 100, None)]
    stack = plan_bands((3, 50, 9), chunk_rows=25, band_rows=1)
    assert [(b.plane, b.start, b.stop) for b in stack] == [(z, s, s + 25) for z in range(3) for s in (0, 25)]
    assert plan_bands((40, 40), chunk_rows=16, band_rows=400) == (Band(0, 40),)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A two-member pass over a 2-channel image file, and its whole-image output."""
    root = tmp_path_factory.mktemp("bands")
    image = np.random.default_rng(5).normal(100, 20, size=(2, 96, 70)).astype(np.float32)
    path = root / "image.tif"
    write_image(path, image, axes="CYX", channel_names=NAMES)
    network = two_member_segmenter().network_pass(image, NAMES, PredictOptions(tile_size=60))
    return network, ImageSource(str(path)), network.run(image)


def band_job(root, network: NetworkPass, source: ImageSource, *, records: bool = True, masks: bool = False) -> BandJob:
    shape = network.out_shape
    out = zarr.create_array(store=str(root / "maps.zarr"), shape=shape, chunks=(shape[0], 16, 16), dtype="float32")
    decoded = None
    if masks:
        decoded = zarr.create_array(store=str(root / "masks.zarr"), shape=shape, chunks=(shape[0], 16, 16),
                                    dtype="uint8")
    return BandJob(network, source, out, plan_bands(shape[1:], chunk_rows=16, band_rows=16),
                   records=str(root / "bands") if records else None,
                   decode=network.decode if masks else None, decoded=decoded)


def test_interrupted_bands_resume_from_their_records(prepared, tmp_path, monkeypatch):
    network, source, whole = prepared
    job = band_job(tmp_path, network, source)
    calls: list[tuple[int, int] | None] = []
    original = NetworkPass.run

    def failing_after_three(self, image, out=None, *, rows=None, planes=None, progress=False):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the run
        calls.append(rows)
        return original(self, image, out, rows=rows, planes=planes, progress=progress)

    monkeypatch.setattr(NetworkPass, "run", failing_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_bands(job)
    assert finished_bands(job) == [0, 1, 2]
    monkeypatch.setattr(NetworkPass, "run", original)
    assert run_bands(job) == len(job.bands) - 3  # only the bands without a record ran
    np.testing.assert_array_equal(np.asarray(job.out), whole)
    assert run_bands(job) == 0


def test_bands_decode_their_rows(prepared, tmp_path):
    network, source, whole = prepared
    job = band_job(tmp_path, network, source, records=False, masks=True)
    run_bands(job)
    np.testing.assert_array_equal(np.asarray(job.decoded), network.decode(whole))
    assert finished_bands(job) == []


def test_overhead_counts_the_tiles_two_bands_compute(prepared):
    network = prepared[0]
    assert band_overhead(network, plan_bands((96, 70), chunk_rows=96, band_rows=96)) == 1.0
    assert band_overhead(network, plan_bands((96, 70), chunk_rows=16, band_rows=16)) > 1.0
    tile_rows = network.members[0].geometry.output_size
    slide = dataclasses.replace(network, shape=(2, 4096, 70))
    assert default_band_rows(slide, 2) == 1024  # two bands per worker
    assert default_band_rows(slide, 1) == 4096  # one worker: whole planes, no tile computed twice
    assert default_band_rows(slide, 1000) == tile_rows  # never thinner than a row of tiles
    stack = dataclasses.replace(network, shape=(2, 8, 4096, 70))
    assert default_band_rows(stack, 2) == 4096  # eight planes already give each worker two bands


@dataclasses.dataclass(frozen=True)
class KillingPass:
    """A pass whose first band run kills the worker process it runs in (SIGKILL)."""

    network: NetworkPass
    marker: str

    @property
    def out_shape(self):
        return self.network.out_shape

    def run(self, image, out=None, **region):
        # O_EXCL makes the claim atomic: with a check-then-create, both workers could pass the
        # check at once, both die, and the broadcast job would be lost with them
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self.network.run(image, out, **region)
        os.kill(os.getpid(), signal.SIGKILL)


def test_dask_workers_survive_a_killed_worker_and_equal_the_whole_pass(prepared, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # test modules are not importable by workers
    network, source, whole = prepared
    marker = tmp_path / "killed-once"
    job = dataclasses.replace(band_job(tmp_path, network, source), network=KillingPass(network, str(marker)))
    with dask_client(workers=2) as client:
        assert run_bands(job, client=client) == len(job.bands)
    assert marker.exists()  # a worker process died mid-band (this process would not have survived it)
    np.testing.assert_array_equal(np.asarray(job.out), whole)
    assert finished_bands(job) == list(range(len(job.bands)))


def test_decoding_in_windows_equals_decoding_the_whole_rows():
    from fluoseg.bandjobs import decode_in_windows

    maps = np.random.default_rng(2).random((3, 2, 20, 45)).astype(np.float32)
    seen: list[tuple[int, ...]] = []

    def argmax(window: np.ndarray) -> np.ndarray:
        seen.append(window.shape)
        return np.argmax(window, axis=0).astype(np.uint8)[None]

    out = np.full((1, 2, 20, 45), 9, np.uint8)
    decode_in_windows(argmax, maps, out, rows=(5, 15), plane=1, columns=16)
    np.testing.assert_array_equal(out[:, 1, 5:15], argmax(maps[:, 1, 5:15]))
    assert (out[:, 0] == 9).all() and (out[:, 1, :5] == 9).all() and (out[:, 1, 15:] == 9).all()
    assert seen[:3] == [(3, 10, 16), (3, 10, 16), (3, 10, 13)]  # never the whole width at once
