"""OS failures as one-line errors, and output checks before work (fluoseg.io._oserrors)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import shutil
from pathlib import Path

import pytest

import fluoseg.errors
from fluoseg.errors import FluosegError

from support import unprivileged
from fluoseg.io import (
    check_output_file,
    describe_os_error,
    os_errors_as_user_errors,
    prepare_output_dir,
)
from fluoseg.io import _oserrors

SRC = str(Path(fluoseg.errors.__file__).resolve().parents[1])


def _one_line(error: FluosegError) -> str:
    text = str(error)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, "cannot write: permission denied; choose a location you can write to"),
        (errno.EPERM, "cannot write: permission denied"),
        (errno.EROFS, "cannot write: the file system is read-only; choose an output location"),
        (errno.EDQUOT, "cannot write: the disk quota is exceeded; free some space"),
        (errno.ENAMETOOLONG, "cannot write: the name is too long for the file system"),
        (errno.EISDIR, "cannot write: this is a folder, but a file is needed"),
        (errno.EFBIG, "cannot write: the file is larger than this file system allows"),
    ],
)
def test_each_errno_gets_its_own_problem_and_fix(tmp_path, code, expected):
    target = tmp_path / "out.tif"
    error = describe_os_error(OSError(code, os.strerror(code)), target)
    assert _one_line(error).startswith(f"{target}: {expected}")


def test_unknown_errno_keeps_the_system_text_on_one_line(tmp_path):
    error = describe_os_error(OSError(errno.EPIPE, "Broken pipe\nsecond line"), tmp_path / "x")
    assert _one_line(error).endswith("cannot write: Broken pipe; check the path and its permissions")


def test_path_defaults_to_the_exception_filename(tmp_path):
    error = describe_os_error(OSError(errno.EACCES, "Permission denied", str(tmp_path / "f")))
    assert error.path == tmp_path / "f"


def test_real_enospc_from_dev_full_reads_as_full_disk(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full exists on Linux only")
    with pytest.raises(FluosegError) as info:
        with os_errors_as_user_errors(tmp_path / "out.csv"):
            with open("/dev/full", "w") as handle:
                handle.write("x")
                handle.flush()
    text = _one_line(info.value)
    assert "cannot write: the disk is full" in text and "free some space" in text


def test_file_where_a_folder_is_needed_names_the_file(tmp_path):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(FluosegError) as info:
        with os_errors_as_user_errors(blocker / "run", "create the run folder"):
            (blocker / "run" / "sub").mkdir(parents=True)
    text = _one_line(info.value)
    assert f"cannot create the run folder: {blocker} is a file, not a folder" in text


def test_existing_file_when_creating_a_folder(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(FluosegError, match="a file of this name already exists; remove it"):
        with os_errors_as_user_errors(tmp_path / "run", "create the run folder"):
            (tmp_path / "run").mkdir()


def test_folder_under_proc_is_explained(tmp_path):
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")
    with pytest.raises(FluosegError) as info:
        with os_errors_as_user_errors("/proc/fluoseg-out", "create the run folder"):
            Path("/proc/fluoseg-out").mkdir()
    assert "does not accept new files" in _one_line(info.value)


def test_torch_short_write_message_is_a_disk_problem_and_other_runtime_errors_pass(tmp_path):
    torch_text = "[enforce fail at inline_container.cc:672] . unexpected pos 640 vs 534"
    with pytest.raises(FluosegError) as info:
        with os_errors_as_user_errors(tmp_path / "last.pt"):
            raise RuntimeError(torch_text)
    text = _one_line(info.value)
    assert text.startswith(f"{tmp_path / 'last.pt'}: cannot write: ")
    assert "free some space or choose another location" in text
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        with os_errors_as_user_errors(tmp_path / "last.pt"):
            raise RuntimeError("CUDA out of memory")


def test_short_write_on_a_nearly_full_disk_says_full(tmp_path, monkeypatch):
    monkeypatch.setattr(_oserrors, "_free_bytes", lambda target: 3 * 2**20)
    error = describe_os_error(RuntimeError("unexpected pos 1 vs 2"), tmp_path / "last.pt")
    assert "the disk is full (3.0 MiB free)" in str(error)


def test_prepare_output_dir_accepts_new_and_empty_folders_and_creates_nothing(tmp_path):
    assert prepare_output_dir(tmp_path / "a" / "b", overwrite=False) == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    (tmp_path / "empty").mkdir()
    prepare_output_dir(tmp_path / "empty", overwrite=False)


def test_prepare_output_dir_refuses_files_and_full_folders(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(FluosegError, match="the run folder must be a folder but this is a file"):
        prepare_output_dir(tmp_path / "f", overwrite=True, what="run folder")
    with pytest.raises(FluosegError, match=r"f is a file, not a folder"):
        prepare_output_dir(tmp_path / "f" / "run", overwrite=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FluosegError, match="already exists and is not empty; pass --overwrite"):
        prepare_output_dir(tmp_path / "full", overwrite=False)
    prepare_output_dir(tmp_path / "full", overwrite=True)


def test_prepare_output_dir_refuses_proc_and_read_only_file_systems(tmp_path, monkeypatch):
    if _oserrors._virtual_file_system(Path("/proc")) != "proc":
        pytest.skip("needs /proc listed in /proc/self/mountinfo")
    with pytest.raises(FluosegError, match="virtual 'proc' file system"):
        prepare_output_dir("/proc/fluoseg/run", overwrite=False)
    # no read-only mount is at hand in a test; the flag is what statvfs reports for one
    monkeypatch.setattr(_oserrors, "_read_only", lambda folder: True)
    with pytest.raises(FluosegError, match=r"file system \(.*\) is read-only"):
        prepare_output_dir(tmp_path / "new", overwrite=False)


def test_check_output_file(tmp_path):
    target = tmp_path / "sub" / "out.tif"
    assert check_output_file(target, overwrite=False) == target
    assert not target.parent.exists()
    target.parent.mkdir()
    target.write_bytes(b"x")
    with pytest.raises(FluosegError, match="output already exists; pass --overwrite"):
        check_output_file(target, overwrite=False)
    check_output_file(target, overwrite=True)
    with pytest.raises(FluosegError, match="is an existing folder; give a file name"):
        check_output_file(tmp_path, overwrite=True)


def test_permission_denied_is_reported_before_work_and_during_it(tmp_path):
    """A real unwritable folder, checked by a subprocess without root's override powers."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    code = (
        "from pathlib import Path\n"
        "from fluoseg.errors import FluosegError\n"
        "from fluoseg.io import prepare_output_dir, os_errors_as_user_errors\n"
        f"target = Path({str(locked / 'run')!r})\n"
        "for attempt in (lambda: prepare_output_dir(target, overwrite=False), target.mkdir):\n"
        "    try:\n"
        "        with os_errors_as_user_errors(target, 'create the run folder'):\n"
        "            attempt()\n"
        "    except FluosegError as e:\n"
        "        print(e)\n"
    )
    try:
        done = subprocess.run(
            unprivileged([sys.executable, "-c", code]), capture_output=True, text=True,
            timeout=60, env={**os.environ, "PYTHONPATH": SRC},
        )
    finally:
        locked.chmod(0o755)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stdout + done.stderr
    assert "permission denied" in lines[0] and "choose a folder you can write to" in lines[0]
    assert "cannot create the run folder: permission denied" in lines[1]
