#!/usr/bin/env python
"""Probe of the issue-16 lower layers working together, on the CPU, in a few minutes.

Not the issue's benchmark (``bench/beyond.py`` will train through ``fluoseg train`` with
instance targets); this script uses only the lower layers, in plain torch, to check that
they do what they promise before the middle layer wires them in:

1. Data: :func:`simulate_cells` 128x128 images (DAPI, ECAD, CK, CD45), target = cell
   outlines (both sides of every label border, the border class of instance methods).
   Images are standardised per sample and channel.
2. An MS-ME U-Net (depth 3, 8 filters, same padding, Marker Sampling, Marker Excite,
   dropout 0.1) trained on 16 default-domain images; evaluated on 6 test images for all
   15 marker subsets: true pixel F1 vs the label-free expected F1 of plain, 8-fold TTA and
   8-pass MC-dropout probabilities; ECE; Spearman between expected and true F1.
3. The same U-Net with the channel-invariant front end; ECAD fed under an unknown name
   (the default embedding row) vs under its own name vs left out.
4. Adaptation to the shifted domain from n = 1 and 5 images: Marker-Excite-only vs full
   fine-tuning vs training from scratch (same steps), scored on 6 shifted test images.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=src python bench/beyond_probe.py [--steps 600]``;
prints tables and writes ``bench/work/beyond_probe.json`` (``--steps 20``: a quick check that it runs).
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch
from _common import WORK, log, rel, write_json
from scipy import ndimage

from fluoseg.data.synth.cells import label_borders, simulate_cells
from fluoseg.metrics.calibration import (
    calibration_counts,
    expected_confusion,
    spearman_correlation,
)
from fluoseg.models import build_model, freeze_except, mc_dropout
from fluoseg.models.channel_invariant import marker_rows
from fluoseg.predictor import dihedral, inverse_dihedral

MARKERS = ("DAPI", "ECAD", "CK", "CD45")
SIZE = 128


def dataset(domain: str, seeds: range) -> tuple[np.ndarray, np.ndarray]:
    images, targets = [], []
    for seed in seeds:
        sample = simulate_cells((SIZE, SIZE), domain=domain, markers=MARKERS, seed=seed, dtype="float32")
        image = sample.image
        image = (image - image.mean(axis=(1, 2), keepdims=True)) / image.std(axis=(1, 2), keepdims=True)
        images.append(image)
        targets.append(ndimage.binary_dilation(label_borders(sample.cells)) & (sample.cells > 0))
    return np.stack(images).astype(np.float32), np.stack(targets).astype(np.float32)


def unet(front_end: str = "slots") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("unet", in_channels=4, out_channels=1, depth=3, base_filters=8, padding="same",
                       marker_input="ms", attention="me", dropout=0.1, front_end=front_end,
                       front_end_options={"features": 8, "width": 8} if front_end != "slots" else None)


def train(net: torch.nn.Module, images: np.ndarray, targets: np.ndarray, steps: int, lr: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    net.train()
    for _ in range(steps):
        index = rng.integers(0, len(images), 8)
        top, left = rng.integers(0, SIZE - 64, 2)
        x = torch.from_numpy(images[index, :, top : top + 64, left : left + 64].copy())
        y = torch.from_numpy(targets[index, None, top : top + 64, left : left + 64].copy())
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x, torch.ones(8, 4)), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()


@torch.no_grad()
def probabilities(net, images, availability, method: str, marker_ids=None) -> np.ndarray:
    x = torch.from_numpy(images) * availability[:, :, None, None]
    kwargs = {} if marker_ids is None else {"marker_ids": marker_ids.expand(len(images), -1)}
    availability = availability.expand(len(images), -1)
    if method == "plain":
        return torch.sigmoid(net(x, availability, **kwargs))[:, 0].numpy()
    if method == "tta":
        samples = [inverse_dihedral(torch.sigmoid(net(dihedral(x, k), availability, **kwargs)), k) for k in range(8)]
    else:
        torch.manual_seed(1)
        with mc_dropout(net):
            samples = [torch.sigmoid(net(x, availability, **kwargs)) for _ in range(8)]
    return torch.stack(samples).mean(0)[:, 0].numpy()


def scores(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    predicted, truth = p > 0.5, y > 0.5
    tp = float((predicted & truth).sum())
    true_f1 = 2 * tp / (predicted.sum() + truth.sum())
    return {"f1": true_f1, "expected_f1": expected_confusion(p).f1,
            "ece": calibration_counts(p, truth.astype(np.uint8)).ece()}


def subsets() -> list[tuple[int, ...]]:
    return [c for k in range(1, 5) for c in itertools.combinations(range(4), k)]


def availability_of(subset: tuple[int, ...]) -> torch.Tensor:
    vector = torch.zeros(1, 4)
    vector[0, list(subset)] = 1.0
    return vector


def calibration_part(net, test) -> dict:
    rows = {}
    for method in ("plain", "tta", "mc"):
        per_subset = [scores(probabilities(net, test[0], availability_of(s), method), test[1]) for s in subsets()]
        true = [r["f1"] for r in per_subset]
        expected = [r["expected_f1"] for r in per_subset]
        rows[method] = {"spearman": spearman_correlation(expected, true),
                        "mean_abs_error": float(np.mean(np.abs(np.subtract(expected, true)))),
                        "mean_ece": float(np.mean([r["ece"] for r in per_subset])),
                        "per_subset": {"+".join(MARKERS[i] for i in s): r for s, r in zip(subsets(), per_subset)}}
    return rows


def unknown_marker_part(training, test, steps: int) -> dict:
    net = unet("channel-invariant")
    train(net, *training, steps=steps, lr=2e-3, seed=0)
    result = {}
    for label, names in [("DAPI+ECAD", ["DAPI", "ECAD"]), ("DAPI+ECAD as unknown", ["DAPI", "E-cadherin"]),
                         ("DAPI", ["DAPI"]), ("ECAD", ["ECAD"]), ("ECAD as unknown", ["E-cadherin"])]:
        channels = [MARKERS.index("ECAD") if n == "E-cadherin" else MARKERS.index(n) for n in names]
        rows = torch.tensor([marker_rows(MARKERS, names)])
        p = probabilities(net, test[0][:, channels], torch.ones(1, len(names)), "plain", marker_ids=rows)
        result[label] = scores(p, test[1])["f1"]
    return result


def adaptation_part(base_state, shifted_pool, shifted_test, steps: int) -> dict:
    result = {}
    for n in (1, 5):
        images, targets = shifted_pool[0][:n], shifted_pool[1][:n]
        for mode in ("none", "excite", "all", "scratch"):
            net = unet()
            if mode != "scratch":
                net.load_state_dict(base_state)
            if mode == "excite":
                freeze_except(net, "excite")
            if mode != "none":
                train(net, images, targets, steps=steps // 2, lr=2e-3 if mode == "scratch" else 1e-3, seed=n)
            net.eval()
            f1 = [scores(probabilities(net, shifted_test[0], availability_of(s), "plain"), shifted_test[1])["f1"]
                  for s in subsets()]
            result[f"n={n} {mode}"] = {"all_markers": f1[-1], "mean_over_subsets": float(np.mean(f1))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    steps = parser.parse_args().steps
    torch.set_num_threads(1)
    start = time.time()
    training = dataset("default", range(16))
    test = dataset("default", range(100, 106))
    shifted_pool, shifted_test = dataset("shifted", range(200, 205)), dataset("shifted", range(300, 306))
    net = unet()
    train(net, *training, steps=steps, lr=2e-3, seed=0)
    results = {"calibration": calibration_part(net, test)}
    results["unknown_marker"] = unknown_marker_part(training, test, steps)
    results["adaptation"] = adaptation_part(net.state_dict(), shifted_pool, shifted_test, steps)
    results["seconds"] = time.time() - start
    out = write_json(WORK / "beyond_probe.json", results)
    log(f"results: {rel(out)}")
    for method, row in results["calibration"].items():
        print(f"{method:5s} spearman {row['spearman']:.3f}  |expF1-F1| {row['mean_abs_error']:.3f}  "
              f"ECE {row['mean_ece']:.4f}")
    for subset, row in results["calibration"]["plain"]["per_subset"].items():
        print(f"  {subset:20s} F1 {row['f1']:.3f}  expected {row['expected_f1']:.3f}")
    for label, f1 in results["unknown_marker"].items():
        print(f"CI front end, {label:22s} F1 {f1:.3f}")
    for label, row in results["adaptation"].items():
        print(f"shifted {label:12s} F1 all markers {row['all_markers']:.3f}  "
              f"mean over subsets {row['mean_over_subsets']:.3f}")
    print(f"{results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
