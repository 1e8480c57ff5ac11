"""Checkpoints: everything needed to resume training or to predict, saved atomically.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``: opening a checkpoint never executes code from it.
It carries the model's marker vocabulary, class names, normalisation and geometry, so a
run directory is self-describing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from fluoseg.errors import FluosegError

FORMAT = "fluoseg-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    A run killed while saving leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        torch.save({"format": FORMAT, "version": VERSION, **state}, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format.

    Raises
    ------
    FluosegError
        If the file is missing, unreadable, or not a fluoseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FluosegError("checkpoint not found; is this a fluoseg run directory?", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise FluosegError(f"cannot read checkpoint ({type(exc).__name__}); the file is corrupt or not a fluoseg checkpoint", path=path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FluosegError("not a fluoseg checkpoint", path=path)
    if state.get("version", 0) > VERSION:
        raise FluosegError(f"checkpoint format {state['version']} is newer than this fluoseg; upgrade fluoseg", path=path)
    return state
