#!/usr/bin/env python
"""fluoseg against Cellpose 3 and StarDist 2D on DSB 2018 fluorescence nuclei (issues 5 and 11).

Accuracy under an equal wall-clock training budget, inference speed and memory in the scored
configuration, fluoseg's scaling from 1k^2 to 16k^2 with Zarr in and out, and a FLOP/s reference.

* **Peers**, each in its own venv under ``bench/work/peers/`` (never in fluoseg's .venv):
  Cellpose 3.1.1.3 (classic CNN, CPU torch 2.13.0 pinned through ``constraints.txt``) and
  StarDist 0.9.2 with tensorflow-cpu. Their jobs (``bench/peers/*_job.py``) run inside those
  venvs and write label TIFFs and JSON; all scoring happens here, in fluoseg's venv, with
  ``fluoseg.metrics.instance.instance_rows`` on the same test images.
* **Training** (issue 11: each tool as its authors would run it): the same training (and
  validation) images of the fixed split ``bench/splits/dsb2018_fluo.json``, from scratch, the
  same wall-clock budget (25 min) counted from process start (imports and data preparation
  included), the same thread count, one tool at a time, all of the budget used: fluoseg and
  StarDist train until the budget (best checkpoint on validation); Cellpose plans its
  ``train_seg`` epochs from a timed probe so that its learning-rate decay (only for
  ``n_epochs > 100``) happens inside the budget, with diameter rescaling on. fluoseg trains
  the ``bench/nuclei.py`` variant with the best VALIDATION score (``--fluoseg-variant``).
* **Tuning** (stage ``tune``, outside the budget for every tool): each tool's decoding is
  calibrated on the validation images - ``fluoseg tune``, Cellpose's ``flow_threshold`` and
  ``cellprob_threshold``, StarDist's ``optimize_thresholds`` - and used at prediction.
* **Speed**: the same synthetic images for every tool (a mosaic of test images, tiled to
  2048^2 and 8192^2, uint8), numpy in memory -> instance labels in memory, in the scored
  configuration (fluoseg's diameter mode, the tuned decodings, Cellpose at its training-set
  mean diameter, no TTA); timed in rounds, each round running every case once in a fresh
  process (a warm-up on a 512^2 crop, then one run), so the tools' runs are interleaved; the
  median over the rounds, each run split into decoding and the rest; each process's
  ``ru_maxrss`` is its peak resident memory.
* **Scaling** (fluoseg only): Zarr in -> Zarr out from 1k^2 to 16k^2, streamed probabilities
  (``Segmenter.predict_probabilities(out=zarr)``) and ``predict_file`` (labels).
* **FLOPs**: FlopCounterMode on one tile, the tiling overhead, achieved FLOP/s vs measured
  fp32 matmul FLOP/s.
* **Results**: stage ``collect`` writes the per-unit files of ``bench/results/`` (per-image
  scores, per-run times; :mod:`peers_report`), stage ``report`` renders ``peers.md`` and the
  README block from those files alone.

Every stage caches its outputs in the work folder and is skipped when they exist; a training
interrupted midway starts again from scratch (a budget must run in one piece).

Usage::

    .venv/bin/python bench/peers.py --smoke                  # tiny end-to-end run (~20 min, venvs included)
    nohup .venv/bin/python bench/peers.py > bench/work/peers.log 2>&1 &    # the full run (~3 h on 2 quiet cores)
    .venv/bin/python bench/peers.py --stages venvs,data,train,tune,predict,evaluate,collect,report   # or in two halves:
    .venv/bin/python bench/peers.py --stages flops,speed,scaling,collect,report
    .venv/bin/python bench/peers.py --stages report          # peers.md and the README block from bench/results/
    .venv/bin/python bench/peers.py --seed 2 --tools cellpose --stages train,tune,predict,evaluate,collect
        # retrain and rescore one tool of a seed (move WORK/cellpose aside first); the others are kept
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import nuclei
import peers_report
from _common import (
    BENCH,
    DSB2018,
    DSB_MARKER,
    DSB_SPLIT,
    RESULTS,
    ROOT,
    WORK,
    child_env,
    dsb_manifest,
    dsb_split,
    dsb_target_diameter,
    epoch_rows,
    fill_readme_block,
    fluoseg_command,
    git_commit,
    log,
    log_tail,
    pooled_metric,
    read_json,
    read_rows,
    rel,
    run_fluoseg,
    run_logged,
    terminate_child_on_sigterm,
    write_json,
    write_rows,
    write_text,
    write_yaml,
)

JOBS = BENCH / "peers"
PEERS_ROOT = WORK / "peers"          # venvs live here, shared by full and smoke runs
DEFAULT_WORK = PEERS_ROOT / "full"
SEED_RESULTS = peers_report.SEED_RESULTS   # results of the replicate runs (--seed N > 0): seed<N>/
SMOKE_WORK = PEERS_ROOT / "smoke"
CONSTRAINTS = ROOT / "constraints.txt"

TOOLS = peers_report.TOOLS
TUNE_OBJECTIVE = "f1_mean"   # pooled F1 over IoU 0.5:0.95, for fluoseg and Cellpose (StarDist tunes its own way)
PEERS = peers_report.PEERS
PEER_PACKAGES = {
    "cellpose": ["cellpose==3.1.1.3"],             # torch pinned to the CPU 2.13.0 by constraints.txt
    "stardist": ["stardist==0.9.2", "tensorflow-cpu==2.21.0"],  # numpy left to the resolver (2.4.x works)
}
STAGES = ("venvs", "data", "train", "tune", "predict", "evaluate", "flops", "speed", "scaling", "collect", "report")
# a replicate (--seed N > 0) retrains and rescores every tool; speed is the architecture's, measured once
REPLICATE_STAGES = ("venvs", "data", "train", "tune", "predict", "evaluate", "collect")

# ---- settings (full run; smoke overrides below) --------------------------------------------
BUDGET_MINUTES = 25.0       # per tool (issue 11): 3 tools x 25 min of training in a ~3 h full run
THREADS = 2
FLUOSEG_STEPS = 20          # steps per fluoseg epoch: checkpoints every ~30-40 s, so the cut at the budget loses little
STARDIST_STEPS = 50         # steps per StarDist epoch (validation loss + best checkpoint after each)
CELLPOSE_BATCH, CELLPOSE_LR, CELLPOSE_BSIZE = 8, 0.005, 224   # train_seg defaults
SPEED_SIZES = (2048, 8192)
SHIPPED_MODEL, SHIPPED_CASE = peers_report.SHIPPED_MODEL, peers_report.SHIPPED_CASE
WARMUP_SIZE = 512
REPEATS, REPEATS_LARGE = 3, 3              # rounds: median of 3 (fewer where --speed-max-minutes cuts them; recorded)
SCALING_SIZES = (1024, 2048, 4096, 8192, 16384)
MAX_SIZE = 8192             # scaling sizes above this are estimated, not run
LABELS_MAX_SIZE = 4096      # predict_file (labels of the whole image in memory) up to this size
SPEED_MAX_MINUTES = 40.0    # timed runs of one measurement: one Cellpose run at 8192^2 (rescaled x1.5) takes ~30 min
# smoke: Cellpose trains on 48x48 crops one image at a time so that > 100 epochs of one step, and
# so its learning-rate decay, fit the 4 min budget on a shared 2-core machine
SMOKE = {"train": 12, "val": 3, "test": 4, "budget_minutes": 4.0, "fluoseg_steps": 2, "stardist_steps": 5,
         "cellpose_batch": 1, "cellpose_bsize": 48,
         "speed_sizes": (512, 1024), "warmup": 256, "repeats": 2, "repeats_large": 1,
         "scaling_sizes": (256, 512, 1024, 2048), "max_size": 1024, "labels_max_size": 512, "speed_max_minutes": 0.5}

@dataclass
class Settings:
    work: Path
    results: Path
    data: Path
    smoke: bool
    threads: int
    budget_s: float
    fluoseg_variant: str
    fluoseg_variant_why: str
    fluoseg_steps: int
    stardist_steps: int
    cellpose_batch: int
    cellpose_bsize: int
    speed_sizes: tuple[int, ...]
    warmup: int
    repeats: int
    repeats_large: int
    scaling_sizes: tuple[int, ...]
    max_size: int
    labels_max_size: int
    speed_max_minutes: float
    split: dict[str, list[str]] = field(default_factory=dict)
    command: str = ""
    reference: Path | None = None   # the results folder of a second run, to compare with
    seed: int = 0                   # every tool's training seed (initialisation, batches, augmentation)
    tools: tuple[str, ...] = TOOLS  # the tools this invocation trains and scores (--tools)


    def tool_dir(self, tool: str) -> Path:
        return self.work / tool


# ---- subprocesses -----------------------------------------------------------------------------

def venv_python(tool: str) -> Path:
    return PEERS_ROOT / f"venv-{tool}" / "bin" / "python"


def run_job(tool: str, command: str, spec: dict[str, Any], settings: Settings, *, name: str,
            deadline: float | None = None) -> dict[str, Any]:
    """Run ``bench/peers/<tool>_job.py COMMAND`` with a spec; returns its result JSON."""
    jobs = settings.work / "jobs"
    spec = dict(spec, result=str(jobs / f"{name}.result.json"), threads=spec.get("threads", settings.threads))
    Path(spec["result"]).unlink(missing_ok=True)
    write_json(jobs / f"{name}.spec.json", spec)
    python = sys.executable if tool == "fluoseg" else venv_python(tool)
    log_path = settings.work / "logs" / f"{name}.log"
    finished = run_logged([python, JOBS / f"{tool}_job.py", command, jobs / f"{name}.spec.json"], log_path,
                          threads=spec["threads"], peer=tool != "fluoseg", deadline=deadline)
    result = read_json(Path(spec["result"]))
    if finished.code != 0 or result is None:
        raise RuntimeError(f"{tool} {command} failed (exit status {finished.code}); log {rel(log_path)}:\n"
                           f"{log_tail(log_path)}")
    result["job_wall_s"] = finished.seconds
    return result


class StageFailed(Exception):
    pass


def trained(settings: Settings, tool: str) -> dict[str, Any]:
    """A tool's training record; a stage that needs it fails without one."""
    train = read_json(settings.tool_dir(tool) / "train.json")
    if train is None:
        raise StageFailed(f"{tool}: not trained")
    return train


