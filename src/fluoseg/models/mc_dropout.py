"""Monte-Carlo dropout: dropout left on at inference to sample predictions (Gal & Ghahramani 2016).

A network with dropout layers (e.g. ``build_model("unet", ..., dropout=0.1)``) predicts
differently at every pass while its dropout is active; S passes give S samples whose spread
(:mod:`fluoseg.metrics.uncertainty`) estimates the model's uncertainty. :func:`mc_dropout`
switches only the dropout layers to training mode, so batch normalisation keeps using its
running statistics and marker sampling stays off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from fluoseg.errors import FluosegError

__all__ = ["check_dropout", "dropout_modules", "mc_dropout"]


def check_dropout(model: str, value: Any) -> float:
    """``value`` if it is a probability in [0, 1), else a :class:`FluosegError` naming ``model``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise FluosegError(f"{model} option 'dropout' must be a number in [0, 1), got {value!r}")
    return float(value)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The model's dropout layers with a non-zero rate."""
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


@contextmanager
def mc_dropout(model: nn.Module) -> Iterator[int]:
    """Within the block, the model is in eval mode except for its dropout layers.

    Yields the number of dropout layers switched on; the previous train/eval mode of
    every module is restored afterwards. Draw samples by calling the model repeatedly
    (seed torch's generator for reproducible samples).

    Raises
    ------
    FluosegError
        If the model has no dropout layer with a non-zero rate.

    Examples
    --------
    >>> with mc_dropout(model):                                  # doctest: +SKIP
    ...     samples = torch.stack([model(x).softmax(1) for _ in range(8)])
    """
    layers = dropout_modules(model)
    if not layers:
        raise FluosegError("Monte-Carlo dropout needs a model with dropout; build it with the option dropout > 0 "
                           "(e.g. 0.1), or estimate uncertainty with test-time augmentation or an ensemble")
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    for layer in layers:
        layer.train()
    try:
        yield len(layers)
    finally:
        for module, training in modes:
            module.training = training
