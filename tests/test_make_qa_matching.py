"""scale/object_matching on synth scenes like the audit's (16 frames, 64x48, 7 objects, 3 moving): asked in scenes
where objects go out of view, answers right by the store's visibility, and options whose kind of name (label alone,
colour, landmark) says nothing about which one is the answer."""

from __future__ import annotations

import random
import re
from collections import Counter

import numpy as np
import pytest

from spatialctl.stages.make_qa.scale import ScaleGenerator
from spatialctl.stages.make_qa.scene import load_scene

# (seed, preset, camera) of audit scenes 90, 100, 136, 139 and 183 (benchmarks/make_qa.py: seed 1000 + i): in each an
# object leaves the view, and options of more than one kind (name, motion) can be offered.
SCENES = [(1090, "tiny-tabletop", "pan"), (1100, "indoor", "orbit"), (1136, "indoor", "pan"), (1139, "outdoor", "pan"),
          (1183, "outdoor", "orbit")]
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "gray", "black")
DRAWS = 200


@pytest.fixture(scope="module")
def drafts(tmp_path_factory):
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    root = tmp_path_factory.mktemp("match")
    out = []
    for seed, preset, camera in SCENES:
        cfg = SynthConfig(seed=seed, preset=preset, camera=camera, frames=16, width=64, height=48, moving=3,
                          objects=7, quiet=True, out=str(root / str(seed)))
        assert synth_run(cfg).exit_code == 0
        scene = load_scene(str(root / str(seed) / "scene.zarr"))
        gen, rng = ScaleGenerator(scene), random.Random(seed)
        out.append((scene, [d for d in (gen.generate("object_matching", rng) for _ in range(DRAWS)) if d is not None]))
    return out


def test_asked_in_every_scene_with_several_frame_pairs(drafts):
    for scene, ds in drafts:
        pairs = {tuple(d.metadata["frames_compared"]) for d in ds}
        assert len({d.question for d in ds}) >= 10 and len(pairs) >= 10, scene.scene_id


def test_answers_by_visibility(drafts):
    for scene, ds in drafts:
        vis = scene.visible
        assert ds
        for d in ds:
            f1, f2 = d.metadata["frames_compared"]
            objs = d.metadata["objects"]
            assert len(objs) == len(d.options) in (3, 4) and d.frames == [f1, f2]
            assert vis[objs].any(1).all()  # every option object is seen somewhere in the video
            both = [o for o in objs if vis[o, f1] and vis[o, f2]]
            if re.search(r"is seen, even partly, both in the frame at", d.question):
                assert both == [objs[0]]
            else:
                assert re.search(r"is missing \(not seen at all\) from the frame at", d.question)
                assert [o for o in objs if o not in both] == [objs[0]]


def _kind(option: str, scene) -> str:
    words = option.split()
    if " nearest to the " in option:
        return "landmark"
    if words[1] in COLOURS and " ".join(words[2:]) in scene.labels:
        return "colour"
    assert scene.labels.count(" ".join(words[1:])) == 1, option
    return "label"


def test_kind_of_name_and_motion_say_nothing(drafts):
    """Every kind of name, and moving or not, is the answer in proportion to how often it is offered (1/n of its
    offers), per way of asking, pooled over the scenes: the answer's kind is drawn after the options' kinds, with
    probability (options of that kind) / n."""
    offered, answered = Counter(), Counter()
    for scene, ds in drafts:
        for d in ds:
            way = "both" if "both in the frame" in d.question else "missing"
            n = len(d.options)
            answer = d.options["ABCD".index(d.answer)]
            for o in d.options:
                offered[(way, n, _kind(o, scene))] += 1
                answered[(way, n, _kind(o, scene))] += o == answer
            objs = d.metadata["objects"]  # the answer first
            for i, o in enumerate(objs):
                offered[(way, n, "moving" if scene.moving[o] else "still")] += 1
                answered[(way, n, "moving" if scene.moving[o] else "still")] += i == 0
    kinds = {k[2] for k in offered}
    assert {"label", "colour", "moving", "still"} <= kinds
    tested = 0
    for key, n in offered.items():
        if n >= 100:
            tested += 1
            rate = answered[key] / n
            assert abs(rate - 1 / key[1]) <= 4 * np.sqrt((1 / key[1]) * (1 - 1 / key[1]) / n) + 0.02, (key, rate, n)
    assert tested >= 4
