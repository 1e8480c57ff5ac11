"""Blockwise decoding on disk: a resumable work folder, and blocks as independent tasks.

:func:`fluoseg.instance.blockwise.decode_blockwise` runs the three phases in one process
and keeps its state in memory. Here the state lives in a *work folder* so that a killed
prediction resumes where it stopped and blocks can run as tasks of other processes (Dask
workers, :func:`decode_blocks` with a ``client``):

``spec.json``
    What the work belongs to (image, model, decoding, plan); :func:`open_work` refuses
    to resume work of other settings.
``maps.zarr``, ``maps.done``
    The activated network outputs ``(C, [Z], Y, X)``, and the mark that they are complete.
``bands/<index>.done``
    When the network pass runs as band tasks (:mod:`fluoseg.bandjobs`): the bands of the
    maps already written.
``local.zarr``
    Phase A: each block's core with local ids ``1..n`` (``uint32``), chunked as the cores,
    so every block writes exactly one chunk.
``blocks/<index>.npz``
    Phase A's record of a finished block: its object count, truncation count and strips,
    written atomically after its core; a block with a record is never decoded again.

Phase B (:func:`link_records`) reads the records pair by pair, so its memory is two
blocks' strips plus the links; phase C (:func:`write_blocks`) rewrites every core with
global ids into the output (idempotent, so it simply runs again after an interruption).
Tasks receive a :class:`BlockJob` (paths, the plan and a picklable decoder) and an index,
and open the arrays themselves: nothing large is sent to or from a worker. The work folder
must be reachable by every worker (a shared file system on a cluster); the tasks run through
:mod:`fluoseg.cluster`.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.cluster import run_tasks
from fluoseg.errors import FluosegError
from fluoseg.instance.blocklinks import BlockResult, Relabelling, Strip, link_blocks, resolve_links
from fluoseg.instance.blocks import BlockPlan
from fluoseg.instance.blockwise import Decoder, _truncation_message, decode_block, write_block
from fluoseg.io import write_bytes_atomically, write_json_atomically

__all__ = ["BlockJob", "decode_blocks", "finished_blocks", "link_records", "open_work", "write_blocks"]

SPEC = "spec.json"
MAPS = "maps.zarr"
MAPS_DONE = "maps.done"
LOCAL = "local.zarr"
RECORDS = "blocks"
BANDS = "bands"


@dataclass(frozen=True)
class BlockJob:
    """What every block task needs; picklable (paths, not open arrays).

    Attributes
    ----------
    work
        The work folder.
    plan
        The block plan over the image's spatial shape.
    decoder
        Maps window -> labels (see :data:`fluoseg.instance.blockwise.Decoder`); must be
        picklable to run on other processes.
    min_iou
        Strip IoU above which objects of neighbouring blocks are merged.
    """

    work: str
    plan: BlockPlan
    decoder: Decoder
    min_iou: float = 0.5

    @property
    def maps_path(self) -> Path:
        """Where the activated maps are (or go)."""
        return Path(self.work) / MAPS

    @property
    def maps_done(self) -> bool:
        """Whether the maps were written completely."""
        return (Path(self.work) / MAPS_DONE).is_file()

    def mark_maps_done(self) -> None:
        """Record that the maps are complete (after the last write to them)."""
        write_bytes_atomically(Path(self.work) / MAPS_DONE, b"complete\n", overwrite=True)

    @property
    def bands_path(self) -> Path:
        """Records of the finished bands of a network pass shared out in bands (:mod:`fluoseg.bandjobs`)."""
        return Path(self.work) / BANDS

    def create_maps(self, channels: int) -> Any:
        """A new ``float32`` zarr for the maps, chunked like the blocks (any old one is replaced,
        with the records of the bands written into it)."""
        import zarr

        shutil.rmtree(self.bands_path, ignore_errors=True)
        shape = (channels, *self.plan.shape)
        return zarr.create_array(store=str(self.maps_path), shape=shape, dtype="float32", fill_value=0.0,
                                 chunks=(channels, *_map_chunks(self.plan)), overwrite=True)

    def open_maps(self, channels: int) -> Any:
        """The maps an interrupted run began (its finished bands are kept), or new ones."""
        import zarr

        try:
            maps = zarr.open_array(str(self.maps_path), mode="r+")
        except (FileNotFoundError, ValueError, KeyError, OSError):
            return self.create_maps(channels)
        if tuple(maps.shape) != (channels, *self.plan.shape):
            return self.create_maps(channels)
        return maps

    def record_path(self, index: int) -> Path:
        """The record of a finished block."""
        return Path(self.work) / RECORDS / f"{index}.npz"


MAP_CHUNK = 256
"""Side of the maps' chunks in y and x (pixels). The network pass writes the maps in bands
of rows across the whole width; each write decompresses, updates and recompresses every
chunk it touches, several at once, so chunks as large as a block would make the memory of
a whole-slide prediction grow with the slide's width."""


