"""Scale size comparisons (#16): synth scenes hold objects of one kind in different sizes, and the options of a
comparison are named by what says nothing about the sizes compared."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter

import numpy as np
import pytest

from spatialctl.stages.make_qa.scale import COMPARE_MARGIN, ScaleGenerator
from spatialctl.stages.make_qa.scene import load_scene
from spatialctl.stages.synth import SynthConfig
from spatialctl.stages.synth import run as synth_run
from spatialctl.stages.synth.scene import PRESETS, build_scene

COMPARISONS = ("size_comparison", "height_comparison", "width_comparison")
# Words that would name an option by its size, its neighbours (an object's distance to them grows with its own
# footprint) or its pixel box (its size in pixels).
LEAKY = re.compile(r"\b(larger|smaller|largest|smallest|bigger|biggest|taller|shorter|wider|narrower)\b|nearest to|"
                   r"pixel box")


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_hold_same_kind_objects_of_different_sizes(preset):
    scenes = [build_scene(seed, preset, 2, 32, 24, 7, 3, "orbit", 10.0) for seed in range(30)]
    with_pair, pairs, clear = 0, 0, 0
    for sc in scenes:
        kinds = Counter(o.label for o in sc.objects)
        with_pair += any(n >= 2 for n in kinds.values())
        for label, n in kinds.items():
            if n < 2:
                continue
            sizes = sorted(float(o.true_size.max()) for o in sc.objects if o.label == label)
            pairs += 1
            clear += sizes[-1] - sizes[-2] >= COMPARE_MARGIN * sizes[-1]
    assert with_pair >= 27, with_pair  # nearly every scene (it was about half before repeats)
    assert pairs >= 45 and clear >= 0.4 * pairs, (pairs, clear)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    out = []
    for i, preset in enumerate(("indoor", "tabletop", "outdoor", "tiny-tabletop")):
        c = SynthConfig(seed=1000 + i, preset=preset, camera="orbit", frames=8, width=64, height=48, moving=3,
                        objects=7, quiet=True, out=str(root / preset))
        synth_run(c)
        out.append(load_scene(str(root / preset / "scene.zarr")))
    return out


def _drafts(scene, n=40):
    gen = ScaleGenerator(scene)
    rng = random.Random(0)
    return [d for t in COMPARISONS for _ in range(n) if (d := gen.generate(t, rng)) is not None]


def _swap_sizes(scene):
    """The same scene with the box sizes of every label's objects rotated among them (names must not change)."""
    box = scene.box.copy()
    for label in set(scene.labels):
        # among the objects whose size is measured (a group of a kind may hold ones out of view in some frames)
        members = [o for o, lab in enumerate(scene.labels) if lab == label and scene.static_box(o) is not None]
        if len(members) >= 2:
            sides = np.array([scene.static_box(o)[3:6] for o in members])  # each one's size, every frame
            box[members, :, 3:6] = np.roll(sides, 1, axis=0)[:, None]
    return dataclasses.replace(scene, box=box, _cache={})


def test_comparison_options_never_name_the_compared_attribute(scenes):
    drafts = [d for s in scenes for d in _drafts(s)]
    assert len(drafts) >= 6, len(drafts)
    # asked both ways: an option's text (colour word, length) cannot stand for "larger"
    assert {d.metadata["largest"] for d in drafts} == {True, False}
    for d in drafts:
        labels = set(d.metadata["labels"])
        assert ("smallest" in d.question or "shortest" in d.question or "narrowest" in d.question) != d.metadata["largest"]
        assert len(labels) == 1, d.question  # one kind: across kinds the label answers it
        for o in d.options:
            assert not LEAKY.search(o), (d.type, o)


def test_comparison_names_do_not_depend_on_sizes(scenes):
    """Rotating the sizes among same-label objects changes answers but not one option's name."""
    checked = changed = 0
    for s in scenes:
        drafts = _drafts(s)
        original = ScaleGenerator(s)
        original._prepare()
        swapped = ScaleGenerator(_swap_sizes(s))
        swapped._prepare()
        for d in drafts:
            objs = d.metadata["objects"]
            refs = swapped._alike(objs)
            assert refs is not None and sorted(r[0] for r in refs) == sorted(d.options), d.question
            assert refs == original._alike(objs), d.question  # each object keeps its own name
            checked += 1
            if d.type != "size_comparison":
                continue
            sides = np.array([np.max(swapped.sides[o]) for o in objs])
            truth = int(np.argmax(sides) if d.metadata["largest"] else np.argmin(sides))
            changed += refs[truth][0] != d.options["ABCD".index(d.answer)]
    assert checked >= 6 and changed >= 1, (checked, changed)


def _record(i, scene, objects, options, answer, way):
    from spatialctl.qa_format import QARecord

    return QARecord(id=f"r{i}", scene=scene, question="Which is the largest?" if way > 0 else "Which is the smallest?",
                    answer=answer, answer_type="mc", family="scale", type="size_comparison", options=options,
                    metadata={"word_balance": way, "objects": objects})


