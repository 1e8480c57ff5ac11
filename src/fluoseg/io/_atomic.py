"""Atomic outputs: write next to the target under a temporary name, then rename.

A crash (or Ctrl-C) during a long prediction must never leave a half-written file at
the final path, where a later run would take it for a result. Every writer therefore
works on a hidden sibling ``.<name>.partial-XXXXXXXX`` and :func:`commit` moves it into
place with one rename on the same file system.
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fluoseg.errors import FluosegError


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise a FluosegError when ``path`` exists and ``overwrite`` is False."""
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FluosegError("output already exists; pass --overwrite to replace it", path)


def temporary_sibling(path: Path, tag: str = "partial") -> Path:
    """Return an unused hidden name in ``path``'s folder, creating the folder if needed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FluosegError(
            f"cannot create the output folder ({exc.strerror or exc}); check the path and "
            "its permissions",
            path,
        ) from exc
    return path.with_name(f".{path.name}.{tag}-{secrets.token_hex(4)}")


def remove(path: Path) -> None:
    """Delete a file or folder if present; errors are ignored (best-effort cleanup)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
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
        When ``path`` exists and ``overwrite`` is False (``tmp`` is removed).
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
        raise FluosegError(
            f"cannot move the finished output into place ({exc.strerror or exc}); check "
            "permissions of the output folder",
            path,
        ) from exc
    return path


def write_text_atomically(path: Path, text: str) -> Path:
    """Write a small text file (config, JSON, table) so readers never see half of it."""
    with atomic_path(path, overwrite=True) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv_atomically(path: Path, rows: Sequence[dict[str, Any]], *, fields: Sequence[str] | None = None) -> Path:
    """Write rows as CSV atomically.

    Columns are ``fields`` (keys of a row outside them are left out), else every key in
    order of first appearance (``empty`` when there are no rows).
    """
    columns = list(fields) if fields is not None else list(dict.fromkeys(k for row in rows for k in row)) or ["empty"]
    with atomic_path(path, overwrite=True) as temporary:
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return Path(path)


@contextmanager
def atomic_path(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; committed by rename when the block succeeds.

    Any exception inside the block (a full disk, Ctrl-C) removes the temporary and leaves an
    existing ``path`` untouched. Works for any writer that takes a path, e.g.
    ``with atomic_path(p, overwrite=True) as tmp: torch.save(state, tmp)``.

    Raises
    ------
    FluosegError
        When ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    temporary = temporary_sibling(path)
    try:
        yield temporary
    except BaseException:
        remove(temporary)
        raise
    commit(temporary, path, overwrite)


def write_json_atomically(path: Path, data: Any) -> Path:
    """Write a JSON record (indented) atomically."""
    return write_text_atomically(path, json.dumps(data, indent=1))
