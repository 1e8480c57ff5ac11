"""A short CPU training of a small detector on DSB 2018 fluorescence, scored on the test split.

A sanity check of the detection models on real nuclei before they are wired into
``fluoseg train``: targets from instance labels, training on random crops, detections
turned back into label images, fluoseg's metrics. The models are scaled down (ResNet-18,
narrow heads) and trained for minutes, so the numbers are far below what the full models
reach after hours on a GPU; they show that the pipeline learns, not how good it can get.

Training: ``--steps`` Adam steps (lr 1e-3, 1e-4 for the last fifth) on batches of two
random ``--crop`` crops of the training split of ``bench/splits/dsb2018_fluo.json`` (flips,
90-degree rotations; per-image Gaussian standardisation). Evaluation: whole test images,
objects under 10 px removed (as ``bench/nuclei.py``), COCO AP@0.5 and AP@[.5:.95] from all
detections with their scores, F1 and accuracy at IoU 0.5 pooled over images, of the label
images of all detections and of those scoring at least 0.5. The trained weights are saved
next to the result (``<out>/<model>.pt``, git-ignored).

    .venv/bin/python bench/detector_check.py --model maskrcnn --steps 800
    .venv/bin/python bench/detector_check.py --model lacss --steps 800 [--weak]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

from fluoseg.metrics.coco import coco_detections, pool_coco
from fluoseg.metrics.matching import matching_at_thresholds, pool_matching
from fluoseg.models.detection import build_detector, labels_from_detections, targets_from_labels

DATA = Path("/work/shared/data/dsb2018_fluo")
SPLIT = Path(__file__).resolve().parent / "splits" / "dsb2018_fluo.json"
MIN_AREA = 10
SCORE_THRESHOLD = 0.5

SMALL = {
    "maskrcnn": {"encoder": "resnet18", "fpn_channels": 64, "representation_size": 256, "mask_channels": 64,
                 "rpn_batch_size_per_image": 128, "box_batch_size_per_image": 128, "rpn_post_nms_top_n_train": 500,
                 "detections_per_image": 500},
    "lacss": {"depth": "resnet18", "fpn_channels": 64, "lpn_channels": [64, 64], "shared_channels": [64, 64],
              "patch_channels": 32, "crop_size": 48},
}
"""Scaled-down options per detector, for a CPU budget."""


def read(image_id: str) -> tuple[np.ndarray, np.ndarray]:
    image = tifffile.imread(DATA / "images" / f"{image_id}.tif").astype(np.float32)
    labels = tifffile.imread(DATA / "labels" / f"{image_id}.tif").astype(np.int32)
    return (image - image.mean()) / max(float(image.std()), 1e-6), labels


def random_crop(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, size: int
                ) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, image.shape[0] - size + 1)
    x = rng.integers(0, image.shape[1] - size + 1)
    image, labels = image[y : y + size, x : x + size], labels[y : y + size, x : x + size]
    turns = int(rng.integers(4))
    image, labels = np.rot90(image, turns), np.rot90(labels, turns)
    if rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def batch_targets(labels: np.ndarray, model: str, weak: bool) -> dict[str, torch.Tensor]:
    # Centroids as the LOIs, as the LACSS paper's weakly supervised experiments.
    found = targets_from_labels(labels)
    if model == "maskrcnn":
        keys = ("boxes", "labels", "masks")
    else:
        keys = ("points", "foreground") if weak else ("masks",)
    return {k: torch.from_numpy(found[k]) for k in keys}


def train(model: torch.nn.Module, name: str, weak: bool, steps: int, crop: int, train_ids: list[str]) -> float:
    rng = np.random.default_rng(0)
    samples = [read(i) for i in train_ids]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.process_time()
    for step in range(steps):
        if step == int(0.8 * steps):
            for group in optimiser.param_groups:
                group["lr"] = 1e-4
        crops = [random_crop(rng, *samples[rng.integers(len(samples))], crop) for _ in range(2)]
        images = torch.from_numpy(np.stack([c[0] for c in crops]))[:, None]
        losses = model(images, [batch_targets(c[1], name, weak) for c in crops])
        loss = sum(losses.values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 50 == 0 or step == steps - 1:
            parts = ", ".join(f"{k[5:]} {v.item():.3f}" for k, v in losses.items())
            print(f"step {step}: loss {loss.item():.3f} ({parts})", flush=True)
    return time.process_time() - start


def evaluate(model: torch.nn.Module, test_ids: list[str]) -> dict[str, float]:
    """COCO AP from every detection; F1 and accuracy at IoU 0.5 of the label images, all
    detections and those scoring at least :data:`SCORE_THRESHOLD`."""
    model.eval()
    matchings: dict[str, list] = {"all": [], "confident": []}
    detections = []
    for image_id in test_ids:
        image, truth = read(image_id)
        with torch.no_grad():
            found = model(torch.from_numpy(image)[None, None])[0]
        masks, scores = found["masks"].numpy(), found["scores"].numpy()
        labels, kept_scores = labels_from_detections(masks, scores, min_area=MIN_AREA)
        detections.append(coco_detections(truth, labels, kept_scores))
        matchings["all"].append(matching_at_thresholds(truth, labels, thresholds=(0.5,))[0])
        confident, _ = labels_from_detections(masks, scores, min_area=MIN_AREA, min_score=SCORE_THRESHOLD)
        matchings["confident"].append(matching_at_thresholds(truth, confident, thresholds=(0.5,))[0])
    coco = pool_coco(detections).average_precision()
    result = {"coco_ap_50": float(coco[0]), "coco_ap_50_95": float(coco.mean())}
    for name, results in matchings.items():
        pooled = pool_matching(results)
        result[f"f1_50_{name}"] = pooled.f1
        result[f"accuracy_50_{name}"] = pooled.accuracy
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SMALL), required=True)
    parser.add_argument("--weak", action="store_true", help="LACSS: train from points and foreground only")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/work/detector_check"))
    args = parser.parse_args(argv)
    if args.weak and args.model != "lacss":
        parser.error("--weak is for --model lacss")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    split = json.loads(SPLIT.read_text())
    model = build_detector(args.model, in_channels=1, **SMALL[args.model])
    cpu_seconds = train(model, args.model, args.weak, args.steps, args.crop, split["train"])
    scores = evaluate(model, split["test"])
    result = {"model": args.model + ("-weak" if args.weak else ""), "steps": args.steps, "crop": args.crop,
              "train_cpu_min": round(cpu_seconds / 60, 1), **{k: round(v, 3) for k, v in scores.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / f"{result['model']}.pt")
    (args.out / f"{result['model']}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
