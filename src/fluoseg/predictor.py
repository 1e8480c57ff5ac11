"""Batch prediction with test-time augmentation: the one forward path of validation and inference.

:func:`make_batch_predictor` wraps a network into a numpy-in, numpy-out function that
:func:`fluoseg.tiling.predict_tiled` calls tile batch by tile batch. Training (validation on
whole samples) and inference (the :class:`~fluoseg.infer.Segmenter`) both use it, so a model
is scored exactly as it will predict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from fluoseg.errors import FluosegError

ALL_SYMMETRIES: tuple[int, ...] = tuple(range(8))
"""The 8 symmetries of the square: index ``k`` is ``k % 4`` quarter turns, mirrored when ``k >= 4``
(as :func:`fluoseg.data.augment.dihedral` on numpy arrays)."""

Activation = Callable[[torch.Tensor], torch.Tensor]


def dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """Symmetry ``index`` of the last two axes."""
    out = torch.rot90(x, k=index % 4, dims=(-2, -1))
    return torch.flip(out, dims=(-1,)) if index >= 4 else out


def inverse_dihedral(x: torch.Tensor, index: int) -> torch.Tensor:
    """Undo :func:`dihedral` with the same ``index``."""
    out = torch.flip(x, dims=(-1,)) if index >= 4 else x
    return torch.rot90(out, k=-(index % 4), dims=(-2, -1))


def symmetries(tta: bool | Sequence[int]) -> tuple[int, ...]:
    """Symmetry indices of a test-time-augmentation setting.

    ``False``: the identity only; ``True``: all 8; a sequence: those indices.

    Raises
    ------
    FluosegError
        For an empty list or an index outside 0-7.
    """
    if tta is True:
        return ALL_SYMMETRIES
    if tta is False or tta is None:
        return (0,)
    chosen = tuple(int(i) for i in tta)
    if not chosen or any(i not in ALL_SYMMETRIES for i in chosen):
        raise FluosegError(f"test-time augmentation symmetries must be indices 0-7, got {list(tta)}")
    return chosen


_FLOAT32_HOOKED = "_fluoseg_output_float32"


def keep_output_layers_float32(model: nn.Module) -> None:
    """Compute the model's output layers (``model.output_layers()``) in float32 under autocast.

    bfloat16 keeps 8 bits of mantissa: logits rounded to it put small steps into a distance map,
    which the h-maxima seeds of the watershed read as extra peaks (the shipped nuclei model
    over-segmented more and lost 0.012 validation F1@0.5 with a bfloat16 head; with a float32
    head the scores are float32's, ``bench/results/precision.md``). The output layers are 1x1 or
    3x3 convolutions to a few channels, so computing them in float32 costs little.

    Hooks on each layer switch autocast off for its call and back on after it (the enclosing
    ``torch.autocast`` restores its own state on exit either way); outside autocast they do
    nothing. Registering twice is a no-op; a model without ``output_layers`` is left alone.
    """
    output_layers = getattr(model, "output_layers", None)
    if output_layers is None:
        return
    for layer in output_layers():
        if getattr(layer, _FLOAT32_HOOKED, False):
            continue
        layer.register_forward_pre_hook(_enter_float32)
        layer.register_forward_hook(_leave_float32)
        setattr(layer, _FLOAT32_HOOKED, True)


_AUTOCAST_PAUSED = threading.local()  # per thread, like torch's autocast state: tiles may run in threads


def _enter_float32(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
    device_type = inputs[0].device.type
    paused = torch.is_autocast_enabled(device_type)
    _AUTOCAST_PAUSED.__dict__.setdefault("stack", []).append(paused)
    if not paused:
        return None
    torch.set_autocast_enabled(device_type, False)
    return tuple(x.float() for x in inputs)


def _leave_float32(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    if _AUTOCAST_PAUSED.stack.pop():
        torch.set_autocast_enabled(inputs[0].device.type, True)


def make_batch_predictor(model: nn.Module, availability: np.ndarray, activate: Activation,
                         symmetry_indices: tuple[int, ...] = (0,), *, marker_ids: Sequence[int] | None = None,
                         precision: str = "float32") -> Callable[[np.ndarray], np.ndarray]:
    """A numpy-in, numpy-out function: the model's activated outputs of a batch of tiles.

    Parameters
    ----------
    model
        The network; converted in place to channels-last memory format.
    availability
        ``(K,)`` marker availability vector given with every tile (``(C,)``, one per
        channel, with ``marker_ids``).
    activate
        Logits -> activated maps (the task's :meth:`~fluoseg.tasks.Task.activate`).
    symmetry_indices
        With several (test-time augmentation) each tile is also predicted flipped/rotated,
        every output is mapped back, and the activated outputs are averaged. Tiles are
        square, so rotating them keeps the tiling geometry.
    marker_ids
        ``(C,)`` integer embedding rows of the tiles' channels, for a model that takes
        channels by marker (a channel-invariant front end); ``None`` (default): marker slots.
    precision
        ``float32`` (default) or ``bfloat16``: the network runs under torch's autocast, so
        convolutions and matrix products compute in bfloat16, except its output layers
        (:func:`keep_output_layers_float32`); the logits are activated and averaged in
        float32 (see :func:`fluoseg.device.resolve_precision` for ``auto``).

    Raises
    ------
    FluosegError
        For a precision other than ``float32`` or ``bfloat16``.
    """
    if precision not in ("float32", "bfloat16"):
        raise FluosegError(f"the batch predictor computes in float32 or bfloat16, got {precision!r}")
    reduced = precision == "bfloat16"
    device = next(model.parameters()).device
    available = torch.as_tensor(availability, dtype=torch.float32, device=device)
    rows = None if marker_ids is None else torch.as_tensor(marker_ids, dtype=torch.long, device=device)
    # NHWC lets oneDNN (CPU) and cuDNN pick their fast convolution kernels (bench/peers.py's flops
    # stage times one tile both ways). The weights are converted in place, once.
    model.to(memory_format=torch.channels_last)
    if reduced:
        keep_output_layers_float32(model)

    def predict_batch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.as_tensor(batch, device=device)
            vector = available.expand(x.shape[0], -1)
            # only models that take channels by marker accept marker_ids; slot models get none
            extra = {} if rows is None else {"marker_ids": rows.expand(x.shape[0], -1)}
            total = None
            for index in symmetry_indices:
                view = dihedral(x, index).contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=reduced):
                    logits = model(view, vector, **extra)
                out = inverse_dihedral(activate(logits.float()), index)
                total = out if total is None else total + out
            return (total / len(symmetry_indices)).float().cpu().numpy()

    return predict_batch
