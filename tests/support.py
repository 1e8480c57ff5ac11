"""Helpers shared by test modules (importable as ``support``; pytest puts tests/ on the path).

Fixtures live in ``conftest.py``; plain functions that tests and fixtures both call live here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MARKERS = ("m1", "m2", "m3")
CLASSES = ("blob", "bar")
CHANNEL_INVARIANT = {"front_end": "channel-invariant", "front_end_options": {"features": 4, "width": 4}}
"""U-Net options of a tiny channel-invariant front end (takes markers outside its panel)."""


def make_tiny_sample(seed: int, shape: tuple[int, int] = (72, 72)) -> tuple[np.ndarray, np.ndarray]:
    """A 3-marker image with two exclusive classes: bright discs (seen in m2) and bars (seen in m3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.zeros(shape, bool)
    for _ in range(4):
        cy, cx, r = rng.integers(8, shape[0] - 8), rng.integers(8, shape[1] - 8), rng.integers(4, 8)
        blob |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    bar = np.zeros(shape, bool)
    row = int(rng.integers(5, shape[0] - 5))
    bar[row - 2 : row + 2, 5:-5] = True
    bar &= ~blob
    image = rng.normal(20, 5, (3,) + shape)
    image[1][blob] += 120
    image[2][bar] += 120
    image[0] += 40 * (blob | bar)
    masks = np.stack([blob, bar]).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8), masks


def tiny_config_dict(manifest: Path, *, model_options: dict | None = None, **train: object) -> dict:
    """A config for a depth-2, 4-filter U-Net that trains a few steps in about a second.

    ``model_options`` are added to the U-Net's options (e.g. :data:`CHANNEL_INVARIANT`).
    """
    settings = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 2, "patch_size": 60, "learning_rate": 1e-3,
                "seed": 0, "device": "cpu", "val_tile_size": 60, "num_threads": 1}
    settings.update(train)
    return {
        "data": {"manifest": str(manifest), "split": {"val": ["s3"], "test": ["s4"]}},
        "model": {"name": "unet",
                  "options": {"depth": 2, "base_filters": 4, "padding": "valid", **(model_options or {})}},
        "train": settings,
    }


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run without the root powers that ignore file permissions (tests run as root here)."""
    import os
    import shutil

    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing to drop privileges")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *command]


def make_tiny_nuclei(seed: int, shape: tuple[int, int] = (64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """One-channel nuclei image with instance labels, including a pair of touching nuclei."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    centres = [(20, 20), (20, 29)] + [tuple(rng.integers(8, shape[0] - 8, 2)) for _ in range(5)]
    for i, (cy, cx) in enumerate(centres, start=1):
        disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 25) & (labels == 0)
        labels[disk] = i
    image = rng.normal(15, 4, shape) + 150 * (labels > 0)
    return np.clip(image, 0, 255).astype(np.uint8)[None], labels


def write_nuclei_dataset(root: Path, n: int = 5) -> Path:
    """``n`` tiny nuclei images with labels and a manifest in ``root``; returns the manifest."""
    import tifffile
    import yaml

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for i in range(n):
        image, labels = make_tiny_nuclei(i)
        tifffile.imwrite(root / "images" / f"n{i}.tif", image[0])
        tifffile.imwrite(root / "labels" / f"n{i}.tif", labels)
    (root / "manifest.yaml").write_text(yaml.safe_dump({"markers": ["DNA"], "images": "images/*.tif",
                                                        "labels": "labels/{id}.tif"}))
    return root / "manifest.yaml"


def train_nuclei_run(root: Path, *, instance: dict, val: list[str], n: int = 5, epochs: int = 2,
                     model_options: dict | None = None) -> Path:
    """A tiny distance/border nuclei run trained for a few steps on :func:`write_nuclei_dataset` data.

    ``model_options`` are added to the U-Net's options (e.g. :data:`CHANNEL_INVARIANT`).
    """
    import yaml

    from fluoseg.config import load_config
    from fluoseg.train.trainer import train

    manifest = write_nuclei_dataset(root, n)
    config = {"data": {"manifest": str(manifest), "split": {"val": val}}, "task": "instance", "instance": instance,
              "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4, "padding": "same",
                                                    **(model_options or {})}},
              "train": {"epochs": epochs, "steps_per_epoch": 4 if epochs > 2 else 3, "batch_size": 2,
                        "patch_size": 64, "device": "cpu", "num_threads": 1, "learning_rate": 3e-3}}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return train(load_config(root / "config.yaml"), root / "run", progress=False)
