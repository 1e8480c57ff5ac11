"""Write simulated 3D nuclei stacks as a fluoseg dataset (``fluoseg synth nuclei3d``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from fluoseg.data.synth.cells_dataset import draw_dataset
from fluoseg.data.synth.nuclei3d import simulate_nuclei_3d
from fluoseg.errors import FluosegError
from fluoseg.io import write_image, write_text_atomically

MARKER = "DNA"
"""Channel name of the simulated nuclear stain."""
_OUTPUTS = ("images", "labels", "manifest.yaml", "simulation.yaml")


def write_nuclei3d_dataset(out: str | Path, n: int, *, shape: tuple[int, int, int] = (16, 96, 96),
                           z_step: float = 2.0, pixel_size_yx: float = 0.5, seed: int = 0,
                           overwrite: bool = False) -> Path:
    """Simulate ``n`` nuclei z-stacks (:func:`~fluoseg.data.synth.nuclei3d.simulate_nuclei_3d`) and write them.

    ``out/images/nuclei3d_NNNN.ome.tif`` (CZYX, channel ``DNA``, pixel size z, y, x in µm),
    ``out/labels/nuclei3d_NNNN.tif`` (ZYX instance labels), ``out/manifest.yaml`` and
    ``out/simulation.yaml`` (seeds and settings). Stack ``i`` is the same for any ``n``.

    Returns
    -------
    Path
        The manifest.

    Raises
    ------
    FluosegError
        For a bad count, seed or shape, or an existing dataset without ``overwrite``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise FluosegError(f"the number of stacks must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FluosegError(f"the seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    # drawing the first stack checks the settings before an earlier dataset is removed
    ids, seeds, stacks = draw_dataset(out, n, seed, "nuclei3d",
                                      lambda s: simulate_nuclei_3d(shape, z_step=z_step, pixel_size_yx=pixel_size_yx,
                                                                   seed=s),
                                      outputs=_OUTPUTS, overwrite=overwrite)
    for sample_id, stack in zip(ids, stacks):
        write_image(out / "images" / f"{sample_id}.ome.tif", stack.image, axes="CZYX", channel_names=[MARKER],
                    pixel_size=stack.pixel_size)
        write_image(out / "labels" / f"{sample_id}.tif", stack.labels.astype(np.uint32), axes="ZYX")
    provenance = {"simulator": "fluoseg.data.synth.nuclei3d.simulate_nuclei_3d", "seed": seed,
                  "shape": [int(s) for s in shape], "z_step": float(z_step), "pixel_size_yx": float(pixel_size_yx),
                  "samples": [{"id": i, "seed": s} for i, s in zip(ids, seeds)]}
    write_text_atomically(out / "simulation.yaml", yaml.safe_dump(provenance, sort_keys=False))
    manifest = {"markers": [MARKER], "images": "images/nuclei3d_*.ome.tif", "labels": "labels/{id}.tif"}
    return write_text_atomically(out / "manifest.yaml", yaml.safe_dump(manifest, sort_keys=False))
