"""Tests of fluoseg.tasks.detection: tiles and cores, pasting, tiled prediction, losses, config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from fluoseg.config import RunConfig
from fluoseg.errors import FluosegError
from fluoseg.models.detection import build_detector, labels_from_detections
from fluoseg.tasks import DetectionTask, ObjectPredictor, make_task, task_from_state
from fluoseg.tasks.detection import _Object, detection_tiles, labels_at_score, paste_objects
from fluoseg.tiling import TileGeometry

SMALL_MASKRCNN = {"encoder": "resnet18", "fpn_channels": 16, "representation_size": 64, "mask_channels": 16,
                  "rpn_batch_size_per_image": 64, "box_batch_size_per_image": 64, "rpn_post_nms_top_n_train": 200}


class BlobOracle(nn.Module):
    """A stand-in detector: every connected bright region (channel 0 > 0.5) of a tile is one object.

    Its detections depend only on the pixels of the object, so tiled prediction can be
    compared exactly with whole-image prediction; scores rank objects by their mean intensity.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # gives the module a device
        self.calls: list[tuple[int, ...]] = []

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        self.calls.append(tuple(images.shape))
        results = []
        for image in images.numpy():
            regions, n = ndimage.label(image[0] > 0.5)
            masks = np.stack([regions == i for i in range(1, n + 1)]) if n else np.zeros((0, *regions.shape), bool)
            boxes = np.zeros((n, 4), np.float32)
            for i, (rows, cols) in enumerate(ndimage.find_objects(regions)):
                boxes[i] = (cols.start, rows.start, cols.stop, rows.stop)
            scores = np.array([image[0][m].mean() / 10 for m in masks], np.float32)
            results.append({"boxes": torch.from_numpy(boxes), "scores": torch.from_numpy(scores),
                            "masks": torch.from_numpy(masks.astype(np.float32))})
        return results


