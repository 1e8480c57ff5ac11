"""Tests of fluoseg.models.detection.maskrcnn: torchvision's layout, losses, outputs, overfitting."""

from __future__ import annotations

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models.detection import MaskRCNN, targets_from_labels
from fluoseg.models.registry import count_parameters

SMALL = {"encoder": "resnet18", "fpn_channels": 32, "representation_size": 128, "mask_channels": 32,
         "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64, "rpn_post_nms_top_n_train": 200}
"""A Mask R-CNN that trains a few steps in seconds on one CPU thread."""

LOSSES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_mask"}


def tensor_targets(labels) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in targets_from_labels(labels).items() if k in ("boxes", "labels", "masks")}


def test_parameter_count_matches_torchvision():
    with torch.device("meta"):
        model = MaskRCNN(3, n_classes=90)
    # torchvision's maskrcnn_resnet50_fpn(num_classes=91) has 44,401,393 parameters; its frozen
    # batch norms keep their 53,120 affine weights as buffers, trained parameters here.
    assert count_parameters(model) == 44_401_393 + 53_120


def test_training_losses(discs):
    torch.manual_seed(0)
    model = MaskRCNN(1, **SMALL).train()
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros((0, 64, 64), dtype=torch.uint8)}
    losses = model(discs.image.repeat(2, 1, 1, 1), [tensor_targets(discs.labels), empty])
    assert set(losses) == LOSSES
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0


def test_eval_outputs_on_a_size_that_needs_padding():
    torch.manual_seed(0)
    model = MaskRCNN(2, **SMALL, box_score_thresh=0.0, detections_per_image=7).eval()
    with torch.no_grad():
        detections = model(torch.randn(2, 2, 45, 70))
    assert len(detections) == 2
    for detection in detections:
        n = len(detection["boxes"])
        assert n <= 7
        assert detection["masks"].shape == (n, 45, 70) and detection["scores"].shape == (n,)
        assert bool((detection["boxes"][:, 2] <= 70).all() and (detection["boxes"][:, 3] <= 45).all())
        assert bool((detection["masks"] >= 0).all() and (detection["masks"] <= 1).all())


def test_training_needs_targets():
    model = MaskRCNN(1, **SMALL).train()
    with pytest.raises(ValueError, match="target"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="lacks"):
        model(torch.zeros(1, 1, 32, 32), [{"boxes": torch.zeros((0, 4))}])


@pytest.mark.parametrize("options", [{"anchor_sizes": [8, 16]}, {"rpn_bg_iou_thresh": 0.8},
                                     {"box_positive_fraction": 1.5}, {"encoder": "vgg"}, {"detections_per_image": 0}])
def test_invalid_options(options):
    with pytest.raises(FluosegError):
        MaskRCNN(1, **{**SMALL, **options})


def test_overfits_discs_and_detects_them(discs, train):
    torch.manual_seed(0)
    model = MaskRCNN(1, **SMALL)
    first, last = train(model, discs.image, [tensor_targets(discs.labels)], steps=45)
    assert last < 0.25 * first
    with torch.no_grad():
        detection = model.eval()(discs.image)[0]
    masks = detection["masks"].numpy() >= 0.5
    assert all(discs.best_iou(index, masks) > 0.5 for index in range(1, 5))
