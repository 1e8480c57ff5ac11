"""The training loop: patches in, checkpoints and a metrics table out, resumable.

A run directory (:class:`fluoseg.run.RunDir`) gets the resolved config, the member index,
a ``train.log``, and per member network ``best.pt``, ``last.pt`` and ``metrics.csv``.

``last.pt`` is written atomically at the end of every epoch with the model, optimiser,
learning-rate schedule, epoch, best selection value and every random-number-generator
state, so ``--resume`` continues a killed run exactly where its last finished epoch left
it: a resumed run produces the same weights as an uninterrupted one.

With several processes (``nproc``, or launched by ``torchrun``) the network trains data-parallel
(:mod:`fluoseg.train.distributed`): every rank computes the gradient of its share of each
global batch, and rank 0 alone validates and writes the run directory.

``metrics.csv`` has one row per epoch: ``train_loss``, the task's validation scores
(``val_*``, ``val_score``), ``val_loss`` (the training loss of the task on the validation
samples, see :meth:`Trainer.validate`), the learning rate ``lr`` used in the epoch, and
``best`` (1 where ``best.pt`` was written: best ``val_score``, or lowest ``val_loss`` with
``train.select_by: loss``), the epoch's wall ``seconds`` and the ``validation_seconds`` among them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fluoseg.config import RunConfig, config_to_dict, upgrade_config_dict
from fluoseg.data.augment import Augmenter
from fluoseg.data.dataset import PatchSampler, PreparedSample, prepare_sample
from fluoseg.data.manifest import Manifest, load_manifest
from fluoseg.data.split import Split, split_samples
from fluoseg.device import native_bfloat16, resolve_device, resolve_precision, set_threads
from fluoseg.errors import FluosegError
from fluoseg.io import OutputLock, prepare_output_dir
from fluoseg.markers import MarkerPanel
from fluoseg.models import count_parameters, eval_frozen_normalization, freeze_except, model_names
from fluoseg.models.detection import detector_names
from fluoseg.predictor import keep_output_layers_float32, make_batch_predictor
from fluoseg.run import Checkpoint, ModelSpec, Preprocessing, RunDir, TrainingState
from fluoseg.tasks import ObjectPredictor, Task, make_task
from fluoseg.tiling import TileGeometry, geometry_for, predict_tiled
from fluoseg.train.batches import epoch_batches
from fluoseg.train.distributed import SINGLE, Ranks, free_port, init_process_group, launched_ranks, spawn
from fluoseg.train.optim import build_optimizer, build_schedule
from fluoseg.train.transfer import transfer_weights

logger = logging.getLogger(__name__)


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


def check_names(config: RunConfig, classes: Sequence[str] = ("objects",)) -> Task:
    """Check the registry names of a config (model, loss, instance method) and build its task.

    The config schema holds these names as strings (loading a YAML file imports no torch);
    this is where they are checked, before any data is read.

    Raises
    ------
    FluosegError
        Naming the config file, the key and the accepted names.
    """
    try:
        if config.model.name not in model_names() + detector_names():
            raise FluosegError(f"model.name: unknown model {config.model.name!r}; available: "
                               f"{model_names() + detector_names()}")
        task = make_task(config, classes)
        if isinstance(task, ObjectPredictor) and config.train.precision == "bfloat16":
            raise FluosegError(f"train.precision: bfloat16 is for pixel tasks, not the detector "
                               f"{config.model.name!r} (its losses and box arithmetic expect float32); "
                               "use float32 or auto")
        return task
    except FluosegError as error:
        raise FluosegError(error.message, path=config.source or error.path) from None


def freeze_for(model: torch.nn.Module, config: RunConfig) -> list[torch.nn.Parameter]:
    """Freeze what ``model.trainable`` leaves out; returns the parameters training updates.

    Frozen parameters get ``requires_grad = False`` and are not handed to the optimiser, so
    neither gradients nor weight decay nor Adam's moments can move them.

    Raises
    ------
    FluosegError
        Naming the config file, when the model has no parameters in the scope (e.g.
        ``excite`` on a network without Marker Excite layers).
    """
    try:
        freeze_except(model, config.model.trainable)
    except FluosegError as error:
        raise FluosegError(f"model.trainable: {error.message}", path=config.source or error.path) from None
    return [p for p in model.parameters() if p.requires_grad]


def _check_trainable(config: RunConfig, n_markers: int, task: Task) -> None:
    """Refuse a ``model.trainable`` scope the network lacks before any data is read or written.

    Only built when a scope other than ``all`` is asked for, so ordinary runs pay nothing.
    """
    if config.model.trainable == "all":
        return
    try:
        model = ModelSpec(config.model.name, dict(config.model.options), n_markers, task.output_channels()).build()
    except FluosegError as error:
        raise FluosegError(error.message, path=config.source or error.path) from None
    freeze_for(model, config)


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


@contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Also write fluoseg's log records of this block to ``path`` (the run's ``train.log``)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    package = logging.getLogger("fluoseg")
    previous = package.level
    package.addHandler(handler)
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
        handler.close()


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
        Show progress bars (on rank 0).
    ranks
        This process's rank among data-parallel training processes (default: the only one).
    """

    def __init__(self, config: RunConfig, run_dir: str | Path, *, split: Split | None = None, progress: bool = True,
                 ranks: Ranks = SINGLE) -> None:
        self.config = config
        self.directory = RunDir(run_dir)
        self.ranks = ranks
        self.progress = progress and ranks.main
        self.manifest = load_manifest(config.data.manifest)
        self.panel, self.classes = resolve_vocabulary(config, self.manifest)
        _check_trainable(config, len(self.panel), check_names(config, self.classes))
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
        self.device = ranks.device(resolve_device(config.train.device))
        set_threads(config.train.num_threads)

    @property
    def run_dir(self) -> Path:
        return self.directory.path

    def prepare(self, ids: Sequence[str], task: Task) -> list[PreparedSample]:
        """Read and prepare the samples with the given ids."""
        p = self.config.preprocess
        return [
            prepare_sample(self.samples[i], panel=self.panel, task=task, normalization=p.normalization,
                           percentiles=p.percentiles, pixel_size_um=p.pixel_size_um)
            for i in ids
        ]

    def run(self, *, resume: bool = False, overwrite: bool = False) -> Path:
        """Train every member network; returns the run directory.

        The run directory is checked before anything is written, and locked while training:
        a second process writing it gets a one-line error naming this one. Of several ranks,
        rank 0 claims the directory while the others wait.
        """
        if not self.ranks.main:
            self.ranks.barrier()  # rank 0 has claimed the run folder
            return self.train_members(resume=resume)
        prepare_output_dir(self.directory.path, overwrite=True, what="run folder")  # its kind and permissions
        with OutputLock(self.directory.path, what="run folder"):
            self.claim(resume=resume, overwrite=overwrite)
            self.ranks.barrier()
            return self.train_members(resume=resume)

    def claim(self, *, resume: bool, overwrite: bool) -> None:
        """Record the resolved config and members in the run folder (or check them on ``resume``)."""
        members = plan_members(self.classes, self.config.train.class_mode)
        resolved = config_to_dict(self.config)
        resolved["split"] = {"train": list(self.split.train), "val": list(self.split.val), "test": list(self.split.test)}
        self.directory.start(resolved, [m.name for m in members], resume=resume, overwrite=overwrite,
                             upgrade=upgrade_config_dict)

    def train_members(self, *, resume: bool = False) -> Path:
        """Train every member network of a claimed run folder; returns it."""
        members = plan_members(self.classes, self.config.train.class_mode)
        with _log_to(self.directory.path / RunDir.LOG) if self.ranks.main else nullcontext():
            logger.info("%s %s: %d training, %d validation samples; members %s%s", "resuming" if resume else "training",
                        self.directory.path, len(self.split.train), len(self.split.val), [m.name for m in members],
                        f"; {self.ranks.world} processes" if self.ranks.distributed else "")
            for member in members:
                self.train_member(member, resume=resume)
            logger.info("finished %s", self.directory.path)
        return self.directory.path

    def train_member(self, member: MemberPlan, *, resume: bool = False) -> Checkpoint:
        """Train one network; returns its final checkpoint."""
        cfg = self.config.train
        self.directory.member_dir(member.name).mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)

        task = make_task(self.config, member.classes)
        train_samples = self.prepare(self.split.train, task)
        val_samples = self.prepare(self.split.val, task)
        task.fit([s.targets for s in train_samples])
        spec = ModelSpec(self.config.model.name, dict(self.config.model.options), len(self.panel), task.output_channels())
        model = spec.build().to(self.device)
        spec = ModelSpec.of(model)  # every option, defaults included
        resuming = resume and self.directory.can_resume(member.name)
        head_source = "fresh"
        if self.config.model.init_from is not None and not resuming:
            report = transfer_weights(model, self.config.model.init_from, task, head=self.config.model.init_head)
            report.write(self.directory.member_dir(member.name), source=self.config.model.init_from)
            head_source = report.head
        if self.config.model.trainable == "excite" and head_source == "fresh" and not resuming:
            logger.warning("%s: model.trainable %r keeps a freshly initialised output layer frozen; "
                           "use 'excite+head' unless init_from provides the head", member.name,
                           self.config.model.trainable)
        # NHWC weights make the convolutions pick oneDNN/cuDNN's fast kernels (1.4x per training step
        # of the U-Net on 2 CPU cores); done before the first step so a resumed run trains alike.
        model.to(memory_format=torch.channels_last)
        precision = self.training_precision(task)
        if precision == "bfloat16":
            keep_output_layers_float32(model)  # logits and losses in float32; the head costs little
        trained = freeze_for(model, self.config)
        frozen = self.config.model.trainable != "all"
        logger.info("%s: %d parameters, %d trainable (model.trainable: %s), %s", member.name, count_parameters(model),
                    count_parameters(model, trainable_only=True), self.config.model.trainable, precision)
        geometry = geometry_for(model, cfg.patch_size)
        val_geometry = geometry_for(model, cfg.val_tile_size or cfg.patch_size)
        optimizer = build_optimizer(trained, cfg.optimizer, learning_rate=cfg.learning_rate,
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
            previous = self.directory.load(member.name, "last")
            state = previous.training
            if state is None:
                raise FluosegError("last.pt holds no training state; start a new run", path=self.directory.path)
            model.load_state_dict(previous.weights)
            optimizer.load_state_dict(state.optimizer)
            if state.schedule is not None:  # checkpoints from before schedules have none (constant rate)
                schedule.load_state_dict(state.schedule)
            torch.set_rng_state(state.torch_rng)
            rng.bit_generator.state = state.numpy_rng
            start_epoch, best_score = state.epoch + 1, state.best_score
            rows = (list(state.metrics) if state.metrics is not None else
                    [row for row in self.directory.metrics(member.name) if int(row["epoch"]) <= state.epoch])
            logger.info("%s: resuming after epoch %d", member.name, state.epoch)
        # data-parallel: DDP averages the ranks' gradients; ``model`` stays the bare network
        # (validated, saved) and shares its parameters with the wrapper
        network = self.ranks.wrap(model, find_unused=isinstance(task, ObjectPredictor))
        shard = self.ranks.shard(cfg.batch_size)

        checkpoint = None
        bar = tqdm(total=cfg.epochs * cfg.steps_per_epoch, initial=(start_epoch - 1) * cfg.steps_per_epoch,
                   desc=f"train {member.name}", unit="step", disable=not self.progress, dynamic_ncols=True)
        for epoch in range(start_epoch, cfg.epochs + 1):
            started = time.perf_counter()
            learning_rate = schedule.learning_rate
            model.train()
            if frozen:  # batch-norm statistics of frozen layers must not drift either
                eval_frozen_normalization(model)
            losses = []
            batches = epoch_batches(sampler, cfg.batch_size, cfg.steps_per_epoch, workers=cfg.workers,
                                    seed=(cfg.seed, epoch), pin_memory=self.device.type == "cuda")
            for images, availability, targets in batches:  # the global batch, on every rank
                if self.ranks.distributed:
                    images, availability = images[shard], availability[shard]
                    targets = {k: v[shard] for k, v in targets.items()}
                optimizer.zero_grad(set_to_none=True)
                batch_targets = {k: torch.as_tensor(v, device=self.device) for k, v in targets.items()}
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                    loss = task.batch_loss(network, torch.as_tensor(images, device=self.device),
                                           torch.as_tensor(availability, device=self.device), batch_targets)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{np.mean(losses):.4f}")
            train_loss = self.ranks.mean([float(np.mean(losses))])[0]  # the global batches' loss
            validation_started = time.perf_counter()
            scores = self.ranks.share(self.validate(model, val_samples, task, val_geometry, precision=precision)
                                      if self.ranks.main else None)
            validation_seconds = time.perf_counter() - validation_started
            score = scores.pop("score", float("nan"))
            val_loss = scores.pop("loss", float("nan"))
            # Selection value, higher is better: the task's score, or minus the validation loss.
            selection = -val_loss if cfg.select_by == "loss" else score
            improved = not val_samples or selection > best_score
            if improved:
                best_score = selection if val_samples else best_score
            row = {"epoch": epoch, "train_loss": train_loss,
                   **{f"val_{name}": value for name, value in scores.items()}, "val_score": score,
                   "val_loss": val_loss, "lr": learning_rate, "best": int(improved),
                   "seconds": round(time.perf_counter() - started, 3), "validation_seconds": round(validation_seconds, 3)}
            rows.append(row)
            schedule.step(selection if val_samples else -train_loss)
            checkpoint = Checkpoint(
                model=spec, weights=model.state_dict(), task=task.state(), markers=self.panel.names,
                classes=member.classes, preprocess=self._preprocessing(),
                geometry={"input_size": geometry.input_size, "output_size": geometry.output_size, "mode": geometry.mode},
                training=TrainingState(optimizer=optimizer.state_dict(), epoch=epoch, best_score=float(best_score),
                                       torch_rng=torch.get_rng_state(), numpy_rng=rng.bit_generator.state,
                                       schedule=schedule.state_dict(), select_by=cfg.select_by,
                                       metrics=[dict(r) for r in rows]))
            if self.ranks.main:
                if improved:
                    self.directory.save(member.name, "best", checkpoint)
                self.directory.save(member.name, "last", checkpoint)
                _write_metrics(self.directory, member.name, rows)
            logger.info("%s epoch %d/%d: train loss %.4f, val score %.4f, val loss %.4f, lr %.3g, %.1f s%s",
                        member.name, epoch, cfg.epochs, row["train_loss"], score, val_loss, learning_rate,
                        row["seconds"], " (best)" if improved else "")
        bar.close()
        self.ranks.barrier()  # the next member (or the caller) may read what rank 0 wrote
        return checkpoint if checkpoint is not None else self.directory.load(member.name, "last")

    def training_precision(self, task: Task) -> str:
        """``float32`` or ``bfloat16``: ``train.precision`` resolved for the device (``auto``);
        a detector trains in float32 (:func:`check_names` refuses an explicit ``bfloat16``)."""
        if isinstance(task, ObjectPredictor):
            return "float32"
        precision = resolve_precision(self.config.train.precision, self.device)
        if precision == "bfloat16" and not native_bfloat16(self.device):
            logger.warning("train.precision bfloat16: %s computes bfloat16 by emulation, about 12x slower per step "
                           "than float32 on a CPU without AMX/AVX-512 BF16 (bench/results/train_precision.md); "
                           "use auto or float32", self.device)
        return precision

    def _preprocessing(self) -> Preprocessing:
        p = self.config.preprocess
        return Preprocessing(normalization=p.normalization, percentiles=tuple(p.percentiles),
                             pixel_size_um=p.pixel_size_um)

    def validate(self, model: torch.nn.Module, samples: Sequence[PreparedSample], task: Task,
                 geometry: TileGeometry, *, precision: str = "float32") -> dict[str, float]:
        """Validation scores pooled over the samples, each predicted whole with tiling and decoded.

        Also returns ``"loss"``: the task's training loss of each whole validation sample,
        averaged over the samples. It costs no extra forward pass: the tiles' raw logits
        are stitched alongside the activated maps (which stay exactly as before), and the
        loss is evaluated once on the stitched logits of the sample. ``precision``: the
        network's arithmetic (training's, see :meth:`training_precision`).
        """
        if not samples:
            return {}
        model.eval()
        if isinstance(task, ObjectPredictor):
            return self._validate_objects(model, samples, task, geometry)
        counts = None
        losses = []
        n_activated = task.activated_channels()

        def activate_and_keep_logits(logits: torch.Tensor) -> torch.Tensor:
            return torch.cat([task.activate(logits), logits], dim=1)

        for sample in samples:
            predictor = make_batch_predictor(model, sample.availability, activate_and_keep_logits, precision=precision)
            stitched = predict_tiled(predictor, sample.image, geometry=geometry,
                                     out_channels=n_activated + task.output_channels())
            stitched = np.asarray(stitched)
            sample_counts = task.score_counts(task.decode(stitched[:n_activated]), sample.targets)
            counts = sample_counts if counts is None else counts + sample_counts
            losses.append(_whole_sample_loss(task, stitched[n_activated:], sample.targets))
        return {**task.score(counts), "loss": float(np.mean(losses))}

    def _validate_objects(self, model: torch.nn.Module, samples: Sequence[PreparedSample], task: Task,
                          geometry: TileGeometry) -> dict[str, float]:
        """Validation scores of a detector: each whole sample's objects (tiled as in prediction)
        against its targets, at the task's best score threshold (a ``min_score`` column). A
        detector has no validation loss (it computes losses only in training)."""
        images = [(sample.image, sample.targets) for sample in samples]
        scores = task.validate(model, images, geometry=geometry)  # type: ignore[attr-defined]
        return {**scores, "loss": float("nan")}


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


_write_metrics = RunDir.write_metrics  # a module attribute: tests patch it to simulate a kill


def train(config: RunConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, split: Split | None = None, nproc: int = 1) -> Path:
    """Train a run from a validated config (the Python entry point behind ``fluoseg train``).

    Parameters
    ----------
    config
        Validated run configuration (:func:`fluoseg.config.load_config`).
    run_dir
        Run directory to create (or to continue with ``resume``).
    resume
        Continue an interrupted run from its ``last.pt`` checkpoints.
    overwrite
        Replace an existing, non-empty run directory.
    progress
        Show progress bars.
    split
        Sample ids per role; default from ``config.data.split``.
    nproc
        Data-parallel training processes started here (:mod:`fluoseg.train.distributed`);
        under ``torchrun`` leave it 1: the launcher's processes are used.

    Returns
    -------
    pathlib.Path
        The run directory.

    Raises
    ------
    FluosegError
        For a global batch that the processes cannot share evenly, ``nproc`` under
        ``torchrun``, or a failed training process (its error, in one line).
    """
    launched = launched_ranks()
    if launched is not None:
        if nproc > 1:
            raise FluosegError("--nproc starts the training processes itself; under torchrun leave it out")
        _check_shares(config, launched.world)
        trainer = Trainer(config, run_dir, split=split, progress=progress, ranks=launched)
        return _in_process_group(trainer, launched, None, resume=resume, overwrite=overwrite)
    if nproc <= 1:
        return Trainer(config, run_dir, split=split, progress=progress).run(resume=resume, overwrite=overwrite)
    _check_shares(config, nproc)
    trainer = Trainer(config, run_dir, split=split, progress=False)  # config and data checked before any process starts
    prepare_output_dir(trainer.directory.path, overwrite=True, what="run folder")
    with OutputLock(trainer.directory.path, what="run folder"):
        trainer.claim(resume=resume, overwrite=overwrite)
        spawn(_train_rank, nproc, (nproc, f"tcp://127.0.0.1:{free_port()}", config, str(run_dir), split, resume,
                                   progress))
    return trainer.directory.path


def _check_shares(config: RunConfig, world: int) -> None:
    if config.train.batch_size % world:
        raise FluosegError(f"train.batch_size {config.train.batch_size} is the global batch, shared out evenly by "
                           f"{world} processes; make it a multiple of {world}", path=config.source)


def _train_rank(rank: int, world: int, address: str, config: RunConfig, run_dir: str, split: Split | None,
                resume: bool, progress: bool) -> None:
    """One spawned training process (the run folder is claimed and locked by the parent)."""
    ranks = Ranks(rank=rank, world=world, local_rank=rank)
    trainer = Trainer(config, run_dir, split=split, progress=progress, ranks=ranks)
    _in_process_group(trainer, ranks, address, resume=resume, overwrite=False, claimed=True)


def _in_process_group(trainer: Trainer, ranks: Ranks, address: str | None, *, resume: bool, overwrite: bool,
                      claimed: bool = False) -> Path:
    import torch.distributed as dist

    init_process_group(ranks, trainer.device, address)
    try:
        if claimed:
            return trainer.train_members(resume=resume)
        return trainer.run(resume=resume, overwrite=overwrite)
    finally:
        dist.destroy_process_group()
