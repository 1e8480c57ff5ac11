"""The contract of a trained run: its directory layout and its checkpoints.

Training writes a run directory and inference, transfer learning, cross-validation and the
benchmarks read it; this module is the only code that knows the format::

    RUN_DIR/config.yaml          resolved configuration, with the split used
    RUN_DIR/run.json             {"members": [...]}: one joint network, or one per class
    RUN_DIR/train.log            what the trainer logged
    RUN_DIR/<member>/best.pt     best validation epoch (what prediction uses)
    RUN_DIR/<member>/last.pt     end of the last finished epoch (what --resume uses)
    RUN_DIR/<member>/metrics.csv one row per finished epoch
    RUN_DIR/<member>/decoding.json  decoding parameters tuned on validation images (``fluoseg tune``),
                                 applied to the member's task when the run predicts

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: opening one never executes code from it. It carries the
network's spec and weights, its marker vocabulary, classes, normalisation and geometry, the
task's constants, and, for resuming, the optimiser, schedule, epoch and every random state.
:class:`Checkpoint` is its typed form; the dict layout (format version 1) is unchanged since
the first release, so every run ever written stays readable.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from fluoseg.data.normalize import DEFAULT_PERCENTILES
from fluoseg.errors import FluosegError
from fluoseg.io import atomic_path, write_csv_atomically, write_json_atomically, write_text_atomically
from fluoseg.models import build_model, model_spec
from fluoseg.models.detection import build_detector, detector_names, detector_spec
from fluoseg.models.registry import recorded_construction
from fluoseg.models.pretrained import without_encoder_weights

FORMAT = "fluoseg-checkpoint"
VERSION = 1
CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a network: registry name, options, input and output channels."""

    name: str
    options: dict[str, Any]
    in_channels: int
    out_channels: int

    @property
    def is_detector(self) -> bool:
        """Whether the name is a detection model's (:mod:`fluoseg.models.detection`); it has no logit
        channels (``out_channels`` 0) and is built by :func:`~fluoseg.models.detection.build_detector`."""
        return self.name in detector_names()

    @classmethod
    def of(cls, model: nn.Module) -> ModelSpec:
        """The spec of a network built by :func:`fluoseg.models.build_model` or a detector."""
        recorded = recorded_construction(model)
        if recorded is not None and recorded["name"] in detector_names():
            spec = {**detector_spec(model), "out_channels": 0}
        else:
            spec = model_spec(model)
        return cls(name=spec["name"], options=spec["options"], in_channels=spec["in_channels"],
                   out_channels=spec["out_channels"])

    def build(self) -> nn.Module:
        """A freshly initialised network of this spec (never reading pretrained weight files:
        a checkpoint holds every trained weight)."""
        if self.is_detector:
            return build_detector(self.name, in_channels=self.in_channels, options=without_encoder_weights(self.options))
        return build_model(self.name, in_channels=self.in_channels, out_channels=self.out_channels,
                           **without_encoder_weights(self.options))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dict(self.options), "in_channels": self.in_channels,
                "out_channels": self.out_channels}


@dataclass(frozen=True)
class Preprocessing:
    """Intensity normalisation and working pixel size a network was trained with."""

    normalization: str = "gaussian"
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    pixel_size_um: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"normalization": self.normalization, "percentiles": list(self.percentiles),
                "pixel_size_um": self.pixel_size_um}


@dataclass
class TrainingState:
    """What ``--resume`` needs besides the weights."""

    optimizer: dict[str, Any]
    epoch: int
    best_score: float
    torch_rng: torch.Tensor
    numpy_rng: dict[str, Any]
    schedule: dict[str, Any] | None = None
    select_by: str = "metric"
    metrics: list[dict[str, Any]] | None = None
    """The ``metrics.csv`` rows up to ``epoch``: a run killed after its checkpoint but before its
    metrics file was written resumes with every row (None in checkpoints from before)."""


