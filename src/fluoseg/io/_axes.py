"""Axis bookkeeping: which dimension is which, and making arrays channel-first.

Readers report axes as one letter per dimension (``C``, ``Z``, ``Y``, ``X``, ``?`` for
unknown, ``1`` for a size-1 dimension to drop). This module settles the unknowns, checks
user overrides and reorders the array to ``CYX`` / ``CZYX``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fluoseg.errors import FluosegError
from fluoseg.io._lazy import LazyView

ORDER = "CZYX"

# What a dimension means when the file does not say, by number of dimensions.
IMAGE_DEFAULTS: Mapping[int, str] = {2: "YX", 3: "CYX", 4: "CZYX"}
# Label images have no channels, so a 3D label array is a volume.
LABEL_DEFAULTS: Mapping[int, str] = {2: "YX", 3: "ZYX", 4: "CZYX"}


def parse_axes(axes: str, path: str | Path | None = None) -> str:
    """Validate a user-given axes string and return it upper-cased.

    Parameters
    ----------
    axes
        One letter per dimension from C, Z, Y, X, e.g. ``"ZCYX"`` or ``"YXC"``.
    path
        The file the axes are for, named in the error message.

    Raises
    ------
    FluosegError
        For unknown letters, repeated letters, or a string without both Y and X.
    """
    text = str(axes).strip().upper()
    unknown = sorted(set(text) - set(ORDER))
    if unknown or not text:
        raise FluosegError(
            f"axes {axes!r} has unknown letters {''.join(unknown)!r}; use one letter per "
            "dimension from C, Z, Y, X (e.g. 'CYX', 'ZCYX', 'YXC')",
            path,
        )
    if len(set(text)) != len(text):
        raise FluosegError(
            f"axes {axes!r} repeats a letter; give each of C, Z, Y, X at most once", path
        )
    if "Y" not in text or "X" not in text:
        raise FluosegError(f"axes {axes!r} lacks Y or X; images need both (e.g. 'CYX')", path)
    return text


def canonical(axes: str) -> str:
    """Return the letters of ``axes`` in C, Z, Y, X order."""
    return "".join(letter for letter in ORDER if letter in axes)


def channel_first_axes(axes: str) -> str:
    """Return the channel-first axes (``CYX`` or ``CZYX``) for a set of letters."""
    return "CZYX" if "Z" in axes else "CYX"


def resolve_axes(
    shape: Sequence[int],
    native: str | None,
    override: str | None,
    *,
    defaults: Mapping[int, str] = IMAGE_DEFAULTS,
    path: str | Path | None = None,
) -> str:
    """Decide the meaning of every dimension of an array.

    Parameters
    ----------
    shape
        The stored array's shape.
    native
        Axes from the file's metadata (letters, ``?``, ``1``; ``T`` for a time axis,
        which is refused), or None.
    override
        Axes the user gave; they win over metadata.
    defaults
        Meaning of unlabelled dimensions by number of (kept) dimensions.
    path
        The file, for error messages.

    Returns
    -------
    str
        One letter per dimension from ``CZYX1``; ``1`` marks size-1 dimensions to drop.
        A size-1 Z that came from metadata or defaults (not from ``override``) is
        dropped too, so a single plane reads as a 2D image.
    """
    ndim = len(shape)
    if override is not None:
        axes = parse_axes(override, path)
        if len(axes) != ndim:
            raise FluosegError(
                f"axes {override!r} has {len(axes)} letters but the image has {ndim} "
                f"dimensions (shape {tuple(shape)}); give one letter per dimension",
                path,
            )
        return axes
    letters = list(native if native is not None else "?" * ndim)
    if "T" in letters:
        size = shape[letters.index("T")]
        raise FluosegError(
            f"the image is a time series ({size} time points, shape {tuple(shape)}); fluoseg "
            "segments one time point at a time, so save one per file or pass axes=... "
            "(e.g. 'ZYX') to read time as Z",
            path,
        )
    if len(letters) != ndim:
        raise FluosegError(
            f"the file's axis metadata {native!r} does not match its shape {tuple(shape)}; "
            "pass axes=... to say which dimension is which",
            path,
        )
    if "?" in letters and not _fill_unknown(letters, shape, defaults):
        raise FluosegError(
            f"cannot tell which dimension is which (shape {tuple(shape)}, axes "
            f"{''.join(letters)!r}); pass axes=... (e.g. 'CZYX')",
            path,
        )
    kept = [a for a in letters if a != "1"]
    if len(set(kept)) != len(kept) or "Y" not in kept or "X" not in kept:
        raise FluosegError(
            f"the file's axes {''.join(letters)!r} (shape {tuple(shape)}) are ambiguous; "
            "pass axes=... to say which dimension is which",
            path,
        )
    return "".join("1" if a == "Z" and n == 1 else a for a, n in zip(letters, shape))


def _fill_unknown(letters: list[str], shape: Sequence[int], defaults: Mapping[int, str]) -> bool:
    """Give ``?`` dimensions the letters the default layout has and the file lacks."""
    for allow_drop in (False, True):
        if allow_drop:
            # Too many unknowns: size-1 ones are padding (e.g. a time point), drop them.
            for i, letter in enumerate(letters):
                if letter == "?" and shape[i] == 1:
                    letters[i] = "1"
        kept = [a for a in letters if a != "1"]
        layout = defaults.get(len(kept))
        if layout is None:
            continue
        missing = [a for a in layout if a not in kept]
        unknown = [i for i, a in enumerate(letters) if a == "?"]
        if len(unknown) <= len(missing):
            for i, letter in zip(unknown, missing):
                letters[i] = letter
            return True
    return False


def to_channel_first(array: Any, axes: str) -> tuple[Any, str]:
    """Reorder an array to ``CYX`` / ``CZYX``, adding a size-1 C when missing.

    Numpy arrays (memory maps included) are reordered as views, so nothing is read;
    other arrays are wrapped in a :class:`LazyView` unless already channel-first.

    Parameters
    ----------
    array
        The stored array.
    axes
        Its resolved axes (letters from ``CZYX1``).

    Returns
    -------
    tuple
        The channel-first array and its axes string.
    """
    kept = axes.replace("1", "")
    target = channel_first_axes(kept)
    if axes == target:
        return array, target
    if not isinstance(array, np.ndarray):
        return LazyView(array, axes, target), target
    squeezed = array[tuple(0 if a == "1" else slice(None) for a in axes)]
    if "C" not in kept:
        squeezed = squeezed[np.newaxis]
        kept = "C" + kept
    return np.transpose(squeezed, [kept.index(a) for a in target]), target


def reorder_for_writing(array: Any, axes: str) -> tuple[Any, str]:
    """Reorder an array given with any ``axes`` into C, Z, Y, X order (C not added).

    Parameters
    ----------
    array
        The array to write.
    axes
        Its axes, already validated.

    Returns
    -------
    tuple
        The reordered array (a view or :class:`LazyView`) and its canonical axes.
    """
    target = canonical(axes)
    if axes == target:
        return array, target
    if isinstance(array, np.ndarray):
        return np.transpose(array, [axes.index(a) for a in target]), target
    return LazyView(array, axes, target), target


def select_channels(array: Any, indices: Sequence[int]) -> Any:
    """Keep the channels ``indices`` (in that order) of a channel-first array.

    A contiguous ascending run becomes a slice, which stays a view for memory maps;
    other selections of on-disk arrays go through a :class:`LazyView` so nothing is
    read before the caller asks for a window.
    """
    idx = list(indices)
    if idx == list(range(array.shape[0])):
        return array
    contiguous = idx == list(range(idx[0], idx[0] + len(idx)))
    if isinstance(array, np.ndarray):
        if contiguous:
            return array[idx[0] : idx[0] + len(idx)]
        if not isinstance(array, np.memmap):
            return array[idx]
    layout = channel_first_axes("Z" if array.ndim == 4 else "")
    return LazyView(array, layout, layout, channel_index=idx)


def spatial_pixel_size(
    sizes: Mapping[str, float] | None, axes: str
) -> tuple[float, ...] | None:
    """Pixel sizes in spatial-axis order, or None unless every spatial axis is known."""
    if not sizes:
        return None
    spatial = [a.lower() for a in axes if a in "ZYX"]
    if not all(a in sizes for a in spatial):
        return None
    return tuple(float(sizes[a]) for a in spatial)
