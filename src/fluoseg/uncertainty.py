"""Per-pixel uncertainty of a prediction: the inference side of ``fluoseg predict --uncertainty``.

A trained run predicts an image several times and the spread of the S probability maps
is summarised per pixel by :mod:`fluoseg.metrics.uncertainty`:

- ``method="tta"``: one pass per flip/rotation of the image (the 8 symmetries of the
  square, or those of ``PredictOptions.tta`` when it lists at least two), each mapped back;
- ``method="dropout"``: ``samples`` passes with the network's dropout layers left on
  (Monte-Carlo dropout, :func:`fluoseg.models.mc_dropout`); the model must have dropout.

Measures (one value per pixel, float32, the spatial shape of the image like the labels):

- ``"variance"``: variance over the passes, averaged over the model's probability
  channels (sigmoid outputs, or softmax categories with the background); 0 where every
  pass agrees, at most 0.25 for a binary output;
- ``"entropy"``: predictive entropy of the averaged prediction in nats (total uncertainty;
  ln 2 for a pixel at 0.5 even when all passes agree);
- ``"mutual-information"``: entropy of the mean minus the mean entropy of the passes
  (BALD): the part of the entropy that comes from the passes disagreeing; 0 where they agree.

Entropy and mutual information add up over independent outputs: each sigmoid channel is
one binary variable, and each softmax member one categorical variable whose background
is 1 minus its activated channels (tasks that drop the background channel, e.g. semantic
``ce-log``). The distance method's distance channel is not a probability and is left out;
regression (in-silico labelling) runs predict no probabilities and are refused.

Costs S extra passes over the image on top of the prediction itself, and holds the S
maps in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fluoseg.data.resample import resample_to_shape
from fluoseg.errors import FluosegError
from fluoseg.infer import PredictOptions, Segmenter
from fluoseg.metrics.uncertainty import uncertainty_maps
from fluoseg.models.mc_dropout import dropout_modules, mc_dropout
from fluoseg.predictor import ALL_SYMMETRIES
from fluoseg.tasks import Task

__all__ = ["MEASURES", "METHODS", "UncertaintyOptions", "check_uncertainty", "count_passes", "pixel_uncertainty", "probability_groups",
           "sample_probabilities", "summarize_samples"]

METHODS = ("tta", "dropout")
"""How the repeated predictions are drawn (``--uncertainty``)."""
MEASURES = ("variance", "entropy", "mutual-information")
"""Per-pixel summaries of the repeated predictions (``--uncertainty-measure``)."""


@dataclass(frozen=True)
class UncertaintyOptions:
    """How to estimate per-pixel uncertainty (validated when created).

    Attributes
    ----------
    method
        ``"tta"`` or ``"dropout"`` (see :data:`METHODS`).
    measure
        ``"variance"``, ``"entropy"`` or ``"mutual-information"`` (see :data:`MEASURES`).
    samples
        Monte-Carlo dropout passes (at least 2); TTA uses its symmetries instead.
    seed
        Seed of the dropout masks, so that a map can be reproduced (torch's global random
        state is left as it was).
    """

    method: str = "tta"
    measure: str = "variance"
    samples: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FluosegError(f"unknown uncertainty method {self.method!r}; use one of {list(METHODS)}")
        if self.measure not in MEASURES:
            raise FluosegError(f"unknown uncertainty measure {self.measure!r}; use one of {list(MEASURES)}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) or self.samples < 2:
            raise FluosegError(f"uncertainty needs at least 2 passes; got samples={self.samples!r}")


def probability_groups(task: Task) -> list[tuple[str, tuple[int, ...]]]:
    """The independent probability outputs of a task's activated channels.

    Returns
    -------
    list of (kind, channels)
        ``("binary", (c,))`` for each sigmoid channel, or one ``("categorical", channels)``
        for softmax outputs (their background is 1 minus their sum).

    Raises
    ------
    FluosegError
        For a task without probabilities (regression).
    """
    if task.name == "regression":
        raise FluosegError("uncertainty maps need a segmentation model; this run predicts marker intensities "
                           "(regression), which have no probabilities")
    sigmoid = tuple(task.sigmoid_channels())
    if sigmoid:
        return [("binary", (c,)) for c in sigmoid]
    return [("categorical", tuple(range(task.activated_channels())))]


def check_uncertainty(segmenter: Segmenter, options: UncertaintyOptions) -> None:
    """Refuse, before any prediction, a model the uncertainty method cannot sample.

    Raises
    ------
    FluosegError
        For a regression run, a foreign bioimage.io model (no fluoseg networks to sample),
        or ``"dropout"`` with a network without dropout layers.
    """
    if not isinstance(segmenter, Segmenter):
        raise FluosegError("uncertainty maps need a fluoseg run, zoo model or package exported by fluoseg; "
                           "leave --uncertainty out for other bioimage.io models")
    for member in segmenter.members:
        probability_groups(member.task)
        if options.method == "dropout" and not dropout_modules(member.model):
            raise FluosegError("--uncertainty dropout needs a model trained with dropout (model option dropout > 0, "
                               "e.g. 0.1); use --uncertainty tta for this one")


def _tta_indices(predict_options: PredictOptions) -> tuple[int, ...]:
    chosen = tuple(predict_options.tta)
    return chosen if len(chosen) >= 2 else ALL_SYMMETRIES


def count_passes(predict_options: PredictOptions, options: UncertaintyOptions) -> int:
    """Number of predictions S an uncertainty map is made of."""
    return len(_tta_indices(predict_options)) if options.method == "tta" else options.samples


def sample_probabilities(segmenter: Segmenter, image: Any, channel_names: Sequence[str] | None,
                         predict_options: PredictOptions, options: UncertaintyOptions) -> np.ndarray:
    """S activated predictions of one image, ``(S, n, [Z], Y, X)`` float32, at the image's scale.

    Every pass uses ``predict_options`` (markers, tiles, pixel size, object diameter settled
    once for all passes); TTA passes each use one symmetry, dropout passes the options' TTA.
    """
    check_uncertainty(segmenter, options)
    predict_options = segmenter.resolve_diameter(image, channel_names, predict_options)
    spatial = tuple(image.shape[1:])

    def one_pass(settings: PredictOptions) -> np.ndarray:
        maps, rescaled = segmenter.model_scale_maps(image, channel_names, settings)
        if rescaled:  # back to the image's pixels, as predict_labels does with its maps
            maps = resample_to_shape(maps, spatial, kind="probabilities")
        return np.asarray(maps, dtype=np.float32)

    if options.method == "tta":
        return np.stack([one_pass(predict_options.replace(tta=(index,))) for index in _tta_indices(predict_options)])
    with ExitStack() as stack, torch.random.fork_rng():
        torch.manual_seed(options.seed)
        for member in segmenter.members:
            stack.enter_context(mc_dropout(member.model))
        return np.stack([one_pass(predict_options) for _ in range(options.samples)])


def summarize_samples(samples: np.ndarray, tasks: Sequence[Task], measure: str = "variance") -> np.ndarray:
    """One uncertainty value per pixel from S activated predictions ``(S, n, [Z], Y, X)``.

    Parameters
    ----------
    samples
        Activated outputs of the members of a run, concatenated in member order as
        :meth:`fluoseg.infer.Segmenter.predict_probabilities` returns them.
    tasks
        The task of each member, saying which channels are probabilities.
    measure
        One of :data:`MEASURES`.

    Returns
    -------
    numpy.ndarray
        ``([Z], Y, X)`` float32.
    """
    if measure not in MEASURES:
        raise FluosegError(f"unknown uncertainty measure {measure!r}; use one of {list(MEASURES)}")
    samples = np.asarray(samples)
    variances, information = [], []
    start = 0
    for task in tasks:
        for kind, channels in probability_groups(task):
            p = np.clip(samples[:, [start + c for c in channels]].astype(np.float64), 0.0, 1.0)
            if kind == "binary":
                maps = uncertainty_maps(p[:, 0])
                variances.append(maps.variance[None])
            else:
                background = np.clip(1.0 - p.sum(axis=1, keepdims=True), 0.0, 1.0)
                maps = uncertainty_maps(np.concatenate([background, p], axis=1), class_axis=0)
                variances.append(maps.variance)
            information.append(maps.entropy if measure == "entropy" else maps.mutual_information)
        start += task.activated_channels()
    if start != samples.shape[1]:
        raise FluosegError(f"the tasks have {start} activated channels but the samples {samples.shape[1]}")
    if measure == "variance":
        return np.concatenate(variances).mean(axis=0).astype(np.float32)
    return np.sum(information, axis=0).astype(np.float32)


def pixel_uncertainty(segmenter: Segmenter, image: Any, channel_names: Sequence[str] | None = None,
                      predict_options: PredictOptions | None = None,
                      options: UncertaintyOptions | None = None) -> np.ndarray:
    """The uncertainty map of one image: ``([Z], Y, X)`` float32, the shape of its labels/masks.

    Parameters
    ----------
    segmenter
        The trained run.
    image
        ``(C, [Z], Y, X)`` array-like.
    channel_names
        Marker name of each channel (see :meth:`fluoseg.infer.Segmenter.predict_probabilities`).
    predict_options
        How each pass predicts (markers, tiles, pixel size, diameter).
    options
        Method, measure and number of passes.

    Raises
    ------
    FluosegError
        As :func:`check_uncertainty`, and for the prediction's own mistakes (unknown markers).
    """
    predict_options = predict_options or PredictOptions()
    options = options or UncertaintyOptions()
    samples = sample_probabilities(segmenter, image, channel_names, predict_options, options)
    return summarize_samples(samples, [m.task for m in segmenter.members], options.measure)
