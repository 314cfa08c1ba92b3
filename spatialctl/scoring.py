"""Answer parsing and per-item scoring, exact to the benchmarks' official definitions.

Shared by `eval qa`, make-qa's tests and the GRPO rewards. A *parser* turns a model's raw text into the
value that is compared with the ground truth; a *checker* (`score_item`) compares it:

- multiple choice (`answer_type == "mc"`): 1.0 on a case-insensitive exact match with the answer letter;
- numbers (`"number"`): Mean Relative Accuracy (`mean_relative_accuracy`);
- free text (`"text"`): 1.0 on a case-insensitive match after trimming spaces and a trailing period.

Parsers (pick with ``parser=``; every quirk listed here has a unit test in tests/test_scoring.py):

``vsibench`` — VSI-Bench's original (thinking-in-space / lmms-eval `fuzzy_matching`): the text up to the
    first ASCII space, then trailing periods stripped, then surrounding whitespace stripped; numbers go
    through Python's ``float``. Quirks: a leading space gives an empty token (``" A"`` → ``""``, wrong);
    ``"A.\\n"`` keeps its period (the newline hides it from the period strip) → ``"A."``, wrong;
    ``"The answer is A"`` → ``"The"``; ``"(A)"`` → ``"(A)"``; ``"3m"`` and ``"1,000"`` are not numbers;
    ``"1e3"``, ``"1_000"``, ``"nan"`` and ``"inf"`` are (NaN and infinity score 0); ``"A\\nB"`` → ``"A\\nB"``.

``lmms`` — lmms-eval style free-form extraction. Multiple choice: the answer-prefix phrases lmms-eval's
    video tasks strip ("The best answer is", "Answer:", ...) are removed, then the first *capital* option
    letter anywhere in the text wins (lmms-eval's ``re.search("[ABCD]")``); a reply of more than ten words
    without any capital option letter gives no answer. Quirks: ``"Clearly B"`` → ``"C"`` and ``"Dog"`` →
    ``"D"`` (capitals inside words count); a lower-case ``"b"`` alone is no answer. Numbers: the first
    number *or* number word in reading order (``"zero"`` .. ``"twenty"``, the tens, hyphenated compounds
    like ``"twenty-five"``); thousands commas are read (``"1,200"`` → 1200); a leading minus is kept.
    Quirks: ``"3-4 m"`` → 3, ``"in frame 2 there are 5"`` → 2; ``"a"``/``"an"`` are not numbers.

``answer_tag`` — the content of the first ``<answer>...</answer>`` pair (case-insensitive, may span lines),
    then read as ``lmms`` does. No closed pair → no answer (score 0), which is what a format-strict GRPO
    reward needs. Quirks: an unclosed ``<answer>`` gives nothing; with several pairs the first one counts.

``spacevista`` — SpaceVista's evaluator: the first ``<answer>`` pair if there is one, else the whole text;
    multiple choice takes a leading letter A-D (``"b) chair"`` → ``"B"``), else the whole stripped text;
    numbers look for number *words* before digits, in a fixed word order that includes ``"a"``/``"an"`` = 1.
    Quirks: ``"3 meters, about a third"`` → 1 (the word "a"); ``"two or 3"`` → 2.

``reasoning`` — for chain-of-thought replies: finds the *final* answer the way the benchmarks' post-processing
    and LLM judges do in the common cases, trying in order (the first rule that yields a valid answer wins;
    only the text after the last ``</think>`` is searched when there is any):

    1. the last closed ``<answer>X</answer>``;
    2. the last ``\\boxed{X}`` (braces balanced, ``\\text{...}`` unwrapped);
    3. the last "answer phrase" line: ``Answer: X``, ``Final answer: X``, ``the answer is (X)``,
       ``The correct option is X``, ``**Answer:** X`` (markdown stars ignored);
    4. the last non-empty line when it is a lone option (``C``, ``(C)``, ``C.``, ``C: the chair``) or a lone
       number (``3.5``, ``3.5 m``).

    The span found is then read: multiple choice takes an option letter at its start (``(B)``, ``B.``,
    ``B: left``, a lone ``b``), else ``Option B``, else the option whose text the span equals; numbers take the
    first number or number word (as ``lmms``). Examples: ``"<think>A is near...</think> The answer is (C)."``
    → ``C``; ``"... so the count is 4.\\n\\boxed{4}"`` → 4; ``"Step 1: A is left of B...\\nAnswer: D"`` → ``D``;
    ``"Looking at frame 2...\\nC: the red chair"`` → ``C``; ``"A dog is there"`` → no answer (no rule applies,
    where ``lmms`` would read ``A``).

``auto`` (``--parser auto``, `choose_parser`, then `eval qa`'s `pick_parser`) — ``reasoning`` when any
    prediction carries reasoning (a ``</think>``, ``<answer>`` or ``\\boxed`` marker, an answer phrase, several
    lines or more than ten words), or when the bench's own parser leaves predictions unread that ``reasoning``
    reads (``"C: text"``, ``" A"``); else the bench's own parser, so well-formed short answers keep the official
    reading exactly. The report says which parser was used and why (``parser_source``).

The official parsers are kept exact, so two readings some would call bugs stay: ``vsibench`` reads
``"C: text"`` as ``"C:"`` (scored 0, as thinking-in-space's `fuzzy_matching` does) and ``spacevista`` reads
``"Answer: D"`` as the whole text (scored 0, as SpaceVista's `fuzzy_matching` does: ``^\\s*([A-D])\\b`` does not
match "An..."). `eval qa` counts such unreadable predictions (``n_unreadable`` in the report) and warns, and
``--parser auto`` / ``reasoning`` reads both as the intended letter. The default stays the official reading,
because that is the number the benchmark publishes.

Aggregation quirks of the official scorers (applied in `stages/eval/qa.py`, pinned in tests/test_eval_qa.py):

- VSI-Bench (thinking-in-space `vsibench_aggregate_results`, commit 51e089c3): per question type the mean item
  score; the three relative-direction levels are averaged into one task *only when the easy level is
  present* (``if 'object_rel_direction_easy_accuracy' in output``); then medium and hard must be present too
  (the official code raises KeyError otherwise; we stop with an error). Without the easy level, medium and
  hard stay two tasks, so each weighs as much as a whole task in the overall mean. A question type absent from
  the file is no task (not a 0). An unknown question type raises in the official code; it is an error here.
  lmms-eval's copy (EvolvingLMMs-Lab/lmms-eval, commit 75571cfe) pops all three levels unconditionally, so any
  missing level fails there.
- VSI-Bench numbers (thinking-in-space): ``to_float(fuzzy_matching(pred))`` (our ``vsibench`` parser);
  lmms-eval's later copy uses `extract_number` (first digit run or number-word run), closer to ``lmms``.
- SpaceVista-Bench (PeiwenSun2000/SpaceVista `eval/metrics/spacevista_bench.py`, commit 920a9b7d): overall =
  mean over all items (not over tasks); per category only Indoor/Outdoor/Tabletop/TinyTabletop; ground truth 0
  uses the absolute error; free text must match exactly after trimming and lower-casing (a trailing period
  makes it wrong; our own bench forgives it).
- DSR-Bench: accuracy over all items.

MRA (VSI-Bench): thresholds ``np.linspace(0.5, 0.95, 10)`` (the official ``int((.95-.5)/.05 + 2)`` is 10
because of float truncation); correct at θ when ``|pred-gt|/gt <= 1-θ``, evaluated in float64 exactly as the
official code does. At the boundary the float values decide: pred 1.1 / gt 1.0 gives an error of
0.10000000000000009, and 1 - θ at θ = 0.8999999999999999 is the same float, so θ=0.9 counts and the score is
0.9; 1.5/1.0 → 0.1; 3/4 → 0.6.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spatialctl.qa_format import ANSWER_TYPES, LETTERS

# The official code builds this with np.linspace(.5, .95, int((.95 - .5) / .05 + 2)) == 10 points.
MRA_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def mean_relative_accuracy(pred: float | None, gt: float, *, zero_gt: str = "error") -> float:
    """VSI-Bench Mean Relative Accuracy of one numeric prediction.

    `pred` None, NaN or infinite scores 0 (the official code's worst case). The relative error is
    ``|pred - gt| / |gt|``: the same as the official ``abs(pred - gt) / gt`` for the positive ground truths
    every VSI-Bench item has (the official form would give a negative error, hence 1.0, for a negative gt).
    `zero_gt` says what a ground truth of 0 does: ``"absolute"`` uses the absolute error ``|pred|`` in place
    of the relative one (SpaceVista's rule); ``"error"`` raises ValueError (the official VSI-Bench code
    divides by zero).
    """
    if pred is None:
        return 0.0
    pred = float(pred)
    gt = float(gt)
    if not math.isfinite(pred):
        return 0.0
    if not math.isfinite(gt):
        raise ValueError(f"ground truth {gt!r} is not a finite number")
    if gt == 0.0:
        if zero_gt == "absolute":
            err = abs(pred - gt)
        elif zero_gt == "error":
            raise ValueError("ground truth is 0: relative accuracy is undefined (use zero_gt='absolute')")
        else:
            raise ValueError(f"zero_gt must be 'absolute' or 'error', not {zero_gt!r}")
    else:
        err = abs(pred - gt) / abs(gt)
    return float((err <= 1.0 - MRA_THRESHOLDS).mean())


# ---------------------------------------------------------------------------------------------- parsers


def _to_float(token: str) -> float | None:
    try:
        return float(token)
    except (TypeError, ValueError):
        return None


def _option_letters(options: list[str] | None) -> str:
    n = len(options) if options else 4
    return LETTERS[: max(1, min(n, len(LETTERS)))]


def parse_vsibench(text: str, answer_type: str, options: list[str] | None = None) -> Any:
    """VSI-Bench original: first space-separated token, trailing periods then whitespace stripped."""
    token = text.split(" ")[0].rstrip(".").strip()
    if answer_type == "number":
        return _to_float(token)
    return token


# Phrases lmms-eval's video MC tasks (Video-MME and kin) strip before looking for a letter.
_LMMS_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option is",
    "The correct option is",
    "Final Answer:",
    "Best answer:",
    "Best option:",
    "Answer:",
    "Option:",
)

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
         "ninety": 90}
_WORD_NUMBER = "|".join(sorted(set(_UNITS) | set(_TENS), key=len, reverse=True))
_UNIT_WORDS = "|".join(k for k in _UNITS if _UNITS[k] < 10 and _UNITS[k] > 0)
# One pass, reading order: a digit number (thousands commas, decimals, sign) or a number word.
_NUMBER_RE = re.compile(
    r"(?P<num>[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)"
    rf"|\b(?P<word>(?:{'|'.join(_TENS)})-(?:{_UNIT_WORDS})|{_WORD_NUMBER})\b",
    re.IGNORECASE,
)


def _first_number(text: str) -> float | None:
    m = _NUMBER_RE.search(text)
    if m is None:
        return None
    if m.group("num") is not None:
        return float(m.group("num").replace(",", ""))
    word = m.group("word").lower()
    if "-" in word:
        tens, unit = word.split("-")
        return float(_TENS[tens] + _UNITS[unit])
    return float(_UNITS.get(word, _TENS.get(word)))


def parse_lmms(text: str, answer_type: str, options: list[str] | None = None) -> Any:
    """lmms-eval style: first capital option letter / first number or number word (see module doc)."""
    if answer_type == "number":
        return _first_number(text)
    if answer_type == "mc":
        s = text.strip()
        for prefix in _LMMS_PREFIXES:
            s = s.replace(prefix, "")
        letters = _option_letters(options)
        m = re.search(f"[{letters}]", s)
        # lmms-eval also returns "" for a long reply without a letter; that is the same as no match here.
        return m.group(0) if m else ""
    return text.strip()


_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def parse_answer_tag(text: str, answer_type: str, options: list[str] | None = None) -> Any:
    """Content of the first closed <answer>...</answer> pair, read as `lmms` does; None without one."""
    m = _TAG_RE.search(text)
    if m is None:
        return None
    return parse_lmms(m.group(1).strip(), answer_type, options)


# SpaceVista's number words, in the order its evaluator tries them (word order matters: first hit wins).
_SV_WORDS = (
    ("zero", 0), ("one", 1), ("two", 2), ("three", 3), ("four", 4), ("five", 5), ("six", 6), ("seven", 7),
    ("eight", 8), ("nine", 9), ("ten", 10), ("eleven", 11), ("twelve", 12), ("thirteen", 13),
    ("fourteen", 14), ("fifteen", 15), ("sixteen", 16), ("seventeen", 17), ("eighteen", 18),
    ("nineteen", 19), ("twenty", 20), ("thirty", 30), ("forty", 40), ("fifty", 50), ("sixty", 60),
    ("seventy", 70), ("eighty", 80), ("ninety", 90), ("a", 1), ("an", 1),
)


def parse_spacevista(text: str, answer_type: str, options: list[str] | None = None) -> Any:
    """SpaceVista's evaluator: <answer> tag if present, leading MC letter, number words before digits."""
    m = re.search(r"<answer>\s*(.*?)\s*</answer>", text, re.IGNORECASE | re.DOTALL)
    s = m.group(1).strip() if m else text
    if answer_type == "mc":
        lm = re.search(r"^\s*([A-D])\b", s.strip(), re.IGNORECASE)
        return lm.group(1).upper() if lm else s.strip()
    if answer_type == "number":
        low = s.strip().lower()
        for word, value in _SV_WORDS:
            if re.search(rf"\b{word}\b", low):
                return float(value)
        dm = re.search(r"-?\d+(?:\.\d+)?", low)
        return float(dm.group(0)) if dm else None
    return s.strip()


_THINK_END_RE = re.compile(r"</think>", re.IGNORECASE)
_PHRASE_RE = re.compile(
    r"(?:final\s+answer|(?:correct|best|right)\s+(?:answer|option|choice)|\banswer)\s*(?:is|:|=)\s*:?\s*(?P<span>.*)",
    re.IGNORECASE,
)
_LONE_OPTION_RE = re.compile(r"^\(?\s*(?P<letter>[A-Z])\s*\)?(?:[.:)]\s*.*)?$")
_LONE_NUMBER_RE = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*[A-Za-z²³%/.]{0,12})?$")
_REASONING_MARKERS = re.compile(r"</think>|<answer>|\\boxed\{", re.IGNORECASE)


