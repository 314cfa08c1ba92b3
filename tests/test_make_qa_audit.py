"""The blind audit finds each kind of text leak it claims to find, and stays at chance when there is none."""

from __future__ import annotations

import json
import random

import pytest

from spatialctl.qa_format import LETTERS, QARecord, write_qa
from spatialctl.stages.make_qa.audit import audit, items_of, scene_halves

WORDS = [f"w{i}" for i in range(12)]


def mc_record(scene, qtype, question, options, correct, **meta):
    return QARecord(id=f"{scene}-{qtype}-{question}-{random.random()}", scene=scene, question=question,
                    answer=LETTERS[options.index(correct)], answer_type="mc", family="dsr", type=qtype,
                    options=options, metadata=meta)


def row(report, qtype):
    (r,) = [r for r in report["rows"] if r["type"].endswith("/" + qtype)]
    return r


def make(n, build, scenes=40, seed=0):
    rng = random.Random(seed)
    return [build(rng, f"scene{i % scenes}", i) for i in range(n)]


def flat(rng, scene, i):
    opts = rng.sample(WORDS, 4)
    return mc_record(scene, "flat", f"which {rng.choice(WORDS)}?", opts, rng.choice(opts))


def test_balanced_data_scores_chance_on_every_baseline():
    r = row(audit(make(2400, flat)), "flat")
    assert r["chance"] == pytest.approx(0.25)
    assert all(abs(v - 0.25) < 0.05 for v in r["baselines"].values()), r["baselines"]
    assert r["ok"]


@pytest.mark.parametrize("leak, expect", [
    ("letter", "letter"), ("longest", "longest"), ("shortest", "shortest"), ("frequent", "answer_text"),
    ("medoid", "medoid"),
])
def test_each_leak_is_found_by_its_baseline(leak, expect):
    def build(rng, scene, i):
        opts = rng.sample(WORDS, 4)
        if leak == "letter":
            return mc_record(scene, leak, "q", opts, opts[1])
        if leak in ("longest", "shortest"):
            opts = [w + "x" * rng.randrange(0, 9) for w in opts]
            opts = list(dict.fromkeys(opts))
            while len(opts) < 4:
                opts.append(rng.choice(WORDS) + "y" * (20 + len(opts)))
            key = max if leak == "longest" else min
            return mc_record(scene, leak, "q", opts, key(opts, key=len))
        if leak == "frequent":
            opts = ["w0"] + rng.sample(WORDS[1:], 3)
            rng.shuffle(opts)
            return mc_record(scene, leak, "q", opts, "w0" if rng.random() < 0.8 else rng.choice(opts))
        # medoid: the answer shares words with every distractor; distractors differ in a changed word each
        base = rng.sample(WORDS, 3)
        answer = " ".join(base)
        opts = [answer] + [" ".join(base[:j] + [rng.choice(WORDS[8:]) + str(j)] + base[j + 1:]) for j in range(3)]
        rng.shuffle(opts)
        return mc_record(scene, leak, "q", opts, answer)

    r = row(audit(make(800, build)), leak)
    assert r["best_name"] == expect or r["baselines"][expect] >= r["best"] - 1e-9, r["baselines"]
    assert r["baselines"][expect] > 0.7
    assert not r["ok"]


def test_bag_of_words_learns_an_answer_the_question_gives_away():
    # The answer follows from a question word; every option text is equally often right overall.
    def build(rng, scene, i):
        colour = rng.choice(["red", "blue", "green", "grey"])
        opts = ["left", "right", "front", "back"]
        rng.shuffle(opts)
        truth = {"red": "left", "blue": "right", "green": "front", "grey": "back"}[colour]
        return mc_record(scene, "cue", f"where is the {colour} cup?", opts, truth)

    r = row(audit(make(1200, build)), "cue")
    assert r["baselines"]["bow"] > 0.95
    assert r["baselines"]["answer_text"] < 0.35 and r["baselines"]["option_prior"] < 0.35


def test_fits_never_see_the_scenes_they_score():
    # Each scene has its own always-right option text: only a leak across the halves could learn it.
    def build(rng, scene, i):
        own = f"v{100 + int(scene[5:])}"
        others = [k for k in range(100, 180) if k != int(own[1:])]
        opts = [own] + [f"v{k}" for k in rng.sample(others, 3)]  # distractors: other scenes' answers
        rng.shuffle(opts)
        return mc_record(scene, "own", f"q {rng.choice(WORDS)}", opts, own)

    r = row(audit(make(1600, build, scenes=80)), "own")
    assert r["best"] < 0.32, r["baselines"]
    halves = scene_halves([f"s{i}" for i in range(10)])
    assert sorted(halves.values()) == [0] * 5 + [1] * 5


def number_record(scene, label, value, unit="m"):
    return QARecord(id=f"{scene}-{label}-{value}-{random.random()}", scene=scene, question=f"How tall is the {label}?",
                    answer=value, answer_type="number", family="static", type="height", unit=unit,
                    metadata={"object_labels": [label]})


def test_numeric_medians_by_type_and_by_label_scored_with_mra():
    def build(rng, scene, i):
        label = rng.choice(["cup", "tree"])
        return number_record(scene, label, {"cup": 0.1, "tree": 10.0}[label] * rng.uniform(0.97, 1.03))

    r = row(audit(make(800, build)), "height")
    assert r["kind"] == "number"
    assert r["baselines"]["median_label"] > 0.85  # the label gives the answer away
    assert r["baselines"]["median_type"] < 0.6
    assert not r["ok"]

    def wide(rng, scene, i):  # log-uniform over three decades, no label signal: MRA of a median stays low
        return number_record(scene, rng.choice(["cup", "tree"]), 10 ** rng.uniform(-1, 2))

    assert row(audit(make(800, wide)), "height")["best"] < 0.35


def test_multiturn_is_audited_per_turn_type():
    recs = []
    for i in range(40):
        h = [{"question": "depth at (1, 2)?", "answer": 2.0 + i, "answer_type": "number", "unit": "m", "options": None}]
        recs.append(QARecord(id=str(i), scene=f"s{i % 8}", question="caption?", answer="a cup", answer_type="text",
                             family="multiturn", type="hierarchical", history=h,
                             metadata={"turns": [{"type": "pixel_depth"}, {"type": "caption"}]}))
    keys = {it.key for it in items_of(recs)}
    assert keys == {"multiturn/hierarchical/pixel_depth", "multiturn/hierarchical/caption"}
    rows = {r["type"]: r for r in audit(recs)["rows"]}
    assert rows["multiturn/hierarchical/caption"]["baselines"]["answer_text"] == 1.0


def test_cli_eval_blind_writes_beside_the_file(tmp_path):
    from typer.testing import CliRunner

    from spatialctl.cli import app

    path = tmp_path / "qa.jsonl"
    write_qa(path, make(200, flat))
    res = CliRunner().invoke(app, ["eval", "blind", str(path), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "| dsr/flat | mc | 200 |" in res.output
    report = json.loads((tmp_path / "qa.audit.json").read_text())
    assert report["rows"][0]["type"] == "dsr/flat"
    assert (tmp_path / "qa.audit.md").read_text().startswith("Blind audit")
    missing = CliRunner().invoke(app, ["eval", "blind", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code != 0 and "no such QA file" in missing.output
