"""Tests of fluoseg.instance.blocklinks: matching neighbouring blocks' objects and numbering them."""

from __future__ import annotations

import numpy as np

from fluoseg.instance.blocklinks import BlockResult, Strip, link_blocks, resolve, resolve_links


def test_resolve_links_numbers_owned_objects_in_block_order():
    # block 0: objects 1, 2; block 1: 1, 2, 3; block 2: 1. Links: (0,2)~(1,3), (1,3)~(2,1), (0,1)~(1,1).
    links = {(0, 1): np.array([[2, 3], [1, 1]]), (1, 2): np.array([[3, 1]])}
    result = resolve_links([2, 3, 1], links)
    assert result.n_objects == 3
    assert result.luts[0].tolist() == [0, 1, 2]
    assert result.luts[1].tolist() == [0, 1, 3, 2]
    assert result.luts[2].tolist() == [0, 2]
    empty = resolve_links([0, 0], {})
    assert empty.n_objects == 0 and [lut.tolist() for lut in empty.luts] == [[0], [0]]


def test_link_blocks_matches_by_strip_iou_in_either_direction():
    # The strip is 2 x 4 pixels. Block 0 sees its object 1 on block 1's core exactly where
    # block 1 has object 2 (IoU 1); its object 2 covers 1 of the 3 pixels of block 1's object 1 (IoU 1/3).
    first = BlockResult(index=0, n_labels=2, core=None, strips={1: Strip(
        halo=np.array([[1, 1, 0, 2], [1, 1, 0, 0]], np.uint32),
        core=np.zeros((2, 4), np.uint32))})
    second = BlockResult(index=1, n_labels=3, core=None, strips={0: Strip(
        halo=np.array([[0, 0, 0, 0], [0, 0, 3, 3]], np.uint32),     # its halo prediction on block 0's core
        core=np.array([[2, 2, 0, 1], [2, 2, 1, 1]], np.uint32))})
    first.strips[1].core[1, 2:] = 2                                  # block 0's object 2 there: IoU 1 with 3
    pairs = link_blocks(first, second)
    assert pairs.tolist() == [[1, 2], [2, 3]]
    assert link_blocks(first, second, min_iou=0.99).tolist() == [[1, 2], [2, 3]]
    assert resolve([first, second]).n_objects == 3
