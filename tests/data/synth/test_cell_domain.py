"""Tests of the cell simulator's settings and presets (fluoseg.data.synth.cell_domain)."""

import pytest
import yaml

from fluoseg.data.synth.cell_domain import CELL_DOMAINS, CELL_MARKERS, CellDomain, cell_domain
from fluoseg.errors import FluosegError


def test_presets_and_their_differences():
    assert sorted(CELL_DOMAINS) == ["default", "shifted"]
    default, shifted = cell_domain("default"), cell_domain("shifted")
    assert default == CellDomain() and shifted.name == "shifted"
    assert shifted.cell_diameter < default.cell_diameter
    assert shifted.strength["ECAD"] < default.strength["ECAD"] and shifted.strength["CK"] > default.strength["CK"]
    assert shifted.background > default.background and shifted.gain > default.gain and shifted.blur > default.blur
    assert list(default.strength) == list(CELL_MARKERS)


def test_a_mapping_updates_its_base_preset_and_strengths_merge():
    domain = cell_domain({"base": "shifted", "read_noise": 12, "strength": {"ECAD": 90}})
    assert domain.read_noise == 12.0 and isinstance(domain.read_noise, float)
    assert domain.strength["ECAD"] == 90.0 and domain.strength["CK"] == CELL_DOMAINS["shifted"].strength["CK"]
    assert domain.blur == CELL_DOMAINS["shifted"].blur and domain.name == "shifted-custom"
    assert cell_domain({"name": "lab2"}).name == "lab2"
    assert cell_domain(domain) is domain


def test_as_dict_is_yaml_able_and_round_trips():
    domain = cell_domain("shifted")
    text = yaml.safe_dump(domain.as_dict())
    assert CellDomain(**yaml.safe_load(text)) == domain


@pytest.mark.parametrize("spec, match", [
    ("widefield", "unknown cell domain 'widefield'; choose one of \\['default', 'shifted'\\]"),
    ({"noise": 3}, "unknown cell domain setting\\(s\\) \\['noise'\\]"),
    ({"blur": -1}, "blur must be a number in \\[0.0, 10.0\\]"),
    ({"tissue_fraction": 1.5}, "tissue_fraction"),
    ({"cell_diameter": True}, "cell_diameter"),
    ({"strength": {"PanCK": 3}}, "unknown \\['PanCK'\\]"),
    ({"strength": {"DAPI": 300}}, "strength.DAPI"),
    ({"strength": 5}, "'strength' must map"),
    (3, "preset name or a mapping"),
])
def test_bad_settings_are_one_line_fluoseg_errors(spec, match):
    with pytest.raises(FluosegError, match=match) as info:
        cell_domain(spec, source="settings.yaml")
    assert "\n" not in str(info.value)


def test_the_source_file_prefixes_errors_from_mappings():
    with pytest.raises(FluosegError) as info:
        cell_domain({"blur": 20}, source="lab.yaml")
    assert str(info.value).startswith("lab.yaml: ")


def test_a_domain_needs_every_marker_strength():
    with pytest.raises(FluosegError, match="missing \\['KI67'\\]"):
        CellDomain(strength={"DAPI": 1, "ECAD": 1, "CK": 1, "CD45": 1})
