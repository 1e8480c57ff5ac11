"""Fuzzing run configurations (fluoseg.config.load_config): random YAML text, random
documents, and valid configurations with random keys, types and nesting put in.

The property (see conftest): a valid RunConfig or a one-line FluosegError naming the file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoseg.config import load_config

FUZZ = settings.get_profile("fluoseg-fuzz")

SECTIONS = {
    "data": ["manifest", "extra_train", "classes", "markers", "split"],
    "split": ["val", "test", "val_fraction", "test_fraction", "seed"],
    "model": ["name", "options", "init_from", "init_head"],
    "preprocess": ["normalization", "percentiles", "pixel_size_um"],
    "train": ["class_mode", "epochs", "steps_per_epoch", "batch_size", "patch_size",
              "learning_rate", "weight_eps", "foreground_sampling", "augment", "val_tile_size",
              "seed", "device", "num_threads", "precision", "optimizer", "momentum", "weight_decay",
              "schedule", "step_size", "gamma", "patience", "select_by", "loss", "loss_options"],
    "augment": ["flips", "rot90", "intensity_scale", "intensity_shift"],
    "instance": ["method", "w0", "sigma", "erosion", "alpha", "h", "threshold", "min_size",
                 "target_diameter"],
    "regression": ["targets", "loss"],
    "loss_options": ["pos_weight", "eps", "mode", "gamma", "alpha", "smooth", "weight"],
    "top": ["data", "task", "instance", "regression", "model", "preprocess", "train"],
}
KEYS = sorted({k for keys in SECTIONS.values() for k in keys})
WORDS = ["semantic", "instance", "regression", "unet", "hemis", "auto", "fresh", "copy",
         "gaussian", "percentile", "adam", "sgd", "step", "cosine", "plateau", "metric", "loss",
         "ce-log", "bce", "dice", "bce-dice", "jaccard", "focal", "softmax", "sigmoid", "l1",
         "cpu", "cuda", "joint", "separate", "border", "distance", "float32", "bfloat16", "m.yaml", "/", ""]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
SCALARS = st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats() | st.sampled_from(WORDS) | TEXT
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | TEXT | st.integers(0, 3), inner,
                      max_size=4),
    max_leaves=12,
)


def _base() -> dict[str, Any]:
    return {
        "data": {"manifest": "m.yaml", "split": {"val": ["a"], "test": ["b"]}},
        "task": "semantic",
        "model": {"name": "unet", "options": {"depth": 2, "base_filters": 4}},
        "train": {"epochs": 2, "loss": "dice", "loss_options": {"eps": 1}},
    }


PATHS = st.lists(st.sampled_from(KEYS) | TEXT, min_size=1, max_size=3)
EDITS = st.lists(st.tuples(PATHS, st.sampled_from(["set", "delete", "wrap"]), VALUES), max_size=4)


def _load(text: str, fuzz: Any) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        return fuzz.outcome(lambda: load_config(path), path=path)


@pytest.fixture(scope="module", autouse=True)
def _models_imported() -> None:
    """Import the model registry (and torch) once, before the first example is timed."""
    from fluoseg.models import model_names

    model_names()


@FUZZ
@given(edits=EDITS)
def test_valid_config_with_random_edits(fuzz, edits):
    fuzz.example()
    document = _base()
    for path, operation, value in edits:
        fuzz.edit(document, path, operation, value)
    _load(yaml.safe_dump(document), fuzz)


@FUZZ
@given(document=VALUES)
def test_random_documents(fuzz, document):
    fuzz.example()
    _load(yaml.safe_dump(document), fuzz)


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("data:train- {}[]&*|>'\"#\n\t 0.5eE%@`"))
                    | st.characters(blacklist_characters="!\x00", blacklist_categories=("Cs",)),
                    max_size=80))
def test_random_yaml_text(fuzz, text):
    fuzz.example()
    _load(text, fuzz)


# Cases fuzzing found (each once raised the raw exception its id names): each must give a
# FluosegError naming the file.
KNOWN = [
    pytest.param({"data": {"manifest": "a\x00b"}}, id="NUL in data.manifest: ValueError from Path.resolve"),
    pytest.param({"data": {"manifest": "m.yaml"}, "model": {"init_from": "w\x00.pt"}},
                 id="NUL in model.init_from: ValueError from Path.resolve"),
    pytest.param({"data": {"manifest": "m.yaml", "extra_train": ["\x00"]}},
                 id="NUL in data.extra_train: ValueError from Path.resolve"),
    pytest.param("data: " + "[" * 600 + "]" * 600, id="deep nesting: RecursionError in yaml.safe_load"),
    pytest.param("data: !!timestamp 2020-13-45", id="bad !!timestamp: ValueError from the YAML constructor"),
    pytest.param("data: !!float xyz", id="bad !!float: ValueError from the YAML constructor"),
]


@pytest.mark.parametrize("document", KNOWN)
def test_cases_fuzzing_found(fuzz, document):
    fuzz.example()
    text = document if isinstance(document, str) else yaml.safe_dump(document)
    result = _load(text, fuzz)
    assert result is not None
