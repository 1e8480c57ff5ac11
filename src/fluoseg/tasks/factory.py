"""Tasks from a run configuration (training) or from a checkpoint's task state (inference)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fluoseg.config import TASK_NAMES, RunConfig
from fluoseg.errors import FluosegError
from fluoseg.tasks.base import Task
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
    if config.task == "instance":
        return build_instance_task(config.instance.method, **config.instance.model_dump(exclude={"method"}),
                                   weight_eps=config.train.weight_eps)
    if config.task == "regression":
        return RegressionTask(config.regression.targets, loss=config.regression.loss,
                              normalization=config.preprocess.normalization, percentiles=config.preprocess.percentiles)
    return SemanticTask(classes, weight_eps=config.train.weight_eps, loss=config.train.loss,
                        loss_options=config.train.loss_options)


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
