"""The training loop: patches in, checkpoints and a metrics table out, resumable.

Run directory layout::

    RUN_DIR/config.yaml      resolved configuration
    RUN_DIR/run.json         member networks (one joint model, or one per class)
    RUN_DIR/<member>/metrics.csv, best.pt, last.pt

``last.pt`` is written atomically at the end of every epoch with the model, optimiser,
learning-rate schedule, epoch, best selection value and every random-number-generator
state, so ``--resume`` continues a killed run exactly where its last finished epoch left
it: a resumed run produces the same weights as an uninterrupted one.

``metrics.csv`` has one row per epoch: ``train_loss``, the task's validation scores
(``val_*``, ``val_score``), ``val_loss`` (the training loss of the task on the validation
samples, see :meth:`Trainer.validate`), the learning rate ``lr`` used in the epoch, and
``best`` (1 where ``best.pt`` was written: best ``val_score``, or lowest ``val_loss`` with
``train.select_by: loss``).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from fluoseg.config import RunConfig, config_to_dict
from fluoseg.data.augment import Augmenter
from fluoseg.data.dataset import PatchSampler, PreparedSample, prepare_sample
from fluoseg.data.manifest import Manifest, load_manifest
from fluoseg.data.split import Split, split_samples
from fluoseg.device import resolve_device, set_threads
from fluoseg.errors import FluosegError
from fluoseg.infer import RUN_INDEX, make_batch_predictor
from fluoseg.io import write_csv_atomically, write_text_atomically
from fluoseg.markers import MarkerPanel
from fluoseg.models import build_model, model_spec
from fluoseg.tasks import InstanceTask, RegressionTask, SemanticTask, Task
from fluoseg.tiling import geometry_for, predict_tiled
from fluoseg.train.checkpoint import load_checkpoint, save_checkpoint
from fluoseg.train.optim import build_optimizer, build_schedule
from fluoseg.train.transfer import transfer_weights


@dataclass(frozen=True)
class MemberPlan:
    """One network to train: its sub-directory and the classes it predicts."""

    name: str
    classes: tuple[str, ...]


def plan_members(classes: Sequence[str], class_mode: str) -> list[MemberPlan]:
    """One joint network for all classes, or one binary network per class (MS-ME's choice)."""
    if class_mode == "separate":
        return [MemberPlan(name=c, classes=(c,)) for c in classes]
    return [MemberPlan(name="model", classes=tuple(classes))]


def make_task(config: RunConfig, classes: Sequence[str]) -> Task:
    """The task a config describes, for the classes of one member network."""
    if config.task == "instance":
        return InstanceTask(**config.instance.model_dump(), weight_eps=config.train.weight_eps)
    if config.task == "regression":
        return RegressionTask(config.regression.targets, loss=config.regression.loss,
                              normalization=config.preprocess.normalization, percentiles=config.preprocess.percentiles)
    return SemanticTask(classes, weight_eps=config.train.weight_eps, loss=config.train.loss,
                        loss_options=config.train.loss_options)


def resolve_vocabulary(config: RunConfig, manifest: Manifest) -> tuple[MarkerPanel, tuple[str, ...]]:
    """The model's marker panel and classes: from the config, else everything the manifest has."""
    if config.task == "regression":
        targets = tuple(config.regression.targets)
        missing = set(targets) - set(manifest.markers)
        if not targets or missing:
            raise FluosegError(f"regression.targets must name markers of the samples {list(manifest.markers)}; "
                               f"got {list(targets)}", path=manifest.path)
        inputs = [m for m in (config.data.markers or manifest.markers) if m not in targets]
        if not inputs:
            raise FluosegError("no input markers left once the regression targets are removed", path=manifest.path)
        return MarkerPanel(inputs), targets
    panel = MarkerPanel(config.data.markers or list(manifest.markers))
    if config.task == "instance":
        return panel, ("objects",)
    classes = tuple(config.data.classes or manifest.classes)
    if not classes:
        raise FluosegError("no classes to train; list them under 'classes:' in the manifest or data.classes", path=manifest.path)
    unknown = set(classes) - set(manifest.classes)
    if unknown:
        raise FluosegError(f"data.classes {sorted(unknown)} not in the manifest's classes {list(manifest.classes)}", path=manifest.path)
    unknown_markers = set(panel.names) - set(manifest.markers)
    if unknown_markers:
        raise FluosegError(f"data.markers {sorted(unknown_markers)} occur in no sample; the samples have {list(manifest.markers)}",
                           path=manifest.path)
    return panel, classes


class Trainer:
    """Trains the networks of one run directory.

    Parameters
    ----------
    config
        Validated run configuration.
    run_dir
        Output directory.
    split
        Sample ids per role; default from ``config.data.split``.
    progress
        Show progress bars.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, *, split: Split | None = None, progress: bool = True) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.manifest = load_manifest(config.data.manifest)
        self.panel, self.classes = resolve_vocabulary(config, self.manifest)
        s = config.data.split
        self.split = split or split_samples(self.manifest.samples, val=s.val, test=s.test, val_fraction=s.val_fraction,
                                            test_fraction=s.test_fraction, seed=s.seed)
        self.samples = {sample.id: sample for sample in self.manifest.samples}
        extra_ids = []
        for extra in config.data.extra_train:
            for sample in load_manifest(extra).samples:
                if sample.id in self.samples:
                    raise FluosegError(f"sample id {sample.id!r} of an extra_train manifest is already used", path=extra)
                self.samples[sample.id] = sample
                extra_ids.append(sample.id)
        self.split = Split(train=self.split.train + tuple(extra_ids), val=self.split.val, test=self.split.test)
        self.device = resolve_device(config.train.device)
        set_threads(config.train.num_threads)

    def prepare(self, ids: Sequence[str], task: Task) -> list[PreparedSample]:
        """Read and prepare the samples with the given ids."""
        p = self.config.preprocess
        return [
            prepare_sample(self.samples[i], panel=self.panel, task=task, normalization=p.normalization,
                           percentiles=p.percentiles, pixel_size_um=p.pixel_size_um)
            for i in ids
        ]

    def run(self, *, resume: bool = False, overwrite: bool = False) -> Path:
        """Train every member network; returns the run directory."""
        self._claim_run_dir(resume=resume, overwrite=overwrite)
        members = plan_members(self.classes, self.config.train.class_mode)
        for member in members:
            self.train_member(member, resume=resume)
        return self.run_dir

    def _claim_run_dir(self, *, resume: bool, overwrite: bool) -> None:
        config_path = self.run_dir / "config.yaml"
        resolved = config_to_dict(self.config)
        resolved["split"] = {"train": list(self.split.train), "val": list(self.split.val), "test": list(self.split.test)}
        if resume:
            if not config_path.is_file():
                raise FluosegError("nothing to resume: no config.yaml here; start without --resume", path=self.run_dir)
            previous = _with_new_defaults(yaml.safe_load(config_path.read_text()), resolved)
            if previous != resolved:
                raise FluosegError("the configuration differs from the one this run started with; "
                                   "resume with the same config or start a new run", path=self.run_dir)
            return
        if self.run_dir.exists() and any(self.run_dir.iterdir()) and not overwrite:
            raise FluosegError("run directory exists and is not empty; pass --resume to continue it or --overwrite to replace it",
                               path=self.run_dir)
        if self.run_dir.exists() and overwrite:
            for stale in (RUN_INDEX, "config.yaml"):
                (self.run_dir / stale).unlink(missing_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(config_path, yaml.safe_dump(resolved, sort_keys=False))
        members = plan_members(self.classes, self.config.train.class_mode)
        write_text_atomically(self.run_dir / RUN_INDEX, json.dumps({"members": [m.name for m in members]}, indent=1))

    def train_member(self, member: MemberPlan, *, resume: bool = False) -> dict[str, Any]:
        """Train one network; returns its final checkpoint state."""
        cfg = self.config.train
        out_dir = self.run_dir / member.name
        out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)

        task = make_task(self.config, member.classes)
        train_samples = self.prepare(self.split.train, task)
        val_samples = self.prepare(self.split.val, task)
        task.fit([s.targets for s in train_samples])
        model = build_model(self.config.model.name, in_channels=len(self.panel), out_channels=task.output_channels(),
                            **self.config.model.options).to(self.device)
        resuming = resume and (out_dir / "last.pt").is_file()
        if self.config.model.init_from is not None and not resuming:
            report = transfer_weights(model, self.config.model.init_from, task, head=self.config.model.init_head)
            write_text_atomically(out_dir / "init_from.json",
                                  json.dumps(dict(report.as_dict(), run=str(self.config.model.init_from)), indent=1))
        # NHWC weights make the convolutions pick oneDNN/cuDNN's fast kernels (1.4x per training step
        # of the U-Net on 2 CPU cores); done before the first step so a resumed run trains alike.
        model.to(memory_format=torch.channels_last)
        geometry = geometry_for(model, cfg.patch_size)
        val_geometry = geometry_for(model, cfg.val_tile_size or cfg.patch_size)
        optimizer = build_optimizer(model.parameters(), cfg.optimizer, learning_rate=cfg.learning_rate,
                                    momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        schedule = build_schedule(optimizer, cfg.schedule, epochs=cfg.epochs, step_size=cfg.step_size,
                                  gamma=cfg.gamma, patience=cfg.patience)
        a = cfg.augment
        augmenter = Augmenter(flips=a.flips, rot90=a.rot90, intensity_scale=a.intensity_scale,
                              intensity_shift=a.intensity_shift, rng=rng)
        sampler = PatchSampler(train_samples, input_size=geometry.input_size, output_size=geometry.output_size,
                               fill=task.fill, foreground_fraction=cfg.foreground_sampling, augmenter=augmenter, rng=rng)

        rows: list[dict[str, Any]] = []
        start_epoch, best_score = 1, -np.inf
        if resuming:
            state = load_checkpoint(out_dir / "last.pt")
            model.load_state_dict(state["model_state"])
            optimizer.load_state_dict(state["optimizer_state"])
            if "schedule_state" in state:  # checkpoints from before schedules have none (constant rate)
                schedule.load_state_dict(state["schedule_state"])
            torch.set_rng_state(state["torch_rng"])
            rng.bit_generator.state = state["numpy_rng"]
            start_epoch, best_score = state["epoch"] + 1, state["best_score"]
            rows = [row for row in _read_metrics(out_dir / "metrics.csv") if int(row["epoch"]) <= state["epoch"]]

        state: dict[str, Any] = {}
        epochs = range(start_epoch, cfg.epochs + 1)
        bar = tqdm(total=cfg.epochs * cfg.steps_per_epoch, initial=(start_epoch - 1) * cfg.steps_per_epoch,
                   desc=f"train {member.name}", unit="step", disable=not self.progress, dynamic_ncols=True)
        for epoch in epochs:
            started = time.perf_counter()
            learning_rate = schedule.learning_rate
            model.train()
            losses = []
            for _ in range(cfg.steps_per_epoch):
                images, availability, targets = sampler.batch(cfg.batch_size)
                optimizer.zero_grad(set_to_none=True)
                logits = model(torch.as_tensor(images, device=self.device),
                               torch.as_tensor(availability, device=self.device))
                batch_targets = {k: torch.as_tensor(v, device=self.device) for k, v in targets.items()}
                heads = logits if isinstance(logits, (list, tuple)) else [logits]  # deep supervision: one per head
                loss = torch.stack([task.loss(head, batch_targets) for head in heads]).mean()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.4f}")
            scores = self.validate(model, val_samples, task, val_geometry)
            score = scores.pop("score", float("nan"))
            val_loss = scores.pop("loss", float("nan"))
            # Selection value, higher is better: the task's score, or minus the validation loss.
            selection = -val_loss if cfg.select_by == "loss" else score
            improved = not val_samples or selection > best_score
            if improved:
                best_score = selection if val_samples else best_score
            row = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                   **{f"val_{name}": value for name, value in scores.items()}, "val_score": score,
                   "val_loss": val_loss, "lr": learning_rate, "best": int(improved),
                   "seconds": round(time.perf_counter() - started, 3)}
            rows.append(row)
            schedule.step(selection if val_samples else -float(np.mean(losses)))
            state = self._state(model, optimizer, rng, member, task, geometry, epoch, best_score)
            state["schedule_state"] = schedule.state_dict()
            state["select_by"] = cfg.select_by
            if improved:
                save_checkpoint(state, out_dir / "best.pt")
            save_checkpoint(state, out_dir / "last.pt")
            _write_metrics(out_dir / "metrics.csv", rows)
        bar.close()
        return state

    def validate(self, model: torch.nn.Module, samples: Sequence[PreparedSample], task: Task,
                 geometry: Any) -> dict[str, float]:
        """Validation scores pooled over the samples, each predicted whole with tiling and decoded.

        Also returns ``"loss"``: the task's training loss of each whole validation sample,
        averaged over the samples. It costs no extra forward pass: the tiles' raw logits
        are stitched alongside the activated maps (which stay exactly as before), and the
        loss is evaluated once on the stitched logits of the sample.
        """
        if not samples:
            return {}
        model.eval()
        counts = None
        losses = []
        n_activated = task.activated_channels()

        def activate_and_keep_logits(logits: torch.Tensor) -> torch.Tensor:
            return torch.cat([task.activate(logits), logits], dim=1)

        for sample in samples:
            stitched = predict_tiled(make_batch_predictor(model, sample.availability, activate_and_keep_logits),
                                     sample.image, geometry=geometry, out_channels=n_activated + task.output_channels())
            stitched = np.asarray(stitched)
            sample_counts = task.score_counts(task.decode(stitched[:n_activated]), sample.targets)
            counts = sample_counts if counts is None else counts + sample_counts
            losses.append(_whole_sample_loss(task, stitched[n_activated:], sample.targets))
        return {**task.score(counts), "loss": float(np.mean(losses))}

    def _state(self, model, optimizer, rng, member, task, geometry, epoch, best_score) -> dict[str, Any]:
        spec = model_spec(model)
        return {
            "model": {"name": spec["name"], "options": spec["options"], "in_channels": len(self.panel),
                      "out_channels": task.output_channels()},
            "task": task.state(),
            "model_state": model.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "markers": list(self.panel.names),
            "classes": list(member.classes),
            "preprocess": {"normalization": self.config.preprocess.normalization,
                           "percentiles": list(self.config.preprocess.percentiles),
                           "pixel_size_um": self.config.preprocess.pixel_size_um},
            "geometry": {"input_size": geometry.input_size, "output_size": geometry.output_size, "mode": geometry.mode},
            "epoch": epoch,
            "best_score": float(best_score),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": rng.bit_generator.state,
        }


def _whole_sample_loss(task: Task, logits: np.ndarray, targets: dict[str, np.ndarray]) -> float:
    """The task's loss of stitched logits ``(O, [Z], Y, X)`` against a sample's whole targets.

    A stack's z slices form the batch, as they were predicted slice by slice.
    """
    with torch.no_grad():
        if logits.ndim == 3:
            batch_logits = torch.as_tensor(logits)[None]
            batch_targets = {k: torch.as_tensor(v)[None] for k, v in targets.items()}
        else:
            batch_logits = torch.as_tensor(logits).movedim(1, 0)
            batch_targets = {k: torch.as_tensor(v) for k, v in targets.items()}
        return float(task.loss(batch_logits, batch_targets))


def _with_new_defaults(previous: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
    """A run's stored config with train keys added since it started filled in at their defaults.

    A run started before a key existed was trained with that key's default behaviour, so it
    resumes under a config that leaves the key at its default.
    """
    from fluoseg.config import TrainConfig

    if not isinstance(previous, dict) or not isinstance(previous.get("train"), dict):
        return previous
    defaults = TrainConfig().model_dump(mode="json")
    train = dict(previous["train"])
    for key, value in resolved.get("train", {}).items():
        if key not in train and value == defaults.get(key):
            train[key] = value
    return {**previous, "train": train}


_write_metrics = write_csv_atomically  # a module attribute: tests patch it to simulate a kill


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True) -> Path:
    """Train a run from a validated config (the Python entry point behind ``fluoseg train``)."""
    return Trainer(config, run_dir, progress=progress).run(resume=resume, overwrite=overwrite)
