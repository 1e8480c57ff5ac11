"""Tests of the simulated cell dataset writer (fluoseg.data.synth.cells_dataset)."""

import numpy as np
import pytest
import yaml

from fluoseg.data.manifest import load_manifest
from fluoseg.data.synth.cells import simulate_cells
from fluoseg.data.synth.cells_dataset import sample_seeds, write_cells_dataset
from fluoseg.errors import FluosegError
from fluoseg.io import read_image, read_labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cells")
    return write_cells_dataset(out, 3, "shifted", 7, shape=(64, 72), markers=("DAPI", "ECAD", "CK", "CD45", "KI67"))


def test_writes_images_labels_and_a_manifest_fluoseg_reads(dataset):
    manifest = load_manifest(dataset)
    assert [s.id for s in manifest.samples] == ["cells_0000", "cells_0001", "cells_0002"]
    assert manifest.markers == ("DAPI", "ECAD", "CK", "CD45", "KI67")
    sample = manifest.samples[1]
    assert sample.pixel_size == (0.5,) and sample.labels_path.parent.name == "labels"
    image = read_image(sample.image_path)
    assert image.channel_names == ("DAPI", "ECAD", "CK", "CD45", "KI67")
    assert image.pixel_size == (0.5, 0.5) and image.array.shape == (5, 64, 72)
    # The files hold exactly the simulator's output for the sample's recorded seed.
    expected = simulate_cells((64, 72), domain="shifted", markers=manifest.markers, seed=sample_seeds(7, 3)[1])
    assert np.array_equal(np.asarray(image.array), expected.image)
    assert np.array_equal(read_labels(sample.labels_path), expected.cells)
    assert np.array_equal(read_labels(dataset.parent / "nuclei" / "cells_0001.tif"), expected.nuclei)


def test_provenance_records_domain_and_seeds(dataset):
    provenance = yaml.safe_load((dataset.parent / "simulation.yaml").read_text())
    assert provenance["domain"]["name"] == "shifted" and provenance["seed"] == 7
    assert [s["seed"] for s in provenance["samples"]] == sample_seeds(7, 3)
    assert provenance["shape"] == [64, 72] and provenance["target"] == "cells"


def test_sample_seeds_extend_and_differ():
    assert sample_seeds(3, 5)[:2] == sample_seeds(3, 2)
    assert len(set(sample_seeds(3, 50))) == 50 and sample_seeds(3, 2) != sample_seeds(4, 2)


def test_nuclei_target_and_overwrite_keep_the_users_other_files(tmp_path):
    write_cells_dataset(tmp_path, 2, shape=(64, 64))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FluosegError, match="overwrite"):
        write_cells_dataset(tmp_path, 1, shape=(64, 64))
    path = write_cells_dataset(tmp_path, 1, shape=(64, 64), target="nuclei", overwrite=True)
    manifest = load_manifest(path)
    assert len(manifest.samples) == 1 and manifest.samples[0].labels_path.parent.name == "nuclei"
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["cells_0000.ome.tif"]


def test_a_bad_request_with_overwrite_removes_no_earlier_dataset(tmp_path):
    write_cells_dataset(tmp_path, 1, shape=(64, 64))
    for bad in ({"markers": ("DAPI", "FOO")}, {"shape": (8, 8)}):
        with pytest.raises(FluosegError):
            write_cells_dataset(tmp_path, 2, overwrite=True, **{"shape": (64, 64), **bad})
        assert (tmp_path / "images" / "cells_0000.ome.tif").is_file() and (tmp_path / "manifest.yaml").is_file()


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "positive integer"),
    ({"seed": -1}, "seed"),
    ({"target": "membranes"}, "label target"),
    ({"prefix": "a/b"}, "prefix"),
    ({"settings": {"blur": 99}}, "blur"),
])
def test_bad_arguments_are_fluoseg_errors(tmp_path, kwargs, match):
    with pytest.raises(FluosegError, match=match):
        write_cells_dataset(**{"out": tmp_path, "n": 1, "shape": (64, 64), **kwargs})