def _boxed_spans(text: str) -> list[str]:
    """Contents of every \boxed{...}, braces balanced."""
    spans = []
    start = text.find("\\boxed{")
    while start != -1:
        i = start + len("\\boxed{")
        depth = 1
        j = i
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            spans.append(text[i:j - 1])
        start = text.find("\\boxed{", j)
    return spans


def _clean_span(span: str) -> str:
    span = re.sub(r"\\text(?:bf)?\{([^{}]*)\}", r"\1", span)
    return span.replace("*", "").replace("$", "").strip().strip("\"'`“”‘’").strip()


def _read_mc(span: str, options: list[str] | None) -> str | None:
    letters = _option_letters(options)
    span = _clean_span(span)
    m = re.match(r"^\(?\s*([A-Z])\s*\)?(?=$|[\s.:),])", span)
    if m and m.group(1) in letters:
        return m.group(1)
    m = re.fullmatch(r"\(?([a-z])\)?[.)]?", span)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.search(r"\b(?:option|choice)\s*\(?([A-Za-z])\b", span, re.IGNORECASE)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    for i, opt in enumerate(options or []):
        body = re.sub(r"^\s*\(?[A-Za-z][.):]\s*", "", str(opt))
        if _norm_text(span) in (_norm_text(opt), _norm_text(body)):
            return LETTERS[i]
    return None


