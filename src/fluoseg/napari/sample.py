"""npe2 sample data: simulated bone-marrow-like tissue, one Image layer per marker."""

from __future__ import annotations

from fluoseg.data.synth.vessels import simulate_tissue
from fluoseg.napari.layers import LayerData

SAMPLE_SHAPE = (384, 384)
SAMPLE_SEED = 7


def tissue_sample() -> list[LayerData]:
    """Five markers (DAPI, endomucin, endoglin, collagen, CXCL12-GFP) of a 384 x 384 µm sample.

    These are the markers of ``fluoseg demo``'s model, so the widget maps the layers to
    its markers by name; the true vessel masks come as Labels layers to compare with.
    """
    sample = simulate_tissue(SAMPLE_SHAPE, seed=SAMPLE_SEED)
    colours = ("blue", "green", "cyan", "magenta", "yellow")
    layers: list[LayerData] = [(channel, {"name": marker, "colormap": colour, "blending": "additive"}, "image")
                               for marker, channel, colour in zip(sample.markers, sample.image, colours)]
    layers += [(mask, {"name": f"true {c}", "visible": False}, "labels") for c, mask in zip(sample.classes, sample.masks)]
    return layers
