"""Memory and time of instance prediction on large images: blockwise vs whole-image decoding.

For each image side (1024² to 8192² by default) a synthetic nuclei image is written as Zarr
and ``fluoseg predict`` runs on it in a child process, in three modes:

* ``blockwise``: Zarr labels out, decoded block by block (1024 px blocks, the default halo);
* ``whole``: TIFF labels out, decoded for the whole image at once (sizes up to 4096²;
  larger TIFF outputs are decoded blockwise too, so there is nothing to compare);
* ``workers-1``, ``workers-2``: as ``blockwise`` with ``--workers 1`` or ``2``: a local Dask
  cluster runs the network pass in bands of rows and the block decoding (the peak RSS is the
  child's ``ru_maxrss``: the largest of it and the descendants it waited for, which include
  the worker processes).

A 3D example (``--stack``): a simulated nuclei z-stack (``fluoseg synth nuclei3d``'s
simulator, 24 x 512 x 512 voxels, Zarr) predicted blockwise (Zarr labels; blocks of 8 planes
x 256² px, slices stitched into 3D objects and linked across blocks in z as in y/x) and at
once (TIFF labels, the whole stack stitched), with the same partition check.

* ``semantic``: a semantic model of the same network (nucleus foreground, trained here on
  the same images) with Zarr masks out: probabilities streamed to disk, masks decoded band
  by band.

The peak resident memory of the child (``wait4``'s ``ru_maxrss``), its wall time and the
object count are recorded; where ``blockwise`` and ``whole`` both ran, their labels are
compared (the same partition of the pixels, ids aside). The instance model is a small
threshold U-Net trained here for a minute on synthetic nuclei (``--model RUN`` uses another
run; it must not rescale images: ``--diameter off`` is passed).

Run from the repository root::

    python bench/scale.py                       # 1024² .. 8192², results/scale.md (long)
    python bench/scale.py --max-size 2048       # a short run: sizes above are left out
    python bench/scale.py --smoke               # 512² and 1024², results under bench/work/scale
    python bench/scale.py --report              # rebuild the tables from the cached records
    python bench/scale.py --sizes 16384 --max-size 16384 --modes blockwise --threads 1  # the largest row
    python bench/scale.py --stack --sizes none  # the 3D example only

Finished measurements are skipped on rerun (records in ``bench/work/scale/records``). Rows
measured on another machine, whose records are not here, are kept from the committed
``results/scale.csv`` and ``results/scale_checks.csv``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import yaml
from _common import (
    RESULTS,
    WORK,
    child_env,
    fluoseg_command,
    git_commit,
    log,
    read_json,
    read_rows,
    rel,
    run_fluoseg,
    write_json,
    write_rows,
    write_text,
)

from fluoseg.instance.blockjobs import MAP_CHUNK
from fluoseg.io import create_output, read_image, write_image

SIZES = (1024, 2048, 4096, 8192)
STACK_SHAPE = (24, 512, 512)
STACK_BLOCKS = ["--block-size", "256", "--block-depth", "8"]
WHOLE_MAX = 4096
RSS_TARGET = 1.5
"""Issue 13: peak RSS of instance prediction at 16384² at most this multiple of that at 2048²."""
MODES = ("blockwise", "whole", "workers-1", "workers-2", "semantic")
CHUNK = 512
MODEL_OPTIONS = {"depth": 2, "base_filters": 8, "padding": "same"}
"""The small threshold U-Net the script trains."""


def nuclei_tile(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``size``² uint8 image of bright discs (radius 4-9 px) on noise, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint16)
    n = int(size * size / 900)  # about one nucleus per 30x30 px
    yy, xx = np.ogrid[:size, :size]
    for i in range(1, n + 1):
        cy, cx = rng.integers(0, size, 2)
        r = rng.uniform(4, 9)
        y0, y1, x0, x1 = max(cy - 10, 0), min(cy + 11, size), max(cx - 10, 0), min(cx + 11, size)
        disc = ((yy[y0:y1] - cy) ** 2 + (xx[:, x0:x1] - cx) ** 2 <= r * r) & (labels[y0:y1, x0:x1] == 0)
        labels[y0:y1, x0:x1][disc] = i
    image = rng.normal(20, 6, (size, size)) + rng.uniform(90, 160) * (labels > 0)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def train_model(work: Path, threads: int, *, task: str = "instance") -> Path:
    """A small U-Net trained on synthetic nuclei (skipped when it exists): a threshold instance
    model, or (``task="semantic"``) the nucleus foreground as one class."""
    folder = work / ("model" if task == "instance" else f"model-{task}")
    run = folder / "run"
    if (folder / "train.done").is_file():
        return run
    data = folder / "data"
    for i in range(6):
        image, labels = nuclei_tile(1000 + i, 256)
        write_image(data / "images" / f"t{i}.tif", image, axes="YX", overwrite=True)
        write_image(data / "labels" / f"t{i}.tif", labels, axes="YX", overwrite=True)
        write_image(data / "masks" / f"t{i}.tif", (labels > 0).astype(np.uint8), axes="YX", overwrite=True)
    manifest = {"markers": ["DNA"], "images": "images/*.tif"}
    if task == "instance":
        manifest["labels"] = "labels/{id}.tif"
        task_options: dict[str, Any] = {"task": "instance", "instance": {"method": "threshold", "min_size": 10}}
    else:
        manifest.update(classes=["nuclei"], masks="masks/{id}.tif")
        task_options = {"task": "semantic"}
    write_text(data / "manifest.yaml", yaml.safe_dump(manifest))
    config = {"data": {"manifest": str(data / "manifest.yaml"), "split": {"val": ["t5"]}}, **task_options,
              "model": {"name": "unet", "options": dict(MODEL_OPTIONS)},
              "train": {"epochs": 6, "steps_per_epoch": 10, "batch_size": 4, "patch_size": 128, "device": "cpu",
                        "num_threads": threads, "learning_rate": 3e-3}}
    write_text(folder / "config.yaml", yaml.safe_dump(config))
    log(f"training the benchmark model ({task} U-Net, synthetic nuclei)")
    run_fluoseg(["train", folder / "config.yaml", "--out", run, "--overwrite", "--quiet"],
                work / "logs" / f"train-{task}.log", threads=threads)
    write_text(folder / "train.done", "done\n")
    return run


def make_image(work: Path, size: int) -> Path:
    """A ``size``² one-channel Zarr of synthetic nuclei, written chunk by chunk."""
    path = work / "data" / f"nuclei_{size}.zarr"
    if path.exists():
        return path
    with create_output(path, shape=(1, size, size), dtype="uint8", axes="CYX", channel_names=["DNA"],
                       chunks=(1, CHUNK, CHUNK)) as out:
        for y in range(0, size, CHUNK):
            for x in range(0, size, CHUNK):
                out.array[0, y:y + CHUNK, x:x + CHUNK] = nuclei_tile(y * size + x, CHUNK)[0]
    return path


def run_measured(command: list[str], log_path: Path, threads: int) -> dict[str, float]:
    """Run a child; its exit status, wall seconds and peak RSS (MB, from ``wait4``)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(command)}\n")
        handle.flush()
        started = time.time()
        child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=child_env(threads))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return {"code": child.returncode, "seconds": time.time() - started, "peak_rss_mb": usage.ru_maxrss / 1024}


