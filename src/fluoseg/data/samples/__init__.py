"""Small CC0 sample images shipped with fluoseg (see ``README.md`` in this folder)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).resolve().parent


def sample_paths() -> list[tuple[Path, Path]]:
    """``(image, labels)`` file pairs of the shipped nuclei samples, by name."""
    return [(image, image.with_name(f"{image.stem}_labels.tif")) for image in sorted(SAMPLES_DIR.glob("nuclei_?.tif"))]
