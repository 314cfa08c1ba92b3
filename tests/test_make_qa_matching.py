"""scale/object_matching on synth scenes like the audit's (16 frames, 64x48, 7 objects, 3 moving): asked in scenes
where objects go out of view, answers right by the store's visibility, and questions in units (one set of objects,
each the answer once) so that no option text says anything about which one is the answer."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from spatialctl.stages.make_qa.scale import ScaleGenerator
from spatialctl.stages.make_qa.scene import load_scene

# (seed, preset, camera) of audit scenes 90, 100, 136, 139 and 183 (benchmarks/make_qa.py: seed 1000 + i): in each an
# object leaves the view.
SCENES = [(1090, "tiny-tabletop", "pan"), (1100, "indoor", "orbit"), (1136, "indoor", "pan"), (1139, "outdoor", "pan"),
          (1183, "outdoor", "orbit")]
DRAWS = 200  # more than any of these scenes can ask: each runs out of new frame pairs


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


def test_asked_in_every_scene_never_twice(drafts):
    """Every scene asks a unit or more, and no question twice (a frame pair asked one way is not asked again:
    the scene's sampler would drop the repeat and cut its unit short)."""
    for scene, ds in drafts:
        assert len(ds) >= 3 and len({d.question for d in ds}) == len(ds), scene.scene_id
    assert sum(len(ds) for _, ds in drafts) >= 150


def test_answers_by_visibility(drafts):
    for scene, ds in drafts:
        vis = scene.visible
        assert ds
        for d in ds:
            f1, f2 = d.metadata["frames_compared"]
            objs = d.metadata["objects"]
            assert len(objs) == len(d.options) in (2, 3, 4) and d.frames == [f1, f2]
            assert vis[objs].any(1).all()  # every option object is seen somewhere in the video
            both = [o for o in objs if vis[o, f1] and vis[o, f2]]
            if re.search(r"is seen, even partly, both in the frame at", d.question):
                assert both == [objs[0]]
            else:
                assert re.search(r"is missing \(not seen at all\) from the frame at", d.question)
                assert [o for o in objs if o not in both] == [objs[0]]


def test_units_each_option_the_answer_once(drafts):
    """Drafts come in units of n questions over one set of n objects, asked one way, each object the answer exactly
    once: every option text is the answer 1/n of the times it is offered, per way, in every scene (the old draw,
    which balanced only the kind of name and motion, made a scene's one object that leaves the view the answer of
    most of its questions)."""
    sizes = Counter()
    for scene, ds in drafts:
        i = 0
        while i < len(ds):
            n = len(ds[i].options)
            unit = ds[i:i + n]
            assert len(unit) == n, scene.scene_id  # a scene stops between units
            sets = {frozenset(d.metadata["objects"]) for d in unit}
            assert len(sets) == 1, (scene.scene_id, sets)
            # one way a unit: a mover is not the answer of the "missing" questions and the other of the "both" ones
            assert len({d.metadata["asked"] for d in unit}) == 1
            assert sorted(d.metadata["objects"][0] for d in unit) == sorted(sets.pop())
            texts = Counter(d.options["ABCD".index(d.answer)] for d in unit)
            assert set(texts.values()) == {1} and set(texts) == set(unit[0].options)
            sizes[n] += 1
            i += n
        # every object of a unit can be the answer, so each leaves the view in some frame pair
        objs = {o for d in ds for o in d.metadata["objects"]}
        assert all(not scene.visible[o].all() for o in objs), scene.scene_id
    assert sizes[3] + sizes[4] >= 2 and sum(sizes.values()) >= 60


def test_units_cut_short_are_dropped_whole(drafts):
    """The scene's budget of questions can end a unit early; balancing keeps only whole units (a cut unit makes one
    of its objects the answer more often than 1/n of its offers)."""
    from spatialctl.stages.make_qa.balance import complete_units
    from spatialctl.stages.make_qa.common import finish

    scene, ds = drafts[0]
    records = [finish(scene, "scale", d) for d in ds]
    n = len(records[0].options)
    assert complete_units(records) == records
    cut = records[1:]  # the first unit loses its first question
    kept = complete_units(cut)
    assert kept == records[n:] and {r.metadata["unit"] for r in kept} == {r.metadata["unit"] for r in records} - {0}
