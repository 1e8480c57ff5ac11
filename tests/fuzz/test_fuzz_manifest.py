"""Fuzzing dataset manifests (fluoseg.data.manifest.load_manifest): valid manifests with
random keys, types, nesting and file-name templates put in, next to real image files.

The property (see conftest): a Manifest or a one-line FluosegError naming a file.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoseg.data.manifest import load_manifest
from fluoseg.io import write_image

FUZZ = settings.get_profile("fluoseg-fuzz")
KEYS = ["root", "markers", "classes", "pixel_size_um", "axes", "images", "masks", "labels",
        "groups", "available", "samples", "id", "image", "key", "group"]
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
NAMES = st.sampled_from(["a.tif", "b.npy", "a_m.tif", "*.tif", "*", "{id}.tif", "{id}_m.tif",
                         "{}", "{id", "{x}", "..", ".", "a.zarr", "CYX", "YX", "DAPI", "CD31"])
SCALARS = st.none() | st.booleans() | st.integers(-2, 10**9) | st.floats() | NAMES | TEXT
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(KEYS) | NAMES | TEXT, inner, max_size=3),
    max_leaves=10,
)
BASES = [
    {"markers": ["DAPI", "CD31"], "classes": ["c"], "images": "*.tif", "masks": "{id}_m.tif",
     "pixel_size_um": 0.5},
    {"samples": [{"id": "a", "image": "a.tif", "masks": {"c": "a_m.tif"}, "group": "g",
                  "available": ["DAPI"]},
                 {"image": "b.npy", "markers": ["x", "y"], "labels": "a_m.tif"}]},
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a named 2-channel TIFF, an unnamed NPY and a mask."""
    folder = tmp_path_factory.mktemp("dataset")
    image = np.zeros((2, 8, 8), np.uint8)
    write_image(folder / "a.tif", image, axes="CYX", channel_names=["DAPI", "CD31"])
    write_image(folder / "b.npy", image, axes="CYX")
    write_image(folder / "a_m.tif", image[0], axes="YX")
    return folder


PATHS = st.lists(st.sampled_from(KEYS) | st.integers(0, 1) | st.sampled_from(["c"]),
                 min_size=1, max_size=4)


@FUZZ
@given(base=st.sampled_from(range(len(BASES))),
       edits=st.lists(st.tuples(PATHS, st.sampled_from(["set", "delete", "wrap"]), VALUES),
                      max_size=4))
def test_valid_manifest_with_random_edits(fuzz, dataset, base, edits):
    fuzz.example()
    document = copy.deepcopy(BASES[base])
    for path, operation, value in edits:
        fuzz.edit(document, path, operation, value)
    with tempfile.TemporaryDirectory() as folder:
        for file in dataset.iterdir():
            shutil.copy(file, folder)
        manifest = Path(folder) / "m.yaml"
        manifest.write_text(yaml.safe_dump(document), encoding="utf-8")
        fuzz.outcome(lambda: load_manifest(manifest), path=manifest)


@FUZZ
@given(document=VALUES)
def test_random_documents(fuzz, dataset, document):
    fuzz.example()
    manifest = dataset / "random.yaml"
    manifest.write_text(yaml.safe_dump(document), encoding="utf-8")
    fuzz.outcome(lambda: load_manifest(manifest), path=manifest)