def _map_chunks(plan: BlockPlan) -> tuple[int, ...]:
    planes = (1,) * (len(plan.shape) - 2)  # a stack's maps are written one slice at a time
    return planes + tuple(min(MAP_CHUNK, b, n) for b, n in zip(plan.block_shape[-2:], plan.shape[-2:]))


def open_work(work: str | Path, spec: dict[str, Any], plan: BlockPlan, decoder: Decoder, *, resume: bool,
              min_iou: float = 0.5) -> BlockJob:
    """Create a work folder, or reopen one to resume it.

    Parameters
    ----------
    work
        The folder (next to the output it serves).
    spec
        JSON-able description of the image, model and settings; resuming needs the same.
    plan, decoder, min_iou
        See :class:`BlockJob`.
    resume
        Continue the work found in ``work``; without it an existing folder is an error
        (it holds an interrupted run's progress, which is not thrown away silently).

    Returns
    -------
    BlockJob

    Raises
    ------
    FluosegError
        For an existing folder without ``resume``, or one made with other settings.
    """
    import zarr

    work = Path(work)
    record = {**spec, "block_shape": list(plan.block_shape), "halo": list(plan.halo), "shape": list(plan.shape),
              "min_iou": min_iou}
    record = json.loads(json.dumps(record, default=str))  # tuples as lists, as read back
    job = BlockJob(work=str(work), plan=plan, decoder=decoder, min_iou=min_iou)
    spec_path = work / SPEC
    if work.exists() and not spec_path.exists():
        # killed while the folder was being set up (the spec is written last): nothing to keep
        shutil.rmtree(work, ignore_errors=True)
    if work.exists():
        if not resume:
            raise FluosegError("an interrupted prediction left this work folder; pass --resume to continue it, "
                               "or delete the folder to start over", work)
        try:
            found = json.loads(spec_path.read_text())
        except (OSError, ValueError):
            found = None
        if found != record:
            changed = sorted(k for k in set(record) | set(found or {}) if (found or {}).get(k) != record.get(k))
            raise FluosegError(f"this work folder belongs to a prediction with other settings ({', '.join(changed)}); "
                               "resume with the same image, model and options, or delete the folder to start over",
                               work)
        return job
    (work / RECORDS).mkdir(parents=True)
    zarr.create_array(store=str(work / LOCAL), shape=plan.shape, chunks=plan.chunks, dtype="uint32", fill_value=0)
    write_json_atomically(spec_path, record)
    return job


def finished_blocks(job: BlockJob) -> list[int]:
    """Indices of the blocks whose phase A is recorded, sorted."""
    folder = Path(job.work) / RECORDS
    return sorted(int(p.stem) for p in folder.glob("*.npz") if p.stem.isdigit())


def decode_job_block(job: BlockJob, index: int) -> tuple[int, int]:
    """Phase A of one block as a task: decode, store its core in ``local.zarr``, record it.

    Returns
    -------
    tuple of int
        The block's object count and truncated-object count.
    """
    import zarr

    block = job.plan.block(index)
    result = decode_block(zarr.open_array(str(job.maps_path), mode="r"), job.plan, block, job.decoder, warn=False)
    zarr.open_array(str(Path(job.work) / LOCAL), mode="r+")[block.core] = result.core
    # The record comes last: a block with a record is finished, whatever happens next.
    _save_record(job.record_path(index), result)
    return result.n_labels, result.truncated