@dataclass
class Checkpoint:
    """One trained network with everything needed to predict with it or to resume training it.

    Attributes
    ----------
    model
        The network's spec.
    weights
        Its state dict.
    task
        The task's constants (:meth:`fluoseg.tasks.Task.state`).
    markers, classes
        Marker vocabulary (model slots in order) and the classes this network predicts.
    preprocess
        Normalisation and working pixel size.
    geometry
        Training patch geometry ``{"input_size", "output_size", "mode"}``.
    training
        Optimiser, schedule, epoch, best score and random states; ``None`` when not saved.
    """

    model: ModelSpec
    weights: dict[str, torch.Tensor]
    task: dict[str, Any]
    markers: tuple[str, ...]
    classes: tuple[str, ...]
    preprocess: Preprocessing = field(default_factory=Preprocessing)
    geometry: dict[str, Any] = field(default_factory=dict)
    training: TrainingState | None = None

    def build_model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The network with these weights, on ``device``, in evaluation mode."""
        model = self.model.build()
        model.load_state_dict(self.weights)
        return model.to(device).eval()

    def build_task(self) -> Any:
        """The task (:class:`fluoseg.tasks.Task`) rebuilt from its stored constants."""
        from fluoseg.tasks import task_from_state  # deferred: the task layer sits above the run format

        return task_from_state(self.task)

    def to_dict(self) -> dict[str, Any]:
        """The version-1 dict layout that is saved."""
        state: dict[str, Any] = {
            "model": self.model.as_dict(), "task": dict(self.task), "model_state": self.weights,
            "markers": list(self.markers), "classes": list(self.classes), "preprocess": self.preprocess.as_dict(),
            "geometry": dict(self.geometry),
        }
        if self.training is not None:
            t = self.training
            state.update(optimizer_state=t.optimizer, epoch=t.epoch, best_score=float(t.best_score),
                         torch_rng=t.torch_rng, numpy_rng=t.numpy_rng, select_by=t.select_by)
            if t.schedule is not None:
                state["schedule_state"] = t.schedule
            if t.metrics is not None:
                state["metrics_rows"] = [dict(row) for row in t.metrics]
        return state

    @classmethod
    def from_dict(cls, state: dict[str, Any], *, path: str | Path | None = None) -> Checkpoint:
        """Read the dict layout (see :meth:`to_dict`).

        Raises
        ------
        FluosegError
            If an entry is missing or malformed.
        """
        try:
            spec = state["model"]
            preprocess = state.get("preprocess", {})
            training = None
            if "optimizer_state" in state:
                training = TrainingState(
                    optimizer=state["optimizer_state"], epoch=int(state["epoch"]),
                    best_score=float(state["best_score"]), torch_rng=state["torch_rng"],
                    numpy_rng=state["numpy_rng"], schedule=state.get("schedule_state"),
                    select_by=state.get("select_by", "metric"), metrics=state.get("metrics_rows"))
            return cls(
                model=ModelSpec(name=spec["name"], options=dict(spec["options"]), in_channels=int(spec["in_channels"]),
                                out_channels=int(spec["out_channels"])),
                weights=dict(state["model_state"]), task=dict(state["task"]), markers=tuple(state["markers"]),
                classes=tuple(state["classes"]),
                preprocess=Preprocessing(
                    normalization=preprocess.get("normalization", "gaussian"),
                    percentiles=tuple(preprocess.get("percentiles", DEFAULT_PERCENTILES)),
                    pixel_size_um=preprocess.get("pixel_size_um")),
                geometry=dict(state.get("geometry", {})), training=training)
        except (KeyError, TypeError, ValueError) as exc:
            raise FluosegError(f"checkpoint lacks or garbles {exc}; the file is damaged or from another program",
                               path=path) from None

    def save(self, path: str | Path) -> Path:
        """Write atomically (a killed save leaves the previous file intact)."""
        return write_checkpoint_dict(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        """Load safely (``weights_only=True``); see :func:`read_checkpoint_dict` for the errors."""
        return cls.from_dict(read_checkpoint_dict(path), path=path)


def write_checkpoint_dict(state: dict[str, Any], path: str | Path) -> Path:
    """Save a checkpoint dict atomically (temporary sibling, then rename), tagged with the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as temporary:
        torch.save({"format": FORMAT, "version": VERSION, **state}, temporary)
    return path


