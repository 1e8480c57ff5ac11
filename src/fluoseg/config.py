"""Validated configuration for training runs.

A run is described by one YAML file with the sections ``data``, ``task``, ``model``,
``preprocess`` and ``train``. Every section is a pydantic model that forbids unknown
keys, so a typo such as ``epoch:`` is an error naming the key instead of a silent default.
Relative paths are resolved against the folder of the YAML file that contains them.

This module holds schemas only and imports no torch: loading a YAML file is fast and
needs no network library. Names that registries own (``model.name``, ``train.loss``,
``instance.method``) are plain strings here and are checked, with the same one-line errors,
when training starts (:func:`fluoseg.train.trainer.check_names`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from fluoseg.data.normalize import DEFAULT_PERCENTILES, NormalizationName
from fluoseg.errors import FluosegError

TaskName = Literal["semantic", "instance", "regression"]
TASK_NAMES: tuple[str, ...] = get_args(TaskName)
"""Values of ``task``: what a run learns (see :mod:`fluoseg.tasks`)."""

InitHead = Literal["auto", "fresh", "copy", "shifted-sigmoid"]
HEAD_MODES: tuple[str, ...] = get_args(InitHead)
"""Values of ``model.init_head`` (see :mod:`fluoseg.train.transfer`)."""

Trainable = Literal["all", "excite", "head", "excite+head"]
TRAINABLE: tuple[str, ...] = get_args(Trainable)
"""Values of ``model.trainable``: which parameters training updates (see :mod:`fluoseg.models.trainable`)."""

OptimizerName = Literal["adam", "sgd"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
ScheduleName = Literal["none", "step", "cosine", "plateau"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
"""Values of ``train.optimizer`` and ``train.schedule`` (see :mod:`fluoseg.train.optim`)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitConfig(_Section):
    """How samples are split into train/val/test, always by sample or group, never by patch.

    Either name the validation/test sample (or group) ids, or give fractions, in which case
    groups are shuffled with ``seed`` and assigned whole.
    """

    val: list[str] | None = None
    test: list[str] | None = None
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0


def _no_nul(value: Any) -> Any:
    """Paths with a NUL character cannot exist on any file system; say so instead of crashing."""
    items = value if isinstance(value, list) else [value]
    if any(item is not None and "\x00" in str(item) for item in items):
        raise ValueError("a path contains a NUL character; fix the path")
    return value


class DataConfig(_Section):
    """Where the samples come from and which of their markers and classes the model uses.

    ``extra_train`` lists further manifests whose samples are always training samples, e.g.
    artificial images from ``fluoseg synth nuclei``.
    """

    manifest: Path
    extra_train: list[Path] = Field(default_factory=list)
    classes: list[str] | None = None
    markers: list[str] | None = None
    split: SplitConfig = SplitConfig()

    _paths = field_validator("manifest", "extra_train", mode="before")(_no_nul)


class ModelConfig(_Section):
    """Architecture by registry name plus its options (see ``fluoseg.models``).

    ``init_from`` starts training from the weights of an earlier run (e.g. an in-silico
    labelling pretraining): every tensor of the network body whose name and shape match is
    copied; ``init_head`` says what happens to the output layer: ``fresh`` (new head),
    ``copy``, ``shifted-sigmoid`` (the ISL paper's eq. 1 from a regression run) or ``auto``
    (see :mod:`fluoseg.train.transfer`).

    ``trainable`` says which parameters training updates: ``all`` (default), ``excite``
    (only the Marker Excite and marker input layers: the MS-ME paper's cheap adaptation
    to new tissue, usually with ``init_from``), ``head`` (the output layer) or
    ``excite+head``. Everything else is frozen: no gradient, not in the optimiser, and its
    batch-normalisation statistics stay as they were.
    """

    name: str = "unet"
    options: dict[str, Any] = Field(default_factory=dict)
    init_from: Path | None = None
    init_head: InitHead = "auto"
    trainable: Trainable = "all"

    _paths = field_validator("init_from", mode="before")(_no_nul)


class PreprocessConfig(_Section):
    """Intensity normalisation (per whole sample) and resampling to a working pixel size."""

    normalization: NormalizationName = "gaussian"
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    pixel_size_um: float | None = Field(None, gt=0)

    @field_validator("percentiles")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 100.0:
            raise ValueError("percentiles must satisfy 0 <= low < high <= 100")
        return value