def _read_span(span: str, answer_type: str, options: list[str] | None) -> Any:
    if answer_type == "mc":
        return _read_mc(span, options)
    if answer_type == "number":
        return _first_number(_clean_span(span))
    return _clean_span(span).rstrip(".").strip() or None


def final_answer_spans(text: str) -> list[tuple[str, str]]:
    """Candidate final-answer spans of a reasoning reply, best first, each with the rule that found it."""
    parts = _THINK_END_RE.split(text)
    tail = parts[-1] if parts[-1].strip() else text
    out = [("answer_tag", m) for m in reversed(_TAG_RE.findall(tail))]
    out += [("boxed", m) for m in reversed(_boxed_spans(tail))]
    lines = [ln.replace("*", "").strip() for ln in tail.splitlines() if ln.strip()]
    phrases = []
    for k, ln in enumerate(lines):
        m = _PHRASE_RE.search(ln)
        if m:  # "The final answer is:" with the answer on the next line
            phrases.append(m.group("span") if m.group("span").strip() else " ".join(lines[k + 1:k + 2]))
    out += [("phrase", m) for m in reversed(phrases)]
    if lines:
        out.append(("last_line", lines[-1]))
    return out


def parse_reasoning(text: str, answer_type: str, options: list[str] | None = None) -> Any:
    """The final answer of a reasoning reply (see the module doc for the rules and examples); None if none."""
    for rule, span in final_answer_spans(text):
        if rule == "last_line":
            lone = _LONE_OPTION_RE.match(span) if answer_type == "mc" else _LONE_NUMBER_RE.match(span)
            if answer_type != "text" and lone is None:
                continue
        value = _read_span(span, answer_type, options)
        if value is not None:
            return value
    return None


