"""Scoring exact to the official definitions: golden MRA values, parser quirks, the per-item checker."""

import math

import numpy as np
import pytest

from spatialctl.qa_format import QARecord
from spatialctl.scoring import (
    MRA_THRESHOLDS,
    PARSERS,
    choose_parser,
    get_parser,
    is_readable,
    mc_letter,
    mean_relative_accuracy,
    parse_answer_tag,
    parse_lmms,
    parse_reasoning,
    parse_spacevista,
    parse_vsibench,
    score_item,
)


def test_thresholds_are_the_official_ten():
    # The official int((.95-.5)/.05 + 2) truncates 10.999... to 10 points.
    assert int((0.95 - 0.5) / 0.05 + 2) == 10
    assert len(MRA_THRESHOLDS) == 10
    assert MRA_THRESHOLDS[0] == 0.5 and MRA_THRESHOLDS[-1] == 0.95
    np.testing.assert_allclose(np.diff(MRA_THRESHOLDS), 0.05)


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        (1.1, 1.0, 0.9),  # boundary: 0.10000000000000009 <= 1 - 0.8999999999999999 holds in float64
        (1.5, 1.0, 0.1),
        (3, 4, 0.6),
        (0.9, 1.0, 0.9),
        (1.05, 1.0, 1.0),  # 0.050000000000000044 <= 1 - 0.95 (the same float)
        (1.45, 1.0, 0.2),
        (0.5, 1.0, 0.1),
        (2.0, 1.0, 0.0),
        (1.0, 1.0, 1.0),
        (110, 100, 0.9),
        (5, 4, 0.6),  # symmetric with 3/4: 0.25 <= 1 - 0.75
        (0, 4, 0.0),
    ],
)
def test_mra_golden(pred, gt, expected):
    assert mean_relative_accuracy(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_mra_bad_predictions_score_zero():
    assert mean_relative_accuracy(None, 3.0) == 0.0
    assert mean_relative_accuracy(float("nan"), 3.0) == 0.0
    assert mean_relative_accuracy(float("inf"), 3.0) == 0.0


def test_mra_zero_ground_truth():
    with pytest.raises(ValueError, match="ground truth is 0"):
        mean_relative_accuracy(0.0, 0.0)
    # SpaceVista: absolute error in place of relative when gt is 0.
    assert mean_relative_accuracy(0.0, 0.0, zero_gt="absolute") == 1.0
    assert mean_relative_accuracy(0.3, 0.0, zero_gt="absolute") == pytest.approx(0.5)  # 0.3 <= 1-θ for θ <= 0.7
    assert mean_relative_accuracy(2.0, 0.0, zero_gt="absolute") == 0.0


def test_mra_negative_ground_truth_uses_magnitude():
    assert mean_relative_accuracy(-1.1, -1.0) == pytest.approx(0.9)
    assert mean_relative_accuracy(5.0, -1.0) == 0.0


# --------------------------------------------------------------------------- vsibench (original) parser


@pytest.mark.parametrize(
    "text, expected",
    [
        ("A", "A"),
        ("A. chair", "A"),
        ("B.", "B"),
        ("\nA", "A"),  # the final strip removes the newline
        (" A", ""),  # leading space: the first token is empty
        ("A.\n", "A."),  # the newline shields the period from rstrip('.')
        ("The answer is A", "The"),
        ("(A)", "(A)"),
        ("A\nB", "A\nB"),
    ],
)
def test_vsibench_parser_mc_quirks(text, expected):
    assert parse_vsibench(text, "mc") == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", 3.0),
        ("3 meters", 3.0),
        ("2.5.", 2.5),
        ("3m", None),
        ("1,000", None),
        ("three", None),
        ("1e3", 1000.0),
        ("1_000", 1000.0),
    ],
)
def test_vsibench_parser_number_quirks(text, expected):
    assert parse_vsibench(text, "number") == expected


def test_vsibench_parser_nan_parses_but_scores_zero():
    assert math.isnan(parse_vsibench("nan", "number"))
    rec = {"answer": 2.0, "answer_type": "number"}
    assert score_item(rec, "nan", "vsibench").score == 0.0


