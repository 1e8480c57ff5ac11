"""Tests of fluoseg.tasks.instance."""

import numpy as np
import pytest
import torch

from fluoseg.data.resample import resample_to_shape
from fluoseg.errors import FluosegError
from fluoseg.instance.tune import regrid_instances
from fluoseg.metrics.matching import match_objects
from fluoseg.tasks import IGNORE_INDEX, build_instance_task, instance_method_names, task_from_state


def two_touching_disks(shape=(40, 40)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int64)
    labels[(yy - 20) ** 2 + (xx - 13) ** 2 <= 36] = 1
    labels[((yy - 20) ** 2 + (xx - 24) ** 2 <= 36) & (labels == 0)] = 2
    return labels


@pytest.mark.parametrize("method", instance_method_names())
def test_instance_targets_decode_back_to_objects(method):
    task = build_instance_task(method, min_size=5)
    labels = two_touching_disks()
    targets = task.make_targets(labels)
    task.fit([targets])
    # ideal activated outputs from the targets
    if method == "border":
        ideal = np.eye(3, dtype=np.float32)[targets["classes"]].transpose(2, 0, 1)
    elif method == "distance":
        ideal = np.stack([targets["distance"], targets["foreground"].astype(np.float32)])
    else:
        ideal = targets["classes"][None].astype(np.float32)
    # from ideal outputs, the foreground probability is exactly the objects' pixels
    assert np.array_equal(task.foreground_probability(ideal), (labels > 0).astype(np.float32))
    decoded = task.decode(ideal)
    expected_objects = 1 if method == "threshold" else 2  # thresholding cannot split touching nuclei
    assert len(np.unique(decoded[decoded > 0])) == expected_objects
    counts = task.score_counts(decoded, targets)
    if method == "threshold":  # the merged object still overlaps one disk with IoU > 0.5
        assert counts.tolist() == [1, 0, 1] and task.score(counts)["score"] == pytest.approx(2 / 3)
    else:
        assert counts.tolist() == [2, 0, 0] and task.score(counts)["score"] == 1.0


def ideal_maps(method, targets):
    if method == "border":
        return np.eye(3, dtype=np.float32)[targets["classes"]].transpose(2, 0, 1)
    if method == "distance":
        return np.stack([targets["distance"], targets["foreground"].astype(np.float32)])
    return targets["classes"][None].astype(np.float32)


@pytest.mark.parametrize("method", instance_method_names())
def test_labels_decoded_at_the_network_scale_are_regridded_as_tuning_scores_them(method):
    task = build_instance_task(method, min_size=0, **({} if method == "border" else {"threshold": 0.4}))
    labels = two_touching_disks((80, 80))
    targets = task.make_targets(labels)
    task.fit([targets])
    fine = ideal_maps(method, targets)
    decoded = task.decode(resample_to_shape(fine, (40, 40), kind="probabilities"))
    regridded = task.regrid_labels(decoded, fine)
    threshold = getattr(task, "threshold", 0.5)
    assert np.array_equal(regridded, regrid_instances(decoded, fine, method, threshold=threshold))
    assert regridded.shape == labels.shape and np.array_equal(regridded > 0, labels > 0)
    assert len(np.unique(regridded[regridded > 0])) == len(np.unique(decoded[decoded > 0]))


def test_foreground_probability_picks_each_methods_channel():
    border = np.stack([np.full((2, 2), 0.25), np.full((2, 2), 0.5), np.full((2, 2), 0.25)])
    assert build_instance_task("border").foreground_probability(border) == pytest.approx(np.full((2, 2), 0.75))
    distance = np.stack([np.full((2, 2), 7.0), np.full((2, 2), 0.4)])  # distance is not a probability
    assert build_instance_task("distance").foreground_probability(distance) == pytest.approx(np.full((2, 2), 0.4))
    threshold = np.full((1, 2, 2), 0.3)
    assert build_instance_task("threshold").foreground_probability(threshold) == pytest.approx(np.full((2, 2), 0.3))


@pytest.mark.parametrize("method", instance_method_names())
def test_instance_loss_is_finite_ignores_outside_and_round_trips(method):
    task = build_instance_task(method)
    targets = task.make_targets(two_touching_disks())
    task.fit([targets])
    batch = {k: torch.as_tensor(v[None]) for k, v in targets.items()}
    for key, value in task.fill.items():
        if key in batch:
            batch[key][0, :5] = value  # outside the image
    logits = torch.randn(1, task.output_channels(), 40, 40, requires_grad=True)
    loss = task.loss(logits, batch)
    loss.backward()
    assert torch.isfinite(loss) and torch.all(logits.grad[0, :, :5] == 0)
    assert task.activate(logits).shape[1] == task.activated_channels()
    rebuilt = task_from_state(task.state())
    assert rebuilt.state() == task.state()


