"""Training-step and inference times of the detection models on DSB 2018 fluorescence crops.

Not an accuracy benchmark (training the detectors to convergence takes hours on a CPU):
it times the models as built by ``build_detector`` with their defaults, on real nuclei
images, so that a training budget can be planned and the CPU cost compared.

For each model it runs ``--steps`` Adam steps on a batch of two 256x256 crops of training
images (per-image standardised; targets from the instance labels: masks for Mask R-CNN
and fully supervised LACSS, points and foreground for weakly supervised LACSS) and a few
eval passes on whole 256x256 and 360x360 test images, and reports the median CPU time
(``time.process_time``, which other jobs on a shared machine do not inflate) and wall
time per step and per image, with the number of parameters and of detections.

    .venv/bin/python bench/detector_speed.py                      # defaults, 1 thread
    .venv/bin/python bench/detector_speed.py --steps 5 --threads 2 --only maskrcnn-resnet18
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import torch

from fluoseg.models.detection import build_detector, targets_from_labels
from fluoseg.models.registry import count_parameters

DATA = Path("/work/shared/data/dsb2018_fluo")
SPLIT = Path(__file__).resolve().parent / "splits" / "dsb2018_fluo.json"

MODELS: dict[str, tuple[str, dict, str]] = {
    "maskrcnn-resnet50": ("maskrcnn", {}, "full"),
    "maskrcnn-resnet18": ("maskrcnn", {"encoder": "resnet18"}, "full"),
    "lacss-resnet50-full": ("lacss", {}, "full"),
    "lacss-resnet50-weak": ("lacss", {}, "weak"),
    "lacss-resnet18-weak": ("lacss", {"depth": "resnet18"}, "weak"),
}
"""Name -> (detector, options, supervision)."""


def read(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(DATA / "images" / f"{image_id}.tif").astype(np.float32)
    labels = tifffile.imread(DATA / "labels" / f"{image_id}.tif").astype(np.int32)
    return (image - image.mean()) / max(float(image.std()), 1e-6), labels


def training_batch(ids: list[str], supervision: str) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    images, targets = [], []
    for image_id in ids:
        image, labels = read(image_id)
        image, labels = image[:256, :256], labels[:256, :256]
        found = targets_from_labels(labels)
        keys = ("boxes", "labels", "masks") if supervision == "full" else ("points", "foreground")
        images.append(image)
        targets.append({k: torch.from_numpy(found[k]) for k in keys})
    return torch.from_numpy(np.stack(images))[:, None], targets


def timed(function: Callable[[], object], repeats: int) -> tuple[float, float, object]:
    """Median CPU and wall seconds of ``repeats`` calls, and the last result."""
    cpu, wall, result = [], [], None
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        result = function()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return statistics.median(cpu), statistics.median(wall), result


def measure(name: str, steps: int, split: dict[str, list[str]]) -> dict[str, object]:
    detector, options, supervision = MODELS[name]
    torch.manual_seed(0)
    model = build_detector(detector, in_channels=1, **options)
    images, targets = training_batch(split["train"][:2], supervision)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> float:
        loss = sum(model(images, targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.item()

    model.train()
    step_cpu, step_wall, _ = timed(step, steps)
    row: dict[str, object] = {"model": name, "parameters": count_parameters(model),
                              "train_cpu_s_per_step": round(step_cpu, 2), "train_wall_s_per_step": round(step_wall, 2)}
    model.eval()
    for size in (256, 360):
        image_id = next(i for i in split["test"] if read(i)[0].shape == (size, size))
        image = torch.from_numpy(read(image_id)[0])[None, None]
        with torch.no_grad():
            cpu, wall, detections = timed(lambda: model(image), 3)
        row[f"infer_cpu_s_{size}"] = round(cpu, 2)
        row[f"infer_wall_s_{size}"] = round(wall, 2)
        row[f"detections_{size}"] = len(detections[0]["scores"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps timed per model (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--only", default=",".join(MODELS), help=f"comma-separated subset of {list(MODELS)}")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    split = json.loads(SPLIT.read_text())
    rows = [measure(name, args.steps, split) for name in args.only.split(",")]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
