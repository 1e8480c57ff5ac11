"""Pretrained models shipped inside the package: ``fluoseg predict nuclei IMAGES --out DIR``.

Each model is a folder ``src/fluoseg/zoo/<name>/`` holding

- ``model.json``: the network spec, marker vocabulary, classes, normalisation, task state
  (with the decoding parameters tuned on validation images) and geometry, i.e. everything of
  a :class:`fluoseg.run.Checkpoint` but the weights and the training state;
- ``weights.pt``: a plain state dict (float16 where that loses nothing measurable), loaded
  with ``torch.load(weights_only=True)``;
- ``card.md``: the model card (data, licence, recipe, training steps, commit, pixel size and
  diameter convention, test scores), shown by ``fluoseg models``.

:func:`export_run` turns a trained run directory into such a folder; :func:`load` gives the
checkpoint back. Nothing is downloaded: the weights ship with fluoseg.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluoseg.errors import FluosegError

ZOO_DIR = Path(__file__).resolve().parent
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "card.md"
TUNING_FILE = "decoding.json"
"""In a copy re-tuned on someone's own images (:func:`write_retuned`): what was searched, on what."""
EXPORTED_FILES = (MODEL_FILE, WEIGHTS_FILE, CARD_FILE)
"""The files :func:`export_run` writes."""
RETUNED_FILES = (*EXPORTED_FILES, TUNING_FILE)
"""The files :func:`write_retuned` writes (with a record)."""


@dataclass(frozen=True)
class ZooModel:
    """A shipped model: its name, folder and card."""

    name: str
    folder: Path

    @property
    def card(self) -> str:
        """The model card (markdown)."""
        return (self.folder / CARD_FILE).read_text(encoding="utf-8")

    @property
    def summary(self) -> str:
        """The first line of the card after its title."""
        lines = [line.strip() for line in self.card.splitlines() if line.strip() and not line.startswith("#")]
        return lines[0] if lines else ""

    def metadata(self) -> dict[str, Any]:
        """``model.json`` as a dict."""
        return json.loads((self.folder / MODEL_FILE).read_text(encoding="utf-8"))


def available(root: Path | None = None) -> list[ZooModel]:
    """The shipped models (those in ``root``, default the package's zoo folder), by name."""
    root = ZOO_DIR if root is None else Path(root)
    return [ZooModel(p.name, p) for p in sorted(root.iterdir())
            if p.is_dir() and (p / MODEL_FILE).is_file() and (p / WEIGHTS_FILE).is_file()]


def get(name: str, root: Path | None = None) -> ZooModel:
    """The shipped model called ``name``.

    Raises
    ------
    FluosegError
        For an unknown name; the message lists the shipped models.
    """
    for model in available(root):
        if model.name == name:
            return model
    names = [m.name for m in available(root)]
    raise FluosegError(f"no run directory or pretrained model called {name!r}; pretrained models: {names} "
                       "('fluoseg models' lists them), or give the path of a run directory")


