"""Locks on outputs being written, so two runs never write the same run folder at once.

``fluoseg train --out runs/a`` started twice would interleave checkpoints and metrics of
two trainings in one folder. :class:`OutputLock` guards an output with a lock file
created with ``O_EXCL`` next to it (``runs/.a.lock``), holding who holds it (pid, host,
start time, and the process's start time in the kernel's clock, which tells a reused pid
apart). A second process gets a one-line error naming the holder. A lock left behind by
a process that was killed is recognised on the same host (its pid is gone, or now
belongs to another process, or the machine rebooted since) and taken over with a warning.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from fluoseg.errors import FluosegError
from fluoseg.io._oserrors import describe_os_error

# How long a lock file may stay empty or half-written before it counts as abandoned
# (its creator died between creating and filling it).
_INCOMPLETE_GRACE_S = 10.0
# A take-over in progress (the ".break" file) older than this was abandoned too.
_BREAK_GRACE_S = 30.0
_READ_RETRIES = 20
_RETRY_PAUSE_S = 0.05


def lock_path_for(path: str | Path) -> Path:
    """The lock file guarding ``path``: a hidden ``.<name>.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, from ``/proc/<pid>/stat``.

    Returns None where /proc is not available (macOS, Windows) or the process is gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or ')'
    fields = stat[stat.rindex(")") + 2 :].split()
    try:
        return int(fields[19])  # field 22 of the whole line: starttime
    except (IndexError, ValueError):
        return None


def boot_id() -> str | None:
    """An id that changes at every reboot (Linux), or None where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


class OutputLock:
    """Hold an exclusive lock on an output (run folder or file) while it is written.

    Parameters
    ----------
    path
        The output being guarded; the lock file is :func:`lock_path_for` of it, and its
        folder is created if missing.
    what
        How messages call the output ("run folder").

    Examples
    --------
    >>> with OutputLock(run_dir, what="run folder"):  # doctest: +SKIP
    ...     trainer.fit()

    Raises
    ------
    FluosegError
        On entering, when another live process holds the lock (the message names its pid,
        host and start time), or the lock file cannot be created.
    """

    def __init__(self, path: str | Path, *, what: str = "output") -> None:
        self.path = Path(path)
        self.what = what
        self.lock_file = lock_path_for(self.path)
        self._token: str | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._token is not None

    def acquire(self) -> OutputLock:
        """Take the lock, taking over a stale one with a warning; see the class doc."""
        if self.held:
            return self
        try:
            self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, self.path, f"create the folder of the {self.what}") from exc
        for _ in range(_READ_RETRIES):
            if self._create():
                return self
            holder = self._read_holder()
            if holder is None:
                continue  # released meanwhile, or still being written: try again
            reason = stale_reason(holder)
            if reason is None:
                raise FluosegError(_busy_message(holder, self.what, self.lock_file), self.path)
            if self._take_over(holder, reason):
                return self
            time.sleep(_RETRY_PAUSE_S)
        raise FluosegError(
            f"the {self.what} is being locked and unlocked by other processes right now; "
            "try again in a moment",
            self.path,
        )

    def release(self) -> None:
        """Remove the lock file if it is still ours (a second call does nothing)."""
        if self._token is None:
            return
        holder = _read_json(self.lock_file)
        if holder is not None and holder.get("token") == self._token:
            try:
                self.lock_file.unlink()
            except FileNotFoundError:
                pass
        self._token = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<OutputLock {self.path} {'held' if self.held else 'free'}>"

    def _create(self) -> bool:
        """Create the lock file with our details; False when it already exists."""
        token = secrets.token_hex(8)
        try:
            handle = os.open(self.lock_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise describe_os_error(exc, self.path, f"lock the {self.what}") from exc
        try:
            os.write(handle, json.dumps(_our_details(token)).encode())
            os.fsync(handle)
        except OSError as exc:
            os.close(handle)
            self.lock_file.unlink(missing_ok=True)
            raise describe_os_error(exc, self.path, f"lock the {self.what}") from exc
        os.close(handle)
        self._token = token
        return True

    def _read_holder(self) -> dict[str, Any] | None:
        """The holder's details, None when the lock vanished meanwhile.

        A lock file still empty or half-written after a short wait is either being
        written right now (an error: try again) or was abandoned by a process that died
        between creating and filling it (``{"incomplete": True}``, which is stale).
        """
        for _ in range(_READ_RETRIES):
            holder = _read_json(self.lock_file)
            if holder is not None:
                return holder
            try:
                age = time.time() - self.lock_file.stat().st_mtime
            except FileNotFoundError:
                return None
            if age > _INCOMPLETE_GRACE_S:
                return {"incomplete": True}
            time.sleep(_RETRY_PAUSE_S)
        raise FluosegError(
            f"another process is locking the {self.what} right now; try again in a moment",
            self.path,
        )

    def _take_over(self, holder: dict[str, Any], reason: str) -> bool:
        """Replace a stale lock; only one of several processes doing so at once succeeds.

        The ``.break`` file serialises take-overs: without it, a process that judged the
        old lock stale could delete the fresh lock another process has just created.
        """
        breaker = self.lock_file.with_name(self.lock_file.name + ".break")
        try:
            os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            _remove_if_older(breaker, _BREAK_GRACE_S)
            return False
        except OSError as exc:
            raise describe_os_error(exc, self.path, f"lock the {self.what}") from exc
        try:
            expected = None if holder.get("incomplete") else holder
            if _read_json(self.lock_file) != expected:
                return False  # released or replaced meanwhile: start again
            self.lock_file.unlink(missing_ok=True)
            if not self._create():
                return False
        finally:
            breaker.unlink(missing_ok=True)
        warnings.warn(
            f"{self.path}: took over the lock of {_holder_text(holder)}, {reason}; "
            "check the output before relying on what that process left behind",
            stacklevel=3,
        )
        return True


def stale_reason(holder: dict[str, Any]) -> str | None:
    """Why the lock described by ``holder`` is abandoned, or None while its holder may live.

    Only locks taken on this host can be judged; one from another host stays valid.
    """
    if holder.get("incomplete"):
        return "which was never completely written"
    if holder.get("host") != socket.gethostname():
        return None
    recorded_boot = holder.get("boot_id")
    current_boot = boot_id()
    if recorded_boot and current_boot and recorded_boot != current_boot:
        return "which was taken before the machine restarted"
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return "which names no valid process"
    if not _alive(pid):
        return "whose process no longer runs"
    started = holder.get("process_start")
    now = process_start_time(pid)
    if started is not None and now is not None and started != now:
        return "whose process id now belongs to another process"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    except OSError:
        return True
    return True


def _our_details(token: str) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "process_start": process_start_time(pid),
        "boot_id": boot_id(),
        "token": token,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _remove_if_older(path: Path, seconds: float) -> None:
    try:
        if time.time() - path.stat().st_mtime > seconds:
            path.unlink()
    except OSError:
        pass


def _holder_text(holder: dict[str, Any]) -> str:
    if holder.get("incomplete"):
        return "an unknown process"
    return (
        f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} "
        f"(started {holder.get('started', '?')})"
    )


def _busy_message(holder: dict[str, Any], what: str, lock_file: Path) -> str:
    here = holder.get("host") == socket.gethostname()
    fix = (
        "wait for it to finish or choose another output"
        if here
        else f"wait for it to finish, or delete {lock_file} if that process is gone"
    )
    return f"the {what} is in use by {_holder_text(holder)}; {fix}"
