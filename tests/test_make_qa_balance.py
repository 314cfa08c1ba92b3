"""Balanced sampling: class-first draws, answer caps, count targets, step caps, distractors from real answers."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np

from spatialctl.qa_format import LETTERS, QARecord
from spatialctl.stages.make_qa import balance
from spatialctl.stages.make_qa.audit import audit


def test_class_draw_picks_each_present_answer_equally_often_then_by_weight():
    classes = np.array([[0, 0]] * 97 + [[1, 0]] * 2 + [[2, 2]])  # one answer has 97% of the candidates
    weights = np.ones(100)
    weights[97] = 3.0  # within class (1, 0): candidate 97 three times as likely as 98
    draw = balance.ClassDraw(classes, weights)
    rng = random.Random(0)
    got = Counter(draw.draw(rng) for _ in range(30000))
    per_class = Counter(tuple(classes[i]) for i in got.elements())
    assert all(abs(n / 30000 - 1 / 3) < 0.015 for n in per_class.values()), per_class
    assert abs(got[97] / (got[97] + got[98]) - 0.75) < 0.02
    target = balance.ClassDraw(classes, weights, target={(0, 0): 1.0, (2, 2): 3.0})
    per = Counter(tuple(classes[target.draw(rng)]) for _ in range(20000))
    assert per[(1, 0)] == 0 and abs(per[(2, 2)] / 20000 - 0.75) < 0.02


def rec(i, answer, options=None, qtype="t", pool=None, steps=None, unit=None, answer_type="mc", scene=None):
    meta = {}
    if pool:
        meta["option_pool"] = pool
    if steps:
        meta["steps"] = steps
    if answer_type == "mc":
        options = options or [answer, "x1", "x2", "x3"]
        return QARecord(id=f"r{i}", scene=scene or f"s{i % 50}", question=f"q{i}", answer=LETTERS[options.index(answer)],
                        answer_type="mc", family="f", type=qtype, options=options, metadata=meta)
    return QARecord(id=f"r{i}", scene=scene or f"s{i % 50}", question=f"q{i}", answer=answer, answer_type="number",
                    family="f", type=qtype, unit=unit, metadata=meta)


def test_cap_flattens_a_skewed_type_by_water_filling():
    answers = ["a"] * 700 + ["b"] * 150 + ["c"] * 100 + [x for x in "defgh" for _ in range(50)]
    kept = balance.cap([rec(i, a, pool="p") for i, a in enumerate(answers)])
    counts = Counter(r.answer_option for r in kept)
    share = max(counts.values()) / len(kept)
    assert share <= balance.SPREAD / 8 + 1e-9 and share <= 1.5 / 8
    # water-filling keeps every rare answer whole and caps only the frequent ones
    assert all(counts[x] == 50 for x in "defgh") and counts["a"] == counts["c"] > 50
    # unpooled (fixed options): nearly flat
    closed = Counter(r.answer_option for r in balance.cap([rec(i, a) for i, a in enumerate(answers)]))
    assert max(closed.values()) / sum(closed.values()) <= balance.CLOSED_SPREAD / 8 + 1e-9


def test_counts_follow_a_target_distribution():
    counts = [1] * 600 + [2] * 200 + [3] * 120 + [4] * 80
    kept = balance.cap([rec(i, float(c), answer_type="number") for i, c in enumerate(counts)],
                       target={"f/t": {1.0: 1, 2.0: 1, 3.0: 1, 4.0: 2}})
    got = Counter(float(r.answer) for r in kept)
    assert got == {1.0: 40, 2.0: 40, 3.0: 40, 4.0: 80}


def test_counts_are_kept_so_that_no_constant_guess_passes_the_mra_limit():
    from spatialctl.scoring import mean_relative_accuracy

    counts = [1] * 300 + [2] * 300 + [3] * 300 + [4] * 300 + [5] * 300
    flat = [float(c) for c in counts]
    kept = [float(r.answer) for r in balance.cap([rec(i, c, answer_type="number") for i, c in enumerate(flat)])]

    def best_guess(answers):  # the scorer itself, every guess on a fine grid (not the LP's own matrix)
        values, n = np.unique(answers, return_counts=True)
        return max(np.dot(n, [mean_relative_accuracy(g, a) for a in values]) / n.sum() for g in np.arange(0.5, 9, 0.01))

    assert best_guess(flat) > 0.4  # flat 1-5 still lets "4" score
    assert len(set(kept)) == 5 and best_guess(kept) <= balance.MRA_AIM + 1e-9 and len(kept) > 1000
    # Counts 1-4 alone cannot pass (the scorer's closed intervals: no weighting keeps every guess under 0.353); that
    # is the synth's to fix (groups of 1-6 of a kind). A rare (< 1%) large count neither sets the limit nor cuts the
    # type to its share (weights scaled to one 6 kept 2): it is kept where it lets more records through.
    few = Counter({1.0: 594, 2.0: 234, 3.0: 70, 4.0: 11, 5.0: 1, 6.0: 1})
    keep = balance.mra_target(few, True)
    only = balance.mra_target(Counter({1.0: 594, 2.0: 234, 3.0: 70, 4.0: 11}), True)
    assert all(n <= few[k] for k, n in keep.items()) and sum(keep.values()) > sum(only.values()) >= 30
    assert best_guess([k for k, n in keep.items() for _ in range(n)]) <= 0.355
    assert best_guess([k for k, n in only.items() for _ in range(n)]) > 0.35
    # counts as synth scenes with groups of 1-6 of a kind hold them: every guess within the aim, no count above the
    # done-when's answer-frequency limit (1.5 / 6: the plentiful 1s), all of the scarcest common counts kept
    groups = Counter({1.0: 271, 2.0: 193, 3.0: 69, 4.0: 34, 5.0: 44, 6.0: 30})
    keep = balance.mra_target(groups, True)
    kept = [k for k, n in keep.items() for _ in range(n)]
    assert len(kept) > 250 and len(set(kept)) == 6 and best_guess(kept) <= balance.MRA_AIM + 1e-9
    assert max(keep.values()) <= 0.25 * len(kept) and keep[6.0] == 30
    # where flat already suffices (measures over 30 log-bins, a factor of 800), nothing is reweighted
    assert balance.mra_target(Counter({b: 10 for b in range(-10, 20)}), False) is None


def test_measures_are_balanced_over_log_bins():
    rng = random.Random(1)
    values = [1.0 + 0.01 * rng.random() for _ in range(500)] + [10 ** rng.uniform(-1, 2) for _ in range(500)]
    kept = balance.cap([rec(i, v, unit="m", answer_type="number") for i, v in enumerate(values)])
    bins = Counter(balance.answer_key(r) for r in kept)
    assert max(bins.values()) / len(kept) <= 0.15


def test_step_labels_are_capped():
    recs = [rec(i, f"ans{i % 20}", pool="p", steps=["flat", "flat"] if i % 20 < 10 else ["up", f"s{i % 20}"])
            for i in range(2000)]
    kept = balance.cap(recs)
    steps = Counter(s for r in kept for s in r.metadata["steps"])
    limit = balance.water_fill(Counter(s for r in recs for s in r.metadata["steps"]),
                               balance.share_limit(Counter(s for r in recs for s in r.metadata["steps"]), strict=False))
    assert steps["flat"] <= limit and steps["up"] <= limit


def test_distractors_are_other_questions_true_answers_of_the_same_pool():
    rng = random.Random(0)
    # 2,000 questions, 8 answers: within the 1/4 share an exchangeable option set needs, but far from flat
    shares = {"a": 0.24, "b": 0.22, "c": 0.18, "d": 0.12, "e": 0.1, "f": 0.07, "g": 0.04, "h": 0.03}
    pool_answers = [t for t, p in shares.items() for _ in range(int(p * 2000))]
    recs = [rec(i, a, options=[a, "never", "seen", "here"], pool="p2") for i, a in enumerate(pool_answers)]
    # a type whose only pool is too small keeps the generator's options; one such record in a type whose other
    # options are pooled is dropped
    recs += [rec(5000 + i, "z", options=["z", "y", "w", "v"], pool="tiny", qtype="small") for i in range(5)]
    recs += [rec(6000, "z", options=["z", "y", "w", "v"], pool="tiny2")]
    rng.shuffle(recs)
    truth = {r.id: r.answer_option for r in recs if r.id != "r6000"}
    out = balance.redraw_distractors(recs, seed=3)
    assert len(out) == len(recs) - 1 and "r6000" not in {r.id for r in out}
    for r in out:
        if r.metadata["option_pool"] == "tiny":  # one distinct answer: the generator's options stay
            assert r.options == ["z", "y", "w", "v"] and r.metadata["options_from"] == "generator"
            continue
        assert len(set(r.options)) == 4 and set(r.options) <= set(shares)
        assert r.metadata["options_from"] == "pool"
    assert sorted(truth.values()) == sorted(r.answer_option for r in out)  # answers kept (by text)
    # exchangeable: each text, when offered, is the answer 1 time in 4
    pooled = [r for r in out if r.metadata["option_pool"] == "p2"]
    for t in shares:
        offered = [r for r in pooled if t in r.options]
        assert abs(sum(r.answer_option == t for r in offered) / len(offered) - 0.25) < 0.04, t
    row = audit(pooled)["rows"][0]
    assert max(row["baselines"].values()) < 0.25 + 0.04, row["baselines"]


def test_naive_distractors_from_a_skewed_pool_would_leak():
    # Why the cap comes first: with one answer at 43%, no option-set design hides it (it must appear in more
    # than all the sets it could fill), and the audit sees it.
    pool_answers = ["a"] * 430 + ["b"] * 200 + ["c"] * 170 + ["d"] * 100 + ["e"] * 100
    recs = [rec(i, a, options=[a, "p", "q", "r"], pool="p") for i, a in enumerate(pool_answers)]
    leaky = audit(balance.redraw_distractors(recs))["rows"][0]
    assert leaky["baselines"]["answer_text"] > 0.35
    fixed = audit(balance.balance([rec(i, a, options=[a, "p", "q", "r"], pool="p")
                                   for i, a in enumerate(pool_answers)]))["rows"][0]
    assert fixed["best"] < 0.25 + 0.05, fixed["baselines"]


def test_generator_options_dropped_where_a_type_is_mostly_pooled():
    # 80% pooled (DSR distance on 200 synth scenes was 90%, speed pooled per time window 65-80%): the made-up wrong
    # options of the other 20% would let their answer stand out, so those records go; a type pooled less than half
    # keeps them (a small run).
    pooled = [rec(i, "abcd"[i % 4], options=list("abcd"), pool="p") for i in range(40)]
    made_up = [rec(100 + i, "z", options=["z", "y", "w", "v"], pool=f"tiny{i}") for i in range(10)]
    out = balance.redraw_distractors(pooled + made_up, seed=0)
    assert {r.metadata["options_from"] for r in out} == {"pool"} and len(out) == 40
    # cap() drops them first, so that the answers it keeps are capped without them
    assert sorted(r.id for r in balance.cap(pooled + made_up)) == sorted(r.id for r in pooled)
    # (distinct answers, which the answer cap keeps: the type stays less than half pooled through the caps; where
    # the caps leave it mostly pooled, they go within the caps, as redraw_distractors would drop them after)
    few = [rec(200 + i, "abcd"[i % 4], options=list("abcd"), pool="q", qtype="u") for i in range(10)]
    more = [rec(300 + i, f"z{i}", options=[f"z{i}", "y", "w", "v"], pool=f"t{i}", qtype="u") for i in range(15)]
    assert len(balance.redraw_distractors(few + more, seed=0)) == 25
    for kept in (balance.cap(few + more), balance.balance(few + more)):
        assert sum(r.metadata["option_pool"].startswith("t") for r in kept) == 15


def test_a_pool_the_step_cap_leaves_too_small_is_dropped_within_the_caps():
    # Round 4 (DSR distance, 200 synth scenes): the step cap removed a small pool's only record of its fourth answer
    # (it repeats an over-used step), the pool could no longer draw 4 options, and redraw_distractors dropped its
    # records after the caps: 2 rarer answers gone, the top answer at 0.154 against a limit of 0.150.
    steps = {"a": ["x"], "b": ["y"], "c": ["z"], "d": ["w"], "e": ["x"] * 20}
    big = [rec(i, a, options=list("abcd"), pool="P", steps=steps[a]) for i, a in enumerate("abcd" * 40)]
    small = [rec(500 + i, a, options=list("abce"), pool="Q", steps=steps[a])
             for i, a in enumerate(["a", "b", "c"] * 10 + ["e"] * 2)]
    capped = balance.cap(big + small, seed=0)
    assert "e" not in {r.answer_option for r in capped}  # the step cap took the pool's fourth answer
    kept = balance.redraw_distractors(capped, seed=0)
    assert sorted(r.id for r in kept) == sorted(r.id for r in capped)  # nothing the caps kept is dropped after
    assert {r.metadata["options_from"] for r in kept} == {"pool"}


def test_fallback_options_come_from_the_questions_that_use_the_fallback():
    # Round 3: a big pool and small pools share a fallback; the small pools' answers differ from the big one's.
    # Drawn from every record naming the fallback, "s0" (the small pools' answer) was rarely offered but right
    # whenever it was; drawn from the fallback's users only (capped), every text is right 1 time in 4.
    rng = random.Random(1)
    big = [rec(i, f"b{i % 8}", pool="big") for i in range(800)]
    # 40 small pools of two answers each (too few for 4 options), "s0" in every one: half of the small answers
    small = [rec(1000 + i, rng.choice(["s0", f"s{1 + i % 40 % 4}"]), pool=f"small{i % 40}") for i in range(400)]
    for r in big + small:
        r.metadata["option_pool_fallback"] = "fb"
    out = balance.balance(big + small, seed=0)
    users = [r for r in out if r.metadata["options_from"] == "fallback pool"]
    assert len(users) > 150 and all(set(r.options) <= {"s0", "s1", "s2", "s3", "s4"} for r in users)
    for t in ("s0", "s1", "s2", "s3", "s4"):
        offered = [r for r in users if t in r.options]
        assert abs(sum(r.answer_option == t for r in offered) / len(offered) - 0.25) < 0.06, t