@contextlib.contextmanager
def guarded(settings: Settings, tool: str, stage: str, failures: list[str]):
    """Record a failing tool/stage in ``failures.json`` and carry on with the others."""
    path = settings.work / "failures.json"
    try:
        yield
    except Exception as error:  # noqa: BLE001 - one tool's failure must not stop the others
        log(f"{tool} {stage}: FAILED: {error}")
        record = read_json(path, {})
        record[f"{tool}/{stage}"] = {"error": str(error)[-3000:], "when": datetime.now().isoformat(timespec="seconds")}
        write_json(path, record)
        failures.append(f"{tool}/{stage}")
    else:
        record = read_json(path, {})
        if record.pop(f"{tool}/{stage}", None) is not None:
            write_json(path, record)


# ---- stage: venvs ----------------------------------------------------------------------------

def stage_venvs(settings: Settings, failures: list[str]) -> None:
    versions_path = PEERS_ROOT / "versions.json"
    versions = read_json(versions_path, {})
    for tool in (t for t in PEERS if t in settings.tools):
        with guarded(settings, tool, "venvs", failures):
            venv = PEERS_ROOT / f"venv-{tool}"
            stamp = venv / ".bench-installed"
            wanted = json.dumps(PEER_PACKAGES[tool])
            log_path = PEERS_ROOT / f"install-{tool}.log"
            if not (stamp.is_file() and stamp.read_text() == wanted and venv_python(tool).exists()):
                log(f"{tool}: installing {' '.join(PEER_PACKAGES[tool])} into {rel(venv)} (a few minutes)")
                started = time.time()
                steps = []
                if not venv_python(tool).exists():
                    steps.append([sys.executable, "-m", "venv", "--clear", venv])
                steps.append([venv_python(tool), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
                steps.append([venv_python(tool), "-m", "pip", "install", "--constraint", CONSTRAINTS,
                              *PEER_PACKAGES[tool]])
                for step in steps:
                    if run_logged(step, log_path, threads=settings.threads, peer=True).code != 0:
                        raise RuntimeError(f"{tool}: '{' '.join(map(str, step))}' failed; log {rel(log_path)}:\n"
                                           f"{log_tail(log_path)}")
                write_text(stamp, wanted)
                versions.pop(tool, None)
                write_text(venv / ".bench-install-seconds", f"{time.time() - started:.0f}")
                log(f"{tool}: installed in {time.time() - started:.0f} s")
            if tool not in versions:
                result = run_job(tool, "versions", {}, settings, name=f"versions-{tool}")
                freeze = subprocess.run([venv_python(tool), "-m", "pip", "freeze"], capture_output=True, text=True,
                                        env=child_env(1, peer=True)).stdout.split()
                result.pop("job_wall_s", None)
                seconds = venv / ".bench-install-seconds"
                versions[tool] = {**result, "pip_freeze": freeze, "packages": PEER_PACKAGES[tool],
                                  "install_s": float(seconds.read_text()) if seconds.is_file() else None}
                write_json(versions_path, versions)
            log(f"{tool}: " + ", ".join(f"{k} {v}" for k, v in versions[tool].items()
                                        if k not in ("pip_freeze", "packages", "install_s")))


def fluoseg_versions() -> dict[str, str]:
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("fluoseg", "zarr", "scikit-image", "scipy", "tifffile"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    out["fluoseg_commit"] = git_commit()
    return out


def machine() -> dict[str, Any]:
    # The CPUs this process may run on (what `nproc` prints, without its reading of OMP_NUM_THREADS).
    info: dict[str, Any] = {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform()}
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags)
    with contextlib.suppress(OSError):
        mem = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        info["memory_gib"] = round(int(mem.split()[1]) / 2**20, 1)
    return info


# ---- stage: data -----------------------------------------------------------------------------

def mosaic_base(settings: Settings, size: int = 2048) -> np.ndarray:
    """A size x size uint8 mosaic of 256x256 centre crops of the test images (random flips/rot90)."""
    import tifffile

    rng = np.random.default_rng(0)
    crops = []
    for image_id in read_json(DSB_SPLIT)["test"]:  # the whole test split, also in smoke runs
        image = tifffile.imread(settings.data / "images" / f"{image_id}.tif")
        y, x = (image.shape[0] - 256) // 2, (image.shape[1] - 256) // 2
        crops.append(image[y : y + 256, x : x + 256])
    n = size // 256
    out = np.zeros((size, size), np.uint8)
    for k in range(n * n):
        crop = crops[rng.integers(len(crops))]
        crop = np.rot90(crop, rng.integers(4))
        if rng.integers(2):
            crop = crop[:, ::-1]
        out[(k // n) * 256 : (k // n + 1) * 256, (k % n) * 256 : (k % n + 1) * 256] = crop
    return out


def tiled(base: np.ndarray, rows: slice, size: int) -> np.ndarray:
    """Rows of a size x size image made by repeating ``base`` (mirrored on odd repeats)."""
    b = base.shape[0]
    ys = np.arange(rows.start, min(rows.stop, size))
    xs = np.arange(size)

    def fold(i):
        block, offset = np.divmod(i, b)
        return np.where(block % 2 == 0, offset, b - 1 - offset)

    return base[np.ix_(fold(ys), fold(xs))]


def stage_data(settings: Settings) -> None:
    data = settings.work / "data"
    data.mkdir(parents=True, exist_ok=True)
    manifest = data / "manifest.yaml"
    split = settings.split
    dsb_manifest(manifest, settings.data, split["train"] + split["val"] + split["test"])
    sizes = sorted(set(settings.speed_sizes) | {settings.warmup})
    todo = [s for s in sizes if not (data / f"speed_{s}.npy").is_file()]
    zarr_todo = [s for s in settings.scaling_sizes if s <= settings.max_size and not (data / f"scaling_{s}.zarr").exists()]
    if not todo and not zarr_todo:
        log("data: speed and scaling images present, skipped")
        return
    base = mosaic_base(settings)
    for size in todo:
        np.save(data / f"speed_{size}.npy", tiled(base, slice(0, size), size))
        log(f"data: speed_{size}.npy ({size}x{size} uint8 mosaic of test images)")
    from fluoseg.io import create_output

    for size in zarr_todo:
        with create_output(data / f"scaling_{size}.zarr", shape=(1, size, size), dtype="uint8", axes="CYX",
                           channel_names=[DSB_MARKER], chunks=(1, 1024, 1024), overwrite=True) as out:
            for y in range(0, size, 1024):
                out.array[0, y : y + 1024] = tiled(base, slice(y, y + 1024), size)
        log(f"data: scaling_{size}.zarr ({size}x{size}, chunks 1024x1024)")


# ---- stage: train ----------------------------------------------------------------------------

def choose_fluoseg_variant(requested: str, table: Path = RESULTS / "nuclei.csv") -> tuple[str, str]:
    """The fluoseg variant to train: the one given, else the best on VALIDATION images in
    ``bench/nuclei.py``'s results (``best_val_f1_at_0.5``); test scores never choose (issue 11)."""
    if requested != "auto":
        return requested, "given with --fluoseg-variant"
    if table.is_file():
        rows = [r for r in read_rows(table) if r.get("best_val_f1_at_0.5") not in (None, "", "nan")]
        if rows:
            best = max(rows, key=lambda r: float(r["best_val_f1_at_0.5"]))
            return best["variant"], (f"best validation F1@0.5 in {rel(table)} "
                                     f"({float(best['best_val_f1_at_0.5']):.3f})")
    return "border", f"default (no validation scores in {rel(table)} yet)"


def train_fluoseg(settings: Settings) -> dict[str, Any]:
    """Train bench/nuclei.py's variant until the budget (counted from here, data preparation included)."""
    from fluoseg.run import RunDir

    variant = nuclei.Variant.parse(settings.fluoseg_variant)
    tdir = settings.tool_dir("fluoseg") / variant.name
    run = RunDir(tdir / "run")
    manifest = settings.work / "data" / "manifest.yaml"
    started = time.time()
    deadline = started + settings.budget_s
    diameter = dsb_target_diameter(tdir, settings.data, settings.split["train"]) if variant.scale else None
    artificial = None
    if variant.artificial:  # generated from the training images only; its time counts in the budget
        artificial = nuclei.artificial_images(tdir, manifest, settings.split["train"],
                                              nuclei.SMOKE["artificial"] if settings.smoke else nuclei.N_ARTIFICIAL,
                                              settings.threads)
    config = nuclei.variant_config(variant, manifest=manifest, split=settings.split, artificial=artificial,
                                   diameter=diameter, epochs=100_000, steps=settings.fluoseg_steps,
                                   threads=settings.threads, device="cpu")
    config["train"]["seed"] = settings.seed
    write_yaml(tdir / "train.yaml", config)
    log(f"fluoseg ({variant.name}): training until the budget ({settings.budget_s / 60:.1f} min), "
        f"{settings.fluoseg_steps} steps x batch {nuclei.BATCH} per epoch")
    finished = run_logged(fluoseg_command("train", tdir / "train.yaml", "--out", run.path, "--quiet", "--overwrite"),
                          tdir / "train.log", threads=settings.threads, deadline=deadline)
    wall = time.time() - started
    metrics = epoch_rows(run.path)
    if not finished.stopped and finished.code != 0:
        raise RuntimeError(f"fluoseg train failed (exit status {finished.code}):\n{log_tail(tdir / 'train.log')}")
    if not metrics or not run.checkpoint_path(run.members()[0], "best").is_file():
        raise RuntimeError(f"fluoseg: no epoch finished within the budget of {settings.budget_s:.0f} s; "
                           f"raise --budget-minutes. Log:\n{log_tail(tdir / 'train.log')}")
    best = max(metrics, key=lambda r: float(r["val_score"]))
    epochs = len(metrics)
    return {
        "tool": "fluoseg", "variant": variant.name, "run": str(run.path), "train_wall_s": wall,
        "stopped_at_budget": finished.stopped, "fluoseg_commit": git_commit(),
        "epochs_done": epochs, "steps_done": epochs * settings.fluoseg_steps, "batch_size": nuclei.BATCH,
        "images_seen": epochs * settings.fluoseg_steps * nuclei.BATCH, "patch": nuclei.PATCH,
        "epoch_seconds_median": float(np.median([float(r["seconds"]) for r in metrics])),
        "lost_partial_epoch_s": max(0.0, wall - run.train_seconds()),
        "best_epoch": int(best["epoch"]), "best_val_f1_at_0.5": float(best["val_score"]),
        "train_losses": [float(r["train_loss"]) for r in metrics],
        "loss_first": float(metrics[0]["train_loss"]), "loss_last": float(metrics[-1]["train_loss"]),
        "params": run.parameter_count(),
        "settings": {"model": nuclei.MODEL, "instance": config["instance"], "learning_rate": nuclei.LEARNING_RATE,
                     "steps_per_epoch": settings.fluoseg_steps, "extra_train": config["data"]["extra_train"]},
    }


def stage_train(settings: Settings, failures: list[str]) -> None:
    for tool in settings.tools:
        path = settings.tool_dir(tool) / "train.json"
        if path.is_file():
            log(f"{tool}: training done, skipped ({read_json(path)['train_wall_s'] / 60:.1f} min)")
            continue
        with guarded(settings, tool, "train", failures):
            if tool != "fluoseg" and not venv_python(tool).exists():
                raise StageFailed(f"{tool}: no venv (the venvs stage failed or was not run)")
            load_before = os.getloadavg()
            if tool == "fluoseg":
                result = train_fluoseg(settings)
            else:
                model_dir = settings.tool_dir(tool) / "model"
                if model_dir.exists():
                    shutil.rmtree(model_dir)
                spec = {"data": str(settings.data), "train": settings.split["train"], "val": settings.split["val"],
                        "budget_s": settings.budget_s, "model_dir": str(model_dir), "seed": settings.seed}
                if tool == "cellpose":
                    spec.update(batch_size=settings.cellpose_batch, learning_rate=CELLPOSE_LR,
                                bsize=settings.cellpose_bsize)
                else:
                    spec.update(steps_per_epoch=settings.stardist_steps)
                log(f"{tool}: training until the budget ({settings.budget_s / 60:.1f} min)")
                # the job stops itself at the budget; this deadline only catches a job that does not
                result = run_job(tool, "train", spec, settings, name=f"train-{tool}",
                                 deadline=time.time() + settings.budget_s + 600)
                result["tool"] = tool
            result.update(budget_s=settings.budget_s, threads=settings.threads, load_avg_before=load_before[0],
                          load_avg_after=os.getloadavg()[0], finished=datetime.now().isoformat(timespec="seconds"))
            write_json(path, result)
            log(f"{tool}: trained for {result['train_wall_s'] / 60:.1f} min, {result.get('images_seen', '?')} "
                f"training patches seen")


# ---- stage: tune ------------------------------------------------------------------------------

def tune_fluoseg(settings: Settings, train: dict[str, Any]) -> dict[str, Any]:
    """``fluoseg tune`` (h, threshold, min size) on the run's validation images, as ``bench/train_zoo.py`` does;
    ``fluoseg predict`` and ``Segmenter.load`` then use the stored decoding."""
    from fluoseg.run import RunDir

    run = RunDir.open(train["run"])
    log_path = settings.tool_dir("fluoseg") / "tune.log"
    wall = run_fluoseg(["tune", run.path, "--objective", TUNE_OBJECTIVE, "--rounds", 2, "--quiet", "--device", "cpu"],
                       log_path, threads=settings.threads)
    record = run.decoding(run.members()[0])
    if record is None:
        raise RuntimeError(f"fluoseg tune stored no decoding; log {rel(log_path)}:\n{log_tail(log_path)}")
    return {**record, "wall_s": wall}


def tune_cellpose(settings: Settings, train: dict[str, Any]) -> dict[str, Any]:
    """``flow_threshold`` and ``cellprob_threshold`` on the validation images (``cellpose_job.tune``)."""
    result = run_job("cellpose", "tune", {"data": str(settings.data), "val": settings.split["val"],
                                          "model": train["model"]}, settings, name="tune-cellpose")
    result["wall_s"] = result.pop("job_wall_s")
    return result


def stage_tune(settings: Settings, failures: list[str]) -> None:
    """Post-training calibration on the validation images, outside the training budget for every tool.

    fluoseg: ``fluoseg tune``; Cellpose: ``flow_threshold`` x ``cellprob_threshold``
    (``cellpose_job.tune``); StarDist: its ``optimize_thresholds``, which its training job
    runs after the budget (recorded in its train.json).
    """
    for tool, tune in {"fluoseg": tune_fluoseg, "cellpose": tune_cellpose}.items():
        if tool not in settings.tools:
            continue
        path = settings.tool_dir(tool) / "tune.json"
        if not path.is_file():
            with guarded(settings, tool, "tune", failures):
                log(f"{tool}: tuning the decoding on {len(settings.split['val'])} validation images")
                write_json(path, tune(settings, trained(settings, tool)))
        result = read_json(path)
        if result:
            log(f"{tool}: tuned {result['parameters']} in {result['wall_s']:.0f} s (validation "
                f"{result['objective']} {result['before']:.3f} -> {result['value']:.3f})")


def decoding_spec(settings: Settings, tool: str) -> dict[str, Any]:
    """The tuned thresholds a Cellpose job predicts with (fluoseg and StarDist read theirs from the run)."""
    if tool != "cellpose":
        return {}
    tuned = read_json(settings.tool_dir(tool) / "tune.json")
    if tuned is None:
        raise StageFailed("cellpose: not tuned (run the tune stage)")
    return dict(tuned["parameters"])


def fluoseg_diameter(train: dict[str, Any]) -> str:
    """The diameter mode fluoseg is scored with: ``auto`` for a scale-normalised variant."""
    return "auto" if nuclei.Variant.parse(train["variant"]).scale else "off"


# ---- stage: predict and evaluate --------------------------------------------------------------

def pred_dir(settings: Settings, tool: str) -> Path:
    return settings.tool_dir(tool) / "pred"


def stage_predict(settings: Settings, failures: list[str]) -> None:
    test = settings.split["test"]
    for tool in settings.tools:
        out = pred_dir(settings, tool)
        done = settings.tool_dir(tool) / "predict.json"
        if done.is_file() and all((out / f"{i}.tif").is_file() for i in test):
            log(f"{tool}: test predictions done, skipped")
            continue
        with guarded(settings, tool, "predict", failures):
            train = trained(settings, tool)
            log(f"{tool}: predicting {len(test)} test images")
            if tool == "fluoseg":
                images = [settings.data / "images" / f"{i}.tif" for i in test]
                if not (settings.tool_dir(tool) / "tune.json").is_file():
                    raise StageFailed("fluoseg: not tuned (run the tune stage)")
                args = ["predict", train["run"], *images, "--out", out, "--markers", DSB_MARKER, "--quiet",
                        "--device", "cpu", "--overwrite", "--diameter", fluoseg_diameter(train)]
                wall = run_fluoseg(args, settings.tool_dir(tool) / "predict.log", threads=settings.threads)
                result = {"predict_s": wall, "images": len(test), "note": "wall time of `fluoseg predict` (incl. start-up)",
                          "fluoseg_commit": git_commit()}
            else:
                spec = {"data": str(settings.data), "test": test, "pred_dir": str(out), **decoding_spec(settings, tool)}
                if tool == "cellpose":
                    spec["model"] = train["model"]
                else:
                    spec["model_dir"] = train["model_dir"]
                result = run_job(tool, "predict", spec, settings, name=f"predict-{tool}")
            write_json(done, result)


def stage_evaluate(settings: Settings, failures: list[str]) -> None:
    from fluoseg.io import read_labels
    from fluoseg.metrics.instance import instance_rows

    truth_dir = settings.data / "labels"
    for tool in settings.tools:
        path = settings.tool_dir(tool) / "eval.csv"
        predicted = read_json(settings.tool_dir(tool) / "predict.json")
        if path.is_file() and (settings.tool_dir(tool) / "summary.json").is_file():
            log(f"{tool}: evaluation done, skipped")
            continue
        with guarded(settings, tool, "evaluate", failures):
            if predicted is None:
                raise StageFailed(f"{tool}: no test predictions")
            items = [(i, read_labels(pred_dir(settings, tool) / f"{i}.tif"), read_labels(truth_dir / f"{i}.tif"))
                     for i in settings.split["test"]]
            rows = instance_rows(items)
            write_rows(path, rows, fields=["image", "metric", "threshold", "value"])
            summary = peers_report.summarise(rows)
            write_json(settings.tool_dir(tool) / "summary.json", summary)
            log(f"{tool}: F1@0.5 {summary['f1_at_0.5']:.3f}  Acc@0.5 {summary['accuracy_at_0.5']:.3f}  "
                f"mAcc {summary['accuracy_mean_0.5_0.95']:.3f}  AJI {summary['aji']:.3f}")


# ---- stage: flops ----------------------------------------------------------------------------

def stage_flops(settings: Settings, failures: list[str]) -> None:
    _flops_trained(settings, failures)
    _flops_shipped(settings, failures)


def _flops_shipped(settings: Settings, failures: list[str]) -> None:
    """The shipped model's FLOPs and tile throughput against this machine's measured peaks (issue 12)."""
    path = settings.work / "flops_shipped.json"
    if path.is_file():
        log("flops (shipped model): done, skipped")
        return
    with guarded(settings, "fluoseg", "flops-shipped", failures):
        result = run_job("fluoseg", "flops", {"pretrained": SHIPPED_MODEL, "tile": None,
                                              "image_size": settings.speed_sizes[0]}, settings, name="flops-shipped")
        write_json(path, result)
        log(f"flops (shipped {SHIPPED_MODEL}): {result['tile_forward_gflops']:.1f} GFLOP/s on one tile; "
            f"conv3x3 {result['conv3x3_gflops']:.0f} GFLOP/s")


def _flops_trained(settings: Settings, failures: list[str]) -> None:
    path = settings.work / "flops.json"
    if path.is_file():
        log("flops: done, skipped")
        return
    with guarded(settings, "fluoseg", "flops", failures):
        train = trained(settings, "fluoseg")
        result = run_job("fluoseg", "flops", {"run": train["run"], "tile": None, "image_size": settings.speed_sizes[0]},
                         settings, name="flops")
        with contextlib.suppress(Exception):  # the peer's network cost, for the reading (optional)
            result["cellpose"] = run_job("cellpose", "flops", {}, settings, name="flops-cellpose")
        write_json(path, result)
        log(f"flops: {result['flops_per_image_pixel'] / 1e6:.2f} MFLOP per image pixel "
            f"(x{result['overlap_overhead']:.2f} tiling overhead); matmul {result['matmul_gflops']:.0f} GFLOP/s, "
            f"conv3x3 {result['conv3x3_gflops']:.0f} GFLOP/s")


# ---- stage: speed ----------------------------------------------------------------------------

def speed_cases(settings: Settings) -> list[dict[str, Any]]:
    """Every speed measurement, smaller images first (so partial runs still give a full table)."""
    cases = []
    for size in settings.speed_sizes:
        repeats = settings.repeats if size <= 2048 else settings.repeats_large
        cases.append({"tool": "fluoseg", "case": "labels-1ch", "size": size, "repeats": repeats})
        cases.append({"tool": "fluoseg", "case": SHIPPED_CASE, "size": size, "repeats": repeats})
        if size == settings.speed_sizes[0]:  # the 5-channel cost is the first layer's: one size shows it
            cases.append({"tool": "fluoseg", "case": "labels-5ch", "size": size, "repeats": repeats})
            cases.append({"tool": "fluoseg", "case": "probabilities-1ch", "size": size, "repeats": repeats})
        cases.append({"tool": "stardist", "case": "labels-1ch", "size": size, "repeats": repeats})
        cases.append({"tool": "cellpose", "case": "labels-1ch", "size": size, "repeats": repeats})
    return cases


def predicted_seconds(settings: Settings, tool: str, case: str, size: int) -> float | None:
    """Seconds per run at ``size`` from the same tool's rate at the largest smaller measured size."""
    smaller = [read_json(settings.work / "speed" / f"{tool}-{case}-{s}.json") for s in settings.speed_sizes if s < size]
    smaller = [r for r in smaller if r]
    if not smaller:
        return None
    return size * size / 1e6 / smaller[-1]["mp_per_s"]


def speed_path(settings: Settings, name: str, round_index: int) -> Path:
    """The cached result of one round of a speed measurement (round 0 keeps the plain name)."""
    return settings.work / "speed" / (f"{name}.json" if round_index == 0 else f"{name}.round{round_index + 1}.json")


def stage_speed(settings: Settings, failures: list[str]) -> None:
    """Time every case in rounds: each round runs every case once (a fresh process, a warm-up, one
    timed run), so the repeats of the tools compared are interleaved and a slow drift of the
    machine's speed (up to 15 % within an hour here) falls on all of them alike, not on whichever
    tool happened to be timed during a slow spell. A case runs in ``repeats`` rounds (fewer when one
    run would exceed ``--speed-max-minutes``)."""
    cases = speed_cases(settings)
    for round_index in range(max(case["repeats"] for case in cases)):
        for case in cases:
            measure_speed(settings, case, round_index, failures)


def measure_speed(settings: Settings, case: dict[str, Any], round_index: int, failures: list[str]) -> None:
    """One round of one speed case, cached in :func:`speed_path`; or its estimate from a smaller size."""
    data = settings.work / "data"
    limit = settings.speed_max_minutes * 60
    tool, size = case["tool"], case["size"]
    name = f"{tool}-{case['case']}-{size}"
    path = speed_path(settings, name, round_index)
    estimate_path = speed_path(settings, name, 0).with_name(f"{name}.estimate.json")
    if path.is_file():
        log(f"speed {name} round {round_index + 1}: done, skipped")
        return
    first = read_json(speed_path(settings, name, 0))
    if round_index > 0 and first is not None and first.get("round") is None:
        return  # measured before rounds: its one file holds all its runs
    rounds = case["repeats"]
    per_run = predicted_seconds(settings, tool, case["case"], size)
    if per_run is not None:
        if per_run > limit:
            if round_index == 0:
                write_json(estimate_path, {**case, "estimated": True, "median_s": per_run,
                                           "mp_per_s": size * size / 1e6 / per_run, "times_s": [],
                                           "reason": f"one run predicted to take {per_run / 60:.0f} min (rate at the "
                                           f"smaller size) > --speed-max-minutes {settings.speed_max_minutes:g}"})
                log(f"speed {name}: not run, one run would take ~{per_run / 60:.0f} min > "
                    f"{settings.speed_max_minutes:g} min; estimated from the smaller image")
            return
        rounds = max(1, min(rounds, int(limit // per_run)))
    if round_index >= rounds:
        return
    with guarded(settings, tool, f"speed-{case['case']}-{size}", failures):
        train = trained(settings, tool)
        spec = {"image": str(data / f"speed_{size}.npy"), "warmup_image": str(data / f"speed_{settings.warmup}.npy"),
                "repeats": 1, "max_s": limit}
        if case["case"] == SHIPPED_CASE:  # as `fluoseg predict nuclei` runs it: auto diameter, its own decoding
            spec.update(pretrained=SHIPPED_MODEL, mode="labels", five_channel=False, diameter="auto")
        elif tool == "fluoseg":
            spec.update(run=train["run"], mode=case["case"].split("-")[0], five_channel=case["case"].endswith("5ch"),
                        diameter=fluoseg_diameter(train))
        elif tool == "cellpose":
            spec.update(model=train["model"], **decoding_spec(settings, tool))
        else:
            spec.update(model_dir=train["model_dir"])
        log(f"speed {name} round {round_index + 1} of {rounds}: warm-up {settings.warmup}^2, then one run at {size}^2")
        deadline = time.time() + 3 * limit + 600  # a hung measurement must not block the run
        result = run_job(tool, "speed", spec, settings, name=f"speed-{name}-round{round_index + 1}", deadline=deadline)
        result.update(case, repeats=1, round=round_index + 1, estimated=False, fluoseg_commit=git_commit())
        if case["case"].startswith("probabilities"):
            result["n_objects"] = None  # no instances decoded
        write_json(path, result)
        estimate_path.unlink(missing_ok=True)
        log(f"speed {name} round {round_index + 1}: {result['mp_per_s']:.3f} MP/s ({result['median_s']:.1f} s), "
            f"peak RSS {result['peak_rss_mb']:.0f} MB, {result['n_objects']} objects")


# ---- stage: scaling --------------------------------------------------------------------------

def stage_scaling(settings: Settings, failures: list[str]) -> None:
    data = settings.work / "data"
    for mode, limit in (("probabilities", settings.max_size),
                        ("predict_file", min(settings.labels_max_size, settings.max_size))):
        for size in settings.scaling_sizes:
            if size > limit:
                continue
            name = f"{mode}-{size}"
            path = settings.work / "scaling" / f"{name}.json"
            if path.is_file():
                log(f"scaling {name}: done, skipped")
                continue
            with guarded(settings, "fluoseg", f"scaling-{name}", failures):
                train = trained(settings, "fluoseg")
                out = settings.work / "scaling" / f"out_{name}.zarr"
                spec = {"run": train["run"], "zarr": str(data / f"scaling_{size}.zarr"), "out": str(out), "mode": mode,
                        "warmup_image": str(data / f"speed_{settings.warmup}.npy")}
                log(f"scaling {name}: Zarr {size}^2 in -> Zarr out ({mode})")
                result = run_job("fluoseg", "stream", spec, settings, name=f"scaling-{name}")
                result["fluoseg_commit"] = git_commit()
                shutil.rmtree(out, ignore_errors=True)
                write_json(path, result)
                log(f"scaling {name}: {result['seconds']:.1f} s ({result['mp_per_s']:.3f} MP/s), "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB")


# ---- stages: collect and report ----------------------------------------------------------------

def scaling_rows(settings: Settings) -> list[dict[str, Any]]:
    rows = []
    for mode in ("probabilities", "predict_file"):
        measured = {}
        for size in settings.scaling_sizes:
            result = read_json(settings.work / "scaling" / f"{mode}-{size}.json")
            if result is not None:
                measured[size] = result
        previous = before = None
        for size in settings.scaling_sizes:
            r = measured.get(size)
            row = {"mode": mode, "size": size, "megapixels": size * size / 1e6}
            if r is not None:
                row.update(seconds=r["seconds"], mp_per_s=r["mp_per_s"], peak_rss_mb=r["peak_rss_mb"],
                           rss_after_warmup_mb=r["peak_rss_mb_after_warmup"], estimated=False,
                           load_avg=r.get("load_avg_1min"))
            elif previous is not None and before is not None:
                # Not run (above --max-size / --labels-max-size): time grows with the pixels (x4 per
                # doubling of the side); the memory increment of the last doubling grows x2 (streamed:
                # buffers proportional to the image width) or x4 (predict_file: whole-image arrays).
                increment = max(previous["peak_rss_mb"] - before["peak_rss_mb"], 0.0)
                factor = 2 if mode == "probabilities" else 4
                row.update(seconds=previous["seconds"] * 4, mp_per_s=previous["mp_per_s"],
                           peak_rss_mb=previous["peak_rss_mb"] + factor * increment, estimated=True)
            else:
                continue
            if previous is not None and previous.get("seconds"):
                row["time_growth"] = row["seconds"] / previous["seconds"]
                row["rss_growth"] = row["peak_rss_mb"] / previous["peak_rss_mb"]
            rows.append(row)
            before, previous = previous, row
    return rows


def speed_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per timed run of every speed measurement (one row per estimate)."""
    rows = []
    for path in sorted((settings.work / "speed").glob("*.json")):
        r = read_json(path)
        common = {"tool": r["tool"], "case": r["case"], "size": r["size"], "peak_rss_mb": r.get("peak_rss_mb"),
                  "rss_after_warmup_mb": r.get("peak_rss_mb_after_warmup"), "n_objects": r.get("n_objects"),
                  "load_avg": r.get("load_avg_1min"), "diameter": r.get("diameter"),
                  "precision": r.get("precision"), "fluoseg_commit": r.get("fluoseg_commit"), "estimated": bool(r.get("estimated"))}
        if r.get("estimated"):
            rows.append({**common, "repeat": None, "seconds": r["median_s"], "reason": r.get("reason")})
            continue
        network, decode = r.get("network_times_s") or [], r.get("decode_times_s") or []
        first_repeat = r.get("round") or 1  # one run per file when timed in rounds
        for i, seconds in enumerate(r["times_s"]):
            rows.append({**common, "repeat": first_repeat + i, "seconds": seconds,
                         "network_s": network[i] if i < len(network) else None,
                         "decode_s": decode[i] if i < len(decode) else None})
    return rows


SPEED_FIELDS = ["tool", "case", "size", "repeat", "seconds", "network_s", "decode_s", "peak_rss_mb",
                "rss_after_warmup_mb", "n_objects", "load_avg", "diameter", "precision", "estimated", "reason",
                "fluoseg_commit"]


def stage_collect(settings: Settings, failures: list[str]) -> None:
    """Gather the work folder's caches into the results folder: the files ``--stages report`` renders from."""
    if set(settings.tools) != set(TOOLS):
        collect_rerun(settings, failures)
        return
    results = settings.results
    results.mkdir(parents=True, exist_ok=True)
    eval_rows = []
    for tool in TOOLS:
        path = settings.tool_dir(tool) / "eval.csv"
        if path.is_file():
            eval_rows += [{"tool": tool, **row} for row in read_rows(path)]
    trainings = {t: read_json(settings.tool_dir(t) / "train.json") for t in TOOLS}
    budgets = sorted({t["budget_s"] for t in trainings.values() if t})
    if len(budgets) > 1:
        log(f"WARNING: the cached trainings used different budgets {budgets}; the report says so")
    train = trainings["fluoseg"]
    meta = {
        "setup": peers_report.SETUP, "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "smoke": settings.smoke, "command": settings.command, "seed": settings.seed,
        "budget_s": budgets[0] if len(budgets) == 1 else settings.budget_s, "budgets_differ": len(budgets) > 1,
        "threads": settings.threads, "split": {role: len(ids) for role, ids in settings.split.items()},
        "machine": machine(), "versions": {"fluoseg": fluoseg_versions(), **read_json(PEERS_ROOT / "versions.json", {})},
        "settings": {"fluoseg_steps": settings.fluoseg_steps, "stardist_steps": settings.stardist_steps,
                     "cellpose_batch": settings.cellpose_batch, "cellpose_bsize": settings.cellpose_bsize,
                     "speed_sizes": list(settings.speed_sizes), "warmup": settings.warmup,
                     "repeats": settings.repeats, "repeats_large": settings.repeats_large,
                     "speed_max_minutes": settings.speed_max_minutes, "scaling_sizes": list(settings.scaling_sizes),
                     "max_size": settings.max_size, "labels_max_size": settings.labels_max_size},
        "fluoseg_variant_why": settings.fluoseg_variant_why,
        "fluoseg_diameter": fluoseg_diameter(train) if train else None,
        "train": trainings,
        "tune": {t: read_json(settings.tool_dir(t) / "tune.json") for t in TOOLS},
        "predict": {t: read_json(settings.tool_dir(t) / "predict.json") for t in TOOLS},
        "flops": read_json(settings.work / "flops.json"), "flops_shipped": read_json(settings.work / "flops_shipped.json"),
        "failures": read_json(settings.work / "failures.json", {}),
    }
    write_json(results / "peers.json", meta)
    write_rows(results / "peers_eval.csv", eval_rows, fields=["tool", "image", "metric", "threshold", "value"])
    write_rows(results / "peers_speed.csv", speed_rows(settings), fields=SPEED_FIELDS)
    write_rows(results / "peers_scaling.csv", scaling_rows(settings))
    log(f"collect: {rel(results)}/peers.json, peers_eval.csv ({len(eval_rows)} rows), peers_speed.csv, "
        "peers_scaling.csv")


def collect_rerun(settings: Settings, failures: list[str]) -> None:
    """Put the retrained tools (``--tools``) into an earlier collection of the same seed, keeping the other tools.

    Their training, tuning, prediction and test scores replace the earlier ones; the speed and
    scaling tables stay as measured (the report says with which training). What was replaced is
    kept in ``reruns`` (the earlier tuned parameters and test summary, the machine, the command),
    so the report can name the retraining and the earlier numbers stay traceable.
    """
    results = settings.results
    meta = read_json(results / "peers.json")
    if meta is None or not (results / "peers_eval.csv").is_file():
        log(f"collect: FAILED: {rel(results)} holds no earlier collection to put the rerun of "
            f"{', '.join(settings.tools)} into; run every tool (without --tools) first")
        failures.append("collect")
        return
    trainings = {t: read_json(settings.tool_dir(t) / "train.json") for t in settings.tools}
    missing = [t for t, record in trainings.items() if record is None or
               not (settings.tool_dir(t) / "eval.csv").is_file()]
    different = [t for t, record in trainings.items() if record and record["budget_s"] != meta["budget_s"]]
    if missing or different:
        log(f"collect: FAILED: {', '.join(missing)} not trained and scored in {rel(settings.work)}" if missing else
            f"collect: FAILED: {', '.join(different)} trained with another budget than the collection's "
            f"{meta['budget_s'] / 60:g} min")
        failures.append("collect")
        return
    old_rows = read_rows(results / "peers_eval.csv")
    replaced = {}
    for tool in settings.tools:
        earlier = [r for r in old_rows if r["tool"] == tool]
        replaced[tool] = {"tune": (meta["tune"].get(tool) or {}).get("parameters"),
                          "summary": peers_report.summarise(earlier) if earlier else None,
                          "train_wall_s": (meta["train"].get(tool) or {}).get("train_wall_s")}
        meta["train"][tool] = trainings[tool]
        meta["tune"][tool] = read_json(settings.tool_dir(tool) / "tune.json")
        meta["predict"][tool] = read_json(settings.tool_dir(tool) / "predict.json")
        meta["failures"] = {k: v for k, v in meta["failures"].items() if not k.startswith(f"{tool}/")}
    work_failures = read_json(settings.work / "failures.json", {})
    meta["failures"].update({k: v for k, v in work_failures.items() if k.split("/")[0] in settings.tools})
    meta.setdefault("reruns", []).append({
        "tools": list(settings.tools), "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": settings.command, "machine": machine(), "fluoseg_commit": git_commit(), "replaced": replaced})
    rows = [r for r in old_rows if r["tool"] not in settings.tools]
    for tool in settings.tools:
        rows += [{"tool": tool, **row} for row in read_rows(settings.tool_dir(tool) / "eval.csv")]
    write_json(results / "peers.json", meta)
    write_rows(results / "peers_eval.csv", rows, fields=["tool", "image", "metric", "threshold", "value"])
    log(f"collect: {', '.join(settings.tools)} replaced in {rel(results)}/peers.json and peers_eval.csv; "
        "the other tools, speed and scaling kept")


def write_report(settings: Settings) -> None:
    """``peers.md`` (and, for the default results folder, the README block) from the result files alone."""
    results = peers_report.Results.load(settings.results)
    reference = peers_report.Results.load(settings.reference) if settings.reference else None
    replicates = peers_report.load_replicates(results) if settings.results == RESULTS.resolve() else None
    write_text(settings.results / "peers.md",
               peers_report.markdown(results, reference=reference, replicates=replicates))
    log(f"report: {rel(settings.results / 'peers.md')}" + ("" if results.current else " (not run yet)"))
    if settings.results == RESULTS.resolve() and not settings.smoke:
        fill_readme_block(peers_report.README_BEGIN, peers_report.README_END,
                          peers_report.readme_block(results, replicates=replicates))
        log("README.md: peers block updated")


RUNNERS = {  # stage -> what runs it (the report is written last, whatever ran)
    "venvs": stage_venvs, "data": lambda settings, failures: stage_data(settings), "train": stage_train,
    "tune": stage_tune, "predict": stage_predict, "evaluate": stage_evaluate, "flops": stage_flops,
    "speed": stage_speed, "scaling": stage_scaling, "collect": stage_collect,
}


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", help=f"comma-separated stages to run, in this order: {','.join(STAGES)} "
                        f"(default all; with --seed N > 0: {','.join(REPLICATE_STAGES)})")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny end-to-end run: {SMOKE['train']}/{SMOKE['val']}/{SMOKE['test']} images, "
                        f"{SMOKE['budget_minutes']} min budgets, speed at {SMOKE['speed_sizes']}, scaling up to "
                        f"{SMOKE['max_size']}; work and results in {rel(SMOKE_WORK)}/")
    parser.add_argument("--budget-minutes", type=float,
                        help=f"training wall-clock budget per tool (default {BUDGET_MINUTES:g}: 3 tools x "
                        f"{BUDGET_MINUTES:g} min of training fit a session with the speed stages)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"threads for every tool (default {THREADS})")
    parser.add_argument("--fluoseg-variant", default="auto",
                        help="bench/nuclei.py variant for fluoseg (border, distance, border-art, border-scale, ...); "
                        "auto: the best on VALIDATION images in bench/results/nuclei.csv when it exists, else border")
    parser.add_argument("--speed-sizes", help=f"image sides for the speed table (default {','.join(map(str, SPEED_SIZES))})")
    parser.add_argument("--repeats", type=int, help=f"timed runs per speed measurement up to 2048^2 (default {REPEATS})")
    parser.add_argument("--repeats-large", type=int, help=f"timed runs above 2048^2 (default {REPEATS_LARGE})")
    parser.add_argument("--max-size", type=int, help=f"largest scaling image actually run (default {MAX_SIZE}; "
                        "16384 takes ~15-25 min on 2 cores); larger sizes are estimated")
    parser.add_argument("--labels-max-size", type=int,
                        help=f"largest image for the predict_file (labels) scaling rows (default {LABELS_MAX_SIZE})")
    parser.add_argument("--speed-max-minutes", type=float,
                        help="longest expected run of one speed measurement (predicted from the tool's rate at the "
                        "smaller size): repeats are reduced to fit, and a measurement whose single run would take "
                        f"longer is estimated instead of run (default {SPEED_MAX_MINUTES:g})")
    parser.add_argument("--data", type=Path, default=DSB2018, help="dsb2018_fluo folder (images/, labels/)")
    parser.add_argument("--work", type=Path, help=f"work folder (default {rel(DEFAULT_WORK)}; smoke {rel(SMOKE_WORK)})")
    parser.add_argument("--reference", type=Path, help="the results folder of a second run of this benchmark "
                        "(run with --work and --results elsewhere): the report adds a table comparing the two runs")
    parser.add_argument("--results", type=Path, help=f"results folder (default {rel(RESULTS)}; smoke WORK/results; "
                        f"--seed N > 0: {rel(SEED_RESULTS)}/seedN)")
    parser.add_argument("--tools", help=f"comma-separated tools to train and score (default all: {','.join(TOOLS)}); "
                        "with fewer, collect puts them into the seed's earlier collection and keeps the others "
                        "(delete WORK/TOOL to retrain a tool). Not with the flops, speed and scaling stages")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed of every tool (default 0). A replicate with N > 0 retrains and rescores "
                        f"the three tools in {rel(PEERS_ROOT)}/full-seedN and collects into {rel(SEED_RESULTS)}/seedN; "
                        "the main report then tables every seed and tests the differences over them")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    replicate = args.seed > 0 and not args.smoke

    stages = [s.strip() for s in (args.stages or ",".join(REPLICATE_STAGES if replicate else STAGES)).split(",")
              if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    tools = tuple(t for t in TOOLS if t in {x.strip() for x in (args.tools or ",".join(TOOLS)).split(",")})
    unknown = {x.strip() for x in (args.tools or "").split(",") if x.strip()} - set(TOOLS)
    if unknown or not tools:
        parser.error(f"unknown tool(s) {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    whole_machine = set(stages) & {"flops", "speed", "scaling"}
    if tools != TOOLS and whole_machine:
        parser.error(f"--tools cannot be combined with the {', '.join(sorted(whole_machine))} stage(s), which measure "
                     "every tool side by side; leave --tools out")
    terminate_child_on_sigterm()
    smoke = args.smoke
    work = (args.work or (SMOKE_WORK if smoke else PEERS_ROOT / f"full-seed{args.seed}" if replicate
                          else DEFAULT_WORK)).resolve()
    variant, why = choose_fluoseg_variant(args.fluoseg_variant)
    trained = read_json(work / "fluoseg" / "train.json")
    if trained and trained["variant"] != variant:
        if args.fluoseg_variant != "auto":
            log(f"WARNING: {rel(work)}/fluoseg holds a training of {trained['variant']}, not {variant}; "
                f"delete {rel(work)}/fluoseg to retrain; using the cached {trained['variant']}")
        variant, why = trained["variant"], "the cached training of this work folder"
    settings = Settings(
        work=work, results=(args.results or (work / "results" if smoke else SEED_RESULTS / f"seed{args.seed}"
                                             if replicate else RESULTS)).resolve(),
        data=args.data.resolve(), smoke=smoke, threads=args.threads,
        budget_s=60 * (args.budget_minutes or (SMOKE["budget_minutes"] if smoke else BUDGET_MINUTES)),
        fluoseg_variant=variant, fluoseg_variant_why=why,
        fluoseg_steps=SMOKE["fluoseg_steps"] if smoke else FLUOSEG_STEPS,
        stardist_steps=SMOKE["stardist_steps"] if smoke else STARDIST_STEPS,
        cellpose_batch=SMOKE["cellpose_batch"] if smoke else CELLPOSE_BATCH,
        cellpose_bsize=SMOKE["cellpose_bsize"] if smoke else CELLPOSE_BSIZE,
        speed_sizes=tuple(int(s) for s in args.speed_sizes.split(",")) if args.speed_sizes else
        (SMOKE["speed_sizes"] if smoke else SPEED_SIZES),
        warmup=SMOKE["warmup"] if smoke else WARMUP_SIZE,
        repeats=args.repeats or (SMOKE["repeats"] if smoke else REPEATS),
        repeats_large=args.repeats_large or (SMOKE["repeats_large"] if smoke else REPEATS_LARGE),
        scaling_sizes=SMOKE["scaling_sizes"] if smoke else SCALING_SIZES,
        max_size=args.max_size or (SMOKE["max_size"] if smoke else MAX_SIZE),
        labels_max_size=args.labels_max_size or (SMOKE["labels_max_size"] if smoke else LABELS_MAX_SIZE),
        speed_max_minutes=args.speed_max_minutes or (SMOKE["speed_max_minutes"] if smoke else SPEED_MAX_MINUTES),
        command=" ".join([".venv/bin/python", "bench/peers.py", *(argv if argv is not None else sys.argv[1:])]),
        reference=args.reference.resolve() if args.reference else None, seed=args.seed, tools=tools,
    )
    work.mkdir(parents=True, exist_ok=True)
    cached = read_json(work / "settings.json")
    if cached and (work / "fluoseg" / "train.json").is_file() and cached.get("budget_s") != settings.budget_s:
        log(f"WARNING: the cached trainings in {rel(work)} used a budget of {cached['budget_s'] / 60:.1f} min, not "
            f"{settings.budget_s / 60:.1f}; delete {rel(work)}/*/train.json (and what follows) to retrain")
    write_json(work / "settings.json", {"budget_s": settings.budget_s, "threads": settings.threads, "seed": settings.seed,
                                        "fluoseg_variant": settings.fluoseg_variant, "command": settings.command})
    log(f"work {rel(work)}; budget {settings.budget_s / 60:.1f} min per tool; {settings.threads} threads; "
        f"fluoseg variant {variant} ({why}); stages {','.join(stages)}")
    settings.split = dsb_split(settings.data, sizes=SMOKE if smoke else None)
    with (work / "invocations.jsonl").open("a") as handle:
        handle.write(json.dumps({"when": datetime.now().isoformat(timespec="seconds"), "command": settings.command}) + "\n")

    failures: list[str] = []
    started = time.time()
    for stage in STAGES:
        if stage not in stages:
            continue
        t0 = time.time()
        if stage != "report":
            RUNNERS[stage](settings, failures)
            log(f"stage {stage}: {time.time() - t0:.0f} s")
    if "report" in stages:
        write_report(settings)
    log(f"finished in {(time.time() - started) / 60:.1f} min" +
        (f"; failed: {', '.join(failures)} (rerun the same command to retry those)" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
