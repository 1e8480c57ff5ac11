"""The network pass of a large image as band tasks: on Dask workers, resumable.

The main process prepares the pass once (:meth:`fluoseg.infer.Segmenter.network_pass`:
marker selection and whole-image statistics) and plans *bands*: runs of rows that start and
end on the output's chunk rows, one plane at a time for stacks. Each band is a task
(:func:`fluoseg.cluster.run_tasks`) that reopens the input file lazily, computes the tiles
reaching its rows and writes those rows only, so every output chunk has one writer, and the
rows equal those of a whole-image pass bit for bit (:mod:`fluoseg.tiling`). A task can also
decode its rows into a second output (per-pixel decoders: semantic masks).

With a record folder, a finished band leaves ``<index>.done`` after its last write: a
prediction killed mid-pass resumes from the bands without a record. Tiles that reach two
bands are computed by both; :func:`band_overhead` counts that extra work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.cluster import run_tasks
from fluoseg.io import read_image, write_bytes_atomically
from fluoseg.network_pass import NetworkPass
from fluoseg.tiling import band_tiles, plan_tiles

__all__ = ["Band", "BandJob", "ImageSource", "band_overhead", "decode_in_windows", "default_band_rows", "finished_bands", "plan_bands",
           "run_band", "run_bands", "worker_count"]

BANDS_PER_WORKER = 2
"""Default bands per worker: each worker gets two, so a slow one delays the end by less than a
band while the bands stay as tall as the workers allow (each border costs a tile row twice)."""


@dataclass(frozen=True)
class ImageSource:
    """An image file as the workers open it: lazily, with the axes the user gave."""

    path: str
    axes: str | None = None

    def open(self) -> Any:
        """The lazily read ``(C, [Z], Y, X)`` array."""
        return read_image(self.path, axes=self.axes, lazy=True).array


@dataclass(frozen=True)
class Band:
    """Rows ``start:stop`` of one plane (``plane`` None for a 2D image)."""

    start: int
    stop: int
    plane: int | None = None


def plan_bands(spatial_shape: Sequence[int], *, chunk_rows: int, band_rows: int) -> tuple[Band, ...]:
    """Bands covering an image once, each a whole number of chunk rows (the last may be shorter).

    Parameters
    ----------
    spatial_shape
        ``(Y, X)`` or ``(Z, Y, X)``.
    chunk_rows
        Rows of the outputs' chunks; band borders fall on them, so no chunk has two writers.
    band_rows
        Wanted rows per band, rounded up to a multiple of ``chunk_rows``.
    """
    height = int(spatial_shape[-2])
    step = max(1, math.ceil(int(band_rows) / int(chunk_rows))) * int(chunk_rows)
    planes: list[int | None] = list(range(int(spatial_shape[0]))) if len(spatial_shape) == 3 else [None]
    return tuple(Band(start, min(start + step, height), plane) for plane in planes for start in range(0, height, step))


def default_band_rows(network: NetworkPass, workers: int) -> int:
    """Rows per band giving each of ``workers`` :data:`BANDS_PER_WORKER` bands over all planes,
    but at least one row of output tiles (shorter bands would compute each tile three times);
    one worker gets whole planes (splitting them would only add work)."""
    height = int(network.shape[-2])
    planes = int(network.shape[1]) if len(network.shape) == 4 else 1
    wanted = BANDS_PER_WORKER * int(workers) if workers > 1 else 1
    per_plane = max(1, math.ceil(wanted / planes))
    tile_rows = max(member.geometry.output_size for member in network.members)
    return max(tile_rows, math.ceil(height / per_plane))


def band_overhead(network: NetworkPass, bands: Sequence[Band]) -> float:
    """Tiles computed by all bands over the tiles of one whole pass (1.0: no extra work)."""
    shape_yx = tuple(network.shape[-2:])
    planes = len({band.plane for band in bands})
    extra = whole = 0
    for member in network.members:
        whole += len(plan_tiles(shape_yx, member.geometry)) * planes
        extra += sum(band_tiles(shape_yx, member.geometry, (band.start, band.stop)) for band in bands)
    return extra / whole


@dataclass(frozen=True)
class BandJob:
    """What every band task needs; picklable (the pass, paths and zarr arrays on shared storage).

    Attributes
    ----------
    network
        The prepared pass (sent to each worker once).
    image
        Where the workers read the image.
    out
        Zarr array ``(n, [Z], Y, X)`` the pass writes, chunked so that band borders fall
        on chunk rows.
    bands
        The plan (:func:`plan_bands`).
    records
        Folder of the finished bands' records; None: no records (no resume).
    decode, decoded
        Optional per-pixel decoder of the pass's outputs and the zarr array its result goes to.
    """

    network: NetworkPass
    image: ImageSource
    out: Any
    bands: tuple[Band, ...]
    records: str | None = None
    decode: Callable[[np.ndarray], np.ndarray] | None = None
    decoded: Any = None

    def record_path(self, index: int) -> Path | None:
        """The record of a finished band."""
        return None if self.records is None else Path(self.records) / f"{index}.done"


DECODE_COLUMNS = 2048
"""Columns decoded at once by :func:`decode_in_windows`: a per-pixel decoder's temporaries
(several copies of the window, int64 indices) then stay bounded whatever the image's width."""


def decode_in_windows(decode: Callable[[np.ndarray], np.ndarray], source: Any, target: Any, *,
                      rows: tuple[int, int], plane: int | None = None, columns: int = DECODE_COLUMNS) -> None:
    """``target[..., rows, x:x+columns] = decode(source[..., rows, x:x+columns])`` across the width.

    For per-pixel decoders (semantic masks): reading, decoding and writing a window of a few
    chunks at a time keeps the memory of a row band independent of the image's width.
    """
    width = int(source.shape[-1])
    prefix = (slice(None),) + (() if plane is None else (plane,)) + (slice(*rows),)
    for x in range(0, width, columns):
        window = (*prefix, slice(x, min(x + columns, width)))
        target[window] = decode(np.asarray(source[window]))


def finished_bands(job: BandJob) -> list[int]:
    """Indices of the bands whose record exists, sorted."""
    if job.records is None or not Path(job.records).is_dir():
        return []
    return sorted(int(p.stem) for p in Path(job.records).glob("*.done") if p.stem.isdigit())


def run_band(job: BandJob, index: int) -> int:
    """One band as a task: its rows predicted (and decoded), then its record. Returns the index."""
    band = job.bands[index]
    planes = None if band.plane is None else [band.plane]
    job.network.run(job.image.open(), job.out, rows=(band.start, band.stop), planes=planes)
    if job.decode is not None:
        decode_in_windows(job.decode, job.out, job.decoded, rows=(band.start, band.stop), plane=band.plane)
    record = job.record_path(index)
    if record is not None:  # last: a band with a record is finished, whatever happens next
        write_bytes_atomically(record, b"done\n", overwrite=True)
    return index


def worker_count(client: Any) -> int:
    """Workers of a Dask client (1 without one)."""
    return 1 if client is None else max(1, len(client.nthreads()))


def run_bands(job: BandJob, *, client: Any = None, progress: bool = False) -> int:
    """Run every band without a record, here or as tasks of a Dask client; returns how many ran.

    A task whose worker dies runs again (it rewrites the same rows), so a killed worker
    process costs time, not correctness.
    """
    if job.records is not None:
        Path(job.records).mkdir(parents=True, exist_ok=True)
    done = set(finished_bands(job))
    todo = [i for i in range(len(job.bands)) if i not in done]
    run_tasks(client, run_band, job, todo, progress=progress, desc="network", unit="band", broadcast=True)
    return len(todo)
