"""Choosing where the network runs."""

from __future__ import annotations

import torch

from fluoseg.errors import FluosegError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda`` into a torch device; ``auto`` takes CUDA when present.

    Raises
    ------
    FluosegError
        If ``cuda`` is asked for on a machine without a usable GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FluosegError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise FluosegError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def set_threads(count: int | None) -> None:
    """Fix the number of CPU threads torch uses (``None`` keeps torch's default)."""
    if count is not None:
        torch.set_num_threads(count)
