"""make-qa asks every question the geometry allows where a type is scarce: appearance order (every set of 3-4 objects
with a clear order, checked here from the raw masks) and DSR orientation / distance (mode and key times per question,
one-phase answers thinned)."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import Counter

import numpy as np
import pytest
import zarr

from spatialctl.stages.make_qa import MakeQAConfig, generate_scene
from spatialctl.stages.make_qa.dsr import window_cell
from spatialctl.stages.make_qa.scene import load_scene
from spatialctl.stages.make_qa.static import StaticGenerator

# Pan cameras that reveal objects one after another (scenes 90 and 137 of the shared 200-scene audit set), and
# scenes with people, cars and chairs (objects with a facing) for DSR orientation.
PAN = [("tiny-tabletop", 1090), ("tabletop", 1137)]
FACING = [("outdoor", 1083, "walk"), ("outdoor", 1131, "walk"), ("indoor", 1100, "orbit"), ("indoor", 1152, "pan")]


def _synth(root, preset, seed, camera, objects=7):
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    out = root / f"{preset}-{seed}-{camera}"
    cfg = SynthConfig(seed=seed, preset=preset, frames=16, width=64, height=48, moving=3, camera=camera,
                      objects=objects, quiet=True)
    assert synth_run(dataclasses.replace(cfg, out=str(out))).exit_code == 0
    return str(out / "scene.zarr")


@pytest.fixture(scope="module")
def pan_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("order")
    return [_synth(root, preset, seed, "pan") for preset, seed in PAN]


def _clear_sets(path):
    """Every set of 3-4 objects whose order is clear, from the raw arrays: in first-appearance order, each object's
    mask box is at least 2 x 2 pixels and 0.1% of the image in a frame before the next one's first visible pixel."""
    t = zarr.open_group(path, mode="r")["tracks"]
    vis, packed = t["visible"][:], t["masks"][:]
    n_obj, n = vis.shape
    h, w = zarr.open_group(path, mode="r")["depth"].shape[1:]
    clear = np.zeros((n_obj, n), bool)
    for o in range(n_obj):
        for f in range(n):
            bits = np.unpackbits(packed[o, f])[: h * w].reshape(h, w)
            if bits.any():
                ys, xs = np.flatnonzero(bits.any(1)), np.flatnonzero(bits.any(0))
                bw, bh = xs[-1] - xs[0] + 1, ys[-1] - ys[0] + 1
                clear[o, f] = bw >= 2 and bh >= 2 and bw * bh >= 1e-3 * h * w
    first = {o: int(np.argmax(vis[o])) for o in range(n_obj) if vis[o].any()}
    out = set()
    for k in (3, 4):
        for c in itertools.combinations(first, k):
            order = sorted(c, key=first.get)
            if all(clear[a, :first[b]].any() for a, b in zip(order, order[1:], strict=False)):
                out.add(tuple(order))
    return out


def test_appearance_order_asks_each_clearly_ordered_set_once(pan_scenes):
    total = 0
    for path in pan_scenes:
        gen = StaticGenerator(load_scene(path))
        rng = random.Random(0)
        asked = []
        for _ in range(200):
            d = gen._appearance_order(rng)
            if d is None:
                break
            asked.append(tuple(d.metadata["objects"]))
            names = d.options[0].split(", ")
            assert sorted(d.question.rsplit(": ", 1)[1].rstrip("?").split(", ")) == sorted(names)
            assert sorted(d.options) == sorted(set(d.options)) and all(sorted(o.split(", ")) == sorted(names)
                                                                       for o in d.options)
            assert "pixel box" not in d.question
        else:
            raise AssertionError("appearance order never ran out: sets are not drawn without replacement")
        assert len(asked) == len(set(asked))  # each set once
        assert set(asked) <= _clear_sets(path)  # every one has a clear order (recomputed from the masks)
        total += len(asked)
    assert total >= 24  # 28 on these two pans (the old draw by random first frames: 6 distinct sets in 200 draws)


@pytest.fixture(scope="module")
def facing_scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("facing")
    return [load_scene(_synth(root, preset, seed, camera)) for preset, seed, camera in FACING]


def test_dsr_orientation_and_distance_vary_mode_and_key_times_and_pool_distance_by_window(facing_scenes):
    got = Counter()
    variants: dict = {}
    one_phase = Counter()
    for scene in facing_scenes:
        for r in generate_scene(scene, MakeQAConfig(families=("dsr",), seed=0)):
            if r.type not in ("orientation", "distance"):
                continue
            got[r.type] += 1
            m = r.metadata
            variants.setdefault((r.scene, r.type), set()).add((m["mode"], len(m["key_frames"])))
            one_phase[r.type] += len(m["phases"]) == 1
            if r.type == "distance":  # pooled by where the key frames lie; a pair's distance from any viewpoint
                cell = window_cell(m["key_frames"][0], m["key_frames"][-1], scene.n_frames)
                assert m["option_pool"].endswith(cell) and m["option_pool_fallback"].endswith(cell)
                assert (m["mode"] in m["option_pool"]) == (m.get("relative_to") == "viewpoint")
    # mode and key times are drawn per question: one scene's questions mix them (one pair per scene and type before)
    assert max(len(v) for (_, t), v in variants.items() if t == "orientation") >= 4
    assert max(len(v) for (_, t), v in variants.items() if t == "distance") >= 3
    # more tries, and a one-phase facing kept with a probability: more questions with a turn (14 on these scenes, 6
    # before), the answers that bound the run-level cap
    assert got["orientation"] - one_phase["orientation"] >= 10, (got, one_phase)
