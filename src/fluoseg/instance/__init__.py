"""Instance segmentation of nuclei and cells: training targets, decoding, scale normalisation.

* :mod:`fluoseg.instance.targets` — label image -> training targets: Kromp et al.'s
  3-class border map, the U-Net weight map of Ronneberger et al., the ISL distance map.
* :mod:`fluoseg.instance.postprocess` — network outputs -> label images: threshold +
  connected components, border classes + watershed, distance h-maxima + watershed.
* :mod:`fluoseg.instance.scale` — object diameters and Kromp et al.'s scale factor to an equal mean object size.

Only numpy, scipy and scikit-image are used (no torch).
"""

from __future__ import annotations

from fluoseg.instance.postprocess import labels_from_border_classes, labels_from_distance, labels_from_threshold
from fluoseg.instance.scale import (
    estimate_diameter_from_labels,
    mean_object_diameter,
    object_diameters,
    scale_factor,
)
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
    "INTERIOR",
    "border_targets",
    "check_label_image",
    "distance_targets",
    "estimate_diameter_from_labels",
    "labels_from_border_classes",
    "labels_from_distance",
    "labels_from_threshold",
    "mean_object_diameter",
    "object_diameters",
    "scale_factor",
    "unet_weight_map",
]
