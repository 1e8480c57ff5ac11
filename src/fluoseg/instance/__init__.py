"""Instance segmentation of nuclei and cells: training targets, decoding, scale normalisation.

* :mod:`fluoseg.instance.targets` — label image -> training targets: Kromp et al.'s
  3-class border map, the U-Net weight map of Ronneberger et al., the ISL distance map.
* :mod:`fluoseg.instance.postprocess` — network outputs -> label images: threshold +
  connected components, border classes + watershed, distance h-maxima + watershed.
* :mod:`fluoseg.instance.scale` — object diameters and Kromp et al.'s scale factor to an
  equal mean object size.
* :mod:`fluoseg.instance.blocks`, :mod:`fluoseg.instance.blockwise`,
  :mod:`fluoseg.instance.blocklinks` — decoding label images of any size block by block
  with halos, stitched into one labelling.
* :mod:`fluoseg.instance.stitch3d` — 3D objects from slice-wise labels (Cellpose's
  ``stitch_threshold``) and the anisotropy of z-stacks.

Only numpy, scipy and scikit-image are used (no torch).
"""

from __future__ import annotations

from fluoseg.instance.blocks import Block, BlockPlan, plan_blocks
from fluoseg.instance.blockwise import (
    BlockResult,
    Relabelling,
    decode_block,
    decode_blockwise,
    link_blocks,
    resolve,
    resolve_links,
    write_block,
)
from fluoseg.instance.postprocess import (
    labels_from_border_classes,
    labels_from_distance,
    labels_from_threshold,
    regrid_labels,
)
from fluoseg.instance.scale import (
    estimate_diameter_from_labels,
    mean_object_diameter,
    object_diameters,
    peak_to_radius,
    scale_factor,
)
from fluoseg.instance.stitch3d import anisotropy, isotropic_zoom, stitch_slices
from fluoseg.instance.targets import (
    BACKGROUND,
    BORDER,
    INTERIOR,
    border_targets,
    check_label_image,
    distance_targets,
    unet_weight_map,
)

__all__ = [
    "BACKGROUND",
    "BORDER",
    "Block",
    "BlockPlan",
    "BlockResult",
    "INTERIOR",
    "Relabelling",
    "anisotropy",
    "border_targets",
    "check_label_image",
    "decode_block",
    "decode_blockwise",
    "distance_targets",
    "estimate_diameter_from_labels",
    "isotropic_zoom",
    "labels_from_border_classes",
    "labels_from_distance",
    "labels_from_threshold",
    "regrid_labels",
    "link_blocks",
    "mean_object_diameter",
    "object_diameters",
    "peak_to_radius",
    "plan_blocks",
    "resolve",
    "resolve_links",
    "scale_factor",
    "stitch_slices",
    "unet_weight_map",
    "write_block",
]