def test_vsibench_mc_is_case_insensitive_exact_match():
    rec = {"answer": "B", "answer_type": "mc", "options": ["x", "y", "z", "w"]}
    assert score_item(rec, "b", "vsibench").score == 1.0
    assert score_item(rec, "B. y", "vsibench").score == 1.0
    assert score_item(rec, "A.\n", "vsibench").score == 0.0
    assert score_item(rec, "(B)", "vsibench").score == 0.0


# ------------------------------------------------------------------------------------------ lmms parser


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("(C)", "C"),
        ("The answer is C.", "C"),
        ("Answer: D", "D"),
        ("Clearly B", "C"),  # any capital option letter counts, even inside a word
        ("Dog", "D"),
        ("b", ""),  # lower case is not a letter answer
        ("I think it is B", "B"),  # 'I' is not an option letter
        ("there is no letter in this very long reply of more than ten words at all", ""),
    ],
)
def test_lmms_parser_mc_quirks(text, expected):
    assert parse_lmms(text, "mc", ["w", "x", "y", "z"]) == expected


def test_lmms_letters_follow_the_number_of_options():
    assert parse_lmms("E", "mc", ["a", "b", "c", "d", "e"]) == "E"
    assert parse_lmms("E then B", "mc", ["a", "b", "c", "d"]) == "B"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("3", 3.0),
        ("about 3 meters", 3.0),
        ("3m", 3.0),
        ("There are five chairs", 5.0),
        ("twenty-five", 25.0),
        ("Twenty", 20.0),
        ("1,200 cm", 1200.0),
        ("-2.5", -2.5),
        ("roughly .5 m", 0.5),
        ("3-4 m", 3.0),  # a range: the first number
        ("in frame 2 there are 5", 2.0),  # the first number wins even when it is not the answer
        ("a lot", None),  # "a" is not a number word here
        ("no idea", None),
    ],
)
def test_lmms_parser_number_quirks(text, expected):
    assert parse_lmms(text, "number") == expected


# ------------------------------------------------------------------------------------ answer tag parser


def test_answer_tag_parser():
    assert parse_answer_tag("<think>maybe A</think><answer>B</answer>", "mc") == "B"
    assert parse_answer_tag("<ANSWER>\n 4.5 m\n</ANSWER>", "number") == 4.5
    assert parse_answer_tag("<answer>B</answer> <answer>C</answer>", "mc") == "B"  # first pair counts
    assert parse_answer_tag("<answer>B", "mc") is None  # unclosed: no answer
    assert parse_answer_tag("B", "mc") is None  # no tag: no answer
    rec = {"answer": "B", "answer_type": "mc", "options": ["a", "b", "c", "d"]}
    assert score_item(rec, "B", "answer_tag").score == 0.0
    assert score_item(rec, "<answer>B</answer>", "answer_tag").score == 1.0


# ------------------------------------------------------------------------------------ spacevista parser


def test_spacevista_parser_quirks():
    assert parse_spacevista("b) chair", "mc") == "B"
    assert parse_spacevista("<answer>c</answer>", "mc") == "C"
    assert parse_spacevista("The answer is A", "mc") == "The answer is A"
    # number words come before digits, and "a" is one
    assert parse_spacevista("3 meters, about a third", "number") == 1.0
    assert parse_spacevista("two or 3", "number") == 2.0
    assert parse_spacevista("twenty-five", "number") == 5.0  # "five" is tried before "twenty"
    assert parse_spacevista("1,200 cm", "number") == 1.0
    assert parse_spacevista("-4.5", "number") == -4.5


def test_official_parsers_keep_their_readings_of_reasoning_style_answers():
    """Both are what the official code does (thinking-in-space `fuzzy_matching`: first space token, periods
    stripped; SpaceVista `fuzzy_matching`: ``^\\s*([A-D])\\b`` else the whole text): kept, and flagged."""
    assert parse_vsibench("C: the chair", "mc") == "C:"
    assert parse_spacevista("Answer: D", "mc") == "Answer: D"
    assert not is_readable("C:", "mc", ["a", "b", "c", "d"]) and not is_readable("Answer: D", "mc", None)
    assert is_readable("C", "mc", ["a", "b", "c"]) and not is_readable("D", "mc", ["a", "b", "c"])


# ------------------------------------------------------------------------------------- reasoning parser

OPTS = ["A. right", "B. left", "C. behind", "D. in front"]