def is_zoo_folder(path: str | Path) -> bool:
    """Whether ``path`` is a zoo model folder (``model.json`` and ``weights.pt``)."""
    path = Path(path)
    return path.is_dir() and (path / MODEL_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def load(name: str, root: Path | None = None) -> Any:
    """The :class:`fluoseg.run.Checkpoint` of a shipped model (float32 weights)."""
    return load_folder(get(name, root).folder)


def load_folder(folder: str | Path) -> Any:
    """The :class:`fluoseg.run.Checkpoint` of a zoo model folder (float32 weights).

    Raises
    ------
    FluosegError
        If the folder's files are damaged.
    """
    import torch

    from fluoseg.run import Checkpoint

    folder = Path(folder)
    try:
        weights = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        metadata = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    except Exception as exc:  # a damaged installation
        raise FluosegError(f"cannot read the pretrained model ({type(exc).__name__}); reinstall fluoseg",
                           path=folder) from None
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    return Checkpoint.from_dict({**metadata, "model_state": weights}, path=folder / MODEL_FILE)


def _lookup(name: str) -> Path | None:
    """A shipped model's folder by name, for command-line model arguments (:mod:`fluoseg.bioimage.sources`)."""
    folder = ZOO_DIR / name
    return folder if is_zoo_folder(folder) else None


def _register() -> None:
    from fluoseg.bioimage.sources import register_model_lookup

    register_model_lookup(_lookup)


_register()


def export_run(run_dir: str | Path, out: str | Path, *, card: str, half: bool = True, task_updates: dict | None = None,
               overwrite: bool = False) -> Path:
    """Write a zoo folder from a trained run's best checkpoint (single-member runs).

    Parameters
    ----------
    run_dir
        The trained run.
    out
        The zoo folder to write (``src/fluoseg/zoo/<name>`` to ship it).
    card
        The model card text (markdown).
    half
        Store floating-point weights as float16 (halves the size; check the scores after).
    task_updates
        Task constants to change, e.g. decoding parameters tuned on validation images.
    overwrite
        Replace an existing folder's files.
    """
    import torch

    from fluoseg.io import atomic_path, write_json_atomically, write_text_atomically
    from fluoseg.run import RunDir

    run = RunDir.open(run_dir)
    members = run.members()
    if len(members) != 1:
        raise FluosegError(f"a zoo model holds one network; this run has {len(members)} ({members})", path=run.path)
    checkpoint = run.load(members[0], "best")
    checkpoint.training = None
    checkpoint.task = {**checkpoint.task, **(task_updates or {})}
    out = Path(out)
    check_zoo_folder(out, overwrite=overwrite)
    state = checkpoint.to_dict()
    weights = state.pop("model_state")
    if half:
        weights = {k: v.half() if v.is_floating_point() else v for k, v in weights.items()}
    with atomic_path(out / WEIGHTS_FILE, overwrite=overwrite) as temporary:
        torch.save(weights, temporary)
    write_text_atomically(out / CARD_FILE, card, overwrite=overwrite)
    write_json_atomically(out / MODEL_FILE, state, overwrite=overwrite)  # last: the folder is a model from here on
    return out


def check_zoo_folder(out: str | Path, *, overwrite: bool, files: tuple[str, ...] = EXPORTED_FILES) -> None:
    """Check, before any work, that a zoo folder's ``files`` can be written at ``out`` (creates nothing).

    Raises
    ------
    FluosegError
        When one exists without ``overwrite`` or cannot be written.
    """
    from fluoseg.io import check_output_file

    for name in files:
        check_output_file(Path(out) / name, overwrite=overwrite, what="zoo file")


def write_retuned(folder: str | Path, out: str | Path, *, task_updates: dict[str, float], card: str,
                  record: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write a zoo folder that is ``folder``'s model with other decoding parameters.

    The weights are copied byte for byte; ``model.json`` gets ``task_updates`` (e.g. the h,
    threshold and minimum size :func:`fluoseg.tuning.tune_pretrained` chose on a lab's own
    annotated images); ``out`` may be ``folder`` itself (with ``overwrite``).

    Parameters
    ----------
    folder
        The zoo model folder to start from.
    out
        The folder to write.
    task_updates
        Task constants to change; each must be one the model already has.
    card
        The new folder's model card.
    record
        What the tuning did, stored as ``decoding.json`` (:data:`TUNING_FILE`).
    overwrite
        Replace existing files in ``out``.

    Raises
    ------
    FluosegError
        For a ``folder`` that is not a zoo model, an unknown task constant, or existing
        files in ``out`` without ``overwrite``.
    """
    import shutil

    from fluoseg.io import atomic_path, write_json_atomically, write_text_atomically

    folder, out = Path(folder), Path(out)
    if not is_zoo_folder(folder):
        raise FluosegError(f"not a pretrained model folder (it needs {MODEL_FILE} and {WEIGHTS_FILE})", path=folder)
    from fluoseg.tasks import task_from_state

    state = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
    # the task as loaded: constants a model exported before they existed have their defaults
    known = set(task_from_state(state["task"]).state()) | set(state["task"])
    unknown = sorted(set(task_updates) - known)
    if unknown:
        raise FluosegError(f"the model's task has no {unknown}; it has {sorted(known)}", path=folder)
    check_zoo_folder(out, overwrite=overwrite, files=RETUNED_FILES if record is not None else EXPORTED_FILES)
    state["task"] = {**state["task"], **task_updates}
    in_place = out.resolve() == folder.resolve()
    if not in_place:
        with atomic_path(out / WEIGHTS_FILE, overwrite=overwrite) as temporary:
            shutil.copyfile(folder / WEIGHTS_FILE, temporary)
    write_text_atomically(out / CARD_FILE, card, overwrite=overwrite)
    if record is not None:
        write_json_atomically(out / TUNING_FILE, record, overwrite=overwrite)
    write_json_atomically(out / MODEL_FILE, state, overwrite=overwrite)  # last: the folder is a model from here on
    return out
