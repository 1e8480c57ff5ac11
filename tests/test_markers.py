import numpy as np
import pytest

from fluoseg.errors import FluosegError
from fluoseg.markers import ChannelFeed, MarkerPanel


def test_arrange_matches_channels_by_name_not_position():
    panel = MarkerPanel(["a", "b", "c"])
    image = np.stack([np.full((2, 2), 3.0), np.full((2, 2), 1.0)])  # file order: c, a
    slots, availability = panel.arrange(image, ["c", "a"])
    assert slots.shape == (3, 2, 2)
    assert np.all(slots[0] == 1.0) and np.all(slots[1] == 0.0) and np.all(slots[2] == 3.0)
    assert availability.tolist() == [1.0, 0.0, 1.0]


def test_arrange_subset_leaves_unused_slots_zero():
    panel = MarkerPanel(["a", "b"])
    slots, availability = panel.arrange(np.ones((2, 3, 3)), ["a", "b"], use=["b"])
    assert np.all(slots[0] == 0) and np.all(slots[1] == 1)
    assert availability.tolist() == [0.0, 1.0]


def test_unknown_marker_error_lists_known_ones():
    panel = MarkerPanel(["DAPI", "CD31"])
    with pytest.raises(FluosegError, match=r"unknown marker 'GFP'.*\['DAPI', 'CD31'\]"):
        panel.arrange(np.ones((1, 2, 2)), ["GFP"])


def test_chosen_markers_leave_other_channels_out_whatever_their_names():
    panel = MarkerPanel(["DNA", "CD31"])
    image = np.stack([np.full((2, 2), v, np.float32) for v in (1, 2, 3)])
    slots, availability = panel.arrange(image, ["actin", "DNA", "Ki67"], use=["DNA"])  # actin, Ki67: never seen
    assert np.all(slots[0] == 2) and np.all(slots[1] == 0) and availability.tolist() == [1.0, 0.0]
    with pytest.raises(FluosegError, match="unknown marker 'actin'"):
        panel.arrange(image, ["actin", "DNA", "Ki67"])  # without a choice every channel would be fed


def test_requesting_marker_absent_from_image_is_an_error():
    panel = MarkerPanel(["a", "b"])
    with pytest.raises(FluosegError, match="requested"):
        panel.arrange(np.ones((1, 2, 2)), ["a"], use=["b"])


def test_channel_count_mismatch_is_an_error():
    with pytest.raises(FluosegError, match="2 channels but 1 marker names"):
        MarkerPanel(["a", "b"]).arrange(np.ones((2, 2, 2)), ["a"])


@pytest.mark.parametrize("k", [1, 3, 5])
def test_subsets_are_all_nonempty_combinations(k):
    panel = MarkerPanel([f"m{i}" for i in range(k)])
    subsets = panel.subsets()
    assert len(subsets) == 2**k - 1
    assert len(set(subsets)) == len(subsets)
    assert all(subset for subset in subsets)
    assert subsets[-1] == panel.names


def test_parse_orders_and_deduplicates():
    panel = MarkerPanel(["a", "b", "c"])
    assert panel.parse("c, a,a") == ("a", "c")
    with pytest.raises(FluosegError):
        panel.parse("")


def test_panel_rejects_duplicates_and_empty_names():
    with pytest.raises(FluosegError, match="duplicate"):
        MarkerPanel(["a", "a"])
    with pytest.raises(FluosegError):
        MarkerPanel([])


def test_subset_code_uses_paper_notation():
    assert MarkerPanel(["a", "b", "c", "d", "e"]).subset_code(["e", "a", "c"]) == "m_135"


def test_parse_keeps_names_outside_the_panel_only_when_allowed():
    panel = MarkerPanel(["a", "b", "c"])
    assert panel.parse("x, c, a, x,y", allow_unknown=True) == ("a", "c", "x", "y")
    assert panel.parse("c,a", allow_unknown=True) == ("a", "c")
    with pytest.raises(FluosegError, match=r"unknown marker 'x'; this model knows \['a', 'b', 'c'\] \(try this\)$"):
        panel.parse("c,x", hint="try this")


def test_channel_feed_keeps_the_chosen_channels_in_image_order_known_or_not():
    panel = MarkerPanel(["DAPI", "CD31"])
    image = np.stack([np.full((2, 2), v, np.uint8) for v in (1, 2, 3, 4)])
    feed = ChannelFeed.resolve(panel, ["E-cadherin", "DAPI", "Ki67", "CD31"], use=["CD31", "E-cadherin"])
    assert feed.used == ("E-cadherin", "CD31") and feed.channels == (0, 3) and feed.unknown == ("E-cadherin",)
    assert feed.availability.tolist() == [1.0, 1.0]
    fed = feed.arrange(image)
    assert fed.dtype == np.float32 and fed.shape == (2, 2, 2) and fed[:, 0, 0].tolist() == [1.0, 4.0]
    ignored = ChannelFeed.resolve(panel, ["E-cadherin", "DAPI", "target"], use=["E-cadherin", "target"],
                                  ignore=["target"])
    assert ignored.used == ("E-cadherin",)


def test_channel_feed_refuses_what_it_cannot_feed():
    panel = MarkerPanel(["DAPI"])
    with pytest.raises(FluosegError, match=r"\['GFP'\] requested but the image only has"):
        ChannelFeed.resolve(panel, ["DAPI", "ECAD"], use=["ECAD", "GFP"])
    with pytest.raises(FluosegError, match="occur more than once"):
        ChannelFeed.resolve(panel, ["ECAD", "ECAD"], use=["ECAD"])
    with pytest.raises(FluosegError, match="empty"):
        ChannelFeed.resolve(panel, ["ECAD"], use=[" "])
    feed = ChannelFeed.resolve(panel, ["DAPI", "ECAD"], use=["ECAD"])
    with pytest.raises(FluosegError, match="3 channels but 2 marker names"):
        feed.arrange(np.ones((3, 2, 2)))
