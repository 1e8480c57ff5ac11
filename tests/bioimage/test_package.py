"""Reading packages back: a fluoseg package predicts exactly as its run."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import yaml

from fluoseg.bioimage.package import is_package, load_checkpoints, open_package
from fluoseg.errors import FluosegError
from fluoseg.infer import Segmenter
from tests.conftest import make_tiny_sample

MARKERS = ["m1", "m2", "m3"]


def _rewrite(package, out, change):
    """A copy of ``package`` whose rdf.yaml is passed through ``change``."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.namelist():
            data = source.read(item)
            if item == "rdf.yaml":
                rdf = yaml.safe_load(data)
                change(rdf)
                data = yaml.safe_dump(rdf).encode()
            target.writestr(item, data)
    return out


def test_semantic_package_predicts_exactly_as_its_run(semantic_run, semantic_package):
    image, _ = make_tiny_sample(21, shape=(70, 53))  # not a size the package admits: fluoseg tiles it
    for markers in (None, ["m2", "m3"]):
        a = Segmenter.load(semantic_run, device="cpu").predict_masks(image, MARKERS, markers=markers)
        b = Segmenter.load(semantic_package, device="cpu").predict_masks(image, MARKERS, markers=markers)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_instance_package_gives_the_runs_labels(instance_run, instance_package):
    image, _ = make_tiny_sample(22, shape=(64, 80))
    a, _ = Segmenter.load(instance_run, device="cpu").predict_labels(image, MARKERS)
    b, _ = Segmenter.load(instance_package, device="cpu").predict_labels(image, MARKERS)
    assert a.max() > 0 and np.array_equal(a, b)


def test_checkpoints_keep_the_runs_metadata_and_weights(semantic_run, semantic_package):
    from fluoseg.run import RunDir

    (original,) = RunDir.open(semantic_run).load_all()
    (restored,) = load_checkpoints(semantic_package)
    assert (restored.markers, restored.classes, restored.task) == (original.markers, original.classes, original.task)
    assert restored.weights.keys() == original.weights.keys()
    assert all(np.array_equal(restored.weights[k], original.weights[k]) for k in original.weights)


def test_packages_are_recognised_as_zip_folder_or_description(semantic_run, semantic_package, tmp_path):
    folder = tmp_path / "unzipped"
    with zipfile.ZipFile(semantic_package) as archive:
        archive.extractall(folder)
    assert is_package(semantic_package) and is_package(folder) and is_package(folder / "rdf.yaml")
    assert not is_package(semantic_run)
    assert len(load_checkpoints(folder)) == 1
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert not is_package(other)


def test_foreign_or_newer_packages_are_refused(semantic_package, tmp_path):
    foreign = _rewrite(semantic_package, tmp_path / "foreign.zip", lambda rdf: rdf["config"].pop("fluoseg"))
    assert not open_package(foreign).is_fluoseg
    with pytest.raises(FluosegError, match="not exported by fluoseg"):
        load_checkpoints(foreign)
    newer = _rewrite(semantic_package, tmp_path / "newer.zip",
                     lambda rdf: rdf["config"]["fluoseg"].update(version=99))
    with pytest.raises(FluosegError, match="newer than this fluoseg"):
        load_checkpoints(newer)
    with pytest.raises(FluosegError, match="not a bioimage.io package"):
        open_package(tmp_path)
