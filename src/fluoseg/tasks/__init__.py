"""Tasks: what a network learns, its targets, loss, output activation and decoding.

- :mod:`.base`: the :class:`Task` interface and :data:`IGNORE_INDEX`;
- :mod:`.semantic`: exclusive classes (MS-ME log-weighted cross-entropy or a study loss);
- :mod:`.instance`: one class per instance method (``border``, ``distance``, ``threshold``),
  registered by name like the models;
- :mod:`.detection`: detection models (Mask R-CNN, LACSS) as the instance method ``detection``,
  which predicts objects directly (:class:`.base.ObjectPredictor`);
- :mod:`.regression`: in-silico labelling (predict markers from the other channels);
- :mod:`.losses`, :mod:`.segmentation_losses`: the losses, built by name;
- :mod:`.factory`: :func:`make_task` (from a config) and :func:`task_from_state` (from a checkpoint).
"""

from fluoseg.tasks.base import IGNORE_INDEX, ObjectPredictor, Task
from fluoseg.tasks.detection import DetectedObjects, DetectionTask
from fluoseg.tasks.factory import TASK_NAMES, make_task, task_from_state
from fluoseg.tasks.instance import (
    BorderTask,
    DistanceTask,
    InstanceTask,
    ThresholdTask,
    build_instance_task,
    instance_method_names,
    register_instance_method,
)
from fluoseg.tasks.losses import SEMANTIC_LOSSES
from fluoseg.tasks.regression import RegressionTask
from fluoseg.tasks.semantic import SemanticTask, masks_to_target

__all__ = [
    "IGNORE_INDEX",
    "SEMANTIC_LOSSES",
    "TASK_NAMES",
    "BorderTask",
    "DetectedObjects",
    "DetectionTask",
    "DistanceTask",
    "InstanceTask",
    "ObjectPredictor",
    "RegressionTask",
    "SemanticTask",
    "Task",
    "ThresholdTask",
    "build_instance_task",
    "instance_method_names",
    "make_task",
    "masks_to_target",
    "register_instance_method",
    "task_from_state",
]
