"""Fuzzing marker-name lists (fluoseg.markers.MarkerPanel): panels, selections given as
"a,b" text or lists, availability vectors and channel arrangement with random names.

The property (see conftest): a valid result or a one-line FluosegError; valid results
also keep the panel's promises (selections are panel names, in panel order, once each).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoseg.errors import FluosegError
from fluoseg.markers import MarkerPanel

FUZZ = settings.get_profile("fluoseg-fuzz")
REAL = ["DAPI", "endomucin", "endoglin", "collagen", "CXCL12-GFP", "CD31", "Ki-67"]
NAME = st.sampled_from(REAL) | st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
# names the "a,b" selection syntax can express: no commas, no surrounding blanks
PLAIN = (st.sampled_from(REAL) | st.text(st.characters(blacklist_categories=("Cs", "Z", "Cc"),
                                                        blacklist_characters=","), min_size=1,
                                          max_size=6)).map(str.strip).filter(bool)


def _check_selection(panel: MarkerPanel, chosen: tuple[str, ...]) -> None:
    assert chosen and set(chosen) <= set(panel.names)
    slots = [panel.names.index(n) for n in chosen]
    assert slots == sorted(set(slots))


@FUZZ
@given(names=st.lists(NAME, max_size=6), spec=st.one_of(st.text(max_size=20), st.lists(NAME, max_size=4)))
def test_panels_and_selections(fuzz, names, spec):
    fuzz.example()
    panel = fuzz.outcome(lambda: MarkerPanel(names))
    if isinstance(panel, FluosegError):
        return
    assert len(set(panel.names)) == len(panel.names) and all(n == n.strip() and n for n in panel.names)
    chosen = fuzz.outcome(lambda: panel.parse(spec))
    if not isinstance(chosen, FluosegError):
        _check_selection(panel, chosen)
    vector = fuzz.outcome(lambda: panel.availability(spec if isinstance(spec, list) else [spec]))
    if not isinstance(vector, FluosegError):
        assert vector.shape == (len(panel),) and set(vector.tolist()) <= {0.0, 1.0}


@FUZZ
@given(names=st.lists(PLAIN, min_size=1, max_size=6, unique=True), data=st.data())
def test_selections_of_panel_names_round_trip(fuzz, names, data):
    fuzz.example()
    panel = MarkerPanel(names)
    subset = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names)))
    for spec in (",".join(subset), " , ".join(subset) + ",", subset):
        chosen = fuzz.outcome(lambda: panel.parse(spec))
        assert not isinstance(chosen, FluosegError), chosen
        assert set(chosen) == set(subset)
        _check_selection(panel, chosen)


@FUZZ
@given(panel_names=st.lists(PLAIN, min_size=1, max_size=4, unique=True),
       channel_names=st.lists(NAME, max_size=4),
       use=st.none() | st.lists(NAME, max_size=3))
def test_arrange_with_random_channel_names(fuzz, panel_names, channel_names, use):
    fuzz.example()
    panel = MarkerPanel(panel_names)
    image = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    result = fuzz.outcome(lambda: panel.arrange(image, channel_names, use=use))
    if isinstance(result, FluosegError):
        return
    slots, availability = result
    assert slots.shape == (len(panel), 2, 2)
    for channel, name in enumerate(channel_names):
        # channels the selection leaves out may carry names the model does not know
        if name in panel.names and availability[panel.index(name)]:
            assert np.array_equal(slots[panel.index(name)], image[channel])


def _string_panel_is_one_marker() -> bool:
    return MarkerPanel("DAPI").names == ("DAPI",)  # was ("D", "A", "P", "I")


def _comma_names_are_refused_or_selectable() -> bool:
    try:
        panel = MarkerPanel(["a,b", "c"])
    except FluosegError:
        return True
    return panel.parse("a,b,c") == ("a,b", "c")  # was: unknown marker 'a'


def _list_selections_are_stripped_like_text() -> bool:
    return MarkerPanel(["DAPI"]).parse([" DAPI"]) == ("DAPI",)  # was: unknown marker ' DAPI'


def _repeated_channel_names_are_refused() -> bool:
    image = np.stack([np.zeros((2, 2)), np.ones((2, 2))]).astype(np.float32)
    try:
        MarkerPanel(["DAPI"]).arrange(image, ["DAPI", "DAPI"])
    except FluosegError:
        return True
    return False  # was: the second channel silently overwrote the first


KNOWN = [
    pytest.param(_repeated_channel_names_are_refused,
                 id="arrange takes the last of channels with the same name"),
    pytest.param(_string_panel_is_one_marker, id="a string panel is split into letters"),
    pytest.param(_comma_names_are_refused_or_selectable,
                 id="a panel name with a comma cannot be selected by 'a,b' text"),
    pytest.param(_list_selections_are_stripped_like_text,
                 id="list selections are not stripped as panel names and text selections are"),
]


@pytest.mark.parametrize("behaves", KNOWN)
def test_cases_fuzzing_found(fuzz, behaves):
    fuzz.example()
    assert fuzz.outcome(behaves) is True