class AugmentConfig(_Section):
    """Random augmentation of training patches."""

    flips: bool = True
    rot90: bool = True
    intensity_scale: float = Field(0.1, ge=0.0, lt=1.0)
    intensity_shift: float = Field(0.1, ge=0.0)


class TrainConfig(_Section):
    """Optimisation settings. ``patch_size`` is the network input size, rounded up to one
    the network accepts.

    The defaults are MS-ME's: Adam at a constant learning rate, the log-weighted
    cross-entropy, and the epoch with the best validation score kept as ``best.pt``.

    - ``optimizer``: ``adam`` or ``sgd`` (with ``momentum``, the transfer-learning study's
      0.9 by default); ``weight_decay`` is an L2 penalty for either.
    - ``schedule``: learning rate per epoch; ``step`` multiplies it by ``gamma`` every
      ``step_size`` epochs, ``cosine`` anneals it to 0 over ``epochs``, ``plateau`` multiplies
      it by ``gamma`` after ``patience`` epochs without a better selection value.
    - ``workers``: processes that draw the training batches while the network trains (0: the
      training process draws them itself). Worth it on a GPU, where drawing patches takes longer
      than a step of a small network; batches depend on ``(seed, epoch)`` and the number of
      workers (:mod:`fluoseg.train.batches`).
    - ``select_by``: ``best.pt`` is the epoch with the best validation ``metric`` (the task's
      score) or the lowest validation ``loss`` (the study's rule).
    - ``precision``: ``float32`` (default), or ``bfloat16`` mixed precision: the forward pass
      runs under torch's autocast (convolutions and matrix products in bfloat16, output layers
      and losses in float32), weights, gradients and optimiser state stay float32; validation
      predicts in the same precision. ``auto``: bfloat16 where the device computes it natively
      (AMX/AVX-512 BF16 CPUs, recent GPUs), else float32. Pixel tasks only (not detectors).
    - ``loss`` (semantic tasks only): ``ce-log`` (MS-ME), or ``bce``, ``dice``,
      ``bce-dice``, ``jaccard``, ``focal`` built by :func:`fluoseg.tasks.losses.build_semantic_loss`
      with ``loss_options`` (e.g. ``pos_weight: 9``, ``eps: 1``, ``mode: softmax``). These
      are per-class sigmoid losses unless ``mode: softmax`` (see
      :class:`fluoseg.tasks.SemanticTask`).
    """

    class_mode: Literal["joint", "separate"] = "joint"
    epochs: int = Field(50, ge=1)
    steps_per_epoch: int = Field(25, ge=1)
    batch_size: int = Field(2, ge=1)
    patch_size: int = Field(572, ge=8)
    learning_rate: float = Field(1e-4, gt=0)
    weight_eps: float = Field(1.0, gt=0)
    foreground_sampling: float = Field(0.5, ge=0.0, le=1.0)
    augment: AugmentConfig = AugmentConfig()
    val_tile_size: int | None = Field(None, ge=8)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1)
    workers: int = Field(0, ge=0)
    precision: Literal["float32", "bfloat16", "auto"] = "float32"
    optimizer: OptimizerName = "adam"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: ScheduleName = "none"
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(5, ge=0)
    select_by: Literal["metric", "loss"] = "metric"
    loss: str = "ce-log"
    loss_options: dict[str, Any] = Field(default_factory=dict)


class InstanceConfig(_Section):
    """Instance segmentation targets and decoding (used with ``task: instance``).

    With a detection model (``model.name: maskrcnn`` or ``lacss``) ``method`` is not used;
    ``supervision`` says what the detector learns from (``full``: the instance labels;
    ``points``, LACSS only: one point per object plus the foreground mask), ``min_score`` is
    the lowest detection score kept, ``threshold`` the mask probability of an object pixel,
    ``min_size`` its fewest pixels and ``tile_overlap`` the overlap (pixels) of the tiles a
    large image is cut into (more than the largest object).

    ``w0``/``sigma`` weight the ``border`` method's loss by Ronneberger et al.'s separation
    term; ``gap_weight`` (with ``sigma``) does the same for the ``distance`` method's losses
    (0, the default: unweighted, as in the in-silico-labelling paper).
    """

    method: str = "border"
    supervision: Literal["full", "points"] = "full"
    min_score: float = Field(0.5, ge=0.0, le=1.0)
    tile_overlap: int = Field(64, ge=0)
    w0: float = Field(10.0, ge=0.0)
    sigma: float = Field(5.0, gt=0.0)
    erosion: int = Field(1, ge=1)
    alpha: float = Field(1.0, ge=0.0)
    gap_weight: float = Field(0.0, ge=0.0)
    h: float = Field(1.0, gt=0.0)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    min_size: int = Field(10, ge=0)
    target_diameter: float | None = Field(None, gt=0.0)


