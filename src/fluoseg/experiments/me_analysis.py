"""Recalibration strength of Marker Excite layers (MS-ME paper, Supplementary Fig. 6).

A Marker Excite module's weights depend only on the availability vector, so each module
is summarised by its outputs for the 2^K - 1 marker combinations. The paper measures how
strongly a layer recalibrates by the cosine distances between these outputs for all
pairs of combinations: their mean (bar) and standard deviation (error bar) per layer,
the resolution level 0 being full resolution. Higher values mean the layer weights its
features more differently depending on which markers are present.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fluoseg.errors import FluosegError
from fluoseg.experiments.results import write_csv

ME_FIELDS = ("member", "layer", "block", "level", "label", "n_combinations", "mean_cosine_distance",
             "sd_cosine_distance")

_LAYER = re.compile(r"(?:^|\.)(encoders\.(\d+)|bottleneck|decoders\.(\d+))\.hook$")


def describe_layer(name: str, depth: int | None) -> tuple[str, int | None]:
    """Block kind and resolution level of a U-Net hook path (``"decoders.0.hook"`` -> decoder, depth - 1).

    In :class:`fluoseg.models.unet.UNet`, ``encoders.i`` is level i (``encoders.0`` is the
    input block), the bottleneck is level ``depth``, and ``decoders.i`` is level
    ``depth - 1 - i`` (decoders are stored deepest first). Unknown paths give ``("other", None)``.
    """
    match = _LAYER.search(name)
    if match is None:
        return "other", None
    if match.group(2) is not None:
        level = int(match.group(2))
        return ("input" if level == 0 else "encoder"), level
    if match.group(3) is not None:
        return "decoder", None if depth is None else depth - 1 - int(match.group(3))
    return "bottleneck", depth


def layer_rows(model: Any, n_markers: int, *, member: str = "model") -> list[dict[str, Any]]:
    """One row per Marker Excite layer of a network, in forward order.

    Raises
    ------
    FluosegError
        If the network has no Marker Excite module.
    """
    from fluoseg.models.attention import me_layer_outputs, pairwise_cosine_distances  # deferred: loads torch

    if n_markers < 2:
        raise FluosegError("recalibration needs at least two marker combinations, i.e. a panel of 2 or more markers")
    depth = getattr(model, "depth", None)
    rows = []
    for name, outputs in me_layer_outputs(model, n_markers).items():
        distances = pairwise_cosine_distances(outputs)
        block, level = describe_layer(name, depth)
        label = block.capitalize() + ("" if level is None else f" {level}")
        rows.append({"member": member, "layer": name, "block": block, "level": level, "label": label,
                     "n_combinations": int(outputs.shape[0]), "mean_cosine_distance": float(distances.mean()),
                     "sd_cosine_distance": float(distances.std())})
    return rows


def analyse_run(run_dir: str | Path, out_dir: str | Path, *, checkpoint: str = "best", plot: bool = True
                ) -> tuple[list[dict[str, Any]], list[Path]]:
    """The work behind ``fluoseg experiment me-analysis``: ``me_layers.csv`` and ``me_layers.png``.

    Every member network of the run (one joint network, or one per class) is analysed.
    """
    from fluoseg.infer import Segmenter  # deferred: loads torch

    segmenter = Segmenter.load(run_dir, checkpoint=checkpoint, device="cpu")
    rows = []
    for member in segmenter.members:
        name = "+".join(member.classes) if len(segmenter.members) > 1 else "model"
        try:
            rows.extend(layer_rows(member.model, len(member.panel), member=name))
        except FluosegError as error:
            raise FluosegError(f"{error.message} (this run has none to analyse)", path=run_dir) from None
    out_dir = Path(out_dir)
    files = [write_csv(rows, out_dir / "me_layers.csv", ME_FIELDS)]
    if plot:
        from fluoseg.experiments.plots import recalibration_plot

        files.append(recalibration_plot(rows, out_dir / "me_layers.png"))
    return rows, files