def read_checkpoint_dict(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``) and check its format.

    Raises
    ------
    FluosegError
        If the file is missing, unreadable, or not a fluoseg checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FluosegError("checkpoint not found; is this a fluoseg run directory?", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise FluosegError(f"cannot read checkpoint ({type(exc).__name__}); the file is corrupt or not a fluoseg "
                           "checkpoint", path=path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FluosegError("not a fluoseg checkpoint", path=path)
    if state.get("version", 0) > VERSION:
        raise FluosegError(f"checkpoint format {state['version']} is newer than this fluoseg; upgrade fluoseg", path=path)
    return state


class RunDir:
    """A run directory (layout in the module docstring).

    Parameters
    ----------
    path
        The folder; it need not exist yet (training creates it).
    """

    INDEX = "run.json"
    CONFIG = "config.yaml"
    METRICS = "metrics.csv"
    LOG = "train.log"
    DECODING = "decoding.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory.

        Raises
        ------
        FluosegError
            If ``path`` holds no run index.
        """
        run = cls(path)
        if not (run.path / cls.INDEX).is_file():
            raise FluosegError(f"not a fluoseg run directory (no {cls.INDEX}); train one with 'fluoseg train'",
                               path=run.path)
        return run

    # ---- members and checkpoints ---------------------------------------------------------

    def members(self) -> list[str]:
        """Names of the member networks (sub-directories), in training order."""
        index = self.path / self.INDEX
        try:
            members = json.loads(index.read_text(encoding="utf-8"))["members"]
        except FileNotFoundError:
            raise FluosegError(f"not a fluoseg run directory (no {self.INDEX})", path=self.path) from None
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise FluosegError(f"{self.INDEX} is damaged; retrain or restore it", path=index) from None
        if not members or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise FluosegError(f"{self.INDEX} is damaged; retrain or restore it", path=index)
        return members

    def write_index(self, members: Sequence[str]) -> None:
        """Record the member networks (written when a run starts)."""
        write_text_atomically(self.path / self.INDEX, json.dumps({"members": list(members)}, indent=1))

    def member_dir(self, member: str) -> Path:
        return self.path / member

    def checkpoint_path(self, member: str, which: str = "best") -> Path:
        if which not in CHECKPOINTS:
            raise FluosegError(f"unknown checkpoint {which!r}; use one of {list(CHECKPOINTS)}")
        return self.member_dir(member) / f"{which}.pt"

    def load(self, member: str, which: str = "best") -> Checkpoint:
        """A member's ``best`` or ``last`` checkpoint."""
        return Checkpoint.load(self.checkpoint_path(member, which))

    def load_all(self, which: str = "best") -> list[Checkpoint]:
        """The checkpoints of every member, in order, with their tuned decoding parameters applied."""
        checkpoints = []
        for member in self.members():
            checkpoint = self.load(member, which)
            tuned = self.decoding(member)
            if tuned:
                checkpoint.task = {**checkpoint.task, **tuned["parameters"]}
            checkpoints.append(checkpoint)
        return checkpoints

    def decoding(self, member: str) -> dict[str, Any] | None:
        """A member's tuned decoding record (``parameters``, ``objective``, ``value``, ...), if tuned."""
        path = self.member_dir(member) / self.DECODING
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            dict(record["parameters"])
        except (OSError, ValueError, KeyError, TypeError):
            raise FluosegError("damaged decoding record; run 'fluoseg tune' again or delete it", path=path) from None
        return record

    def write_decoding(self, member: str, record: dict[str, Any]) -> Path:
        """Store a member's tuned decoding record (``parameters`` is what the task takes)."""
        return write_json_atomically(self.member_dir(member) / self.DECODING, record)

    def save(self, member: str, which: str, checkpoint: Checkpoint) -> Path:
        return checkpoint.save(self.checkpoint_path(member, which))

    def can_resume(self, member: str) -> bool:
        """Whether the member has a ``last.pt`` to resume from."""
        return self.checkpoint_path(member, "last").is_file()

    # ---- configuration -----------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    def read_config(self) -> dict[str, Any]:
        """The resolved configuration the run was started with (a plain dict, ``split`` included)."""
        if not self.config_path.is_file():
            raise FluosegError(f"not a fluoseg run directory (no {self.CONFIG}); train one with 'fluoseg train'",
                               path=self.path)
        try:
            content = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            raise FluosegError("damaged run configuration; restore it or retrain", path=self.config_path) from None
        return content if isinstance(content, dict) else {}

    def split(self) -> dict[str, list[str]]:
        """The train/val/test sample ids the run was trained with."""
        split = self.read_config().get("split") or {}
        return {role: list(split.get(role) or []) for role in ("train", "val", "test")}

    def start(self, resolved: dict[str, Any], members: Sequence[str], *, resume: bool, overwrite: bool,
              upgrade: Callable[[dict[str, Any]], dict[str, Any]] = lambda previous: previous) -> None:
        """Claim the folder for training: record the config and members, or check them on resume.

        Parameters
        ----------
        resolved
            The run's resolved configuration (``split`` included).
        members
            Member network names.
        resume
            Continue a run: its stored config must equal ``resolved`` (after ``upgrade``,
            which fills in keys added to the schema since the run started).
        overwrite
            Replace a non-empty folder's run index and config (checkpoints are replaced as
            the new run writes them).

        Raises
        ------
        FluosegError
            Nothing to resume, a changed config on resume, a non-empty folder without
            ``overwrite``, or a path that is a file.
        """
        if self.path.exists() and not self.path.is_dir():
            raise FluosegError("the run directory path is a file; choose another --out", path=self.path)
        if resume:
            if not self.config_path.is_file():
                raise FluosegError(f"nothing to resume: no {self.CONFIG} here; start without --resume", path=self.path)
            if upgrade(self.read_config()) != resolved:
                raise FluosegError("the configuration differs from the one this run started with; "
                                   "resume with the same config or start a new run", path=self.path)
            return
        if self.path.exists() and any(self.path.iterdir()) and not overwrite:
            raise FluosegError("run directory exists and is not empty; pass --resume to continue it or --overwrite "
                               "to replace it", path=self.path)
        if self.path.exists() and overwrite:
            for stale in (self.INDEX, self.CONFIG):
                (self.path / stale).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.config_path, yaml.safe_dump(resolved, sort_keys=False))
        self.write_index(members)

    # ---- progress -----------------------------------------------------------------------

    def metrics(self, member: str) -> list[dict[str, str]]:
        """Rows of a member's ``metrics.csv`` (strings, as written); empty before the first epoch."""
        path = self.member_dir(member) / self.METRICS
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def write_metrics(self, member: str, rows: Sequence[dict[str, Any]]) -> Path:
        return write_csv_atomically(self.member_dir(member) / self.METRICS, rows)

    def is_finished(self, epochs: int) -> bool:
        """Whether every member logged epoch ``epochs`` (``metrics.csv`` is written last in an epoch)."""
        if not (self.path / self.INDEX).is_file():
            return False
        return all(max((int(r["epoch"]) for r in self.metrics(m)), default=0) >= epochs for m in self.members())

    def train_seconds(self) -> float:
        """Summed epoch wall times of all members (so resumed runs add up)."""
        return sum(float(r["seconds"]) for m in self.members() for r in self.metrics(m))

    def parameter_count(self, which: str = "best") -> int:
        """Trainable-size parameters of all members (float tensors, batch-norm statistics left out)."""
        return sum(int(v.numel()) for c in self.load_all(which) for k, v in c.weights.items()
                   if v.is_floating_point() and "running_" not in k)