def disc_image(shape: tuple[int, int], centres: list[tuple[int, int]], radius: int = 6) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.zeros((1, *shape), np.float32)
    for i, (cy, cx) in enumerate(centres):
        image[0][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 1.0 + 0.1 * i
    return image


def test_tiles_cover_the_image_and_cores_partition_it():
    tiles = detection_tiles((150, 100), size=64, overlap=16, alignment=16)
    owner = np.zeros((150, 100), np.int64)
    covered = np.zeros((150, 100), np.int64)
    for tile in tiles:
        y0, y1, x0, x1 = tile.window
        assert y0 % 16 == 0 and x0 % 16 == 0
        covered[y0:y1, x0:x1] += 1
        cy0, cy1, cx0, cx1 = tile.core
        assert y0 <= cy0 < cy1 <= y1 and x0 <= cx0 < cx1 <= x1
        owner[cy0:cy1, cx0:cx1] += 1
    assert (owner == 1).all() and (covered >= 1).all()
    # Rows: starts 0, 48 (step 64-16=48), last aligned start (150-64)//16*16 = 80 -> tile 80..150.
    assert sorted({t.window[:2] for t in tiles}) == [(0, 64), (48, 112), (80, 150)]
    assert sorted({t.core[:2] for t in tiles}) == [(0, 56), (56, 96), (96, 150)]


def test_an_image_within_the_tile_is_one_tile():
    assert detection_tiles((40, 50), size=64, overlap=16) == [
        type(detection_tiles((1, 1), size=1, overlap=0)[0])(window=(0, 40, 0, 50), core=(0, 40, 0, 50))]


def test_paste_objects_follows_labels_from_detections():
    rng = np.random.default_rng(3)
    masks = rng.random((6, 30, 40)) ** 3
    scores = rng.random(6)
    expected, expected_scores = labels_from_detections(masks, scores, threshold=0.5, min_area=5)
    objects = []
    for mask, score in zip(masks >= 0.5, scores):
        rows, cols = ndimage.find_objects(mask.astype(np.uint8))[0]
        objects.append(_Object(score=float(score), y=rows.start, x=cols.start, mask=mask[rows, cols]))
    found = paste_objects((30, 40), objects, min_area=5)
    np.testing.assert_array_equal(found.labels, expected)
    np.testing.assert_allclose(found.scores, expected_scores)
    for label, score in enumerate(found.scores, start=1):
        assert np.all(found.score_map[0][found.labels == label] == np.float32(score))
    assert np.all(found.score_map[0][found.labels == 0] == 0)


def test_tiled_prediction_equals_whole_image_prediction_away_from_borders():
    task = DetectionTask(min_score=0.0, tile_overlap=32, min_size=1)
    # Tiles of 64 with overlap 32 and alignment 16: row/column windows 0-64, 32-96, 64-120(last).
    image = disc_image((120, 120), [(15, 15), (15, 100), (60, 20), (100, 100), (105, 40)])
    oracle = BlobOracle()
    whole = task.predict_objects(oracle, image, geometry=TileGeometry(128, 128, "same", 16))
    assert oracle.calls == [(1, 1, 120, 120)]
    tiled = task.predict_objects(oracle, image, geometry=TileGeometry(64, 64, "same", 16), batch_size=4)
    assert len(oracle.calls) > 2
    assert whole.labels.max() == 5
    np.testing.assert_array_equal(tiled.labels, whole.labels)
    np.testing.assert_array_equal(tiled.scores, whole.scores)
    np.testing.assert_array_equal(tiled.score_map, whole.score_map)


def test_an_object_crossing_a_tile_border_is_found_once():
    task = DetectionTask(min_score=0.0, tile_overlap=32, min_size=1)
    # Column windows 0-64, 32-96, 48-120 (last start aligned: (120-64)//16*16 = 48), cores split at
    # 48 and 72: the disc at x 49-63 lies whole in all three windows, its centre in the second core.
    image = disc_image((64, 120), [(30, 56)], radius=7)
    tiles = detection_tiles((64, 120), size=64, overlap=32, alignment=16)
    assert [t.window[2:] for t in tiles] == [(0, 64), (32, 96), (48, 120)]
    found = task.predict_objects(BlobOracle(), image, geometry=TileGeometry(64, 64, "same", 16))
    assert found.labels.max() == 1
    assert (found.labels > 0).sum() == (image[0] > 0.5).sum()


def test_min_score_threshold_and_min_size():
    image = disc_image((64, 64), [(20, 20), (45, 45)], radius=2)  # 13-pixel discs, scores 0.1 and 0.11
    geometry = TileGeometry(64, 64, "same", 16)
    assert DetectionTask(min_score=0.105, min_size=1).predict_objects(BlobOracle(), image, geometry=geometry
                                                                      ).labels.max() == 1
    assert DetectionTask(min_score=0.0, min_size=14).predict_objects(BlobOracle(), image, geometry=geometry
                                                                     ).labels.max() == 0


def test_state_round_trip_and_protocol():
    task = DetectionTask(supervision="points", min_score=0.3, threshold=0.4, tile_overlap=20, min_size=3)
    rebuilt = task_from_state(task.state())
    assert isinstance(rebuilt, DetectionTask) and isinstance(rebuilt, ObjectPredictor)
    assert rebuilt.state() == task.state()
    assert rebuilt.state()["name"] == "instance" and rebuilt.state()["method"] == "detection"


def test_batch_loss_is_the_sum_of_the_detector_losses():
    torch.manual_seed(0)
    model = build_detector("maskrcnn", in_channels=1, **SMALL_MASKRCNN).train()
    labels = np.zeros((2, 64, 64), np.int32)
    labels[0, 10:20, 10:22] = 1
    labels[0, 30:44, 40:50] = 2  # the second patch has no objects
    images = torch.from_numpy(np.where(labels > 0, 1.0, -1.0)[:, None]).float()
    loss = DetectionTask().batch_loss(model, images, torch.ones(2, 1), {"labels": torch.from_numpy(labels)})
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0


def config(model: str, **instance: object) -> RunConfig:
    train = {"select_by": instance.pop("select_by")} if "select_by" in instance else {}
    return RunConfig.model_validate({"data": {"manifest": "m.yaml"}, "task": "instance", "instance": instance,
                                     "model": {"name": model}, "train": train})


def test_make_task_picks_the_detection_task_for_detectors():
    task = make_task(config("lacss", supervision="points", min_score=0.25), ("objects",))
    assert isinstance(task, DetectionTask) and task.supervision == "points" and task.min_score == 0.25
    assert type(make_task(config("unet"), ("objects",))).__name__ == "BorderTask"


@pytest.mark.parametrize(("model", "instance", "message"), [
    ("maskrcnn", {"supervision": "points"}, "not possible with 'maskrcnn'"),
    ("maskrcnn", {"select_by": "loss"}, "select_by: loss"),
    ("lacss", {"target_diameter": 20.0}, "target_diameter does not apply"),
    ("unet", {"method": "detection"}, "needs a detection model"),
])
def test_settings_a_detector_cannot_honour(model, instance, message):
    with pytest.raises(FluosegError, match=message):
        make_task(config(model, **instance), ("objects",))


def test_point_supervision_targets_losses_and_scores(tmp_path):
    import tifffile

    from fluoseg.data.sample import Sample

    labels = np.zeros((32, 32), np.uint16)
    labels[4:10, 4:10] = 1
    labels[20:28, 15:25] = 2
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    (tmp_path / "points.csv").write_text("y,x\n6.6,7\n24,19.2\n")
    sample = Sample(id="a", image_path=tmp_path / "image.tif", channel_names=("DNA",),
                    labels_path=tmp_path / "labels.tif", points_path=tmp_path / "points.csv")
    task = DetectionTask(supervision="points")
    annotation = task.read_annotation(sample, (32, 32))
    assert annotation[7, 7] == 2 and annotation[24, 19] == 3 and (annotation == 1).sum() == (labels > 0).sum() - 2
    targets = task.make_targets(annotation)
    assert set(targets) == {"points", "foreground"}
    np.testing.assert_array_equal(targets["foreground"], labels > 0)
    assert np.argwhere(targets["points"] > 0).tolist() == [[7, 7], [24, 19]]
    np.testing.assert_array_equal(task.sampling_map(targets), labels > 0)

    # scored against the points: object 1 holds a point (TP), a third object holds none (FP), and
    # the second point lies in no object (FN)
    found = labels.astype(np.int32).copy()
    found[found == 2] = 0
    found[0:3, 28:32] = 3
    assert task.score_counts(found, targets).tolist() == [1, 1, 1]
    assert task.score(np.array([1, 1, 1]))["f1_points"] == pytest.approx(0.5)

    torch.manual_seed(0)
    model = build_detector("lacss", in_channels=1, depth="resnet18", fpn_channels=16, lpn_channels=[16, 16],
                           shared_channels=[16], patch_channels=8, crop_size=24).train()
    batch = {k: torch.from_numpy(np.stack([v, np.zeros_like(v)])) for k, v in targets.items()}
    loss = task.batch_loss(model, torch.randn(2, 1, 32, 32), torch.ones(2, 1), batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    full = DetectionTask().batch_loss(model, torch.randn(2, 1, 32, 32), torch.ones(2, 1),
                                      {"labels": torch.from_numpy(np.stack([labels, labels]).astype(np.int32))})
    assert torch.isfinite(full)


def test_points_need_a_foreground(tmp_path):
    from fluoseg.data.sample import Sample

    (tmp_path / "points.csv").write_text("y,x\n1,1\n")
    sample = Sample(id="a", image_path=tmp_path / "image.tif", channel_names=("DNA",),
                    points_path=tmp_path / "points.csv")
    with pytest.raises(FluosegError, match="has points but no foreground"):
        DetectionTask(supervision="points").read_annotation(sample, (8, 8))


def test_whole_image_prediction_of_a_real_detector_is_labels_from_detections():
    torch.manual_seed(1)
    model = build_detector("maskrcnn", in_channels=1, box_score_thresh=0.0, **SMALL_MASKRCNN).eval()
    image = disc_image((70, 90), [(20, 20), (50, 60)]) * 2 - 1
    with torch.no_grad():
        detected = model(torch.from_numpy(image)[None])[0]
    assert len(detected["scores"]) > 5  # an untrained detector reports many low-scoring boxes
    task = DetectionTask(min_score=0.0, threshold=0.5, min_size=3)
    found = task.predict_objects(model, image, geometry=TileGeometry(96, 96, "same", 32))
    labels, scores = labels_from_detections(detected["masks"].numpy(), detected["scores"].numpy(), threshold=0.5,
                                            min_area=3)
    assert labels.max() > 10  # many overlapping masks: the pasting order matters
    np.testing.assert_array_equal(found.labels, labels)
    np.testing.assert_allclose(found.scores, scores, rtol=1e-6)


def test_validation_scores_at_the_best_score_threshold():
    # the oracle scores discs by intensity / 10: 0.1 (a true object) and 0.3 (a false one)
    image = disc_image((64, 64), [(20, 20), (45, 45)], radius=5)
    image[0][image[0] > 1.05] = 3.0
    truth = np.zeros((64, 64), np.int32)
    truth[image[0] == 1.0] = 1
    task = DetectionTask(min_score=0.5, min_size=1)
    geometry = TileGeometry(64, 64, "same", 16)
    assert task.predict_objects(BlobOracle(), image, geometry=geometry).labels.max() == 0  # nothing at 0.5
    scores = task.validate(BlobOracle(), [(image, {"labels": truth})], geometry=geometry)
    # thresholds 0.05 and 0.1 keep both (F1 2/3), 0.2 and 0.3 keep only the false one (F1 0): the first wins
    assert scores["min_score"] == 0.05 and scores["f1_at_0.5"] == pytest.approx(2 / 3)
    found = task.predict_objects(BlobOracle(), image, geometry=geometry, min_score=0.0)
    assert labels_at_score(found, 0.2).max() == 1 and labels_at_score(found, 0.05).max() == 2
    np.testing.assert_array_equal(labels_at_score(found, 0.2),
                                  task.predict_objects(BlobOracle(), image, geometry=geometry, min_score=0.2).labels)
