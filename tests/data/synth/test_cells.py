"""Tests of the multiplexed cell simulator (fluoseg.data.synth.cells)."""

import numpy as np
import pytest
from scipy import ndimage

from fluoseg.data.synth.cell_domain import CELL_MARKERS, DEFAULT_CELL_MARKERS
from fluoseg.data.synth.cells import label_borders, simulate_cells
from fluoseg.data.synth.nuclei import touching_pairs
from fluoseg.errors import FluosegError


@pytest.fixture(scope="module")
def sample():
    return simulate_cells((192, 192), markers=CELL_MARKERS, seed=5, dtype="float32")


def channel(sample, name):
    return sample.image[sample.markers.index(name)].astype(np.float64)


def interior_cells(cells):
    """Ids of cells that do not reach the image border (their nucleus cannot be cut off)."""
    edge = np.unique(np.concatenate([cells[0], cells[-1], cells[:, 0], cells[:, -1]]))
    return sorted(set(np.unique(cells).tolist()) - set(edge.tolist()) - {0})


def test_shapes_dtypes_and_determinism():
    a = simulate_cells((80, 96), seed=3)
    b = simulate_cells((80, 96), seed=3)
    assert a.image.shape == (4, 80, 96) and a.image.dtype == np.uint8
    assert a.cells.shape == a.nuclei.shape == (80, 96) and a.cells.dtype == a.nuclei.dtype == np.int32
    assert a.markers == DEFAULT_CELL_MARKERS == ("DAPI", "ECAD", "CK", "CD45")
    assert a.pixel_size == (0.5, 0.5) and a.domain.name == "default"
    for field in ("image", "cells", "nuclei"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    other = simulate_cells((80, 96), seed=4)
    assert not np.array_equal(a.cells, other.cells) and not np.array_equal(a.image, other.image)
    floats = simulate_cells((80, 96), seed=3, dtype=np.float32)
    assert floats.image.dtype == np.float32 and floats.image.min() >= 0
    assert np.array_equal(np.clip(np.rint(floats.image), 0, 255).astype(np.uint8), a.image)


def test_cells_are_touching_connected_instances_numbered_without_gaps(sample):
    cells = sample.cells
    ids = np.unique(cells[cells > 0])
    assert np.array_equal(ids, np.arange(1, ids.size + 1)) and ids.size > 40
    for index, box in enumerate(ndimage.find_objects(cells)):
        assert ndimage.label(cells[box] == index + 1, structure=np.ones((3, 3)))[1] == 1
    touching = {label for pair in touching_pairs(cells) for label in pair}
    assert len(touching) > 0.9 * ids.size  # a tessellated tissue, not isolated cells
    assert 0.6 < (cells > 0).mean() < 0.95  # tissue with some empty background (default 80 %)


def test_every_nucleus_lies_inside_its_own_cell_away_from_the_outline(sample):
    cells, nuclei = sample.cells, sample.nuclei
    inside = nuclei > 0
    assert np.array_equal(nuclei[inside], cells[inside])  # a nucleus carries its cell's id
    assert not np.any(inside & label_borders(cells))
    with_nucleus = set(np.unique(nuclei[inside]).tolist())
    assert set(interior_cells(cells)) <= with_nucleus
    for index, box in enumerate(ndimage.find_objects(nuclei)):
        if box is not None:
            assert ndimage.label(nuclei[box] == index + 1, structure=np.ones((3, 3)))[1] == 1
    share = np.bincount(nuclei.ravel())[1:].sum() / np.bincount(cells.ravel())[1:].sum()
    assert 0.08 < share < 0.4  # nucleus radius ~0.45 cell radius -> ~20 % of the area


def test_label_borders_marks_both_sides_of_a_shared_edge_and_never_background():
    labels = np.array([[0, 0, 0, 0, 0],
                       [0, 1, 1, 2, 2],
                       [0, 1, 1, 2, 2],
                       [0, 1, 1, 2, 2]])
    expected = np.array([[0, 0, 0, 0, 0],
                         [0, 1, 1, 1, 1],
                         [0, 1, 1, 1, 0],
                         [0, 1, 1, 1, 0]], bool)
    assert np.array_equal(label_borders(labels), expected)


def test_membrane_marker_peaks_at_the_cell_outlines(sample):
    ecad = channel(sample, "ECAD")
    in_cells = sample.cells > 0
    distance = ndimage.distance_transform_edt(~label_borders(sample.cells))
    profile = [ecad[in_cells & (np.rint(distance) == d)].mean() for d in range(5)]
    assert all(a > b for a, b in zip(profile, profile[1:]))  # brightest on the outline, falling inwards
    assert profile[0] > 2.0 * profile[4]
    background = ecad[~in_cells].mean()
    assert profile[0] > 4.0 * background


def test_nuclear_cytoplasm_and_distractor_markers_stain_their_compartments(sample):
    nucleus = sample.nuclei > 0
    cytoplasm = (sample.cells > 0) & ~nucleus & ~label_borders(sample.cells)
    background = sample.cells == 0
    dapi, ck, cd45 = channel(sample, "DAPI"), channel(sample, "CK"), channel(sample, "CD45")
    assert dapi[nucleus].mean() > 4 * dapi[cytoplasm].mean()
    assert ck[cytoplasm].mean() > 2 * ck[nucleus].mean() and ck[cytoplasm].mean() > 2 * ck[background].mean()
    # The distractor ignores the cells: the same level in every compartment, and bright blobs somewhere.
    levels = np.array([cd45[nucleus].mean(), cd45[cytoplasm].mean(), cd45[background].mean()])
    assert levels.max() < 1.3 * levels.min()
    assert np.percentile(cd45, 99.9) > 3 * np.median(cd45)


def test_ki67_marks_the_nuclei_of_some_cells_only(sample):
    ki67, nuclei = channel(sample, "KI67"), sample.nuclei
    means = ndimage.mean(ki67, nuclei, np.unique(nuclei[nuclei > 0]))
    background = ki67[sample.cells == 0].mean()
    positive = means > background + 8
    assert 0.1 < positive.mean() < 0.6  # proliferating_fraction 0.3 in the default domain


def test_a_marker_subset_gives_exactly_those_channels_of_the_full_sample(sample):
    subset = simulate_cells((192, 192), markers=("CK", "DAPI"), seed=5, dtype="float32")
    assert subset.markers == ("CK", "DAPI")
    assert np.array_equal(subset.image[0], channel(sample, "CK").astype(np.float32))
    assert np.array_equal(subset.image[1], channel(sample, "DAPI").astype(np.float32))
    assert np.array_equal(subset.cells, sample.cells)


def test_the_shifted_domain_has_smaller_cells_weaker_membranes_and_more_noise():
    default = [simulate_cells((160, 160), seed=s, dtype="float32") for s in range(3)]
    shifted = [simulate_cells((160, 160), domain="shifted", seed=s, dtype="float32") for s in range(3)]

    def stats(sample):
        cells = sample.cells
        ecad = sample.image[1]
        border = label_borders(cells)
        cytoplasm = (cells > 0) & ~border & (sample.nuclei == 0)
        return {
            "cell_area": np.bincount(cells.ravel())[1:].mean(),
            "background": np.median(sample.image[0][cells == 0]),
            "membrane_contrast": ecad[border].mean() / ecad[cytoplasm].mean(),
            "noise": np.std(sample.image[0][cells == 0]),
        }

    a = {k: np.mean([stats(s)[k] for s in default]) for k in ("cell_area", "background", "membrane_contrast", "noise")}
    b = {k: np.mean([stats(s)[k] for s in shifted]) for k in a}
    assert b["cell_area"] < 0.8 * a["cell_area"]
    assert b["background"] > 1.5 * a["background"]
    assert b["membrane_contrast"] < a["membrane_contrast"]
    assert b["noise"] > 1.3 * a["noise"]
    assert shifted[0].domain.name == "shifted"


def test_domain_settings_change_the_image_in_the_expected_direction():
    quiet = simulate_cells((96, 96), seed=2, domain={"read_noise": 0.0, "gain": 0.0, "background": 0.0},
                           dtype="float32")
    far = ndimage.distance_transform_edt(quiet.cells == 0) > 6  # beyond the blur of the stains
    assert far.any() and np.all(quiet.image[:2, far] < 1.0)  # no stain, no noise, no background
    dense = simulate_cells((96, 96), seed=2, domain={"cell_diameter": 14.0, "tissue_fraction": 1.0})
    assert dense.cells.max() > 1.8 * simulate_cells((96, 96), seed=2).cells.max()
    assert (dense.cells > 0).mean() > 0.97


def test_small_images_stay_finite_and_evenly_lit():
    # Fields smoother than the image (illumination) must not blow up the intensity level.
    for seed in range(12):
        sample = simulate_cells((64, 64), seed=seed, dtype="float32")
        assert np.all(np.isfinite(sample.image))
        far = ndimage.distance_transform_edt(sample.cells == 0) > 6
        if far.any():
            assert np.median(sample.image[0][far]) < 2.5 * sample.domain.background


@pytest.mark.parametrize("kwargs, match", [
    ({"markers": ("DAPI", "PanCK")}, "markers"),
    ({"markers": ("DAPI", "DAPI")}, "markers"),
    ({"markers": ()}, "markers"),
    ({"shape": (40, 200)}, "too small"),
    ({"shape": "big"}, "shape"),
    ({"dtype": "uint16"}, "dtype"),
    ({"domain": "confocal"}, "unknown cell domain"),
])
def test_user_mistakes_are_fluoseg_errors(kwargs, match):
    with pytest.raises(FluosegError, match=match):
        simulate_cells(**{"shape": (96, 96), **kwargs})