class RegressionConfig(_Section):
    """In-silico labelling (``task: regression``): markers to predict from the other channels."""

    targets: list[str] = Field(default_factory=list)
    loss: Literal["l1", "l2"] = "l1"


class RunConfig(_Section):
    """A whole training run."""

    data: DataConfig
    task: TaskName = "semantic"
    instance: InstanceConfig = InstanceConfig()
    regression: RegressionConfig = RegressionConfig()
    model: ModelConfig = ModelConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    train: TrainConfig = TrainConfig()
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        """The YAML file the config was loaded from (``None`` when built in code)."""
        return self._source

    @model_validator(mode="after")
    def _loss_fits_task(self) -> RunConfig:
        if self.train.loss != "ce-log" and self.task != "semantic":
            raise ValueError(f"train.loss {self.train.loss!r} applies to task semantic only; "
                             f"task {self.task!r} has its own loss")
        return self


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line :class:`FluosegError`."""
    path = Path(path)
    try:
        if not path.is_file():
            raise FluosegError("file not found; check the path", path=path)
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:  # a name too long, a NUL in the name, permissions
        raise FluosegError(f"cannot read this file ({getattr(exc, 'strerror', None) or exc}); check the path",
                           path=path) from None
    except UnicodeDecodeError:
        raise FluosegError("not a UTF-8 text file; save the YAML as UTF-8", path=path) from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise FluosegError(f"not valid YAML{line}; fix the syntax", path=path) from None
    except RecursionError:
        raise FluosegError("YAML nested too deeply; flatten the document", path=path) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!timestamp 2020-13-45, !!float xyz
        raise FluosegError(f"a YAML value cannot be read ({exc}); fix or quote it", path=path) from None
    if not isinstance(content, dict):
        raise FluosegError("expected a YAML mapping of keys to values at the top level", path=path)
    return content


def format_validation_error(error: ValidationError) -> str:
    """The first problem of a pydantic error as ``key.path: message``."""
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown key {location!r}; remove it or check its spelling"
    if first["type"] == "missing":
        return f"missing required key {location!r}"
    message = first["msg"].removeprefix("Value error, ")
    return f"{location}: {message}"


def load_config(path: str | Path) -> RunConfig:
    """Load and validate a run configuration; relative paths resolve against its folder.

    Raises
    ------
    FluosegError
        For a missing file, invalid YAML, an unknown key or an invalid value.
    """
    path = Path(path)
    raw = read_yaml(path)
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise FluosegError(format_validation_error(exc), path=path) from None
    except RecursionError:
        raise FluosegError("the configuration is nested too deeply; check its structure", path=path) from None
    if not config.data.manifest.is_absolute():
        config.data.manifest = (path.parent / config.data.manifest).resolve()
    config.data.extra_train = [p if p.is_absolute() else (path.parent / p).resolve() for p in config.data.extra_train]
    if config.model.init_from is not None and not config.model.init_from.is_absolute():
        config.model.init_from = (path.parent / config.model.init_from).resolve()
    config._source = path
    return config


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """A plain, YAML-ready dict of a config (paths as strings)."""
    return config.model_dump(mode="json")


def upgrade_config_dict(previous: dict[str, Any]) -> dict[str, Any]:
    """A stored run config with ``train`` and ``model`` keys added to the schema since then set to their defaults.

    A run started before a key existed was trained with that key's default behaviour, so it
    resumes under a config that leaves the key at its default.
    """
    if not isinstance(previous, dict) or not isinstance(previous.get("train"), dict):
        return previous
    upgraded = {**previous, "train": {**TrainConfig().model_dump(mode="json"), **previous["train"]}}
    if isinstance(previous.get("model"), dict):
        upgraded["model"] = {**ModelConfig().model_dump(mode="json"), **previous["model"]}
    return upgraded
