"""Tests of fluoseg.device: devices, threads and the arithmetic of the network pass."""

from __future__ import annotations

import pytest
import torch

from fluoseg import device
from fluoseg.errors import FluosegError


def test_cpu_flags_are_read_from_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n"
                       "bugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    assert device.cpu_flags(cpuinfo) == {"fpu", "sse2", "avx2", "amx_bf16", "amx_tile"}
    assert device.cpu_flags(tmp_path / "absent") == frozenset()  # macOS, Windows: no such file


@pytest.mark.parametrize(("flags", "expected"), [({"avx2", "fma"}, "float32"), ({"avx512f", "avx512_bf16"}, "bfloat16"),
                                                 ({"amx_tile", "amx_bf16"}, "bfloat16")])
def test_auto_precision_is_bfloat16_only_on_cpus_that_compute_it_natively(monkeypatch, flags, expected):
    monkeypatch.setattr(device, "cpu_flags", lambda cpuinfo=device.CPUINFO: frozenset(flags))
    assert device.resolve_precision("auto", torch.device("cpu")) == expected
    # an explicit choice is kept whatever the CPU
    assert device.resolve_precision("float32", torch.device("cpu")) == "float32"
    assert device.resolve_precision("bfloat16", torch.device("cpu")) == "bfloat16"


def test_an_unknown_precision_is_refused_with_the_choices():
    with pytest.raises(FluosegError, match="float32, bfloat16, auto"):
        device.resolve_precision("fp8", torch.device("cpu"))