def labels_path(work: Path, mode: str, size: int) -> Path:
    return work / "out" / f"{mode}-{size}" / (f"nuclei_{size}.zarr" if mode != "whole" else f"nuclei_{size}.tif")


def measure(work: Path, run: Path, mode: str, size: int, threads: int) -> dict[str, Any] | None:
    record_path = work / "records" / f"{mode}-{size}.json"
    record = read_json(record_path)
    if record is not None:
        log(f"{mode} {size}²: done, skipped")
        return record
    image = make_image(work, size)
    out = labels_path(work, mode, size).parent
    args = ["predict", run, image, "--out", out, "--diameter", "off", "--quiet", "--overwrite",
            "--threads", threads, "--format", "tif" if mode == "whole" else "zarr"]
    if mode.startswith("workers-"):
        args += ["--workers", int(mode.split("-")[1])]
    log(f"{mode} {size}²: fluoseg predict")
    load = os.getloadavg()[0]
    result = run_measured(fluoseg_command(*args), work / "logs" / f"{mode}-{size}.log", threads)
    if result["code"] != 0:
        raise RuntimeError(f"{mode} {size}² failed (exit {result['code']}); see {rel(work / 'logs')}")
    labels = read_image(labels_path(work, mode, size), lazy=True).array
    n_objects = None if mode == "semantic" else max(int(np.asarray(labels[(0, slice(y, y + 2048))]).max(initial=0))
                                                    for y in range(0, size, 2048))
    record = {"mode": mode, "size": size, "megapixels": size * size / 1e6, "seconds": result["seconds"],
              "mp_per_s": size * size / 1e6 / result["seconds"], "peak_rss_mb": result["peak_rss_mb"],
              "n_objects": n_objects, "load_avg_1min": load, "threads": threads, "fluoseg_commit": git_commit()}
    write_json(record_path, record)
    log(f"{mode} {size}²: {record['seconds']:.1f} s, peak RSS {record['peak_rss_mb']:.0f} MB, {n_objects} objects")
    return record