def looks_like_reasoning(text: Any) -> bool:
    s = str(text or "").strip()
    return bool(_REASONING_MARKERS.search(s) or _PHRASE_RE.search(s) or "\n" in s or len(s.split()) > 10)


def choose_parser(requested: str | None, bench_default: str, predictions: list[Any]) -> tuple[str, str]:
    """(parser, why): the requested one, the bench's own when None, or for "auto" ``reasoning`` when any
    prediction carries reasoning and the bench's own otherwise."""
    if requested is None:
        return bench_default, "the bench's own"
    if requested != "auto":
        return requested, "declared"
    n = sum(looks_like_reasoning(p) for p in predictions)
    if n:
        return "reasoning", f"auto: {n} of {len(predictions)} predictions carry reasoning"
    return bench_default, "auto: short answers only, so the bench's own"


def is_readable(parsed: Any, answer_type: str, options: list[str] | None = None) -> bool:
    """Whether a parsed prediction is a valid answer at all (an option letter, a finite number, some text)."""
    if parsed is None:
        return False
    if answer_type == "mc":
        return str(parsed).upper() in _option_letters(options) and len(str(parsed)) == 1
    if answer_type == "number":
        return isinstance(parsed, float) and math.isfinite(parsed)
    return bool(str(parsed).strip())


