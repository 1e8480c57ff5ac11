"""Detection-based instance segmentation: Mask R-CNN and LACSS in plain torch.

Both models are built by name, ``build_detector("maskrcnn" | "lacss", in_channels=K,
**options)`` (unknown options are errors listing the accepted ones), and share one
interface, which a training task and the inference code can rely on:

``forward(images, targets=None)``
    ``images`` is an ``(N, C, H, W)`` float tensor of normalised marker slots (any H, W;
    the models pad internally to their stride and clip or crop back).

    Training mode: ``targets`` is a list of N dicts of tensors on the model's device,

    - full supervision (both models): ``boxes`` ``(n, 4)`` float ``x1, y1, x2, y2``
      (far corner exclusive), ``labels`` ``(n,)`` int64 classes 1..n_classes,
      ``masks`` ``(n, H, W)`` uint8; LACSS uses ``masks`` (and ``points`` if given);
    - weak supervision (LACSS): ``points`` ``(n, 2)`` float ``(y, x)``, one per object,
      and ``foreground`` ``(H, W)`` uint8;

    and the result is a dict of named scalar losses whose sum is the training loss.

    Eval mode: a list of N dicts: ``boxes`` ``(n, 4)``, ``scores`` ``(n,)``, ``masks``
    ``(n, H, W)`` probabilities of each object pasted into the image (Mask R-CNN adds the
    class ``labels``; LACSS the detected ``points``).

:func:`~fluoseg.models.detection.targets.targets_from_labels` makes the targets (numpy)
from an instance label image; :func:`~fluoseg.models.detection.targets.labels_from_detections`
turns a detection dict's ``masks`` and ``scores`` back into an instance label image and
per-object scores, ready for :mod:`fluoseg.metrics` (COCO AP takes the scores).
:func:`detector_spec` records how a model was built, for checkpoints.

Module map: ``boxes`` (IoU, NMS, box coder), ``anchors``, ``sampling`` (matcher,
balanced sampler), ``roi_align`` (RoIAlign, multi-scale pooling), ``fpn`` (FPN,
ResNet-FPN), ``rpn``, ``roi_heads``, ``paste``, ``maskrcnn``; ``lacss_backbone``, ``lpn``,
``lacss_head``, ``lacss_losses``, ``lacss``; ``targets`` (torch-free conversions),
``registry``, ``options``.
"""

from fluoseg.models.detection.lacss import LACSS
from fluoseg.models.detection.maskrcnn import MaskRCNN
from fluoseg.models.detection.registry import build_detector, detector_names, detector_spec, register_detector
from fluoseg.models.detection.targets import labels_from_detections, points_from_labels, targets_from_labels

__all__ = [
    "LACSS",
    "MaskRCNN",
    "build_detector",
    "detector_names",
    "detector_spec",
    "labels_from_detections",
    "points_from_labels",
    "register_detector",
    "targets_from_labels",
]
