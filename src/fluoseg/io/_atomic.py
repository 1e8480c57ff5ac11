"""Atomic outputs: write next to the target under a temporary name, then rename.

A crash (or Ctrl-C, or a full disk) during a long prediction or a checkpoint save must
never leave a half-written file at the final path, where a later run would take it for
a result. Every writer in fluoseg therefore works on a hidden sibling
``.<name>.partial-XXXXXXXX`` (:func:`temporary_sibling`, the one naming of temporaries in
the package) and moves it into place with one rename on the same file system.

:func:`atomic_path` is the general form; the ``write_*_atomically`` functions are built
on it. A writer that only takes a file name (``torch.save``, ``figure.savefig``) is made
atomic the same way::

    with atomic_path(run_dir / "last.pt", overwrite=True) as tmp:
        torch.save(state, tmp)

If the body raises (a full disk makes torch.save raise ``RuntimeError: ... unexpected
pos``), the temporary is deleted, the previous file stays as it was, and OS failures
come out as one-line :class:`~fluoseg.errors.FluosegError`s naming the final path.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fluoseg.errors import FluosegError
from fluoseg.io._oserrors import describe_os_error, is_torch_write_failure


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise a FluosegError when ``path`` exists and ``overwrite`` is False."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FluosegError("output already exists; pass --overwrite to replace it", path)


def temporary_sibling(path: Path, tag: str = "partial") -> Path:
    """Return an unused hidden name in ``path``'s folder, creating the folder if needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, path, "create the output's folder") from exc
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def remove(path: Path) -> None:
    """Delete a file or folder if present; errors are ignored (best-effort cleanup)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def commit(tmp: Path, path: Path, overwrite: bool) -> Path:
    """Move the finished temporary ``tmp`` to ``path``.

    Files are replaced with one atomic ``os.replace``. A folder (Zarr) cannot replace a
    non-empty folder in one step, so an old output is first renamed aside and deleted
    after the new one is in place: ``path`` then briefly does not exist, but it never
    holds a partial result.

    Raises
    ------
    FluosegError
        When ``path`` exists and ``overwrite`` is False, or the rename fails (``tmp`` is
        removed in both cases).
    """
    try:
        refuse_existing(path, overwrite)
    except FluosegError:
        remove(tmp)
        raise
    exists = path.exists() or path.is_symlink()
    try:
        if exists and (tmp.is_dir() or (path.is_dir() and not path.is_symlink())):
            old = temporary_sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            remove(old)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        remove(tmp)
        raise describe_os_error(exc, path, "move the finished output into place") from exc
    return path


@contextmanager
def atomic_path(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it into place when the block ends.

    Parameters
    ----------
    path
        The final file (or folder, for stores such as Zarr). Missing parent folders are
        created.
    overwrite
        Replace an existing ``path``; otherwise an existing one is refused before the
        block runs (and again at the rename, in case it appeared meanwhile).

    Yields
    ------
    Path
        The temporary path to write (a hidden ``.<name>.partial-XXXXXXXX`` in the same
        folder). A block that writes nothing there leaves ``path`` untouched.

    Raises
    ------
    FluosegError
        When ``path`` exists without ``overwrite``, or writing, flushing or renaming fails
        for a reason of the machine (full disk, permissions, read-only file system). The
        temporary is removed whatever the block raises, and ``path`` keeps its old content.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    tmp = temporary_sibling(path)
    try:
        yield tmp
        if tmp.is_file():
            _flush_to_disk(tmp)
    except BaseException as exc:
        # describe before removing: the free space shown should include what the
        # partial file took
        error = _user_error(exc, tmp, path)
        remove(tmp)
        if error is None:
            raise
        raise error from exc
    if tmp.exists() or tmp.is_symlink():
        commit(tmp, path, overwrite)


def write_bytes_atomically(path: str | Path, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` so that readers see the old content or all of the new.

    The text, CSV and JSON writers below share these parameters and this behaviour.

    Parameters
    ----------
    path
        The file; missing parent folders are created.
    data
        The complete content.
    overwrite
        Replace an existing file (the default, as for state files rewritten each epoch).

    Returns
    -------
    Path
        ``path``, for chaining.

    Raises
    ------
    FluosegError
        As :func:`atomic_path` (existing file without ``overwrite``, full disk, ...).
    """
    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomically(path: str | Path, text: str, *, overwrite: bool = True) -> Path:
    """Write a text file (config, JSON, table) UTF-8 encoded, as :func:`write_bytes_atomically`."""
    return write_bytes_atomically(path, text.encode("utf-8"), overwrite=overwrite)


def write_csv_atomically(
    path: str | Path, rows: Sequence[dict[str, Any]], *, fields: Sequence[str] | None = None, overwrite: bool = True
) -> Path:
    """Write rows (one mapping of column to value each) as CSV, as :func:`write_bytes_atomically`.

    Columns are ``fields`` (keys outside them are left out), else every key in order of first
    appearance (a single ``empty`` one for no rows); a row lacking a column leaves it blank.
    """
    columns = list(fields) if fields is not None else list(dict.fromkeys(k for row in rows for k in row)) or ["empty"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomically(path, buffer.getvalue(), overwrite=overwrite)


def write_json_atomically(
    path: str | Path, data: Any, *, indent: int | None = 1, overwrite: bool = True
) -> Path:
    """Write ``data`` as JSON (non-ASCII kept, trailing newline), as :func:`write_bytes_atomically`.

    ``indent`` is passed to :func:`json.dumps`; None writes one line.
    """
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=_json_value) + "\n"
    return write_text_atomically(path, text, overwrite=overwrite)


def _json_value(value: Any) -> Any:
    """JSON for what ``json`` does not know: paths as text, numpy scalars and arrays as numbers and lists."""
    if isinstance(value, Path):
        return str(value)
    for attribute in ("tolist", "item"):  # numpy arrays and scalars (io does not import numpy for this)
        if hasattr(value, attribute):
            return getattr(value, attribute)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _flush_to_disk(tmp: Path) -> None:
    """Make the content durable before the rename publishes it (a crash then never
    leaves a renamed but empty file)."""
    handle = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _user_error(exc: BaseException, tmp: Path, path: Path) -> FluosegError | None:
    """The one-line error to raise for ``exc`` from an atomic write, or None to re-raise it."""
    if isinstance(exc, FluosegError):
        # writers only know the temporary name; report the path the user asked for
        return FluosegError(exc.message, path) if exc.path == tmp else None
    if isinstance(exc, OSError):
        named = exc.filename
        readable = isinstance(named, (str, bytes, os.PathLike))
        about_output = not readable or Path(os.fsdecode(named)) == tmp
        return describe_os_error(exc, path if about_output else os.fsdecode(named), "write")
    if is_torch_write_failure(exc):
        return describe_os_error(exc, path, "write")  # type: ignore[arg-type]
    return None