def compare_workers(work: Path, size: int) -> dict[str, Any] | None:
    """Whether the Dask workers' labels equal the one-process labels, id for id (cached)."""
    path = work / "records" / f"workers-equal-{size}.json"
    if read_json(path) is not None:
        return read_json(path)
    reference = labels_path(work, "blockwise", size)
    others = {m: labels_path(work, m, size) for m in ("workers-1", "workers-2")}
    if not reference.exists() or not all(p.exists() for p in others.values()):
        return None
    one = read_image(reference, lazy=True).array
    record: dict[str, Any] = {"size": size}
    for mode, other_path in others.items():
        other = read_image(other_path, lazy=True).array
        record[f"{mode}_identical"] = all(np.array_equal(np.asarray(one[:, y:y + 2048]), np.asarray(other[:, y:y + 2048]))
                                          for y in range(0, size, 2048))
    write_json(path, record)
    return record


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images group the pixels alike (ids aside)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    keys = np.unique(a.astype(np.int64) * (int(b.max()) + 1) + b)
    return keys.size == np.unique(a).size == np.unique(b).size


def compare(work: Path, size: int) -> dict[str, Any] | None:
    """blockwise == whole-image check at one size (cached)."""
    path = work / "records" / f"equal-{size}.json"
    if read_json(path) is not None:
        return read_json(path)
    paths = [labels_path(work, mode, size) for mode in ("blockwise", "whole")]
    if not all(p.exists() for p in paths):
        return None
    a, b = (np.asarray(read_image(p).array)[0] for p in paths)
    record = {"size": size, "same_partition": same_partition(a, b), "objects_blockwise": int(np.unique(a).size - 1),
              "objects_whole": int(np.unique(b).size - 1)}
    write_json(path, record)
    return record


def make_stack(work: Path) -> Path:
    """The simulated nuclei stack of the 3D example as a CZYX Zarr (with its pixel size)."""
    from fluoseg.data.synth.nuclei3d import simulate_nuclei_3d

    path = work / "data" / "nuclei3d.zarr"
    if not path.exists():
        stack = simulate_nuclei_3d(STACK_SHAPE, seed=3)
        write_image(path, stack.image, axes="CZYX", channel_names=["DNA"], pixel_size=stack.pixel_size)
    return path


