"""Where a trained model named on the command line lives: a run directory, a package, or a name.

``fluoseg export`` and ``fluoseg predict`` take ``RUN_OR_MODEL_NAME``. A path is used as
it is (a run directory, or a bioimage.io package for ``predict``); any other word is asked
of the registered model lookups, the hook through which the model zoo (``fluoseg.zoo``,
with its ``nuclei`` model) makes its models available by name. A lookup is a function
``name -> path or None``; the zoo registers one when it is imported::

    from fluoseg.bioimage.sources import register_model_lookup
    register_model_lookup(lambda name: ZOO_ROOT / name if (ZOO_ROOT / name).is_dir() else None)

:func:`resolve_model` imports ``fluoseg.zoo`` (when it exists) before asking, so the zoo
needs no further wiring.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from fluoseg.errors import FluosegError

ModelLookup = Callable[[str], "str | Path | None"]

_LOOKUPS: list[ModelLookup] = []
ZOO_MODULE = "fluoseg.zoo"


def register_model_lookup(lookup: ModelLookup) -> ModelLookup:
    """Add a function that maps a model name to a run directory or package (``None``: unknown)."""
    if lookup not in _LOOKUPS:
        _LOOKUPS.append(lookup)
    return lookup


def unregister_model_lookup(lookup: ModelLookup) -> None:
    """Remove a lookup added by :func:`register_model_lookup` (tests, plugins being unloaded)."""
    if lookup in _LOOKUPS:
        _LOOKUPS.remove(lookup)


def resolve_model(name_or_path: str | Path) -> Path:
    """The run directory or package a command-line model argument refers to.

    Raises
    ------
    FluosegError
        If it is neither an existing path nor a name a lookup knows.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    looks_like_a_path = path.suffix or "/" in name or "\\" in name
    if not looks_like_a_path:
        _import_zoo()
        for lookup in list(_LOOKUPS):
            found = lookup(name)
            if found is not None:
                return Path(found)
    raise FluosegError("no such run directory, bioimage.io package or model name; give the path of a run "
                       "written by 'fluoseg train' or of a .zip package", path=path)


def _import_zoo() -> None:
    try:
        importlib.import_module(ZOO_MODULE)
    except ModuleNotFoundError as error:
        if error.name != ZOO_MODULE:  # the zoo exists but one of its imports is missing: say so
            raise
