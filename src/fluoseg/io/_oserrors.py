"""Failures of the machine (full disk, permissions, wrong kind of path) as one-line errors.

Python reports them as ``OSError`` subclasses with an errno, and torch reports a full disk
during ``torch.save`` only as a ``RuntimeError`` from its C++ writer. Users need one line
that says which path, what is wrong and what to do, so every output location goes through
:func:`os_errors_as_user_errors` (during work) or :func:`prepare_output_dir` /
:func:`check_output_file` (before work starts, so a long run does not fail at its end).

This module must not import torch (``fluoseg.io`` is below it); torch's failures are
recognised by the text of their messages.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fluoseg.errors import FluosegError

# Fragments of the messages torch's zip writer (caffe2 inline_container.cc) and the C++
# stream layer give when a write comes up short; torch.save says nothing more specific.
_TORCH_WRITE_FAILURES = (
    "unexpected pos",
    "inline_container.cc",
    "PytorchStreamWriter failed writing",
    "file write failed",
    "basic_ios::clear",
    "iostream error",
)
# Below this much free space a short write is taken to mean a full disk.
_NEARLY_FULL_BYTES = 64 * 2**20
# File systems that show kernel state as files; nobody can create outputs there.
_VIRTUAL_FILE_SYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "securityfs", "debugfs", "tracefs",
    "pstore", "bpf", "configfs", "fusectl", "mqueue", "efivarfs", "binfmt_misc",
})


def is_torch_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the RuntimeError torch.save raises when a write comes up short."""
    return isinstance(exc, RuntimeError) and any(f in str(exc) for f in _TORCH_WRITE_FAILURES)


def describe_os_error(
    exc: OSError | RuntimeError, path: str | Path | None = None, action: str = "write"
) -> FluosegError:
    """Turn an OS-level failure into a one-line FluosegError naming the path, problem and fix.

    Parameters
    ----------
    exc
        The ``OSError`` (any subclass), or the ``RuntimeError`` that ``torch.save`` raises
        on a short write (see :func:`is_torch_write_failure`).
    path
        The path the user knows (the final output, not a temporary); default the
        exception's ``filename``.
    action
        What was being done, as a verb phrase completing "cannot ...", e.g. ``"write"``,
        ``"create the run folder"``, ``"read"``.

    Returns
    -------
    FluosegError
        To be raised by the caller (``raise describe_os_error(exc, p) from exc``).
    """
    target = Path(path) if path is not None else _filename(exc)
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None
    if isinstance(exc, RuntimeError) or code in (errno.ENOSPC, errno.EDQUOT):
        problem, fix = _space_problem(target, code)
    else:
        problem, fix = _problem(code, target, _filename(exc), exc, action)
    return FluosegError(f"cannot {action}: {problem}; {fix}", target)


@contextmanager
def os_errors_as_user_errors(path: str | Path, action: str = "write") -> Iterator[None]:
    """Re-raise OS failures (and torch.save's short-write error) inside the block as FluosegErrors.

    Parameters
    ----------
    path
        The path named in the message when the failing call does not name another one.
    action
        What the block does, completing "cannot ..." (see :func:`describe_os_error`).

    Examples
    --------
    >>> with os_errors_as_user_errors(run_dir, "create the run folder"):  # doctest: +SKIP
    ...     run_dir.mkdir(parents=True, exist_ok=True)
    """
    try:
        yield
    except OSError as exc:
        raise describe_os_error(exc, exc.filename or path, action) from exc
    except RuntimeError as exc:
        if not is_torch_write_failure(exc):
            raise
        raise describe_os_error(exc, path, action) from exc


def prepare_output_dir(path: str | Path, *, overwrite: bool, what: str = "output folder") -> Path:
    """Check, before any work, that ``path`` can be used as an output folder; creates nothing.

    Parameters
    ----------
    path
        The folder; it may exist or not.
    overwrite
        Accept a folder that already has content (the caller replaces or resumes it).
    what
        How messages call the folder ("run folder", "output folder").

    Returns
    -------
    Path
        The folder, still not created: the caller makes it when work starts.

    Raises
    ------
    FluosegError
        When ``path`` is a file, is a non-empty folder without ``overwrite``, or it (or
        the folder it would be created in) is not writable, read-only or on a virtual
        file system such as /proc.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise FluosegError(
                f"the {what} must be a folder but this is a file; choose another path or "
                "delete the file",
                path,
            )
        if not overwrite and any(path.iterdir()):
            raise FluosegError(
                f"the {what} already exists and is not empty; pass --overwrite to replace "
                "it or choose another folder",
                path,
            )
        _check_writable_folder(path, path, what)
        return path
    if path.is_symlink():
        raise FluosegError(
            f"the {what} is a symbolic link to a missing target; remove the link or fix it",
            path,
        )
    _check_creatable(path, what)
    return path


def check_output_file(path: str | Path, *, overwrite: bool, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at ``path``; creates nothing.

    Parameters
    ----------
    path
        The output file.
    overwrite
        Accept an existing file (it will be replaced).
    what
        How messages call the file.

    Returns
    -------
    Path
        The file path; neither it nor a missing folder above it is created.

    Raises
    ------
    FluosegError
        When ``path`` is a folder, exists without ``overwrite``, or its folder cannot be
        written or created.
    """
    path = Path(path)
    if path.is_dir():
        raise FluosegError(
            f"the {what} is an existing folder; give a file name (e.g. add one to the path)",
            path,
        )
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FluosegError("output already exists; pass --overwrite to replace it", path)
        _check_writable_folder(path.parent, path, what)
        return path
    _check_creatable(path, what)
    return path