Parser = Callable[[str, str, "list[str] | None"], Any]

PARSERS: dict[str, Parser] = {
    "vsibench": parse_vsibench,
    "lmms": parse_lmms,
    "answer_tag": parse_answer_tag,
    "spacevista": parse_spacevista,
    "reasoning": parse_reasoning,
}


def get_parser(name: str) -> Parser:
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown parser {name!r}; choose one of {', '.join(PARSERS)}") from None


# ---------------------------------------------------------------------------------------------- checker


def _norm_text(s: Any) -> str:
    return str(s).strip().rstrip(".").strip().lower()


def _get(record: Any, name: str, default: Any = None) -> Any:
    """A field of a QA record given as a mapping or as a `qa_format.QARecord`."""
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def mc_letter(record: Any) -> str:
    """The ground-truth letter of an MC record: `answer` is a letter, or the text of one of `options`
    (with or without a leading "A. " as VSI-Bench writes them)."""
    answer = str(_get(record, "answer")).strip()
    options = _get(record, "options") or []
    if re.fullmatch(r"[A-Za-z]", answer):
        return answer.upper()
    for i, opt in enumerate(options):
        body = re.sub(r"^\s*\(?[A-Za-z][.):]\s*", "", str(opt))
        if _norm_text(opt) == _norm_text(answer) or _norm_text(body) == _norm_text(answer):
            return LETTERS[i]
    raise ValueError(f"MC answer {answer!r} is neither a letter nor one of the options")


@dataclass
class ItemScore:
    score: float
    parsed: Any
    metric: str  # "accuracy" (mc/text) or "mra" (number)


def score_item(
    record: Any, prediction: str | None, parser: str | Parser = "vsibench",
    *, zero_gt: str = "error", text_match: str = "loose",
) -> ItemScore:
    """Score one prediction against one QA record (a mapping or a `QARecord`; fields `answer`,
    `answer_type`, `options`).

    A missing prediction (None) scores 0. Numbers use `mean_relative_accuracy` with `zero_gt`. Free text
    matches case-insensitively after trimming spaces, and with `text_match` "loose" also a trailing period;
    "exact" keeps the period, as SpaceVista's `exact_match` does (``"chair."`` is not ``"chair"``).
    """
    parse = get_parser(parser) if isinstance(parser, str) else parser
    answer_type = _get(record, "answer_type", "mc")
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"answer_type {answer_type!r} is not one of {ANSWER_TYPES}")
    metric = "mra" if answer_type == "number" else "accuracy"
    if prediction is None:
        return ItemScore(0.0, None, metric)
    parsed = parse(str(prediction), answer_type, _get(record, "options"))
    if answer_type == "number":
        gt = float(_get(record, "answer"))
        return ItemScore(mean_relative_accuracy(parsed, gt, zero_gt=zero_gt), parsed, metric)
    if parsed is None:
        return ItemScore(0.0, None, metric)
    if answer_type == "mc":
        ok = str(parsed).lower() == mc_letter(record).lower()
    elif text_match == "exact":
        ok = str(parsed).strip().lower() == str(_get(record, "answer")).strip().lower()
    else:
        ok = _norm_text(parsed) == _norm_text(_get(record, "answer"))
    return ItemScore(1.0 if ok else 0.0, parsed, metric)
