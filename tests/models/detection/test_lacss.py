"""Tests of fluoseg.models.detection.lacss: losses, outputs, full and weak supervision."""

from __future__ import annotations

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.models.detection import LACSS, targets_from_labels
from fluoseg.models.detection.lacss import mask_centroids, masks_to_boxes
from fluoseg.models.detection.lacss_head import paste_patches

SMALL = {"depth": "resnet18", "fpn_channels": 64, "lpn_channels": [64], "crop_size": 32, "shared_channels": [64],
         "patch_channels": 32}
"""A LACSS model that trains a few steps in seconds on one CPU thread."""


def full_targets(labels) -> dict[str, torch.Tensor]:
    return {"masks": torch.from_numpy(targets_from_labels(labels)["masks"])}


def weak_targets(labels) -> dict[str, torch.Tensor]:
    targets = targets_from_labels(labels)
    return {"points": torch.from_numpy(targets["points"]), "foreground": torch.from_numpy(targets["foreground"])}


def test_mask_helpers_by_hand():
    masks = torch.zeros(2, 5, 6)
    masks[0, 1:3, 2:5] = 1
    assert masks_to_boxes(masks).tolist() == [[2.0, 1.0, 5.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    assert mask_centroids(masks[:1]).tolist() == [[1.5, 3.0]]


def test_training_losses_for_full_weak_and_mixed_batches(discs):
    torch.manual_seed(0)
    model = LACSS(1, **SMALL).train()
    images = discs.image.repeat(2, 1, 1, 1)
    full, weak = full_targets(discs.labels), weak_targets(discs.labels)
    keys = {"loss_lpn_score", "loss_lpn_offset", "loss_segmentation", "loss_boundary"}
    for targets in ([full, full], [weak, weak], [full, weak]):
        losses = model(images, targets)
        assert set(losses) == keys
        assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert model(images, [full, full])["loss_boundary"].item() == 0.0
    without_auxnet = LACSS(1, **SMALL, auxnet=False).train()
    assert "loss_boundary" not in without_auxnet(images, [weak, weak])


def test_eval_outputs_on_a_size_that_needs_padding():
    torch.manual_seed(0)
    model = LACSS(2, **SMALL, min_score=0.0, max_detections=5).eval()
    with torch.no_grad():
        detections = model(torch.randn(2, 2, 41, 50))
    for detection in detections:
        n = len(detection["scores"])
        assert n <= 5
        assert detection["points"].shape == (n, 2) and detection["boxes"].shape == (n, 4)
        assert detection["masks"].shape == (n, 41, 50)


def test_target_without_masks_or_points():
    model = LACSS(1, **SMALL).train()
    for target in ({"foreground": torch.zeros(32, 32)}, {"points": torch.zeros(1, 2)}):
        with pytest.raises(ValueError, match="needs 'masks', or 'points' and 'foreground'"):
            model(torch.zeros(1, 1, 32, 32), [target])


@pytest.mark.parametrize("options", [{"crop_size": 33}, {"lpn_level": 1}, {"depth": "resnet101"}, {"auxnet": 1},
                                     {"min_score": 2.0}, {"nms_distance": 0}, {"lpn_channels": [0]}])
def test_invalid_options(options):
    with pytest.raises(FluosegError):
        LACSS(1, **{**SMALL, **options})


def test_fully_supervised_overfit_segments_each_disc(discs, train):
    torch.manual_seed(0)
    model = LACSS(1, **SMALL, auxnet=False)
    first, last = train(model, discs.image, [full_targets(discs.labels)], steps=40)
    assert last < 0.2 * first
    with torch.no_grad():
        detection = model.eval()(discs.image)[0]
    assert len(detection["scores"]) == 4
    masks = detection["masks"].numpy() >= 0.5
    assert all(discs.best_iou(index, masks) > 0.5 for index in range(1, 5))


def test_weakly_supervised_training_localises_the_discs(discs, train):
    torch.manual_seed(0)
    model = LACSS(1, **SMALL)
    targets = weak_targets(discs.labels)
    first, last = train(model, discs.image, [targets], steps=30)
    assert last < 0.5 * first
    # Each cell's probability is high on its own disc and low elsewhere (points and a
    # foreground mask only: no instance masks were seen).
    with torch.no_grad():
        model.eval()
        features = model.backbone(discs.image)
        (logits, origins), = model.segmentation(features[0], [targets["points"]])
    probabilities = paste_patches(torch.sigmoid(logits), origins, (64, 64), accumulate=False).numpy()
    for index in range(4):
        own = probabilities[index][discs.labels == index + 1].mean()
        elsewhere = probabilities[index][discs.labels != index + 1].mean()
        assert own > 0.25 and own > 10 * elsewhere
