"""Per-pixel uncertainty from repeated predictions (test-time augmentation, MC dropout, ensembles).

A prediction repeated S times (augmented inputs mapped back, dropout left on, or the
members of an ensemble) gives samples ``(S, ...)`` of probabilities. Summaries per pixel:

* ``mean``: the averaged probability, the prediction to use;
* ``variance``: spread of the samples (population variance over S, i.e. ``ddof = 0``);
* ``entropy``: predictive entropy H[mean], total uncertainty, in nats;
* ``mutual_information``: H[mean] - mean_s H[sample_s] (BALD), the part of the entropy
  that comes from the samples disagreeing (model uncertainty); 0 when all samples agree.

Probabilities are binary (probability of the positive class per pixel) unless a
``class_axis`` names the axis of a categorical distribution inside each sample.

This module imports nothing but numpy.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.metrics.calibration import check_probabilities

__all__ = ["UncertaintyMaps", "mutual_information", "predictive_entropy", "uncertainty_maps"]


class UncertaintyMaps(NamedTuple):
    """Per-pixel summaries of S sampled probability maps.

    Attributes
    ----------
    mean
        Mean probability, the shape of one sample.
    variance
        Variance over the samples, the shape of one sample (per class with ``class_axis``).
    entropy
        Predictive entropy of ``mean`` in nats (class axis reduced).
    mutual_information
        Entropy of the mean minus the mean entropy of the samples, >= 0 (class axis reduced).
    """

    mean: np.ndarray
    variance: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray


def _as_probabilities(values: Any, class_axis: int | None) -> np.ndarray:
    array = check_probabilities(values)
    if class_axis is not None and not -array.ndim <= class_axis < array.ndim:
        raise FluosegError(f"class_axis {class_axis} is outside an array of {array.ndim} dimensions")
    return array


def _xlogx(p: np.ndarray) -> np.ndarray:
    """``p * log(p)`` with the limit 0 at p = 0."""
    return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def predictive_entropy(probabilities: Any, *, class_axis: int | None = None) -> np.ndarray:
    """Entropy in nats per pixel: binary ``-p ln p - (1-p) ln(1-p)``, or over ``class_axis``.

    Raises
    ------
    FluosegError
        For values outside [0, 1] or a class axis the array does not have.
    """
    p = _as_probabilities(probabilities, class_axis)
    if class_axis is None:
        return -(_xlogx(p) + _xlogx(1.0 - p))
    return -_xlogx(p).sum(axis=class_axis)


def mutual_information(samples: Any, *, class_axis: int | None = None) -> np.ndarray:
    """BALD mutual information per pixel of samples ``(S, ...)``: H[mean] - mean H[sample].

    ``class_axis`` indexes one sample (not the stacked array). Clipped at 0 against
    rounding.
    """
    stacked = _samples(samples, class_axis)
    axis = None if class_axis is None else _inner_axis(class_axis, stacked.ndim)
    total = predictive_entropy(stacked.mean(axis=0), class_axis=axis)
    aleatoric = predictive_entropy(stacked, class_axis=None if axis is None else axis + 1).mean(axis=0)
    return np.maximum(total - aleatoric, 0.0)


def _inner_axis(class_axis: int, stacked_ndim: int) -> int:
    """``class_axis`` of one sample as a non-negative axis of that sample."""
    return class_axis % (stacked_ndim - 1)


def _samples(samples: Any, class_axis: int | None) -> np.ndarray:
    stacked = np.asarray(samples, dtype=np.float64)
    if stacked.ndim < 2 or stacked.shape[0] < 1:
        raise FluosegError(f"expected samples stacked on a first axis (S, ...), got shape {stacked.shape}")
    if class_axis is not None and not -(stacked.ndim - 1) <= class_axis < stacked.ndim - 1:
        raise FluosegError(f"class_axis {class_axis} is outside a sample of {stacked.ndim - 1} dimensions")
    return check_probabilities(stacked)


def uncertainty_maps(samples: Any, *, class_axis: int | None = None) -> UncertaintyMaps:
    """Mean, variance, predictive entropy and mutual information of samples ``(S, ...)``.

    Parameters
    ----------
    samples
        S probability maps stacked on the first axis: TTA predictions mapped back to the
        image, MC-dropout passes, or ensemble members.
    class_axis
        Axis of the classes within one sample for categorical maps; ``None`` for
        binary maps (probability of the positive class).

    Raises
    ------
    FluosegError
        For values outside [0, 1], no sample axis, or a class axis a sample lacks.
    """
    stacked = _samples(samples, class_axis)
    axis = None if class_axis is None else _inner_axis(class_axis, stacked.ndim)
    mean = stacked.mean(axis=0)
    return UncertaintyMaps(mean=mean, variance=stacked.var(axis=0),
                           entropy=predictive_entropy(mean, class_axis=axis),
                           mutual_information=mutual_information(stacked, class_axis=axis))
