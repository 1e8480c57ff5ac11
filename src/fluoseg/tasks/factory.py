"""Tasks from a run configuration (training) or from a checkpoint's task state (inference)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fluoseg.config import TASK_NAMES, RunConfig
from fluoseg.errors import FluosegError
from fluoseg.models.detection import detector_names
from fluoseg.models.detection.registry import DETECTORS
from fluoseg.tasks.base import Task
from fluoseg.tasks.detection import METHOD, DetectionTask
from fluoseg.tasks.instance import build_instance_task
from fluoseg.tasks.regression import RegressionTask
from fluoseg.tasks.semantic import SemanticTask

def make_task(config: RunConfig, classes: Sequence[str]) -> Task:
    """The task a config describes, for the classes of one member network.

    Raises
    ------
    FluosegError
        For an unknown instance method or loss, or invalid loss options (the one-line errors
        of the registries).
    """
    if config.task == "instance" and config.model.name in detector_names():
        return detection_task(config)
    if config.task == "instance":
        if config.instance.method == METHOD:
            raise FluosegError(f"instance.method {METHOD!r} needs a detection model as model.name "
                               f"({detector_names()}), not {config.model.name!r}")
        return build_instance_task(config.instance.method, **config.instance.model_dump(exclude={"method"}),
                                   weight_eps=config.train.weight_eps)
    if config.task == "regression":
        return RegressionTask(config.regression.targets, loss=config.regression.loss,
                              normalization=config.preprocess.normalization, percentiles=config.preprocess.percentiles)
    return SemanticTask(classes, weight_eps=config.train.weight_eps, loss=config.train.loss,
                        loss_options=config.train.loss_options)


def detection_task(config: RunConfig) -> DetectionTask:
    """The task of a detection model (``model.name`` a registered detector), checked against the config.

    Raises
    ------
    FluosegError
        For settings a detector cannot honour: point supervision with a detector that
        needs masks, scale normalisation, selecting epochs by validation loss (a detector
        reports no loss in evaluation mode), or ``init_from``.
    """
    accepted = getattr(DETECTORS.get(config.model.name), "supervisions", ("full",))
    if config.instance.supervision not in accepted:
        raise FluosegError(f"instance.supervision {config.instance.supervision!r} is not possible with "
                           f"{config.model.name!r}; it trains from {list(accepted)}")
    if config.train.select_by == "loss":
        raise FluosegError("train.select_by: loss is not available for detection models (they report no "
                           "validation loss); use select_by: metric")
    if config.model.init_from is not None:
        raise FluosegError("model.init_from is not available for detection models; use the model option "
                           "encoder_weights for pretrained encoder weights")
    i = config.instance
    return DetectionTask(supervision=i.supervision, min_score=i.min_score, threshold=i.threshold,
                         tile_overlap=i.tile_overlap, min_size=i.min_size, target_diameter=i.target_diameter)


def task_from_state(state: dict[str, Any]) -> Task:
    """Rebuild a task from :meth:`Task.state` (as stored in a checkpoint)."""
    options = dict(state)
    name = options.pop("name", None)
    if name == "semantic":
        return SemanticTask(options.pop("classes"), **options)
    if name == "instance":
        return build_instance_task(options.pop("method", "border"), **options)
    if name == "regression":
        return RegressionTask(options.pop("targets"), **options)
    raise FluosegError(f"unknown task {name!r} in checkpoint; use a newer fluoseg or retrain the run")