def _save_record(path: Path, result: BlockResult) -> None:
    arrays = {"counts": np.array([result.n_labels, result.truncated], np.int64)}
    for other, strip in result.strips.items():
        arrays[f"halo_{other}"], arrays[f"core_{other}"] = strip.halo, strip.core
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes_atomically(path, buffer.getvalue(), overwrite=True)


def _load_record(job: BlockJob, index: int, *, strips: Sequence[int] = ()) -> BlockResult:
    with np.load(job.record_path(index)) as data:
        n_labels, truncated = (int(v) for v in data["counts"])
        kept = {j: Strip(halo=data[f"halo_{j}"], core=data[f"core_{j}"]) for j in strips if f"halo_{j}" in data.files}
    return BlockResult(index=index, n_labels=n_labels, core=None, strips=kept, truncated=truncated)


def _run(client: Any, function: Callable[..., Any], job: BlockJob, indices: Sequence[int],
         *per_index: Sequence[Any], progress: bool = False, desc: str = "blocks") -> list[Any]:
    # every block task writes only its own chunks and record, so a retried task gives the same result
    return run_tasks(client, function, job, indices, *per_index, progress=progress, desc=desc, unit="block")


def decode_blocks(job: BlockJob, *, client: Any = None, progress: bool = False) -> Relabelling:
    """Phases A and B: decode every block without a record, then link and merge all blocks.

    Parameters
    ----------
    job
        The work (its maps must be complete).
    client
        A ``dask.distributed.Client`` to run the blocks as tasks on its workers; None runs
        them here, one after another.
    progress
        Show a progress bar (local runs).

    Returns
    -------
    Relabelling
        One lookup table per block; see :func:`write_blocks`.
    """
    if not job.maps_done:
        raise FluosegError("the work folder's maps are incomplete; predict them first", job.work)
    done = set(finished_blocks(job))
    todo = [b.index for b in job.plan if b.index not in done]
    _run(client, decode_job_block, job, todo, progress=progress, desc="decode")
    return link_records(job)


def link_records(job: BlockJob) -> Relabelling:
    """Phase B from the records on disk: two blocks' strips in memory at a time."""
    plan = job.plan
    n_labels = []
    links: dict[tuple[int, int], np.ndarray] = {}
    truncated = 0
    for block in plan:
        later = [n.index for n in plan.neighbours(block) if n.index > block.index]
        first = _load_record(job, block.index, strips=later)
        n_labels.append(first.n_labels)
        truncated += first.truncated
        for other in first.strips:
            second = _load_record(job, other, strips=[block.index])
            links[(block.index, other)] = link_blocks(first, second, min_iou=job.min_iou)
    if truncated:
        warnings.warn(_truncation_message(truncated, plan), stacklevel=2)
    return resolve_links(n_labels, links)


def write_job_block(job: BlockJob, index: int, lut: np.ndarray, out: Any) -> None:
    """Phase C of one block as a task: its core from ``local.zarr`` through ``lut`` into ``out``."""
    import zarr

    block = job.plan.block(index)
    core = np.asarray(zarr.open_array(str(Path(job.work) / LOCAL), mode="r")[block.core])
    write_block(block, lut, out, core=core)


def write_blocks(job: BlockJob, relabelling: Relabelling, out: Any, *, client: Any = None,
                 progress: bool = False) -> None:
    """Phase C: write every block's core with global ids into ``out``.

    Parameters
    ----------
    job
        The work whose blocks were decoded.
    relabelling
        From :func:`decode_blocks`.
    out
        Writable ``([Z], Y, X)`` integer array of the plan's shape. With a ``client`` it
        must be a zarr array on storage the workers reach, chunked so that no chunk spans
        two cores (the plan's block shape, or a divisor of it).
    client, progress
        As :func:`decode_blocks`.
    """
    if tuple(out.shape) != job.plan.shape:
        raise ValueError(f"the output has shape {tuple(out.shape)}, the plan covers {job.plan.shape}")
    if relabelling.n_objects > np.iinfo(out.dtype).max:
        raise FluosegError(f"{relabelling.n_objects} objects do not fit in a {out.dtype} label output")
    indices = [b.index for b in job.plan]
    _run(client, write_job_block, job, indices, relabelling.luts, [out] * len(indices), progress=progress,
         desc="write")