@pytest.mark.parametrize("text, answer_type, expected", [
    ("Answer: D", "mc", "D"),  # what spacevista misses
    ("Looking at frame 2 the chair is behind.\nC: behind", "mc", "C"),  # what vsibench reads as "C:"
    ("<think>A is near B, and B...</think> The answer is (C).", "mc", "C"),
    ("A is left of B. So the answer is (B)", "mc", "B"),
    ("Step 1 ... \\boxed{B}", "mc", "B"),
    ("Final answer: $\\boxed{\\text{A}}$", "mc", "A"),
    ("<answer>D</answer>", "mc", "D"),
    ("<answer>A</answer> wait, <answer>B</answer>", "mc", "B"),  # the last pair
    ("**Answer:** b", "mc", "B"),
    ("I think it is left.\nThe correct option is left.", "mc", "B"),  # an option's text
    ("Between A and B, option C fits.\nAnswer: option C", "mc", "C"),
    ("A dog sits there", "mc", None),  # no rule applies; lmms would read "A"
    ("The answer is E", "mc", None),  # not one of four options
    ("After looking, the answer is: left\nA", "mc", "B"),  # the phrase outranks the last line
    ("There are 3 red and 4 blue chairs.\nAnswer: 7", "number", 7.0),
    ("Counting... \\boxed{12}", "number", 12.0),
    ("<think>2 or 3</think><answer>three</answer>", "number", 3.0),
    ("Frame 1 shows 2 m.\n3.5 m", "number", 3.5),
    ("There are 3 chairs in frame 2", "number", None),  # a number inside prose is no final answer
])
def test_reasoning_parser_cases(text, answer_type, expected):
    assert parse_reasoning(text, answer_type, OPTS) == expected


def test_choose_parser():
    assert choose_parser(None, "vsibench", ["A"]) == ("vsibench", "the bench's own")
    assert choose_parser("lmms", "vsibench", ["A"])[0] == "lmms"
    assert choose_parser("auto", "vsibench", ["A", "3", "B."])[0] == "vsibench"
    assert choose_parser("auto", "vsibench", ["A", "<think>x</think>B"]) == (
        "reasoning", "auto: 1 of 2 predictions carry reasoning")
    assert choose_parser("auto", "lmms", ["one two three four five six seven eight nine ten eleven"])[0] == "reasoning"


def test_parser_registry():
    assert set(PARSERS) == {"vsibench", "lmms", "answer_tag", "spacevista", "reasoning"}
    with pytest.raises(ValueError, match="unknown parser"):
        get_parser("nope")


# ------------------------------------------------------------------------------------------- checker


def test_score_item_on_qa_records():
    mc = QARecord(id="1", scene="s", question="q?", answer="C", answer_type="mc", family="vsi",
                  type="object_rel_distance", options=["sofa", "bed", "chair", "lamp"])
    assert score_item(mc, "C", "vsibench").score == 1.0
    assert score_item(mc, "A", "vsibench").score == 0.0
    assert score_item(mc, None).score == 0.0
    num = QARecord(id="2", scene="s", question="how far?", answer=4.0, answer_type="number", family="vsi",
                   type="object_abs_distance", unit="m")
    r = score_item(num, "3", "vsibench")
    assert r.metric == "mra" and r.parsed == 3.0 and r.score == pytest.approx(0.6)
    text = {"answer": "Left", "answer_type": "text"}
    assert score_item(text, " left.", "lmms").score == 1.0
    assert score_item(text, "right", "lmms").score == 0.0


def test_mc_letter_from_option_text():
    # VSI-Bench records list options as "A. sofa" and may give the answer as text.
    rec = {"answer": "chair", "answer_type": "mc", "options": ["A. sofa", "B. chair"]}
    assert mc_letter(rec) == "B"
    assert score_item(rec, "B", "vsibench").score == 1.0
    with pytest.raises(ValueError):
        mc_letter({"answer": "table", "options": ["A. sofa"]})


def test_score_item_zero_gt_rule_is_selectable():
    rec = {"answer": 0.0, "answer_type": "number"}
    with pytest.raises(ValueError):
        score_item(rec, "0", "lmms")
    assert score_item(rec, "0", "lmms", zero_gt="absolute").score == 1.0
