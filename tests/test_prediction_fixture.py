"""Predictions of stored runs stay what they were (``fixtures/predictions_v1.json``).

The fixture holds a semantic and an instance run in the version-1 checkpoint layout (written
before the middle-layer redesign) and their outputs on fixed images. Loading those runs and
predicting must give the same outputs: the run format stays readable, and normalisation,
marker slots, tiling, activation and decoding are unchanged. The fixture was computed in
float32, so the predictions here ask for float32 (the default, ``auto``, may compute in bfloat16).
"""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from fluoseg.infer import Segmenter

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "predictions_v1.json"
CHANNELS = ["m1", "m2", "m3"]


def decode(entry: dict) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(entry["data"]))
    return np.frombuffer(raw, dtype=entry["dtype"]).reshape(entry["shape"]).copy()


def write_v1_run(run: dict, folder: Path) -> Path:
    """A run directory exactly as fluoseg wrote it before the redesign."""
    (folder / "model").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"members": ["model"]}))
    state = {key: run[key] for key in ("model", "task", "markers", "classes", "preprocess", "geometry")}
    state["model_state"] = {name: torch.from_numpy(decode(w)) for name, w in run["weights"].items()}
    torch.save({"format": "fluoseg-checkpoint", "version": 1, **state, "epoch": 2, "best_score": 0.0},
               folder / "model" / "best.pt")
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    stored = json.loads(FIXTURE.read_text())["runs"]
    root = tmp_path_factory.mktemp("fixture_runs")
    return {kind: (write_v1_run(run, root / kind), run) for kind, run in stored.items()}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Label images equal up to renumbering of the objects."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))
            and bool(np.all((pairs[0] == 0) == (pairs[1] == 0))))


def test_semantic_run_predicts_as_before(runs):
    folder, run = runs["semantic"]
    segmenter = Segmenter.load(folder, device="cpu")
    for case in run["cases"]:
        masks, probabilities = segmenter.predict_masks(decode(case["image"]), CHANNELS, markers=case["markers"],
                                                       tile_size=run["tile_size"], precision="float32")
        np.testing.assert_allclose(np.asarray(probabilities), decode(case["probabilities"]), atol=1e-5)
        np.testing.assert_array_equal(masks, decode(case["masks"]))


def test_instance_run_predicts_as_before(runs):
    folder, run = runs["instance"]
    segmenter = Segmenter.load(folder, device="cpu")
    for case in run["cases"]:
        labels, maps = segmenter.predict_labels(decode(case["image"]), CHANNELS, markers=case["markers"],
                                                tile_size=run["tile_size"], precision="float32")
        np.testing.assert_allclose(maps, decode(case["maps"]), atol=1e-5)
        expected = decode(case["labels"])
        assert expected.max() > 2  # the fixture holds real objects, so the check has teeth
        assert same_partition(labels, expected)