def test_border_loss_is_weighted_by_the_weight_map():
    task = build_instance_task("border")
    targets = task.make_targets(two_touching_disks())
    logits = torch.zeros(1, 3, 40, 40)
    batch = {k: torch.as_tensor(v[None]) for k, v in targets.items()}
    expected = float(np.log(3)) * targets["weights"].mean()
    assert task.loss(logits, batch).item() == pytest.approx(expected, rel=1e-5)
    assert IGNORE_INDEX == -1


def test_methods_are_registered_classes_and_old_states_load():
    assert instance_method_names() == ["border", "distance", "threshold"]
    with pytest.raises(FluosegError, match="unknown instance method 'watershed'; choose one of"):
        build_instance_task("watershed")
    # a checkpoint written when one class served every method holds every option
    old = {"name": "instance", "method": "distance", "w0": 10.0, "sigma": 5.0, "erosion": 1, "alpha": 2.0, "h": 3.0,
           "threshold": 0.4, "min_size": 7, "target_diameter": 15.0, "weight_eps": 1.0, "class_weights": None}
    task = task_from_state(old)
    assert type(task).__name__ == "DistanceTask" and (task.alpha, task.h, task.threshold) == (2.0, 3.0, 0.4)
    assert task.min_size == 7 and task.target_diameter == 15.0 and task.ignored_channels == ()
    assert task.diameter_bias == 1.0 and task_from_state({**old, "diameter_bias": 1.1}).diameter_bias == 1.1
    assert task_from_state({**old, "diameter_bias": 1.1}).state()["diameter_bias"] == 1.1
    assert "diameter_bias" not in task_from_state({**old, "target_diameter": None}).state()  # nothing to estimate


def test_only_the_distance_method_measures_how_decoded_objects_fit_its_maps():
    from scipy import ndimage as ndi

    labels = np.zeros((40, 40), np.int32)
    yy, xx = np.mgrid[:40, :40]
    labels[(yy - 20) ** 2 + (xx - 20) ** 2 <= 10 ** 2] = 1
    distance = ndi.distance_transform_edt(labels > 0)
    activated = np.stack([distance, (labels > 0).astype(float)]).astype(np.float32)
    assert build_instance_task("distance").object_fit(activated, labels) == pytest.approx(1.0, abs=0.06)
    # halving the predicted distances (a network that measures these objects as smaller) halves the fit
    halved = np.stack([distance / 2, activated[1]]).astype(np.float32)
    assert build_instance_task("distance").object_fit(halved, labels) == pytest.approx(0.5, abs=0.03)
    for method in ("border", "threshold"):
        assert build_instance_task(method).object_fit(activated, labels) is None


def test_distance_gap_weight_makes_errors_where_nuclei_touch_cost_more():
    labels = np.zeros((32, 48), np.int64)
    labels[8:24, 8:24], labels[8:24, 24:40] = 1, 2  # two nuclei touching along column 24
    plain, gapped = build_instance_task("distance"), build_instance_task("distance", gap_weight=10.0, sigma=3.0)
    assert "weights" not in plain.make_targets(labels)
    weights = gapped.make_targets(labels)["weights"]
    assert weights[16, 23] > 5 and weights[16, 24] > 5  # where they touch: 1 + nearly 10
    assert weights[0, 0] == pytest.approx(1.0, abs=1e-3) and weights[16, 10] < weights[16, 23]

    def loss(task, error_at):
        targets = {k: torch.as_tensor(v)[None] for k, v in task.make_targets(labels).items()}
        logits = torch.stack([targets["distance"][0], targets["foreground"][0].float() * 20 - 10])[None].clone()
        logits[0, 0][error_at] += 2.0  # the same distance error of 2 px
        return float(task.loss(logits, targets))

    at_contact, far_away = (slice(14, 18), slice(23, 25)), (slice(14, 18), slice(9, 11))
    assert loss(plain, at_contact) == pytest.approx(loss(plain, far_away), rel=1e-4)
    assert loss(gapped, at_contact) > 3 * loss(gapped, far_away)
    # stored with checkpoints only when on, so models trained without it keep their state
    assert "gap_weight" not in plain.state()
    again = task_from_state(gapped.state())
    assert (again.gap_weight, again.sigma) == (10.0, 3.0)


def test_a_gap_weighted_distance_run_trains_and_keeps_its_weighting(tmp_path):
    from support import train_nuclei_run

    from fluoseg.infer import Segmenter

    run = train_nuclei_run(tmp_path, n=3, epochs=1, val=["n2"],
                           instance={"method": "distance", "gap_weight": 10.0, "min_size": 5})
    task = Segmenter.load(run, device="cpu").task
    assert (task.gap_weight, task.sigma) == (10.0, 5.0)
