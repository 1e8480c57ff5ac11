"""Format registry: which reader and writer handle a file, chosen by its suffix.

A format is a plain record of functions, so supporting a new suffix is one call to
:func:`register_format` with a reader (and optionally a writer); nothing else in
``fluoseg.io`` knows about individual formats.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fluoseg.errors import FluosegError
from fluoseg.io._oserrors import describe_os_error, os_errors_as_user_errors

# Errors of the machine, not of the file's content: reported as such, not as "corrupt".
# (A missing part inside a store, ENOENT, is damage: the store itself was found.)
_MACHINE_ERRNOS = frozenset({
    errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ELOOP, errno.EIO, errno.EMFILE,
    errno.ENFILE, errno.ENOMEM,
})

Role = Literal["image", "mask", "labels"]


@dataclass(frozen=True)
class ReadRequest:
    """What the caller asked a reader for.

    Attributes
    ----------
    key
        Path of a group or array inside a container file (Zarr, HDF5); None elsewhere.
    channels
        Channel names to read; readers of one-dataset-per-channel formats (HDF5) use it
        to read only those, the others may ignore it (selection happens afterwards).
    lazy
        Whether to keep the data on disk; None means the format's own default.
    role
        What the data is for; HDF5 picks marker or label datasets of a sample by it.
    """

    key: str | None = None
    channels: tuple[str, ...] | None = None
    lazy: bool | None = None
    role: Role = "image"


@dataclass
class RawImage:
    """An array as a reader found it, before it is made channel-first.

    Attributes
    ----------
    array
        A numpy array (possibly a memory map), a zarr array or another object with
        ``shape``, ``dtype`` and basic-slicing ``__getitem__``.
    axes
        One letter per dimension: ``C``, ``Z``, ``Y``, ``X``; ``?`` for a dimension whose
        meaning the file does not say; ``1`` for a size-1 dimension to drop. None when
        the file has no axis metadata at all.
    channel_names
        Names of the channels when the file has them.
    pixel_size
        Micrometres per pixel by spatial letter (``{"y": 0.5, "x": 0.5}``), when known.
    """

    array: Any
    axes: str | None = None
    channel_names: tuple[str, ...] | None = None
    pixel_size: dict[str, float] | None = None


@dataclass(frozen=True)
class WriteMeta:
    """Metadata handed to writers; ``axes`` is in C, Z, Y, X order (C may be absent)."""

    axes: str
    channel_names: tuple[str, ...] | None = None
    pixel_size: tuple[float, ...] | None = None
    chunks: tuple[int, ...] | None = None


Reader = Callable[[Path, ReadRequest], RawImage]
Writer = Callable[[Path, Any, WriteMeta], None]
Creator = Callable[[Path, tuple[int, ...], Any, WriteMeta], Any]
Opener = Callable[[Path], Any]


@dataclass(frozen=True)
class ImageFormat:
    """One file format known to ``fluoseg.io``.

    Attributes
    ----------
    name
        Human name used in messages ("TIFF", "Zarr").
    suffixes
        Lower-case suffixes including the dot; multi-part ones (".ome.tif") allowed.
    reader, writer
        The functions doing the work; ``writer`` is None for read-only formats.
    create, reopen
        For formats that can be written window by window (Zarr): ``create`` makes an
        empty writable array on disk, ``reopen`` opens the finished one read-only.
        Formats without them stream into memory and write at the end.
    directory
        True when the "file" is a folder (Zarr stores).
    container
        True when a file holds several arrays addressed by ``key``.
    lazy_default
        Whether reads stay on disk unless ``lazy=False`` is asked for.
    """

    name: str
    suffixes: tuple[str, ...]
    reader: Reader
    writer: Writer | None = None
    create: Creator | None = None
    reopen: Opener | None = None
    directory: bool = False
    container: bool = False
    lazy_default: bool = False


_FORMATS: list[ImageFormat] = []


def register_format(fmt: ImageFormat) -> None:
    """Add a format, replacing any earlier one that claimed the same suffixes.

    Parameters
    ----------
    fmt
        The format to register.
    """
    claimed = set(fmt.suffixes)
    _FORMATS[:] = [f for f in _FORMATS if not claimed & set(f.suffixes)]
    _FORMATS.append(fmt)


def supported_suffixes() -> tuple[str, ...]:
    """Return every suffix a registered format reads, sorted."""
    return tuple(sorted(s for f in _FORMATS for s in f.suffixes))


def writable_suffixes() -> tuple[str, ...]:
    """Return every suffix a registered format can write, sorted."""
    return tuple(sorted(s for f in _FORMATS if f.writer is not None for s in f.suffixes))


def format_for(path: str | Path) -> ImageFormat:
    """Return the format handling ``path``, judged by its (longest matching) suffix.

    Parameters
    ----------
    path
        A file or Zarr folder name; it need not exist.

    Raises
    ------
    FluosegError
        When no registered format claims the suffix.
    """
    name = Path(path).name.lower()
    best: tuple[int, ImageFormat] | None = None
    for fmt in _FORMATS:
        for suffix in fmt.suffixes:
            # ".ome.tif" must win over ".tif", so keep the longest match
            if name.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), fmt)
    if best is None:
        raise FluosegError(
            f"unknown image file type; use one of {', '.join(supported_suffixes())}",
            path=path,
        )
    return best[1]


def check_readable(path: Path, fmt: ImageFormat) -> None:
    """Raise a FluosegError when ``path`` is missing, empty or the wrong kind of entry."""
    # a name too long or a folder without permission makes even stat() fail
    with os_errors_as_user_errors(path, "read"):
        _check_entry(path, fmt)


def _check_entry(path: Path, fmt: ImageFormat) -> None:
    if not path.exists():
        raise FluosegError("file not found; check the path (and the manifest that names it)", path)
    if fmt.directory:
        if not path.is_dir():
            raise FluosegError(
                f"a {fmt.name} store must be a folder but this is a file; check the path", path
            )
        if not any(path.iterdir()):
            raise FluosegError(
                f"the {fmt.name} folder is empty (no zarr.json, .zarray or .zgroup); "
                "it was probably not written completely, so write it again",
                path,
            )
        return
    if path.is_dir():
        raise FluosegError(f"is a folder, not a {fmt.name} file; check the path", path)
    if path.stat().st_size == 0:
        raise FluosegError(
            f"file is empty (0 bytes), not a {fmt.name} image; it was probably not written "
            "completely, so export it again",
            path,
        )


@contextmanager
def read_errors(path: Path, what: str) -> Iterator[None]:
    """Turn any library error raised while reading ``path`` into a FluosegError.

    The readers' libraries raise dozens of exception types for damaged files
    (struct errors, codec errors, KeyErrors on missing tags); users need one message.
    """
    try:
        yield
    except (FluosegError, MemoryError, KeyboardInterrupt):
        raise
    except OSError as exc:
        if exc.errno not in _MACHINE_ERRNOS:
            raise FluosegError(_unreadable(exc, what), path) from exc
        raise describe_os_error(exc, path, "read") from exc
    except Exception as exc:  # noqa: BLE001 - any failure here means a bad file
        raise FluosegError(_unreadable(exc, what), path) from exc


def _unreadable(exc: Exception, what: str) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"not a readable {what} (corrupt, truncated or unsupported: {detail}); "
        "check that the file is complete (copy or export it again)"
    )
