#!/usr/bin/env python
"""fluoseg against Cellpose 3 and StarDist 2D on DSB 2018 fluorescence nuclei (issue 5).

Accuracy under an equal wall-clock training budget, inference speed and memory, fluoseg's
scaling from 1k^2 to 16k^2 with Zarr in and out, and a FLOP/s reference.

* **Peers**, each in its own venv under ``bench/work/peers/`` (never in fluoseg's .venv):
  Cellpose 3.1.1.3 (classic CNN, CPU torch 2.13.0 pinned through ``constraints.txt``) and
  StarDist 0.9.2 with tensorflow-cpu. Their jobs (``bench/peers/*_job.py``) run inside those
  venvs and write label TIFFs and JSON; all scoring happens here, in fluoseg's venv, with
  ``fluoseg.metrics.instance.instance_rows`` on the same test images.
* **Training**: the same training (and validation) images of the fixed split
  ``bench/splits/dsb2018_fluo.json``, from scratch, the same wall-clock budget counted from
  process start (imports and data preparation included), the same thread count, one tool at
  a time. fluoseg trains the instance model of ``bench/nuclei.py`` (``--fluoseg-variant``;
  default: the best variant of ``bench/results/nuclei.csv`` when it exists, else ``border``).
* **Speed**: the same synthetic images for every tool (a mosaic of test images, tiled to
  2048^2 and 8192^2, uint8), numpy in memory -> instance labels in memory; a warm-up on a
  512^2 crop, then the median of several runs, each measurement in a fresh process whose
  ``ru_maxrss`` is its peak resident memory.
* **Scaling** (fluoseg only): Zarr in -> Zarr out from 1k^2 to 16k^2, streamed probabilities
  (``Segmenter.predict_probabilities(out=zarr)``) and ``predict_file`` (labels).
* **FLOPs**: FlopCounterMode on one tile, the tiling overhead, achieved FLOP/s vs measured
  fp32 matmul FLOP/s.

Every stage caches its outputs in the work folder and is skipped when they exist; a training
interrupted midway starts again from scratch (a budget must run in one piece).

Usage::

    .venv/bin/python bench/peers.py --smoke                  # tiny end-to-end run (~9 min)
    nohup .venv/bin/python bench/peers.py > bench/work/peers.log 2>&1 &    # the full run (~1.5 h on 2 cores)
    .venv/bin/python bench/peers.py --stages venvs,data,train,predict,evaluate,report   # or in two halves:
    .venv/bin/python bench/peers.py --stages flops,speed,scaling,report                 # ~45 + ~35 min
    .venv/bin/python bench/peers.py --stages report          # rebuild bench/results/peers.* from the caches
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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import nuclei
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
SMOKE_WORK = PEERS_ROOT / "smoke"
CONSTRAINTS = ROOT / "constraints.txt"
NOTES = BENCH / "notes" / "peers.md"   # hand-written judgement, appended to the report's mechanical reading

TOOLS = ("fluoseg", "cellpose", "stardist")
PEERS = ("cellpose", "stardist")
PEER_PACKAGES = {
    "cellpose": ["cellpose==3.1.1.3"],             # torch pinned to the CPU 2.13.0 by constraints.txt
    "stardist": ["stardist==0.9.2", "tensorflow-cpu==2.21.0"],  # numpy left to the resolver (2.4.x works)
}
STAGES = ("venvs", "data", "train", "predict", "evaluate", "flops", "speed", "scaling", "report")

# ---- settings (full run; smoke overrides below) --------------------------------------------
BUDGET_MINUTES = 10.0       # per tool; 3 tools x 10 min = 30 min of training in a ~1.5 h full run
THREADS = 2
FLUOSEG_STEPS = 20          # steps per fluoseg epoch: checkpoints every ~30-40 s, so the cut at the budget loses little
STARDIST_STEPS = 50         # steps per StarDist epoch (validation loss + best checkpoint after each)
CELLPOSE_BATCH, CELLPOSE_LR = 8, 0.005   # train_seg defaults
SPEED_SIZES = (2048, 8192)
WARMUP_SIZE = 512
REPEATS, REPEATS_LARGE = 3, 1              # median of 3 up to 2048^2; 1 timed run above (minutes each on CPU)
SCALING_SIZES = (1024, 2048, 4096, 8192, 16384)
MAX_SIZE = 8192             # scaling sizes above this are estimated, not run
LABELS_MAX_SIZE = 4096      # predict_file (labels of the whole image in memory) up to this size
SPEED_MAX_MINUTES = 15.0    # a speed run predicted to take longer is estimated (Cellpose at 8192^2: ~1 h on 2 cores)
SMOKE = {"train": 12, "val": 3, "test": 4, "budget_minutes": 1.5, "fluoseg_steps": 2, "stardist_steps": 5,
         "speed_sizes": (512, 1024), "warmup": 256, "repeats": 2, "repeats_large": 1,
         "scaling_sizes": (256, 512, 1024, 2048), "max_size": 1024, "labels_max_size": 512, "speed_max_minutes": 0.5}

TABLE = (  # (header, summary key, format)
    ("F1@0.5", "f1_at_0.5", "{:.3f}"), ("P@0.5", "precision_at_0.5", "{:.3f}"), ("R@0.5", "recall_at_0.5", "{:.3f}"),
    ("Acc@0.5", "accuracy_at_0.5", "{:.3f}"),
    ("F1@0.75", "f1_at_0.75", "{:.3f}"), ("P@0.75", "precision_at_0.75", "{:.3f}"),
    ("R@0.75", "recall_at_0.75", "{:.3f}"), ("Acc@0.75", "accuracy_at_0.75", "{:.3f}"),
    ("mAcc 0.5:0.95", "accuracy_mean_0.5_0.95", "{:.3f}"), ("AJI", "aji", "{:.3f}"),
    ("US rate", "us_rate", "{:.3f}"), ("OS rate", "os_rate", "{:.3f}"),
    ("n pred / true", "n_pred_true", "{}"),
)


@dataclass
class Settings:
    work: Path
    results: Path
    data: Path
    smoke: bool
    threads: int
    budget_s: float
    fluoseg_variant: str
    fluoseg_steps: int
    stardist_steps: int
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
    reference: Path | None = None   # another work folder of the same benchmark, to compare with


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
    for tool in PEERS:
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

def choose_fluoseg_variant(requested: str) -> tuple[str, str]:
    if requested != "auto":
        return requested, "given with --fluoseg-variant"
    table = RESULTS / "nuclei.csv"
    if table.is_file():
        rows = read_rows(table)
        rows = [r for r in rows if r.get("f1_at_0.5") not in (None, "", "nan")]
        if rows:
            best = max(rows, key=lambda r: (float(r["f1_at_0.5"]), float(r.get("accuracy_mean_0.5_0.95") or 0)))
            return best["variant"], f"best F1@0.5 in {rel(table)} ({float(best['f1_at_0.5']):.3f})"
    return "border", f"default (no {rel(table)} yet)"


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
    for tool in TOOLS:
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
                        "budget_s": settings.budget_s, "model_dir": str(model_dir)}
                if tool == "cellpose":
                    spec.update(batch_size=CELLPOSE_BATCH, learning_rate=CELLPOSE_LR)
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


# ---- stage: predict and evaluate --------------------------------------------------------------

def pred_dir(settings: Settings, tool: str) -> Path:
    return settings.tool_dir(tool) / "pred"


def stage_predict(settings: Settings, failures: list[str]) -> None:
    test = settings.split["test"]
    for tool in TOOLS:
        out = pred_dir(settings, tool)
        done = settings.tool_dir(tool) / "predict.json"
        if done.is_file() and all((out / f"{i}.tif").is_file() for i in test):
            log(f"{tool}: test predictions done, skipped")
            continue
        with guarded(settings, tool, "predict", failures):
            train = read_json(settings.tool_dir(tool) / "train.json")
            if train is None:
                raise StageFailed(f"{tool}: not trained")
            log(f"{tool}: predicting {len(test)} test images")
            if tool == "fluoseg":
                images = [settings.data / "images" / f"{i}.tif" for i in test]
                args = ["predict", train["run"], *images, "--out", out, "--markers", DSB_MARKER, "--quiet",
                        "--device", "cpu", "--overwrite"]
                if train["variant"].endswith("scale"):
                    args += ["--diameter", "auto"]
                wall = run_fluoseg(args, settings.tool_dir(tool) / "predict.log", threads=settings.threads)
                result = {"predict_s": wall, "images": len(test), "note": "wall time of `fluoseg predict` (incl. start-up)"}
            else:
                spec = {"data": str(settings.data), "test": test, "pred_dir": str(out)}
                if tool == "cellpose":
                    spec["model"] = train["model"]
                else:
                    spec["model_dir"] = train["model_dir"]
                result = run_job(tool, "predict", spec, settings, name=f"predict-{tool}")
            write_json(done, result)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The headline numbers of a tool's evaluation rows (pooled over the test images)."""

    def metric(name: str, threshold: float | None = None) -> float:
        return pooled_metric(rows, name, threshold)

    out = {}
    for t in (0.5, 0.75):
        for name in ("f1", "precision", "recall", "accuracy", "pq", "tp", "fp", "fn"):
            out[f"{name}_at_{t}"] = metric(name, t)
    out.update({
        "accuracy_mean_0.5_0.95": metric("accuracy_mean_over_thresholds"),
        "f1_mean_0.5_0.95": metric("f1_mean_over_thresholds"),
        "aji": metric("aji"), "aji_cellpose": metric("aji_cellpose"),
        "us_rate": metric("us_rate"), "os_rate": metric("os_rate"),
        "kromp_f1": metric("kromp_f1"), "pixel_dice": metric("pixel_dice"),
        "n_true": metric("n_true"), "n_pred": metric("n_pred"),
        "test_images": len({r["image"] for r in rows}) - 1,
    })
    out["n_pred_true"] = f"{out['n_pred']:.0f} / {out['n_true']:.0f}"
    return out


