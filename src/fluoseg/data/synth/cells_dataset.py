"""Simulated multiplexed cell images on disk: the work behind ``fluoseg synth cells``.

:func:`write_cells_dataset` draws images with :func:`~fluoseg.data.synth.cells.simulate_cells`
and writes them as a dataset fluoseg reads directly::

    out/
      images/cells_0000.ome.tif   (K, Y, X) uint8 OME-TIFF with channel names and pixel size
      labels/cells_0000.tif       (Y, X) int32 cell instance labels
      nuclei/cells_0000.tif       (Y, X) int32 nucleus labels (a nucleus has its cell's id)
      manifest.yaml               markers, pixel size, images glob, labels template
      simulation.yaml             provenance: domain settings, seeds, shape, markers

The manifest's ``labels`` point at the cells or the nuclei (``target``), so one call makes
a whole-cell or a nuclear instance segmentation dataset.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from fluoseg.data.synth.cell_domain import DEFAULT_CELL_MARKERS, CellDomain, cell_domain
from fluoseg.data.synth.cells import simulate_cells
from fluoseg.errors import FluosegError
from fluoseg.io import write_image, write_text_atomically

__all__ = ["LABEL_TARGETS", "draw_dataset", "sample_seeds", "write_cells_dataset"]

T = TypeVar("T")

LABEL_TARGETS = {"cells": "labels", "nuclei": "nuclei"}
"""What the manifest's ``labels`` can point at, and the folder holding those label images."""

_OUTPUTS = ("images", "labels", "nuclei", "manifest.yaml", "simulation.yaml")


def sample_seeds(seed: int, n: int) -> list[int]:
    """The simulator seed of each of ``n`` samples of a dataset drawn with ``seed``.

    Sample ``i`` gets the same seed whatever ``n`` is, so a larger dataset extends a
    smaller one drawn with the same seed.
    """
    return [int(np.random.SeedSequence([seed, index]).generate_state(1)[0]) for index in range(n)]


def draw_dataset(out: Path, n: int, seed: int, prefix: str, simulate: Callable[[int], T], *,
                 outputs: Sequence[str], overwrite: bool) -> tuple[list[str], list[int], Iterator[T]]:
    """Sample ids and seeds of a simulated dataset, and its samples, drawn one at a time.

    The first sample is drawn before the files and folders ``outputs`` of an earlier dataset
    are removed from ``out``: settings the simulator refuses then remove nothing. Only those
    are removed; other files in ``out`` are the user's.

    Parameters
    ----------
    out
        Dataset folder.
    n, seed
        Number of samples (at least 1) and dataset seed (:func:`sample_seeds`).
    prefix
        Sample ids are ``{prefix}_0000``, ``{prefix}_0001``, ...
    simulate
        Sample seed -> sample.
    outputs
        What the dataset writer creates in ``out``.
    overwrite
        Replace an earlier dataset.

    Raises
    ------
    FluosegError
        If one of ``outputs`` exists and ``overwrite`` is false.
    """
    seeds = sample_seeds(seed, n)
    ids = [f"{prefix}_{index:04d}" for index in range(n)]
    first = simulate(seeds[0])
    existing = [out / name for name in outputs if (out / name).exists()]
    if existing and not overwrite:
        raise FluosegError(
            f"the folder already holds a dataset ({existing[0].name}); pass overwrite (--overwrite) to replace it",
            path=out,
        )
    for path in existing:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return ids, seeds, itertools.chain([first], (simulate(s) for s in seeds[1:]))


def write_cells_dataset(
    out: str | Path,
    n: int,
    settings: str | Mapping[str, Any] | CellDomain = "default",
    seed: int = 0,
    *,
    shape: tuple[int, int] = (256, 256),
    markers: Sequence[str] = DEFAULT_CELL_MARKERS,
    target: str = "cells",
    prefix: str = "cells",
    overwrite: bool = False,
) -> Path:
    """Simulate ``n`` multiplexed cell images and write them with a fluoseg manifest.

    Parameters
    ----------
    out
        Output folder (created if needed).
    n
        Number of images.
    settings
        Cell domain: preset name (``"default"``, ``"shifted"``), mapping of settings on a
        ``base`` preset, or a :class:`~fluoseg.data.synth.cell_domain.CellDomain`.
    seed
        Dataset seed; sample ``i`` is drawn with ``sample_seeds(seed, n)[i]``.
    shape
        ``(Y, X)`` of every image.
    markers
        Channels to write, in this order (default DAPI, ECAD, CK, CD45; KI67 may be added).
    target
        ``"cells"`` or ``"nuclei"``: which labels the manifest's ``labels`` names. Both
        label folders are written either way.
    prefix
        File name stem before the four-digit index (the sample ids).
    overwrite
        Replace a dataset this function wrote before (only its files and folders are removed).

    Returns
    -------
    Path
        The manifest, ready for ``data.manifest`` in a training config.

    Raises
    ------
    FluosegError
        For a bad count, target or prefix, an existing dataset without ``overwrite``, or
        invalid simulator settings.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FluosegError(f"the number of images must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FluosegError(f"the seed must be a non-negative integer, got {seed!r}")
    if target not in LABEL_TARGETS:
        raise FluosegError(f"label target must be one of {sorted(LABEL_TARGETS)}, got {target!r}")
    if not prefix or any(c in prefix for c in "/\\.*?{}"):
        raise FluosegError(f"prefix must be a plain file name stem, got {prefix!r}")
    domain = cell_domain(settings)
    markers = tuple(markers)
    out = Path(out)
    # drawing the first image checks the markers and the shape before an earlier dataset is removed
    ids, seeds, samples = draw_dataset(out, n, seed, prefix,
                                       lambda s: simulate_cells(shape, domain=domain, markers=markers, seed=s),
                                       outputs=_OUTPUTS, overwrite=overwrite)
    for sample_id, sample in zip(ids, samples):
        write_image(out / "images" / f"{sample_id}.ome.tif", sample.image, axes="CYX",
                    channel_names=markers, pixel_size=sample.pixel_size)
        write_image(out / "labels" / f"{sample_id}.tif", sample.cells, axes="YX")
        write_image(out / "nuclei" / f"{sample_id}.tif", sample.nuclei, axes="YX")
    provenance = {
        "simulator": "fluoseg.data.synth.cells.simulate_cells",
        "seed": seed,
        "shape": [int(s) for s in shape],
        "markers": list(markers),
        "target": target,
        "domain": domain.as_dict(),
        "samples": [{"id": i, "seed": s} for i, s in zip(ids, seeds)],
    }
    write_text_atomically(out / "simulation.yaml", yaml.safe_dump(provenance, sort_keys=False))
    manifest = {
        "markers": list(markers),
        "pixel_size_um": domain.pixel_size_um,
        "images": f"images/{prefix}_*.ome.tif",
        "labels": f"{LABEL_TARGETS[target]}/{{id}}.tif",
    }
    return write_text_atomically(out / "manifest.yaml", yaml.safe_dump(manifest, sort_keys=False))
