"""Detection models by name: ``build_detector("maskrcnn", in_channels=2, detections_per_image=500)``.

Detectors are not segmentation networks (they return losses or per-object detections,
not logit maps), so they have their own registry, apart from
:func:`fluoseg.models.build_model`. Like models, they remember how they were built:
:func:`detector_spec` gives ``{"name", "in_channels", "options"}`` for a checkpoint, and
``build_detector(**spec)`` rebuilds the same network.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

from fluoseg.models.registry import Registry, merge_options, record_construction, recorded_construction

T = TypeVar("T", bound=type)

DETECTORS: Registry[type[nn.Module]] = Registry("detector", required=("in_channels",))
"""Detection models: ``forward(images, targets=None)`` -> losses (training) or detections (eval)."""


def register_detector(name: str) -> Callable[[T], T]:
    """Class decorator making a detector buildable by ``name`` and describable by :func:`detector_spec`."""

    def decorator(cls: T) -> T:
        DETECTORS.register(name)(cls)
        return record_construction(cls, name)

    return decorator


def build_detector(name: str, *, in_channels: int, options: Mapping[str, Any] | None = None,
                   **more_options: Any) -> nn.Module:
    """Build a registered detection model.

    Parameters
    ----------
    name
        ``"maskrcnn"`` or ``"lacss"`` (see :func:`detector_names`).
    in_channels
        Image channels (marker slots).
    options
        Detector options as a mapping (the ``model.options`` config section).
    **more_options
        Detector options as keywords; merged with ``options``.

    Raises
    ------
    FluosegError
        For an unknown name or option (the message lists the accepted ones), an option
        given twice, or an invalid option value.
    """
    merged = merge_options("detector", {"in_channels": in_channels}, options, more_options)
    return DETECTORS.build(name, in_channels=in_channels, **merged)


def detector_names() -> list[str]:
    """Names of the registered detectors, sorted."""
    return DETECTORS.names()


def detector_spec(model: nn.Module) -> dict[str, Any]:
    """How to rebuild ``model``: a JSON-able ``{"name", "in_channels", "options"}``.

    Raises
    ------
    ValueError
        If the model was not built by a registered detector class.
    """
    recorded = recorded_construction(model)
    if recorded is None or recorded["name"] not in DETECTORS.names():
        raise ValueError(f"{type(model).__qualname__} is not a registered fluoseg detector")
    options = {k: v for k, v in recorded.items() if k not in ("name", "in_channels")}
    spec = {"name": recorded["name"], "in_channels": recorded["in_channels"], "options": options}
    return json.loads(json.dumps(spec))
