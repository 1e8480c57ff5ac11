"""Reading bioimage.io model packages: fluoseg's own (back to checkpoints) or foreign ones.

A package is a zip file (or a folder, or its ``rdf.yaml``) holding a bioimage.io resource
description and the files it names. A package written by :func:`fluoseg.bioimage.export`
carries, under ``config.fluoseg``, everything a :class:`~fluoseg.run.Checkpoint` holds
but the weights (model spec, task, markers, classes, normalisation, geometry) for each
member network; the weights are the package's ``pytorch_state_dict`` file. Reading it back
needs neither bioimageio.spec nor bioimageio.core, and gives the run's checkpoints with
bit-identical weights, so ``fluoseg predict model.zip`` predicts exactly as the run does.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
import yaml

from fluoseg.errors import FluosegError
from fluoseg.run import Checkpoint

PACKAGE_FORMAT = "fluoseg-bioimageio-package"
PACKAGE_VERSION = 1
DESCRIPTION_NAMES = ("rdf.yaml", "bioimageio.yaml")
"""File names of a resource description, in the order they are looked for."""
MEMBER_PREFIX = "networks"
"""State-dict prefix of member ``i``: ``networks.<i>.`` (the :class:`PackagedNetwork` layout)."""


@dataclass(frozen=True)
class Package:
    """An opened package: its description and a way to read the files it names.

    Attributes
    ----------
    path
        The zip file, folder or description file given.
    description
        The parsed resource description (``rdf.yaml``).
    """

    path: Path
    description: dict[str, Any]

    @property
    def is_fluoseg(self) -> bool:
        """Whether fluoseg exported it (it then carries the run's metadata)."""
        return self.fluoseg_config.get("format") == PACKAGE_FORMAT

    @property
    def fluoseg_config(self) -> dict[str, Any]:
        config = self.description.get("config") or {}
        section = config.get("fluoseg") if isinstance(config, dict) else None
        return section if isinstance(section, dict) else {}

    @property
    def input_names(self) -> tuple[str, ...]:
        """Tensor ids of the inputs, in order."""
        return tuple(str(t.get("id", t.get("name", ""))) for t in self.description.get("inputs") or [])

    def read_bytes(self, name: str) -> bytes:
        """The content of a file of the package, by the relative name the description uses."""
        with _opened(self.path) as (archive, root):
            try:
                if archive is not None:
                    return archive.read(str(PurePosixPath(root) / name) if root else name)
                return (Path(root) / name).read_bytes()
            except (KeyError, OSError):
                raise FluosegError(f"the package lacks {name!r}, which its description names; export it again",
                                   path=self.path) from None


def is_package(path: str | Path) -> bool:
    """Whether ``path`` looks like a bioimage.io package (zip, folder or description file)."""
    path = Path(path)
    if path.is_file():
        if path.name in DESCRIPTION_NAMES or path.name.endswith((".rdf.yaml", ".bioimageio.yaml")):
            return True
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(PurePosixPath(n).name in DESCRIPTION_NAMES for n in archive.namelist())
        return False
    return path.is_dir() and any((path / name).is_file() for name in DESCRIPTION_NAMES)


def open_package(path: str | Path) -> Package:
    """Open a package and parse its description.

    Raises
    ------
    FluosegError
        If ``path`` is not a package or its description is not valid YAML.
    """
    path = Path(path)
    if not path.exists():
        raise FluosegError("model not found; give a run directory or a bioimage.io package (.zip)", path=path)
    if not is_package(path):
        raise FluosegError("not a bioimage.io package (no rdf.yaml or bioimageio.yaml inside)", path=path)
    with _opened(path) as (archive, root):
        if archive is not None:
            text = archive.read(_description_name(archive, root)).decode("utf-8")
        else:
            text = (path if path.is_file() else _description_file(path)).read_text(encoding="utf-8")
    try:
        description = yaml.safe_load(text)
    except yaml.YAMLError:
        raise FluosegError("the package's description is not valid YAML; export or download it again",
                           path=path) from None
    if not isinstance(description, dict) or description.get("type") != "model":
        raise FluosegError("the package does not describe a model (type: model)", path=path)
    return Package(path=path, description=description)


def load_checkpoints(path: str | Path) -> list[Checkpoint]:
    """The member checkpoints of a package fluoseg exported (weights read with ``weights_only``).

    Raises
    ------
    FluosegError
        For a foreign package, a newer package format, or missing or damaged files.
    """
    package = open_package(path)
    if not package.is_fluoseg:
        raise FluosegError("this bioimage.io package was not exported by fluoseg; predict with it through "
                           "bioimageio.core (fluoseg predict does this for single-input packages)", path=path)
    section = package.fluoseg_config
    if int(section.get("version", 0)) > PACKAGE_VERSION:
        raise FluosegError(f"package format {section['version']} is newer than this fluoseg; upgrade fluoseg",
                           path=path)
    weights = package.description.get("weights", {}).get("pytorch_state_dict") or {}
    if "source" not in weights:
        raise FluosegError("the package has no pytorch_state_dict weights; export it again", path=path)
    try:
        state = torch.load(io.BytesIO(package.read_bytes(str(weights["source"]))), map_location="cpu",
                           weights_only=True)
    except FluosegError:
        raise
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise FluosegError(f"cannot read the package's weights ({type(exc).__name__}); export it again",
                           path=path) from None
    members = section.get("members") or []
    if not members:
        raise FluosegError("the package's fluoseg section lists no member networks; export it again", path=path)
    checkpoints = []
    for index, member in enumerate(members):
        prefix = f"{MEMBER_PREFIX}.{index}."
        member_weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not member_weights:
            raise FluosegError(f"the package's weights lack member network {index}; export it again", path=path)
        metadata = {key: value for key, value in member.items() if key != "name"}
        checkpoints.append(Checkpoint.from_dict({**metadata, "model_state": member_weights}, path=path))
    return checkpoints


def _description_name(archive: zipfile.ZipFile, root: str) -> str:
    names = set(archive.namelist())
    for candidate in DESCRIPTION_NAMES:
        full = str(PurePosixPath(root) / candidate) if root else candidate
        if full in names:
            return full
    raise FluosegError("the zip file holds no rdf.yaml", path=archive.filename)


def _description_file(folder: Path) -> Path:
    for candidate in DESCRIPTION_NAMES:
        if (folder / candidate).is_file():
            return folder / candidate
    raise FluosegError("the folder holds no rdf.yaml", path=folder)


@contextmanager
def _opened(path: Path) -> Iterator[tuple[zipfile.ZipFile | None, str]]:
    """``(zip archive or None, root)``: the root is a folder path, or a prefix inside the zip."""
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            descriptions = sorted((n for n in archive.namelist() if PurePosixPath(n).name in DESCRIPTION_NAMES),
                                  key=lambda n: len(PurePosixPath(n).parts))
            root = str(PurePosixPath(descriptions[0]).parent) if descriptions else ""
            yield archive, "" if root == "." else root
    elif path.is_file():
        yield None, str(path.parent)
    else:
        yield None, str(path)