def measure_stack(work: Path, run: Path, threads: int) -> dict[str, Any] | None:
    """The 3D example: blockwise (stitched across z-blocks) and whole-stack labels, and their comparison."""
    record_path = work / "records" / "stack3d.json"
    if read_json(record_path) is not None:
        log("3D stack: done, skipped")
        return read_json(record_path)
    image = make_stack(work)
    record: dict[str, Any] = {"shape": "x".join(map(str, STACK_SHAPE)), "megavoxels": float(np.prod(STACK_SHAPE)) / 1e6,
                              "blocks": " ".join(STACK_BLOCKS), "threads": threads, "fluoseg_commit": git_commit()}
    outputs = {}
    for mode, fmt in (("blockwise", "zarr"), ("whole", "tif")):
        out = work / "out" / f"stack3d-{mode}"
        args = ["predict", run, image, "--out", out, "--diameter", "off", "--quiet", "--overwrite", "--threads",
                threads, "--format", fmt, *(STACK_BLOCKS if mode == "blockwise" else [])]
        log(f"3D stack {mode}: fluoseg predict")
        record[f"{mode}_load_avg_1min"] = os.getloadavg()[0]
        result = run_measured(fluoseg_command(*args), work / "logs" / f"stack3d-{mode}.log", threads)
        if result["code"] != 0:
            raise RuntimeError(f"3D stack {mode} failed (exit {result['code']}); see {rel(work / 'logs')}")
        record[f"{mode}_seconds"], record[f"{mode}_peak_rss_mb"] = result["seconds"], result["peak_rss_mb"]
        outputs[mode] = np.asarray(read_image(out / f"nuclei3d.{fmt}").array)[0]
    blockwise, whole = outputs["blockwise"], outputs["whole"]
    z_block = np.nonzero(whole)[0] // int(STACK_BLOCKS[-1])
    pairs = np.unique(whole[whole > 0].astype(np.int64) * 1024 + z_block)  # (object, z-block) pairs
    blocks_per_object = np.bincount(pairs // 1024)
    record.update(same_partition=same_partition(blockwise, whole), objects_blockwise=int(np.unique(blockwise).size - 1),
                  objects_whole=int(np.unique(whole).size - 1),
                  objects_across_z_blocks=int((blocks_per_object > 1).sum()))
    write_json(record_path, record)
    log(f"3D stack: same partition {record['same_partition']}, {record['objects_whole']} objects")
    return record


def _kept(target: Path, name: str, key: tuple[str, ...], fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``fresh`` records plus the committed rows of ``target/name`` that they do not replace."""
    have = {tuple(str(r[k]) for k in key) for r in fresh}
    # rows of modes no longer measured (an earlier design's) are dropped
    old = [r for r in read_rows(target / name) if tuple(r[k] for k in key) not in have and r.get("mode", MODES[0]) in MODES]
    return fresh + [{k: _value(v) for k, v in row.items()} for row in old]


def _value(text: str) -> Any:
    """A CSV cell as the number, bool or None it was written from (other text as it is)."""
    if text in ("True", "False"):
        return text == "True"
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def render(work: Path, target: Path, sizes: list[int]) -> None:
    records = [r for mode in MODES for size in sizes if (r := read_json(work / "records" / f"{mode}-{size}.json"))]
    records = _kept(target, "scale.csv", ("mode", "size"), records)
    records.sort(key=lambda r: (MODES.index(r["mode"]), int(r["size"])))
    sizes = sorted({int(r["size"]) for r in records} | set(sizes))
    for mode in MODES:
        previous = None
        for r in (r for r in records if r["mode"] == mode):
            r["rss_growth"] = r["peak_rss_mb"] / previous["peak_rss_mb"] if previous else None
            previous = r
    write_rows(target / "scale.csv", records)
    lines = [
        "# Instance prediction on large images: memory and time",
        "",
        f"Generated by `bench/scale.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load shared with other jobs: "
        "the load average is listed). Synthetic nuclei (one per ~30x30 px), a small threshold U-Net trained "
        "by the script, `fluoseg predict ... --diameter off` in a child process; peak RSS is the child's "
        "`ru_maxrss`.",
        "",
        "| mode | size | MP | threads | seconds | MP/s | peak RSS (MB) | RSS growth | objects | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        growth = f"x{r['rss_growth']:.2f}" if r.get("rss_growth") else "–"
        lines.append(f"| {r['mode']} | {r['size']}² | {r['megapixels']:.1f} | {r['threads']} | {r['seconds']:.1f} | "
                     f"{r['mp_per_s']:.2f} | {r['peak_rss_mb']:.0f} | {growth} | {r['n_objects'] or '–'} | "
                     f"{r['load_avg_1min']:.1f} |")
    measured = {(r["mode"], int(r["size"])) for r in records}
    missing = [f"{m} {s}²" for m in MODES for s in sizes if not (m == "whole" and s > WHOLE_MAX) and (m, s) not in measured]
    if missing:
        lines += ["", f"Not measured in this run: {', '.join(missing)}."]
    blockwise = {int(r["size"]): r for r in records if r["mode"] == "blockwise"}
    if 2048 in blockwise and max(blockwise) > 2048:
        top = max(blockwise)
        ratio = blockwise[top]["peak_rss_mb"] / blockwise[2048]["peak_rss_mb"]
        lines += ["", f"Blockwise peak RSS at {top}² is x{ratio:.2f} that at 2048² for {top * top // (2048 * 2048)}x "
                  f"the pixels (issue 13's target: at most x{RSS_TARGET:.1f}: "
                  f"{'met' if ratio <= RSS_TARGET else 'NOT met'}). What remains grows with the image's width: the "
                  "network pass stitches tiles band by band across the whole width, and the maps are written in "
                  f"{MAP_CHUNK}x{MAP_CHUNK} chunks."]
    checks = [c for s in sizes if (c := read_json(work / "records" / f"equal-{s}.json"))]
    checks = sorted(_kept(target, "scale_checks.csv", ("size",), checks), key=lambda c: int(c["size"]))
    write_rows(target / "scale_checks.csv", checks)
    if checks:
        lines += ["", "## blockwise == whole-image decoding", "", "| size | same partition | objects (blockwise / whole) |",
                  "|---|---|---|"]
        lines += [f"| {c['size']}² | {'yes' if c['same_partition'] else 'NO'} | {c['objects_blockwise']} / "
                  f"{c['objects_whole']} |" for c in checks]
    stack = read_json(work / "records" / "stack3d.json")
    if stack is not None:
        write_json(target / "scale_stack3d.json", stack)
    else:
        stack = read_json(target / "scale_stack3d.json")
    if stack is not None:
        lines += ["", "## 3D example: a simulated nuclei z-stack", "",
                  f"`fluoseg synth nuclei3d`'s simulator, {stack['shape']} voxels (z step 1 µm, 0.5 µm in y/x) as "
                  f"Zarr; blockwise with `{stack['blocks']}` (windows add 1 plane in z and the default halo in y/x; "
                  "slices stitched with the default IoU 0.25) against the whole stack decoded and stitched at once "
                  f"(TIFF output); {stack['threads']} thread(s).", "",
                  "| mode | seconds | peak RSS (MB) | objects | load avg |", "|---|---|---|---|---|"]
        lines += [f"| {m} | {stack[f'{m}_seconds']:.1f} | {stack[f'{m}_peak_rss_mb']:.0f} | "
                  f"{stack[f'objects_{m}']} | {stack[f'{m}_load_avg_1min']:.1f} |" for m in ("blockwise", "whole")]
        lines += ["", f"Same partition: **{'yes' if stack['same_partition'] else 'NO'}**; "
                  f"{stack['objects_across_z_blocks']} of the objects span more than one z-block."]
    semantic = {int(r["size"]): r for r in records if r["mode"] == "semantic"}
    if 2048 in semantic and max(semantic) > 2048:
        top = max(semantic)
        ratio = semantic[top]["peak_rss_mb"] / semantic[2048]["peak_rss_mb"]
        lines += ["", f"Semantic (`semantic` rows: probabilities streamed Zarr to Zarr, masks band by band): peak RSS "
                  f"at {top}² is x{ratio:.2f} that at 2048²."]
    lines += workers_section(records, work)
    write_text(target / "scale.md", "\n".join(lines))
    log(f"wrote {rel(target / 'scale.md')}")


def band_overheads(size: int, workers: int) -> tuple[int, float]:
    """Bands ``--workers N`` plans for an image side by default, and their tiles over one pass's.

    The geometry is the scale model's (:data:`MODEL_OPTIONS`, 572-px tiles) and the bands those
    :mod:`fluoseg.bandjobs` plans on the maps' chunk rows.
    """
    from fluoseg.bandjobs import band_overhead, default_band_rows, plan_bands
    from fluoseg.models import build_model
    from fluoseg.network_pass import NetworkPass
    from fluoseg.tiling import geometry_for

    geometry = geometry_for(build_model("unet", in_channels=1, out_channels=1, options=MODEL_OPTIONS), 572)
    # what bandjobs reads of a pass: its shape and its members' tile geometry
    shaped = cast(NetworkPass, SimpleNamespace(shape=(1, size, size), members=(SimpleNamespace(geometry=geometry),)))
    bands = plan_bands((size, size), chunk_rows=MAP_CHUNK, band_rows=default_band_rows(shaped, workers))
    return len(bands), band_overhead(shaped, bands)


def workers_section(records: list[dict[str, Any]], work: Path) -> list[str]:
    """1 and 2 Dask workers against one process, and what N machines would give."""
    by = {(r["mode"], int(r["size"])): r for r in records}
    sizes = sorted({s for m, s in by if m.startswith("workers-")})
    if not sizes:
        return []
    lines = ["", "## 1 and 2 Dask workers", "",
             "`--workers N`: the network pass runs as band tasks on the workers (rows on the maps' chunk borders, "
             "bit for bit the single-process maps), then the blocks are decoded there too; the main process plans, "
             "computes the normalisation statistics, links the blocks (phase B) and commits the output. Tiles on a "
             "band border are computed by both bands (the tiles-computed column).", "",
             "| size | one process (s) | 1 worker (s) | 2 workers (s) | 2 workers vs 1 | bands (1 / 2 workers) | "
             "tiles computed, x one pass (1 / 2 workers) | load avg (1 / 2 workers) |",
             "|---|---|---|---|---|---|---|---|"]
    for size in sizes:
        one, w1, w2 = (by.get((m, size)) for m in ("blockwise", "workers-1", "workers-2"))
        cell = lambda r: f"{r['seconds']:.1f}" if r else "–"  # noqa: E731
        speedup = f"x{w1['seconds'] / w2['seconds']:.2f}" if w1 and w2 else "–"
        (bands1, extra1), (bands2, extra2) = band_overheads(size, 1), band_overheads(size, 2)
        load = " / ".join(f"{r['load_avg_1min']:.1f}" if r else "–" for r in (w1, w2))
        lines.append(f"| {size}² | {cell(one)} | {cell(w1)} | {cell(w2)} | {speedup} | {bands1} / {bands2} | "
                     f"x{extra1:.2f} / x{extra2:.2f} | {load} |")
    identical = [c for s in sizes if (c := read_json(work / "records" / f"workers-equal-{s}.json"))]
    if identical:
        same = all(c["workers-1_identical"] and c["workers-2_identical"] for c in identical)
        checked = ", ".join(f"{c['size']}²" for c in identical)
        lines += ["", f"Labels of 1 and 2 workers identical to the one-process labels (id for id) at {checked}: "
                  f"**{'yes' if same else 'NO'}**."]
    lines += ["", "**N machines.** Each band and each block is an independent task that reads its window of the "
              "input (or of the maps) from shared storage and writes only its own chunks, so with a scheduler "
              "(`--scheduler ADDRESS`, e.g. dask-jobqueue) both phases spread over the workers: their time falls "
              "about as 1/N times the band overhead above, while the bands (two per worker by default, at least a tile row "
              "tall, so each border costs a tile row twice: more workers, more overhead; `--band-rows` sets them) "
              "and the blocks outnumber the workers. What stays serial is the main process's part: the "
              "statistics pass over the image, linking the blocks' strips, and committing the output, plus the "
              "shared file system's bandwidth. On this 2-core machine the workers and the main process share the "
              "same two cores, so the table shows the cost of the task machinery here, not the gain on separate "
              "machines.", ""]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="image sides, comma-separated")
    parser.add_argument("--max-size", type=int, default=max(SIZES), help="leave out larger sides (a short run)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"modes to run, from {','.join(MODES)}")
    parser.add_argument("--model", type=Path, help="a run directory to use instead of training one")
    parser.add_argument("--threads", type=int, default=2, help="threads of the child processes (default 2)")
    parser.add_argument("--smoke", action="store_true", help="512² and 1024² only, results under bench/work/scale")
    parser.add_argument("--report", action="store_true", help="only rebuild the tables from the cached records")
    parser.add_argument("--stack", action="store_true", help="also run the 3D example (a simulated nuclei stack)")
    args = parser.parse_args()
    work = WORK / ("scale-smoke" if args.smoke else "scale")
    target = work if args.smoke else RESULTS
    sizes = [512, 1024] if args.smoke else [s for s in map(int, filter(str.isdigit, args.sizes.split(",")))
                                            if s <= args.max_size]
    modes = [m for m in args.modes.split(",") if m in MODES]
    if not args.report:
        run = args.model or train_model(work, args.threads)
        for size in sizes:
            for mode in modes:
                if mode == "whole" and size > WHOLE_MAX:
                    continue
                model = train_model(work, args.threads, task="semantic") if mode == "semantic" else run
                measure(work, model, mode, size, args.threads)
            compare(work, size)
            compare_workers(work, size)
        if args.stack:
            measure_stack(work, run, args.threads)
    render(work, target, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
