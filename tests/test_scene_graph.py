"""Scene graphs: DUSt3R's names, both directions, cyclic and not."""

from __future__ import annotations

import pytest

from spatialctl.errors import UsageError
from spatialctl.stages.reconstruct.graph import make_pairs, parse_scene_graph


def undirected(pairs):
    return {(min(i, j), max(i, j)) for i, j in pairs.tolist()}


def assert_symmetric(pairs):
    s = {tuple(p) for p in pairs.tolist()}
    assert s == {(j, i) for i, j in s}
    assert len(s) == len(pairs)  # no duplicates
    assert all(i != j for i, j in s)


def test_complete():
    pairs = make_pairs(5, "complete")
    assert_symmetric(pairs)
    assert len(pairs) == 5 * 4
    assert pairs.dtype.kind == "i" and pairs.shape == (20, 2)


def test_swin_cyclic_and_not():
    assert undirected(make_pairs(6, "swin-2")) == {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 2), (1, 3), (2, 4),
                                                    (3, 5), (0, 5), (0, 4), (1, 5)}
    assert undirected(make_pairs(6, "swin-2-noncyclic")) == {(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (0, 2), (1, 3),
                                                              (2, 4), (3, 5)}
    for g in ("swin-3", "swin-3-noncyclic"):
        assert_symmetric(make_pairs(10, g))
    # A window wider than the video wraps onto itself: the complete graph, no self pairs.
    assert undirected(make_pairs(4, "swin-10")) == undirected(make_pairs(4, "complete"))


def test_logwin_offsets_are_powers_of_two():
    pairs = undirected(make_pairs(20, "logwin-3-noncyclic"))
    assert {j - i for i, j in pairs} == {1, 2, 4}
    assert len(pairs) == 19 + 18 + 16
    cyc = undirected(make_pairs(20, "logwin-3"))
    assert (0, 19) in cyc and (0, 16) in cyc and len(cyc) == 60


def test_oneref():
    pairs = make_pairs(5, "oneref-2")
    assert_symmetric(pairs)
    assert undirected(pairs) == {(0, 2), (1, 2), (2, 3), (2, 4)}
    with pytest.raises(UsageError, match="out of range"):
        make_pairs(3, "oneref-5")


def test_bare_names_use_dust3r_defaults():
    assert parse_scene_graph("swin") == ("swin", 3, True)
    assert parse_scene_graph("logwin-noncyclic") == ("logwin", 3, False)
    assert parse_scene_graph("oneref") == ("oneref", 0, True)


@pytest.mark.parametrize("bad", ["", "full", "swin-x", "swin-0", "complete-3", "oneref-1-noncyclic", "swin-2-cyclic"])
def test_bad_names_are_usage_errors(bad):
    with pytest.raises(UsageError):
        make_pairs(5, bad)


def test_needs_two_frames():
    with pytest.raises(UsageError, match="at least 2"):
        make_pairs(1, "complete")