def stage_evaluate(settings: Settings, failures: list[str]) -> None:
    from fluoseg.io import read_labels
    from fluoseg.metrics.instance import instance_rows

    truth_dir = settings.data / "labels"
    for tool in TOOLS:
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
            summary = summarise(rows)
            write_json(settings.tool_dir(tool) / "summary.json", summary)
            log(f"{tool}: F1@0.5 {summary['f1_at_0.5']:.3f}  Acc@0.5 {summary['accuracy_at_0.5']:.3f}  "
                f"mAcc {summary['accuracy_mean_0.5_0.95']:.3f}  AJI {summary['aji']:.3f}")


# ---- stage: flops ----------------------------------------------------------------------------

def stage_flops(settings: Settings, failures: list[str]) -> None:
    path = settings.work / "flops.json"
    if path.is_file():
        log("flops: done, skipped")
        return
    with guarded(settings, "fluoseg", "flops", failures):
        train = read_json(settings.tool_dir("fluoseg") / "train.json")
        if train is None:
            raise StageFailed("fluoseg: not trained")
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


def stage_speed(settings: Settings, failures: list[str]) -> None:
    data = settings.work / "data"
    limit = settings.speed_max_minutes * 60
    for case in speed_cases(settings):
        tool, size = case["tool"], case["size"]
        name = f"{tool}-{case['case']}-{size}"
        path = settings.work / "speed" / f"{name}.json"
        estimate_path = path.with_name(f"{name}.estimate.json")
        if path.is_file():
            log(f"speed {name}: done, skipped")
            continue
        per_run = predicted_seconds(settings, tool, case["case"], size)
        if per_run is not None:
            if per_run > limit:
                write_json(estimate_path, {**case, "estimated": True, "median_s": per_run,
                                           "mp_per_s": size * size / 1e6 / per_run, "times_s": [],
                                           "reason": f"one run predicted to take {per_run / 60:.0f} min (rate at the "
                                           f"smaller size) > --speed-max-minutes {settings.speed_max_minutes:g}"})
                log(f"speed {name}: not run, one run would take ~{per_run / 60:.0f} min > "
                    f"{settings.speed_max_minutes:g} min; estimated from the smaller image")
                continue
            case = dict(case, repeats=max(1, min(case["repeats"], int(limit // per_run))))
        with guarded(settings, tool, f"speed-{case['case']}-{size}", failures):
            train = read_json(settings.tool_dir(tool) / "train.json")
            if train is None:
                raise StageFailed(f"{tool}: not trained")
            spec = {"image": str(data / f"speed_{size}.npy"), "warmup_image": str(data / f"speed_{settings.warmup}.npy"),
                    "repeats": case["repeats"], "max_s": limit}
            if tool == "fluoseg":
                spec.update(run=train["run"], mode=case["case"].split("-")[0], five_channel=case["case"].endswith("5ch"))
            elif tool == "cellpose":
                spec.update(model=train["model"])
            else:
                spec.update(model_dir=train["model_dir"])
            log(f"speed {name}: warm-up {settings.warmup}^2, then {case['repeats']} run(s) at {size}^2")
            deadline = time.time() + 3 * limit + 600  # a hung measurement must not block the run
            result = run_job(tool, "speed", spec, settings, name=f"speed-{name}", deadline=deadline)
            result.update(case, estimated=False, fluoseg_commit=git_commit())
            if case["case"].startswith("probabilities"):
                result["n_objects"] = None  # no instances decoded
            write_json(path, result)
            estimate_path.unlink(missing_ok=True)
            log(f"speed {name}: {result['mp_per_s']:.3f} MP/s (median {result['median_s']:.1f} s), "
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
                train = read_json(settings.tool_dir("fluoseg") / "train.json")
                if train is None:
                    raise StageFailed("fluoseg: not trained")
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


# ---- report ----------------------------------------------------------------------------------

def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


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


def collect(settings: Settings) -> dict[str, Any]:
    tools = {}
    for tool in TOOLS:
        tools[tool] = {"train": read_json(settings.tool_dir(tool) / "train.json"),
                       "predict": read_json(settings.tool_dir(tool) / "predict.json"),
                       "summary": read_json(settings.tool_dir(tool) / "summary.json")}
    speed = [dict(read_json(p), name=p.name[: -len(".json")]) for p in sorted((settings.work / "speed").glob("*.json"))]
    return {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "smoke": settings.smoke,
        "command": settings.command, "budget_s": settings.budget_s, "threads": settings.threads,
        "split": {role: len(ids) for role, ids in settings.split.items()},
        "machine": machine(), "versions": {"fluoseg": fluoseg_versions(), **read_json(PEERS_ROOT / "versions.json", {})},
        "tools": tools, "speed": speed, "scaling": scaling_rows(settings), "flops": read_json(settings.work / "flops.json"),
        "failures": read_json(settings.work / "failures.json", {}),
    }


def write_report(settings: Settings) -> None:
    report = collect(settings)
    results = settings.results
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "peers.json", {k: v for k, v in report.items()})
    # accuracy + training, one row per tool
    rows = []
    for tool, parts in report["tools"].items():
        row = {"tool": tool}
        for key in ("train", "summary"):
            for k, v in (parts[key] or {}).items():
                if not isinstance(v, (dict, list)):
                    row[f"{key}_{k}" if key == "train" else k] = v
        if parts["predict"]:
            row["predict_s"] = parts["predict"]["predict_s"]
        rows.append(row)
    write_rows(results / "peers.csv", rows)
    speed_rows = [{k: v for k, v in s.items() if not isinstance(v, (dict, list))} for s in report["speed"]]
    write_rows(results / "peers_speed.csv", speed_rows)
    write_rows(results / "peers_scaling.csv", report["scaling"])
    write_text(results / "peers.md", markdown(settings, report))
    log(f"report: {rel(results / 'peers.md')}, peers.csv, peers_speed.csv, peers_scaling.csv, peers.json")


def markdown(settings: Settings, report: dict[str, Any]) -> str:
    m, v, tools = report["machine"], report["versions"], report["tools"]
    fl = report["flops"]
    smoke = " **SMOKE RUN: tiny data and budget, the numbers are meaningless.**" if settings.smoke else ""
    lines = [
        "# fluoseg vs Cellpose 3 and StarDist 2D: nuclei from scratch on a CPU budget",
        "",
        f"Generated by `bench/peers.py` on {report['generated']} from the caches in `{rel(settings.work)}/`.{smoke}",
        "",
        "## Machine and versions",
        "",
        f"- Machine: `nproc` = {m.get('nproc')}, CPU `{m.get('cpu_model', '?')}` ({m.get('simd', '')}), "
        f"{m.get('memory_gib', '?')} GiB RAM; shared with other jobs (the 1-minute load average at each measurement "
        "is in the CSV/JSON). Every tool ran with "
        f"{settings.threads} thread(s) (`OMP_NUM_THREADS`, `torch.set_num_threads`, TF intra-op threads; inter-op 1).",
        "- fluoseg: " + ", ".join(f"{k} {val}" for k, val in v.get("fluoseg", {}).items()) + commits_line(report),
    ]
    for peer in PEERS:
        info = v.get(peer)
        lines.append(f"- {peer}: " + (", ".join(f"{k} {val}" for k, val in info.items()
                                                if k not in ("pip_freeze", "packages", "install_s"))
                                      + f" (own venv `{rel(PEERS_ROOT / f'venv-{peer}')}`, "
                                      f"`pip install -c constraints.txt {' '.join(info.get('packages', []))}`)"
                                      if info else "not installed"))
    lines += ["", "## Accuracy after the same training budget", ""]
    fs = (tools["fluoseg"]["train"] or {})
    cp = (tools["cellpose"]["train"] or {})
    sd = (tools["stardist"]["train"] or {})
    lines += [
        f"Fixed split `{rel(DSB_SPLIT)}` (80/10/10 by image, seed 0, stratified by shape): "
        f"{report['split']['train']} training, {report['split']['val']} validation, {report['split']['test']} test images"
        + (" (smoke: the first few of each)" if settings.smoke else "") + ". "
        f"Budget **{settings.budget_s / 60:.1f} min wall clock per tool**, counted from process start (imports, data "
        "preparation, training and validation), one tool at a time, all from scratch (no pretrained weights). "
        "Scored by `fluoseg.metrics.instance.instance_rows` on the test images, pooled over images (TP/FP/FN summed): "
        "F1 = 2TP/(2TP+FP+FN), P = TP/(TP+FP), R = TP/(TP+FN), Acc = TP/(TP+FP+FN) (StarDist's \"accuracy\", "
        "Cellpose's \"AP\"), one-to-one IoU matching; mAcc = Acc averaged over IoU 0.50:0.05:0.95; AJI = Kumar et al.; "
        "US/OS rate = Kromp et al. under-/over-segmentation rates.",
        "",
        "| tool | " + " | ".join(h for h, _, _ in TABLE) + " |",
        "|---|" + "---:|" * len(TABLE),
    ]
    for tool in TOOLS:
        s = tools[tool]["summary"]
        label = tool + (f" ({fs.get('variant')})" if tool == "fluoseg" and fs else "")
        if s is None:
            failed = any(k.startswith(tool + "/") for k in report["failures"])
            label += " (failed, see Failures)" if failed else " (not run)"
            lines.append(f"| {label} | " + " | ".join(["–"] * len(TABLE)) + " |")
        else:
            lines.append(f"| {label} | " + " | ".join(_fmt(s.get(k), f) for _, k, f in TABLE) + " |")
    lines += ["", "Training under the budget:", "",
              "| tool | wall (min) | stopped at budget | optimiser steps x batch | patches seen | s/step (incl. validation) | "
              "train loss first -> last | params | selection | test prediction (s) |",
              "|---|---:|---|---:|---:|---:|---|---:|---|---:|"]
    for tool, t in (("fluoseg", fs), ("cellpose", cp), ("stardist", sd)):
        if not t:
            lines.append(f"| {tool} | – | – | – | – | – | – | – | – | – |")
            continue
        steps = t.get("steps_done", t.get("batches_done"))
        loop = t.get("loop_s") or (t.get("epoch_seconds_median", math.nan) * t.get("epochs_done", 0))
        per_step = (loop / steps) if steps else math.nan
        selection = {"fluoseg": f"best val F1@0.5 (epoch {t.get('best_epoch')}/{t.get('epochs_done')})",
                     "cellpose": "last weights (Cellpose keeps no best)",
                     "stardist": f"best val loss (epoch {t.get('best_epoch')}/{t.get('epochs_done')}), thresholds "
                                 f"optimised on val in {t.get('optimize_thresholds_s', 0):.0f} s (not in budget)"}[tool]
        pred = (tools[tool]["predict"] or {}).get("predict_s")
        lines.append(f"| {tool} | {t['train_wall_s'] / 60:.1f} | {'yes' if t.get('stopped_at_budget') else 'no'} | "
                     f"{steps} x {t.get('batch_size')} | {t.get('images_seen')} | {_fmt(per_step, '{:.2f}')} | "
                     f"{_fmt(t.get('loss_first'), '{:.3f}')} -> {_fmt(t.get('loss_last'), '{:.3f}')} | "
                     f"{t.get('params', 0):,} | {selection} | {_fmt(pred, '{:.0f}')} |")
    lines += ["",
              "Set-ups: **fluoseg** = `bench/nuclei.py`'s instance model (U-Net depth 4, 16 filters, same padding; "
              f"{fs.get('settings', {}).get('instance', {}).get('method', 'border')} decoding), Adam "
              f"{fs.get('settings', {}).get('learning_rate', '')}, 256x256 patches, batch 4, "
              f"{settings.fluoseg_steps} steps per epoch, validated on the whole validation images after each epoch, "
              "killed at the budget (the unfinished epoch is lost; best checkpoint by validation F1@0.5). "
              "**Cellpose** = `CellposeModel(pretrained_model=False)` + `train.train_seg` defaults (AdamW lr 0.005, "
              "batch 8 of 224x224, 10-step warm-up and final decay; one \"epoch\" = one batch so the schedule fits "
              "the budget, sized from a timed probe step), `rescale=False` (no per-image diameters; no tool gets "
              "object sizes), images with < 5 masks dropped (Cellpose default), prediction at the training scale. "
              "**StarDist** = `Config2D(n_rays=32, grid=(2,2))` of its DSB 2018 example (Adam 3e-4, batch 4 of "
              f"256x256, ReduceLROnPlateau), {settings.stardist_steps} steps per epoch, percentile 1-99.8 "
              "normalisation, the example's augmenter, stopped by a callback at the budget, best val-loss weights.",
              ""]
    # speed
    lines += ["## Inference speed and memory (2 threads)", "",
              "Numpy uint8 image in memory -> instance labels in memory (normalisation, network, stitching/tiling, "
              f"decoding). Same images for every tool: a mosaic of test-image crops. Warm-up on {settings.warmup}^2, then "
              f"the median of {settings.repeats} runs (images up to 2048^2) or {settings.repeats_large} run (larger). "
              "Peak RSS = `ru_maxrss` of a fresh process per measurement (model and libraries included). "
              "StarDist predicts 8192^2 in tiles of at most 2048^2 (`n_tiles`); Cellpose tiles 224^2 internally; "
              "fluoseg tiles 572^2 (same padding, blended overlaps).", "",
              "| tool | case | image | MP/s | s per image (median) | runs | peak RSS (MB) | objects | load avg |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for s in sorted(report["speed"], key=lambda s: (s["size"], TOOLS.index(s["tool"]), s["case"])):
        if s.get("estimated"):
            lines.append(f"| {s['tool']} | {s['case']} | {s['size']}^2 *est.* | ~{s['mp_per_s']:.3f} | "
                         f"~{s['median_s']:.0f} | 0 | – | – | – |")
            continue
        lines.append(f"| {s['tool']} | {s['case']} | {s['size']}^2 | {s['mp_per_s']:.3f} | {s['median_s']:.1f} | "
                     f"{len(s['times_s'])} | {s['peak_rss_mb']:.0f} | {_fmt(s['n_objects'], '{}')} | "
                     f"{s.get('load_avg_1min', 0):.1f} |")
    estimated = [s for s in report["speed"] if s.get("estimated")]
    if estimated:
        lines += ["", "*est.*: not run because " + "; ".join(f"{s['tool']} {s['size']}^2: {s['reason']}" for s in estimated)
                  + ". Run them with a larger `--speed-max-minutes`."]
    failed_speed = [k for k in report["failures"] if "/speed" in k]
    if failed_speed:
        lines += ["", "Failed speed measurements: " + ", ".join(f"`{k}`" for k in failed_speed) + " (see peers.json)."]
    # scaling
    lines += ["", "## fluoseg from 1k^2 to 16k^2, Zarr in and Zarr out", "",
              "`probabilities`: `Segmenter.predict_probabilities(zarr_in, out=zarr_out)` (the streamed path: tiles "
              "read from the input store, finished row bands written to the output store). `predict_file`: "
              "`fluoseg.predict.predict_file` of the instance run with a `.zarr` input and output (what "
              "`fluoseg predict --format zarr` does). Growth = ratio to the previous size (one doubling of the side = "
              "4x the pixels: time should grow 4x, memory 1x if flat). Rows marked *est.* were not run "
              f"(above `--max-size {settings.max_size}`, or `--labels-max-size {settings.labels_max_size}` for "
              "predict_file): time x4 per doubling; the memory increment of the last measured doubling x2 per doubling "
              "for the streamed path (its buffers grow with the image width) and x4 for predict_file "
              "(whole-image arrays).", "",
              "| mode | image | MP | time (s) | MP/s | peak RSS (MB) | time growth | memory growth |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in report["scaling"]:
        est = " *est.*" if r.get("estimated") else ""
        lines.append(f"| {r['mode']} | {r['size']}^2{est} | {r['megapixels']:.1f} | {r['seconds']:.1f} | "
                     f"{r['mp_per_s']:.3f} | {r['peak_rss_mb']:.0f} | {_fmt(r.get('time_growth'), 'x{:.2f}')} | "
                     f"{_fmt(r.get('rss_growth'), 'x{:.2f}')} |")
    # flops
    lines += ["", "## Physical reference", ""]
    if fl:
        prob = next((s for s in report["speed"] if s["tool"] == "fluoseg" and s["case"] == "probabilities-1ch"), None)
        lab = next((s for s in report["speed"] if s["tool"] == "fluoseg" and s["case"] == "labels-1ch"
                    and s["size"] == settings.speed_sizes[0]), None)
        lines += [
            f"- fluoseg model ({fl['params']:,} parameters): {fl['tile_flops'] / 1e9:.1f} GFLOP per {fl['tile_input']}^2 "
            f"tile (`FlopCounterMode`, 1 MAC = 2 FLOP) = **{fl['flops_per_tile_pixel'] / 1e3:.0f} kFLOP per pixel**; "
            f"with the tile overlaps of a {fl['image_size']}^2 image ({fl['n_tiles']} tiles) "
            f"{fl['flops_per_image_pixel'] / 1e3:.0f} kFLOP per image pixel (x{fl['overlap_overhead']:.2f}).",
            f"- This machine at {fl['threads']} threads: fp32 matmul {fl['matmul_gflops']:.0f} GFLOP/s "
            f"({fl['matmul_size']}^2, torch {fl['torch']}), 3x3 convolution {fl['conv3x3_gflops']:.0f} GFLOP/s "
            f"({fl['conv3x3_shape']}).",
        ]
        if "tile_forward_s" in fl:
            lines.append(f"- The network alone on one {fl['tile_input']}^2 tile: {fl['tile_forward_s']:.2f} s "
                         f"({fl['tile_forward_gflops']:.1f} GFLOP/s) in torch's default memory format, "
                         f"{fl['tile_forward_channels_last_s']:.2f} s ({fl['tile_forward_channels_last_gflops']:.1f} GFLOP/s) "
                         f"with `channels_last` (x{fl['tile_forward_s'] / fl['tile_forward_channels_last_s']:.2f}); "
                         "fluoseg's inference runs in `channels_last` (`make_batch_predictor`).")
        if fl.get("cellpose"):
            c = fl["cellpose"]
            lines.append(f"- For comparison, the Cellpose 3 network ({c['params']:,} parameters): "
                         f"{c['flops_per_tile_pixel'] / 1e3:.0f} kFLOP per pixel of a 224^2 tile "
                         f"(x{c['flops_per_tile_pixel'] / fl['flops_per_tile_pixel']:.1f} fluoseg's), before its "
                         "tile overlaps and the flow dynamics.")
        for label, s in (("probabilities only", prob), ("labels (with decoding)", lab)):
            if s:
                achieved = s["mp_per_s"] * 1e6 * fl["flops_per_image_pixel"]
                lines.append(f"- Achieved at {s['size']}^2, {label}: {s['mp_per_s']:.3f} MP/s x "
                             f"{fl['flops_per_image_pixel'] / 1e3:.0f} kFLOP/pixel = **{achieved / 1e9:.1f} GFLOP/s**, "
                             f"{100 * achieved / (fl['matmul_gflops'] * 1e9):.0f}% of the matmul peak, "
                             f"{100 * achieved / (fl['conv3x3_gflops'] * 1e9):.0f}% of the conv3x3 rate.")
    else:
        lines.append("- not measured (stage `flops` not run or failed)")
    if report["failures"]:
        lines += ["", "## Failures", ""]
        for key, value in report["failures"].items():
            first = value["error"].strip().splitlines()[0] if value["error"].strip() else "?"
            lines.append(f"- `{key}` ({value['when']}): {first[:300]}")
    lines += ["", "## Reading", "", *reading(settings, report)]
    if NOTES.is_file():  # the judgement a person adds to the mechanical reading
        lines += ["", NOTES.read_text().strip()]
    if settings.reference is not None:
        lines += ["", *reproduction(settings, report)]
    lines += ["", "## Reproduce", "", "```bash",
              "# full run (venvs once, then every stage; cached and resumable: rerun the same command after an interruption)",
              "nohup .venv/bin/python bench/peers.py > bench/work/peers.log 2>&1 &",
              "# the second run, in its own work folder (training and 2048^2 speed)",
              ".venv/bin/python bench/peers.py --work bench/work/peers/full2 --results bench/work/peers/full2/results "
              "--speed-sizes 2048 --stages data,train,predict,evaluate,speed,report",
              "# the 16384^2 scaling row",
              ".venv/bin/python bench/peers.py --stages data,scaling,report --max-size 16384",
              "# this report from the caches",
              ".venv/bin/python bench/peers.py --stages report" + (" --smoke" if settings.smoke else "")
              + (f" --reference {rel(settings.reference)}" if settings.reference else ""),
              "```", "", f"This report's run: `{report['command']}`", ""]
    return "\n".join(lines)


REPRODUCED_METRICS = (("F1@0.5", "f1_at_0.5"), ("mAcc 0.5:0.95", "accuracy_mean_0.5_0.95"), ("AJI", "aji"))


def reproduction(settings: Settings, report: dict[str, Any]) -> list[str]:
    """This run's headline numbers next to those of another run (``--reference WORK``)."""
    other = collect(replace(settings, work=settings.reference))
    lines = ["## Second run", "", f"The same script in `{rel(settings.reference)}` (trained and measured again from "
             "scratch): headline numbers of both runs and their difference.", "",
             "| tool | figure | this run | second run | difference |", "|---|---|---|---|---|"]
    for tool in TOOLS:
        mine, theirs = report["tools"][tool]["summary"], other["tools"][tool]["summary"]
        for label, key in REPRODUCED_METRICS:
            if mine and theirs:
                lines.append(f"| {tool} | {label} | {mine[key]:.3f} | {theirs[key]:.3f} | {theirs[key] - mine[key]:+.3f} |")
    speed = {(s["tool"], s["size"], s["case"]): s for s in other["speed"] if not s.get("estimated")}
    for s in report["speed"]:
        twin = speed.get((s["tool"], s["size"], s["case"]))
        if twin and not s.get("estimated"):
            lines.append(f"| {s['tool']} | MP/s at {s['size']}^2 ({s['case']}) | {s['mp_per_s']:.3f} | "
                         f"{twin['mp_per_s']:.3f} | {100 * (twin['mp_per_s'] / s['mp_per_s'] - 1):+.0f}% |")
    return lines + [""]


def commits_line(report: dict[str, Any]) -> str:
    """Which fluoseg commits the cached training and measurements were made with (when recorded)."""
    train = (report["tools"]["fluoseg"]["train"] or {}).get("fluoseg_commit")
    measured = sorted({s["fluoseg_commit"] for s in report["speed"] if s["tool"] == "fluoseg" and s.get("fluoseg_commit")})
    parts = ([f"trained at {train}"] if train else []) + ([f"speed measured at {', '.join(measured)}"] if measured else [])
    return f" ({'; '.join(parts)})" if parts else ""


def reading(settings: Settings, report: dict[str, Any]) -> list[str]:
    """A short, mechanical reading of the numbers (the lead adds the judgement)."""
    out = []
    tools = report["tools"]
    scored = {t: p["summary"] for t, p in tools.items() if p["summary"]}
    if scored:
        best = max(scored, key=lambda t: scored[t]["f1_at_0.5"])
        if scored[best]["f1_at_0.5"] == 0:
            out.append(f"- No tool matches a single nucleus at IoU 0.5 after {settings.budget_s / 60:g} min (F1@0.5 = 0 "
                       "for all); see the predicted object counts and training losses above.")
        else:
                out.append(f"- Highest F1@0.5 after {settings.budget_s / 60:g} min: **{best}** "
                       f"({scored[best]['f1_at_0.5']:.3f}); " + ", ".join(
                           f"{t} {s['f1_at_0.5']:.3f} (mAcc {s['accuracy_mean_0.5_0.95']:.3f}, AJI {s['aji']:.3f})"
                           for t, s in scored.items() if t != best) + ".")
        seen = {t: (p["train"] or {}).get("images_seen") for t, p in tools.items()}
        out.append("- Patches seen within the budget: " + ", ".join(f"{t} {n}" for t, n in seen.items() if n) +
                   ". A CPU budget favours cheap networks: this compares what each tool reaches on 2 cores in the "
                   "same time, not the tools' accuracy when trained to convergence.")
    big = max(settings.speed_sizes)
    speed = {s["tool"]: s for s in report["speed"] if s["size"] == big and s["case"] == "labels-1ch"
             and not s.get("estimated")}
    if speed:
        out.append(f"- At {big}^2: " + ", ".join(f"{t} {s['mp_per_s']:.3f} MP/s / {s['peak_rss_mb'] / 1024:.1f} GB"
                                                 for t, s in speed.items()) + " (labels, peak RSS).")
    rows = [r for r in report["scaling"] if r["mode"] == "probabilities" and not r.get("estimated")]
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        ratio = last["peak_rss_mb"] / first["peak_rss_mb"]
        pixels = (last["size"] / first["size"]) ** 2
        verdict = "flat" if ratio < 1.5 else ("NOT flat" if ratio > 2.5 else "nearly flat")
        steps = math.log2(last["size"] / first["size"])
        out.append(f"- Streamed Zarr -> Zarr probabilities: peak RSS {first['peak_rss_mb']:.0f} MB at {first['size']}^2 "
                   f"-> {last['peak_rss_mb']:.0f} MB at {last['size']}^2 (x{ratio:.2f} for x{pixels:.0f} pixels, "
                   f"{(last['peak_rss_mb'] - first['peak_rss_mb']) / steps:+.0f} MB per doubling on average): "
                   f"memory is {verdict}; what grows is the row-band buffers, proportional to the image width.")
    rows = [r for r in report["scaling"] if r["mode"] == "predict_file" and not r.get("estimated")]
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        ratio = last["peak_rss_mb"] / first["peak_rss_mb"]
        out.append(f"- `predict_file` (instance labels, Zarr in and out): peak RSS {first['peak_rss_mb']:.0f} MB at "
                   f"{first['size']}^2 -> {last['peak_rss_mb']:.0f} MB at {last['size']}^2 "
                   f"(x{ratio:.2f} for x{(last['size'] / first['size']) ** 2:.0f} pixels)"
                   + (": NOT flat - for instance runs `predict_labels` stitches the whole image's maps into one "
                      "in-memory array and decodes the labels of the whole image, so Zarr output does not stream."
                      if ratio > 1.5 else "."))
    if report["failures"]:
        out.append("- Failed stages: " + ", ".join(f"`{k}`" for k in report["failures"]) + ".")
    return out


RUNNERS = {  # stage -> what runs it (the report is written last, whatever ran)
    "venvs": stage_venvs, "data": lambda settings, failures: stage_data(settings), "train": stage_train,
    "predict": stage_predict, "evaluate": stage_evaluate, "flops": stage_flops, "speed": stage_speed,
    "scaling": stage_scaling,
}


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"comma-separated stages to run, in this order: {','.join(STAGES)} (default all)")
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
                        "auto: the best of bench/results/nuclei.csv when it exists, else border")
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
    parser.add_argument("--reference", type=Path, help="another work folder of this benchmark (a second run with "
                        "--work): the report adds a table comparing the two runs' headline numbers")
    parser.add_argument("--results", type=Path, help=f"results folder (default {rel(RESULTS)}; smoke WORK/results)")
    args = parser.parse_args(argv)

    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    terminate_child_on_sigterm()
    smoke = args.smoke
    work = (args.work or (SMOKE_WORK if smoke else DEFAULT_WORK)).resolve()
    variant, why = choose_fluoseg_variant(args.fluoseg_variant)
    trained = read_json(work / "fluoseg" / "train.json")
    if trained and trained["variant"] != variant:
        if args.fluoseg_variant != "auto":
            log(f"WARNING: {rel(work)}/fluoseg holds a training of {trained['variant']}, not {variant}; "
                f"delete {rel(work)}/fluoseg to retrain; using the cached {trained['variant']}")
        variant, why = trained["variant"], "the cached training of this work folder"
    settings = Settings(
        work=work, results=(args.results or (work / "results" if smoke else RESULTS)).resolve(),
        data=args.data.resolve(), smoke=smoke, threads=args.threads,
        budget_s=60 * (args.budget_minutes or (SMOKE["budget_minutes"] if smoke else BUDGET_MINUTES)),
        fluoseg_variant=variant,
        fluoseg_steps=SMOKE["fluoseg_steps"] if smoke else FLUOSEG_STEPS,
        stardist_steps=SMOKE["stardist_steps"] if smoke else STARDIST_STEPS,
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
        reference=args.reference.resolve() if args.reference else None,
    )
    work.mkdir(parents=True, exist_ok=True)
    cached = read_json(work / "settings.json")
    if cached and (work / "fluoseg" / "train.json").is_file() and cached.get("budget_s") != settings.budget_s:
        log(f"WARNING: the cached trainings in {rel(work)} used a budget of {cached['budget_s'] / 60:.1f} min, not "
            f"{settings.budget_s / 60:.1f}; delete {rel(work)}/*/train.json (and what follows) to retrain")
    write_json(work / "settings.json", {"budget_s": settings.budget_s, "threads": settings.threads,
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
