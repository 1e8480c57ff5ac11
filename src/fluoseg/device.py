"""Choosing where the network runs, and in which arithmetic.

Torch is imported inside the functions, so the command line can offer these choices without
loading it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from fluoseg.errors import FluosegError

if TYPE_CHECKING:
    import torch

PRECISIONS: tuple[str, ...] = ("float32", "bfloat16", "auto")
"""Arithmetic of a network pass: ``float32``; ``bfloat16`` (convolutions and matrix products
under torch's autocast, activations in float32); ``auto``: bfloat16 where the device computes
it natively (a CUDA GPU with bfloat16, a CPU with AMX or AVX-512 BF16), else float32."""

NATIVE_BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""CPU feature flags (``/proc/cpuinfo``) under which oneDNN runs bfloat16 convolutions in hardware;
without them bfloat16 is emulated and slower than float32."""


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda`` into a torch device; ``auto`` takes CUDA when present.

    Raises
    ------
    FluosegError
        If ``cuda`` is asked for on a machine without a usable GPU.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FluosegError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise FluosegError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def set_threads(count: int | None) -> None:
    """Fix the number of CPU threads torch uses (``None`` keeps torch's default)."""
    import torch

    if count is not None:
        torch.set_num_threads(count)


CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=4)
def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags from ``cpuinfo`` (Linux's ``/proc/cpuinfo``; empty where it does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions in hardware."""
    if device.type == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(cpu_flags() & NATIVE_BFLOAT16_CPU_FLAGS)


def check_precision(name: str) -> str:
    """``name`` if it is one of :data:`PRECISIONS`.

    Raises
    ------
    FluosegError
        For another name (the message lists the choices).
    """
    if name not in PRECISIONS:
        raise FluosegError(f"unknown precision {name!r}; use {', '.join(PRECISIONS)}")
    return name


def resolve_precision(name: str, device: torch.device) -> str:
    """``float32`` or ``bfloat16`` for a precision name (``auto``: bfloat16 where native on ``device``).

    Raises
    ------
    FluosegError
        For a name outside :data:`PRECISIONS`.
    """
    if check_precision(name) == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return name