def _check_creatable(path: Path, what: str) -> None:
    """Raise unless the missing ``path`` could be created (with its missing parents)."""
    ancestor = _nearest_existing(path)
    if not ancestor.is_dir():
        raise FluosegError(
            f"cannot create the {what}: {ancestor} is a file, not a folder; choose a path "
            "whose parent folders are folders",
            path,
        )
    _check_writable_folder(ancestor, path, what)


def _check_writable_folder(folder: Path, path: Path, what: str) -> None:
    """Raise when nothing can be created in the existing ``folder``."""
    where = "" if folder == path else f" ({folder})"
    kind = _virtual_file_system(folder)
    if kind is not None:
        raise FluosegError(
            f"cannot write the {what}: the location{where} is on the virtual '{kind}' file "
            "system, which holds no user files; choose a folder on a disk",
            path,
        )
    if _read_only(folder):
        raise FluosegError(
            f"cannot write the {what}: the file system{where} is read-only; choose an output "
            "location on a writable disk",
            path,
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FluosegError(
            f"cannot write the {what}: permission denied{where}; choose a folder you can "
            "write to or change its permissions",
            path,
        )


def _problem(
    code: int | None, target: Path | None, named: Path | None, exc: BaseException, action: str
) -> tuple[str, str]:
    reading = action.split()[0] in ("read", "open", "load")
    in_the_way = (named or target) if code == errno.EEXIST else _file_in_the_way(target)
    if code == errno.EEXIST and target is not None and in_the_way in target.parents:
        code = errno.ENOTDIR  # a parent folder to be created exists as a file
    if code == errno.ENOTDIR:
        where = f"{in_the_way} is a file, not a folder" if in_the_way else "a part of the path is a file, not a folder"
        return where, "choose a path whose parent folders are folders"
    if code == errno.EISDIR:
        return "this is a folder, but a file is needed", "give a file name (e.g. add one to the path)"
    if code == errno.EEXIST:
        kind = "folder" if in_the_way is not None and in_the_way.is_dir() else "file"
        return f"a {kind} of this name already exists", "remove it or choose another name"
    if code in (errno.EACCES, errno.EPERM):
        if reading:
            return "permission denied", "check the permissions of the file and its folders"
        return "permission denied", "choose a location you can write to or change its permissions"
    if code == errno.EROFS:
        return "the file system is read-only", "choose an output location on a writable disk"
    if code == errno.ENOENT:
        return _missing(target, reading)
    if code == errno.ENAMETOOLONG:
        return "the name is too long for the file system", "choose a shorter file or folder name"
    if code == errno.EFBIG:
        return "the file is larger than this file system allows", "write to another file system"
    if code == errno.ELOOP:
        return "the path runs in a loop of symbolic links", "fix or remove the links"
    if code in (errno.EBUSY, errno.ETXTBSY):
        return "it is in use by another program", "close that program or choose another name"
    if code in (errno.EMFILE, errno.ENFILE):
        return "too many files are open", "raise the limit (ulimit -n) or process fewer files at once"
    if code == errno.ENOMEM:
        return "out of memory", "close other programs or process smaller images"
    if code == errno.EIO:
        return "the disk reported an input/output error", "check the disk or use another location"
    detail = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).splitlines()[0]
    return detail, "check the path and its permissions"


def _missing(target: Path | None, reading: bool) -> tuple[str, str]:
    if reading or target is None:
        return "it does not exist", "check the path"
    parent = target.parent
    if parent.is_dir():
        kind = _virtual_file_system(parent)
        where = f"the '{kind}' file system" if kind else "this location"
        return f"{where} does not accept new files", "choose a folder on a disk"
    return f"the folder {parent} does not exist", "create it first or check the path"


def _space_problem(target: Path | None, code: int | None) -> tuple[str, str]:
    free = _free_bytes(target)
    nearly_full = free is not None and free < _NEARLY_FULL_BYTES
    if code == errno.EDQUOT:
        problem = "the disk quota is exceeded"
    elif nearly_full:
        problem = f"the disk is full ({_human(free or 0)} free)"
    elif code == errno.ENOSPC:
        # plenty of bytes but ENOSPC: the file system ran out of inodes or reserved blocks
        problem = "the disk is full (no space or no free file entries left)"
    else:
        problem = "the write stopped part-way (disk full, quota or file size limit)"
    return problem, "free some space or choose another location"


def _filename(exc: BaseException) -> Path | None:
    name = getattr(exc, "filename", None)
    return Path(os.fsdecode(name)) if isinstance(name, (str, bytes, os.PathLike)) else None


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the current folder at the latest)."""
    current = Path(os.path.abspath(path))
    while not current.exists() and current != current.parent:
        current = current.parent
    return current


def _file_in_the_way(target: Path | None) -> Path | None:
    if target is None:
        return None
    for ancestor in Path(os.path.abspath(target)).parents:
        if ancestor.exists():
            return None if ancestor.is_dir() else ancestor
    return None


def _free_bytes(target: Path | None) -> int | None:
    try:
        return shutil.disk_usage(_nearest_existing(target or Path("."))).free
    except OSError:
        return None


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False


def _virtual_file_system(folder: Path) -> str | None:
    """The type of the file system holding ``folder`` when it is a kernel one (/proc, /sys)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    here = os.path.realpath(folder)
    best, best_type = "", None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not rest:
            continue
        # mountinfo escapes spaces and the like as octal (\040)
        mount = parts[4].encode().decode("unicode_escape")
        inside = here == mount or here.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, rest.split()[0]
    return best_type if best_type in _VIRTUAL_FILE_SYSTEMS else None


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
