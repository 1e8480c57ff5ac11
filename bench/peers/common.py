"""Helpers shared by the job scripts that run inside the peers' own virtual environments.

Only the standard library, numpy and tifffile are used here (both peer venvs have them);
nothing of fluoseg is imported: these scripts never run in fluoseg's venv.

Protocol: ``python JOB.py COMMAND SPEC.json``; the spec is written by ``bench/peers.py`` and
names the data, ids, thread count, deadlines and output paths; the job writes its result
JSON (``spec["result"]``) atomically at the end. The budget clock of a training job starts
when the process starts (:data:`PROCESS_START`), so imports and data preparation count.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

PROCESS_START = time.time()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_spec() -> tuple[str, dict[str, Any]]:
    if len(sys.argv) != 3:
        raise SystemExit(f"usage: {sys.argv[0]} COMMAND SPEC.json")
    return sys.argv[1], json.loads(Path(sys.argv[2]).read_text())


def write_result(spec: dict[str, Any], result: dict[str, Any]) -> None:
    path = Path(spec["result"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(result, indent=1, default=float))
    os.replace(tmp, path)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_pairs(data: str, ids: list[str]):
    """(image, labels) numpy arrays of the given ids, as stored (uint8 images, uint16 labels)."""
    import tifffile

    root = Path(data)
    images = [tifffile.imread(root / "images" / f"{i}.tif") for i in ids]
    labels = [tifffile.imread(root / "labels" / f"{i}.tif") for i in ids]
    return images, labels


def read_images(data: str, ids: list[str]):
    import tifffile

    return [tifffile.imread(Path(data) / "images" / f"{i}.tif") for i in ids]


def write_labels(path: Path, labels) -> None:
    import numpy as np
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    tmp = path.with_name(f".{path.name}.partial.tif")
    tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")
    os.replace(tmp, path)


class StageTimer:
    """Seconds spent inside wrapped functions (a tool's decoding), reset before each timed run."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        return timed


def time_runs(run, image, *, repeats: int, warmup_image, max_seconds: float | None = None,
              decode_timer: StageTimer | None = None) -> dict[str, Any]:
    """Warm up on a small image, then time ``run(image)`` ``repeats`` times.

    With ``max_seconds``, no further run starts once the timed runs so far plus one more
    would exceed it (at least one run is always made). With ``decode_timer`` (wrapped around
    the tool's decoding), each run's time is split into decoding and the rest ("network":
    normalisation, rescaling, network and tiling).

    Returns the times, their median, megapixels per second, the object count of the last run
    and the peak resident memory of the process (after warm-up and after the timed runs).
    """
    import numpy as np

    started = time.perf_counter()
    run(warmup_image)
    warmup_s = time.perf_counter() - started
    rss_after_warmup = peak_rss_mb()
    times, decode_times, n_objects = [], [], None
    for _ in range(repeats):
        if times and max_seconds is not None and sum(times) + times[-1] > max_seconds:
            break
        if decode_timer is not None:
            decode_timer.seconds = 0.0
        started = time.perf_counter()
        labels = run(image)
        times.append(time.perf_counter() - started)
        if decode_timer is not None:
            decode_times.append(decode_timer.seconds)
        n_objects = int(len(np.unique(labels)) - 1)
        del labels
    median = float(np.median(times))
    megapixels = image.shape[-1] * image.shape[-2] / 1e6
    split = {}
    if decode_times:
        network = [t - d for t, d in zip(times, decode_times)]
        split = {"decode_times_s": [round(t, 3) for t in decode_times], "network_times_s": [round(t, 3) for t in network],
                 "decode_median_s": float(np.median(decode_times)), "network_median_s": float(np.median(network))}
    return {"times_s": [round(t, 3) for t in times], "median_s": median, "megapixels": megapixels,
            "mp_per_s": megapixels / median, "n_objects": n_objects, "warmup_s": warmup_s, **split,
            "peak_rss_mb_after_warmup": rss_after_warmup, "peak_rss_mb": peak_rss_mb(),
            "load_avg_1min": os.getloadavg()[0]}


def predict_test_images(spec: dict[str, Any], segment) -> None:
    """Label every test image with ``segment(image)``, write the TIFFs and the timing result."""
    import numpy as np

    out = Path(spec["pred_dir"])
    started = time.perf_counter()
    n = 0
    for image_id, image in zip(spec["test"], read_images(spec["data"], spec["test"])):
        write_labels(out / f"{image_id}.tif", segment(np.asarray(image)))
        n += 1
    write_result(spec, {"predict_s": time.perf_counter() - started, "images": n, "peak_rss_mb": peak_rss_mb()})


def time_speed_image(spec: dict[str, Any], segment, *, decode_timer: StageTimer | None = None) -> None:
    """Time ``segment`` on the speed image after a warm-up (:func:`time_runs`) and write the result."""
    import numpy as np

    result = time_runs(segment, np.load(spec["image"]), repeats=spec["repeats"],
                       warmup_image=np.load(spec["warmup_image"]), max_seconds=spec.get("max_s"),
                       decode_timer=decode_timer)
    write_result(spec, result)
