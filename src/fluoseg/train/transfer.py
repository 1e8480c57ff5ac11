"""Start a network from an earlier run's weights (``model.init_from``), e.g. after ISL pretraining.

Every tensor of the earlier run's best checkpoint whose name and shape match is copied, except
the output layer(s), which :func:`transfer_weights` treats by ``model.init_head``:

- ``"fresh"``: the output layer keeps its random initialisation (a new head);
- ``"copy"``: it is copied like the rest (fine-tuning the same task on new data);
- ``"shifted-sigmoid"``: the in-silico-labelling paper's transfer (its eq. 1). A network
  pretrained to predict a fluorescence channel ``x`` keeps its output layer, and the
  segmentation probability starts as ``f(x) = 1 / (1 + exp(-(x - shift)))``: the pretrained
  intensity prediction, centred on the middle of its range. ``shift`` is 0.5 for targets
  normalised to [0, 1] (``normalization: percentile``, the paper's set-up) and 0 for
  Gaussian-normalised targets (their mean). It is applied by lowering the output bias by
  ``shift``, which is the same function and the same gradients as a shifted activation, so
  training, tiling and prediction need nothing else. The paper prints ``exp(x - 0.5)``, a
  decreasing function that would start bright nuclei at probability < 0.5; the sign is read
  as a typo.
- ``"auto"`` (default): ``shifted-sigmoid`` from a regression run into a task whose outputs
  include as many sigmoid channels as the run predicted channels; ``copy`` when the earlier
  run had the same task and output layer shape; ``fresh`` otherwise.

Under ``shifted-sigmoid`` only the sigmoid channels (``Task.sigmoid_channels``: a semantic
task's per-class logits, the distance method's foreground logit) take the pretrained rows;
other output channels (the distance map) stay fresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fluoseg.config import HEAD_MODES
from fluoseg.errors import FluosegError
from fluoseg.io import write_json_atomically
from fluoseg.run import RunDir
from fluoseg.tasks import Task

REPORT_FILE = "init_from.json"
"""What :func:`transfer_weights` did, written into the member's folder of the new run."""


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer_weights` did.

    Attributes
    ----------
    copied, total
        Tensors taken from the earlier run, and tensors of the new network.
    head
        How the output layer was initialised (``"fresh"``, ``"copy"`` or ``"shifted-sigmoid"``).
    shift
        The sigmoid's centre under ``"shifted-sigmoid"`` (``None`` otherwise).
    """

    copied: int
    total: int
    head: str
    shift: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"copied": self.copied, "total": self.total, "head": self.head, "shift": self.shift}

    def write(self, folder: Path, *, source: Path) -> Path:
        """Record the report (and the source run) as ``init_from.json`` in ``folder``."""
        return write_json_atomically(Path(folder) / REPORT_FILE, dict(self.as_dict(), run=str(source)))


def output_parameter_names(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Parameter-name prefixes of the model's output convolution(s), mapped to the layers."""
    layers = getattr(model, "output_layers", None)
    if layers is None:
        raise FluosegError(f"{type(model).__name__} does not name its output layers (output_layers()); "
                           "init_from cannot tell its head from its body")
    by_identity = {id(module): name for name, module in model.named_modules()}
    return {by_identity[id(layer)]: layer for layer in layers()}


def sigmoid_shift(source_task: dict[str, Any]) -> float:
    """Centre of a regression run's normalised target range: 0.5 for [0, 1], 0 for z-scores."""
    return 0.5 if source_task.get("normalization") == "percentile" else 0.0


def resolve_head_mode(requested: str, source_task: dict[str, Any], task: Task, *, same_shape: bool) -> str:
    """The head initialisation ``requested`` means for this pair of tasks (see the module docstring).

    Raises
    ------
    FluosegError
        If ``requested`` is unknown, or cannot apply to these tasks.
    """
    if requested not in HEAD_MODES:
        raise FluosegError(f"unknown model.init_head {requested!r}; use one of {', '.join(HEAD_MODES)}")
    regression_outputs = len(source_task.get("targets", [])) if source_task.get("name") == "regression" else 0
    fits_sigmoid = regression_outputs > 0 and regression_outputs == len(task.sigmoid_channels())
    if requested == "shifted-sigmoid" and not fits_sigmoid:
        raise FluosegError(
            "model.init_head 'shifted-sigmoid' needs an init_from run of task 'regression' that predicts as many "
            f"channels as this task has sigmoid outputs ({len(task.sigmoid_channels())}, the run predicts "
            f"{regression_outputs}); use init_head 'fresh'")
    if requested == "copy" and not same_shape:
        raise FluosegError("model.init_head 'copy' needs the init_from run's output layer to have this task's number "
                           "of outputs; use init_head 'fresh'")
    if requested != "auto":
        return requested
    if fits_sigmoid:
        return "shifted-sigmoid"
    return "copy" if same_shape and source_task.get("name") == task.name else "fresh"


def transfer_weights(model: nn.Module, run_dir: Path, task: Task, *, head: str = "auto") -> TransferReport:
    """Copy an earlier run's weights into ``model`` (body always, output layer by ``head``).

    Parameters
    ----------
    model
        The new network, freshly initialised; changed in place.
    run_dir
        A fluoseg run directory (``run.json``); its first member's ``best.pt`` is used.
    task
        The new network's task (which output channels are sigmoid logits).
    head
        ``"auto"``, ``"fresh"``, ``"copy"`` or ``"shifted-sigmoid"`` (module docstring).

    Raises
    ------
    FluosegError
        If ``run_dir`` is not a run, no body tensor matches (another architecture), or ``head``
        cannot apply.
    """
    if not (Path(run_dir) / RunDir.INDEX).is_file():
        raise FluosegError(f"init_from is not a fluoseg run directory (no {RunDir.INDEX})", path=run_dir)
    earlier = RunDir(run_dir)
    checkpoint = earlier.load(earlier.members()[0], "best")
    source, source_task = checkpoint.weights, checkpoint.task
    own = model.state_dict()
    heads = output_parameter_names(model)
    head_keys = {f"{prefix}.{p}" for prefix, layer in heads.items() for p, _ in layer.named_parameters()}
    body = {k: v for k, v in source.items() if k in own and k not in head_keys and own[k].shape == v.shape}
    if not body:
        raise FluosegError("init_from: no weight matches this model; use a run of the same architecture",
                           path=run_dir)
    same_shape = all(k in source and source[k].shape == own[k].shape for k in head_keys)
    mode = resolve_head_mode(head, source_task, task, same_shape=same_shape)
    own.update(body)
    copied, shift = len(body), None
    if mode == "copy":
        own.update({k: source[k] for k in head_keys})
        copied += len(head_keys)
    elif mode == "shifted-sigmoid":
        shift = sigmoid_shift(source_task)
        channels = list(task.sigmoid_channels())
        for prefix in heads:
            weight, bias = source.get(f"{prefix}.weight"), source.get(f"{prefix}.bias")
            if weight is None or bias is None or weight.shape[1:] != own[f"{prefix}.weight"].shape[1:]:
                raise FluosegError(f"init_from: the run's output layer {prefix!r} does not fit this model's; "
                                   "use init_head 'fresh'", path=run_dir)
            own[f"{prefix}.weight"] = own[f"{prefix}.weight"].clone()
            own[f"{prefix}.bias"] = own[f"{prefix}.bias"].clone()
            own[f"{prefix}.weight"][channels] = weight
            own[f"{prefix}.bias"][channels] = bias - shift
            copied += 2
    model.load_state_dict(own)
    return TransferReport(copied=copied, total=len(own), head=mode, shift=shift)

