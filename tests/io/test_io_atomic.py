"""Atomic writers: atomic_path and the write_*_atomically family (fluoseg.io._atomic)."""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fluoseg.errors
from fluoseg.errors import FluosegError
from fluoseg.io import (
    atomic_path,
    write_bytes_atomically,
    write_csv_atomically,
    write_json_atomically,
    write_text_atomically,
)

SRC = str(Path(fluoseg.errors.__file__).resolve().parents[1])


def test_text_and_csv_writers_replace_whole_files_and_leave_no_temporaries(tmp_path):
    target = write_text_atomically(tmp_path / "new" / "run.json", '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    write_text_atomically(target, "{}")
    assert target.read_text() == "{}"

    table = write_csv_atomically(tmp_path / "t.csv", [{"a": 1, "b": 2}, {"b": 3, "c": 4}])
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["a", "b", "c"] and rows[1] == {"a": "", "b": "3", "c": "4"}
    assert write_csv_atomically(tmp_path / "e.csv", []).read_text().strip() == "empty"
    assert not [p for p in tmp_path.rglob("*") if "partial" in p.name]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


def _enospc_half_way(monkeypatch) -> None:
    """Make every Path.write_bytes write half its data, then fail as a full disk does."""

    def half(self: Path, data: bytes) -> int:
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_bytes", half)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: write_bytes_atomically(p, b"new content" * 100),
        lambda p: write_text_atomically(p, "new content" * 100),
        lambda p: write_csv_atomically(p, [{"a": "new"}] * 100),
        lambda p: write_json_atomically(p, {"a": ["new"] * 100}),
    ],
)
def test_full_disk_half_way_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, write):
    target = tmp_path / "state.txt"
    target.write_text("old")
    _enospc_half_way(monkeypatch)
    with pytest.raises(FluosegError) as info:
        write(target)
    assert str(info.value).startswith(f"{target}: cannot write: the disk is full")
    assert "\n" not in str(info.value)
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_path_refuses_an_existing_output_before_the_block_runs(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    ran = []
    with pytest.raises(FluosegError, match="output already exists; pass --overwrite"):
        with atomic_path(target) as tmp:
            ran.append(tmp)
    assert ran == [] and target.read_bytes() == b"old"


def test_atomic_path_removes_the_temporary_and_keeps_other_errors(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyError("a bug, not a user error")
    assert not target.exists() and _leftovers(tmp_path) == []


def test_writer_errors_about_the_temporary_name_the_final_path(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(FluosegError) as info:
        with atomic_path(target) as tmp:
            raise FluosegError("cannot encode this", tmp)
    assert info.value.path == target
    with pytest.raises(FluosegError) as info:
        with atomic_path(target) as tmp:
            open(tmp / "inside", "wb")  # tmp is no folder: ENOENT about another name
    assert info.value.path == tmp / "inside"


def test_a_block_that_writes_nothing_leaves_the_target_alone(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("old")
    with atomic_path(target, overwrite=True):
        pass
    assert target.read_text() == "old" and _leftovers(tmp_path) == []


def test_folders_are_committed_and_replace_old_folders(tmp_path):
    target = tmp_path / "store.zarr"
    for content in ("first", "second"):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.mkdir()
            (tmp / "zarr.json").write_text(content)
    assert [p.name for p in target.iterdir()] == ["zarr.json"]
    assert (target / "zarr.json").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.zarr"]


def test_temporaries_of_concurrent_writers_differ(tmp_path):
    with atomic_path(tmp_path / "a") as first, atomic_path(tmp_path / "a", overwrite=True) as second:
        assert first != second and first.parent == second.parent == tmp_path
        assert first.name.startswith(".a.partial-")


def test_json_writer_keeps_unicode_and_ends_with_a_newline(tmp_path):
    path = write_json_atomically(tmp_path / "run.json", {"unit": "µm", "n": [1, 2]})
    assert path.read_text(encoding="utf-8").endswith("\n")
    assert json.loads(path.read_text(encoding="utf-8")) == {"unit": "µm", "n": [1, 2]}
    with pytest.raises(FluosegError, match="output already exists"):
        write_json_atomically(path, {}, overwrite=False)


def test_torch_save_into_atomic_path_round_trips(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "last.pt"
    for value in (1.0, 2.0):
        with atomic_path(target, overwrite=True) as tmp:
            torch.save({"w": torch.full((3,), value)}, tmp)
    state = torch.load(target, weights_only=True)
    assert state["w"].tolist() == [2.0, 2.0, 2.0]
    assert _leftovers(tmp_path) == []


_SHORT_WRITE = """
import resource, signal, sys, torch
from pathlib import Path
from fluoseg.errors import FluosegError
from fluoseg.io import atomic_path
target = Path(sys.argv[1])
# a file size limit makes the writes of torch.save come up short exactly as a full disk does
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
try:
    with atomic_path(target, overwrite=True) as tmp:
        torch.save({"w": torch.zeros(100000)}, tmp)
except FluosegError as error:
    print(error)
"""


def test_torch_save_that_runs_out_of_space_keeps_the_previous_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    if not hasattr(__import__("signal"), "SIGXFSZ"):
        pytest.skip("needs POSIX file size limits")
    target = tmp_path / "last.pt"
    torch.save({"w": torch.ones(3)}, target)
    done = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE, str(target)], capture_output=True, text=True,
        timeout=120, env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith(f"{target}: cannot write: the write stopped part-way")
    assert torch.load(target, weights_only=True)["w"].tolist() == [1.0, 1.0, 1.0]
    assert _leftovers(tmp_path) == []
