"""Artificial training data on disk: the work behind ``fluoseg synth nuclei``.

Kromp et al.'s generator (:mod:`fluoseg.data.synth.kromp`) builds new images from the
nuclei and background of annotated samples. This module reads the source samples of a
manifest, generates the images, and writes them with a manifest of their own, so a
training config can add them with ``data.extra_train: [path/to/manifest.yaml]``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from fluoseg.data.manifest import load_manifest
from fluoseg.data.synth.kromp import generate_artificial_images, write_artificial_images
from fluoseg.errors import FluosegError


def synthesize_nuclei(
    manifest_path: str | Path,
    out_dir: str | Path,
    *,
    sample_ids: Sequence[str] | None = None,
    n_images: int = 100,
    grid: int = 5,
    max_offset: int | None = None,
    overlap_mode: str = "random",
    shape: int = 256,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Generate artificial nuclei images from annotated samples; returns the new manifest.

    Parameters
    ----------
    manifest_path
        Manifest of the annotated source samples (they need ``labels``).
    out_dir
        Folder that receives ``images/``, ``labels/`` and ``manifest.yaml``.
    sample_ids
        Source samples (default all). Use only training samples, so that test images
        never leak into training through their nuclei.
    n_images, grid, max_offset, overlap_mode, shape, seed
        Generator settings (see :func:`fluoseg.data.synth.kromp.generate_artificial_images`).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FluosegError("output folder exists and is not empty; pass --overwrite to replace it", path=out_dir)
        shutil.rmtree(out_dir)
    manifest = load_manifest(manifest_path)
    samples = [manifest.sample(i) for i in sample_ids] if sample_ids else list(manifest.samples)
    images, labels = [], []
    for sample in samples:
        image = sample.read_image()
        if image.is_3d:
            raise FluosegError("artificial images are generated from 2D samples only", path=sample.image_path)
        images.append(np.asarray(image.array))
        labels.append(sample.read_labels(image.spatial_shape))
    channel_names = {s.channel_names for s in samples}
    if len(channel_names) != 1:
        raise FluosegError("source samples have different marker names; choose samples with one panel", path=manifest.path)
    pairs = generate_artificial_images([i if i.shape[0] > 1 else i[0] for i in images], labels, n_images=n_images,
                                       grid=(grid, grid), max_offset=max_offset, overlap_mode=overlap_mode,
                                       output_shape=(shape, shape), seed=seed)
    write_artificial_images(out_dir, pairs, prefix="artificial")
    new_manifest = {
        "markers": list(next(iter(channel_names))),
        "images": "images/*.tif",
        "labels": "labels/{id}.tif",
    }
    pixel_sizes = {s.pixel_size for s in samples}
    if len(pixel_sizes) == 1 and None not in pixel_sizes:
        size = next(iter(pixel_sizes))
        new_manifest["pixel_size_um"] = size[0] if len(size) == 1 else list(size)
    path = out_dir / "manifest.yaml"
    path.write_text(yaml.safe_dump(new_manifest, sort_keys=False))
    return path
