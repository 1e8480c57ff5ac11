"""Output locks between processes (fluoseg.io.lock), tested with real subprocesses."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fluoseg.errors
from fluoseg.errors import FluosegError
from fluoseg.io import OutputLock
from fluoseg.io.lock import lock_path_for, process_start_time

SRC = str(Path(fluoseg.errors.__file__).resolve().parents[1])

# Takes the lock, says so, and holds it until its standard input closes (or it is killed).
_HOLDER = """
import sys
from fluoseg.errors import FluosegError
from fluoseg.io import OutputLock
try:
    lock = OutputLock(sys.argv[1], what="run folder").acquire()
except FluosegError as error:
    print("refused", error, flush=True)
    sys.exit(0)
print("holding", flush=True)
sys.stdin.read()
lock.release()
"""


def _start_holder(target: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(target)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
    )


def _write_lock(target: Path, **details: object) -> Path:
    lock_file = lock_path_for(target)
    lock_file.write_text(json.dumps(details))
    return lock_file


def test_second_process_is_refused_with_the_holders_details_then_lock_is_freed(tmp_path):
    target = tmp_path / "run"
    holder = _start_holder(target)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(FluosegError) as info:
            OutputLock(target, what="run folder").acquire()
        text = str(info.value)
        assert "\n" not in text
        assert text.startswith(f"{target}: the run folder is in use by process {holder.pid} ")
        assert f"on host {socket.gethostname()} (started " in text
        assert text.endswith("; wait for it to finish or choose another output")
    finally:
        holder.communicate(input="", timeout=60)
    assert holder.returncode == 0
    assert not lock_path_for(target).exists()
    with OutputLock(target) as lock:
        assert lock.held
    assert not lock_path_for(target).exists()


def test_lock_of_a_killed_holder_is_taken_over_with_a_warning(tmp_path):
    target = tmp_path / "run"
    holder = _start_holder(target)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    holder.kill()
    holder.communicate(timeout=60)
    assert lock_path_for(target).exists()
    with pytest.warns(UserWarning, match=rf"took over the lock of process {holder.pid} .*no longer runs"):
        with OutputLock(target) as lock:
            assert json.loads(lock.lock_file.read_text())["pid"] == os.getpid()
    assert not lock_path_for(target).exists()


def test_reused_pid_is_recognised_by_its_start_time(tmp_path):
    started = process_start_time(os.getpid())
    if started is None:
        pytest.skip("process start times need /proc")
    # our own pid is alive, but the lock says it belonged to a process started earlier
    _write_lock(tmp_path / "run", pid=os.getpid(), host=socket.gethostname(), started="then",
                process_start=started - 1)
    with pytest.warns(UserWarning, match="now belongs to another process"):
        OutputLock(tmp_path / "run").acquire().release()


def test_live_holder_with_matching_start_time_is_respected(tmp_path):
    parent = os.getppid()
    _write_lock(tmp_path / "run", pid=parent, host=socket.gethostname(), started="earlier",
                process_start=process_start_time(parent))
    with pytest.raises(FluosegError, match=rf"in use by process {parent} on host"):
        OutputLock(tmp_path / "run").acquire()


def test_lock_from_before_a_restart_is_stale(tmp_path, monkeypatch):
    from fluoseg.io import lock as lock_module

    monkeypatch.setattr(lock_module, "boot_id", lambda: "boot-now")
    _write_lock(tmp_path / "run", pid=os.getppid(), host=socket.gethostname(), boot_id="boot-before")
    with pytest.warns(UserWarning, match="before the machine restarted"):
        OutputLock(tmp_path / "run").acquire().release()


def test_lock_from_another_host_names_the_lock_file_to_delete(tmp_path):
    lock_file = _write_lock(tmp_path / "run", pid=1, host="elsewhere.example", started="t0")
    with pytest.raises(FluosegError) as info:
        OutputLock(tmp_path / "run").acquire()
    assert "in use by process 1 on host elsewhere.example (started t0)" in str(info.value)
    assert f"delete {lock_file} if that process is gone" in str(info.value)


def test_abandoned_empty_lock_file_is_taken_over_only_when_old(tmp_path):
    lock_file = lock_path_for(tmp_path / "run")
    lock_file.touch()
    with pytest.raises(FluosegError, match="another process is locking the output right now"):
        OutputLock(tmp_path / "run").acquire()
    old = time.time() - 60
    os.utime(lock_file, (old, old))
    with pytest.warns(UserWarning, match="never completely written"):
        OutputLock(tmp_path / "run").acquire().release()


def test_release_leaves_a_lock_that_is_no_longer_ours(tmp_path):
    lock = OutputLock(tmp_path / "run").acquire()
    _write_lock(tmp_path / "run", pid=1, host="other", token="theirs")
    lock.release()
    assert lock_path_for(tmp_path / "run").exists() and not lock.held


def test_only_one_of_several_processes_takes_over_a_stale_lock(tmp_path):
    target = tmp_path / "run"
    # a pid that cannot be running: above the kernel's maximum
    _write_lock(target, pid=2**22 + 1, host=socket.gethostname(), started="long ago")
    holders = [_start_holder(target) for _ in range(3)]
    try:
        answers = [h.stdout.readline().split()[0] for h in holders if h.stdout]
    finally:
        for holder in holders:
            holder.communicate(input="", timeout=60)
    assert sorted(answers) == ["holding", "refused", "refused"]
    assert not lock_path_for(target).exists()


def test_lock_folder_that_cannot_be_created_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FluosegError, match="is a file, not a folder"):
        OutputLock(tmp_path / "file" / "run").acquire()