def test_option_leans_are_capped_near_chance():
    """A scene set where purple boxes happen to be larger: each set is asked both ways, and the run keeps no option
    text or colour leaning towards "largest" beyond LEAN_SLACK x sqrt(scenes), dropping sets whole."""
    from spatialctl.stages.make_qa.balance import LEAN_SLACK, _lean, cap_option_words

    rng = random.Random(0)
    others = ("red", "blue", "green", "pink", "orange")
    recs = []
    for s in range(120):
        other = rng.choice(others)
        names = ["the purple box", f"the {other} box"]
        larger = names[0] if rng.random() < 0.75 else names[1]
        for way in (1, -1):
            opts = rng.sample(names, 2)
            answer = larger if way > 0 else next(n for n in names if n != larger)
            recs.append(_record(len(recs), f"s{s}", [0, 1], opts, "AB"[opts.index(answer)], way))
    kept = cap_option_words(recs, seed=0)
    units = Counter((r.scene, tuple(r.metadata["objects"])) for r in kept)
    assert set(units.values()) == {2}, "a set is kept or dropped with both its questions"
    lean = Counter()
    for r in kept:
        lean.update(_lean([r]))
    scenes = Counter(x for sc in {r.scene for r in kept} for x in
                     set().union(*(_lean([r]).keys() for r in kept if r.scene == sc)))
    assert abs(lean[("text", "the purple box")]) <= LEAN_SLACK * np.sqrt(scenes[("text", "the purple box")]) + 1e-9
    assert abs(lean[("word", "purple")]) <= LEAN_SLACK * np.sqrt(scenes[("word", "purple")]) + 1e-9
    before = sum(1 for r in recs if r.metadata["word_balance"] > 0 and r.options["AB".index(r.answer)] == "the purple box")
    assert before >= 80 and len(kept) >= 80, (before, len(kept))  # 3 in 4 larger before; about half the sets stay
    # records without the key are left alone
    plain = [_record(i, "s0", [0, 1], ["the purple box", "the red box"], "A", 1) for i in range(10)]
    for r in plain:
        r.metadata.pop("word_balance")
    assert cap_option_words(plain) == plain


def test_every_set_is_asked_both_ways(scenes):
    """Each set of objects (and frame) is asked for the largest and for the smallest, with the same options, so a
    name is the answer as often for one as for the other: blind option priors, lengths and letters see a coin."""
    types = (*COMPARISONS, "distance_comparison")
    checked = 0
    for s in scenes:
        gen = ScaleGenerator(s)
        rng = random.Random(0)
        drafts = [d for t in types for _ in range(60) if (d := gen.generate(t, rng)) is not None]
        sets: dict = {}
        for d in drafts:
            way = d.metadata["largest"] if "largest" in d.metadata else d.metadata["nearest"]
            key = (d.type, tuple(sorted(d.metadata["objects"])), d.metadata.get("frame"))
            sets.setdefault(key, {})[way] = d
        for key, ways in sets.items():
            assert set(ways) == {True, False}, key
            a, b = ways[True], ways[False]
            assert sorted(a.options) == sorted(b.options), key
            answers = {a.options["ABCD".index(a.answer)], b.options["ABCD".index(b.answer)]}
            assert len(answers) == 2, key  # the largest is not the smallest
            checked += 1
    assert checked >= 8, checked


@pytest.fixture(scope="module")
def groups(tmp_path_factory):
    """Four tabletop scenes with 4-6 objects of one kind (seeds picked for it)."""
    root = tmp_path_factory.mktemp("groups")
    out = []
    for seed in (1, 6, 8, 9):
        c = SynthConfig(seed=seed, preset="tabletop", camera="orbit", frames=8, width=64, height=48, moving=3,
                        objects=7, quiet=True, out=str(root / str(seed)))
        synth_run(c)
        out.append(load_scene(str(root / str(seed) / "scene.zarr")))
    assert all(max(Counter(s.labels).values()) >= 4 for s in out)
    return out


def test_scenes_ask_several_sets(groups):
    """make-qa's round-robin (40 questions over 16 types, about three rounds) left each comparison type one try a
    round: about one set per scene (here 5-7 questions per type over the four scenes). Where a scene holds more sets
    they are asked, each both ways."""
    from spatialctl.stages.make_qa import MakeQAConfig, generate_scene

    counts = Counter(r.type for s in groups for r in generate_scene(s, MakeQAConfig(families=("scale",), seed=0)))
    assert all(counts[t] >= 16 for t in COMPARISONS), counts
    assert counts["distance_comparison"] >= 12, counts
    # the other types keep most of the budget: 4 x 40 questions
    assert sum(counts.values()) - sum(counts[t] for t in (*COMPARISONS, "distance_comparison")) >= 70, counts


def test_count_values_under_one_percent_do_not_shrink_the_target():
    """Counts of 5 and 7 seen once or thrice among ~700 must not shrink every other count to their size."""
    from spatialctl.stages.make_qa.balance import _target_caps, mra_target

    counts = Counter({2: 328, 1: 246, 3: 81, 4: 20, 5: 3, 7: 1})
    caps = _target_caps(counts, mra_target(counts, True))
    common = Counter({k: n for k, n in counts.items() if n >= 0.01 * sum(counts.values())})
    without = _target_caps(common, mra_target(common, True))
    assert caps[5] <= 3 and caps[7] <= 1 and sum(caps.values()) >= max(50, sum(without.values())), (caps, without)
