"""Blind audit: how well QA can be answered from its text alone, per family and type.

Good spatial QA cannot be answered without the video. This fits text-only baselines on one scene-disjoint half of
the records and scores them on the other half (and the other way round; every item is scored once, always by
baselines fitted on scenes it does not come from), as VSI-Bench reports "blind" scores:

multiple choice (accuracy; a tie among k options earns 1/k, the expectation of a random tie-break)
  ``letter``        the letter most often correct;
  ``answer_text``   the option whose text was most often the correct answer;
  ``option_prior``  the option whose text was correct most often *when offered* (Laplace-smoothed rate);
  ``bow``           a bag-of-words conditional-logit classifier over question + option (sparse features:
                    option words and word pairs, the option's text, question word x option text), numpy/scipy;
  ``longest`` / ``shortest``  option length in characters;
  ``medoid``        the option closest to the others (mean Jaccard overlap of word sets).
numbers (VSI-Bench MRA, ``spatialctl.scoring``)
  ``median_type``   the fitted median per (type, unit);
  ``median_label``  the fitted median per (type, unit, object labels), falling back to ``median_type`` for
                    labels seen fewer than 3 times. Labels come from ``metadata["object_labels"]`` (or ``label`` /
                    ``categories``), else from the question with its numbers removed.
free text: ``answer_text`` (the most frequent answer, exact match).

Besides the baselines, each row carries the answer distribution: distinct answers, entropy (bits), the most
frequent answer's share and the done-when limit on it, max(1.5 / distinct, 0.15).
Multi-turn samples are audited per turn (type ``hierarchical/<turn type>``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialctl.config import check_fields, opt, quiet_opt
from spatialctl.qa_format import LETTERS, QARecord, read_qa
from spatialctl.scoring import mean_relative_accuracy

MC_BASELINES = ("letter", "answer_text", "option_prior", "bow", "longest", "shortest", "medoid")
NUMBER_BASELINES = ("median_type", "median_label")
TEXT_BASELINES = ("answer_text",)
MC_MARGIN = 0.05  # done when the best blind baseline is within this of chance
NUMBER_LIMIT = 0.35  # done when the best blind MRA is at most this
MIN_LABEL_COUNT = 3
_TOKEN = re.compile(r"[a-z]+|\d+(?:\.\d+)?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class Item:
    """One question-answer turn, reduced to what a blind model sees."""

    scene: str
    key: str  # family/type
    question: str
    answer_type: str
    answer: object  # mc: option index; number: float; text: str
    options: list[str] | None
    unit: str | None
    labels: str

    @property
    def answer_text(self) -> str:
        if self.answer_type == "mc":
            return self.options[self.answer]
        if self.answer_type == "number":
            return f"{float(self.answer):g} {self.unit or ''}".strip()
        return str(self.answer)


def items_of(records: list[QARecord]) -> list[Item]:
    out = []
    for r in records:
        meta = r.metadata or {}
        turns = r.turns()
        turn_meta = meta.get("turns") if isinstance(meta.get("turns"), list) else None
        for i, t in enumerate(turns):
            if len(turns) > 1 and turn_meta is not None and len(turn_meta) == len(turns):
                key = f"{r.family}/{r.type}/{turn_meta[i].get('type', 'turn')}"
                tm = turn_meta[i]
            else:
                key, tm = f"{r.family}/{r.type}", meta
            answer = t["answer"]
            if t["answer_type"] == "mc":
                answer = LETTERS.index(str(answer))
            elif t["answer_type"] == "number":
                answer = float(answer)
            out.append(Item(r.scene, key, t["question"], t["answer_type"], answer, t.get("options"), t.get("unit"),
                            _labels(tm, t["question"])))
    return out


def _labels(meta: dict, question: str) -> str:
    for k in ("object_labels", "label", "categories"):
        v = meta.get(k)
        if v:
            return "+".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
    return _NUMBER.sub("#", question)


def scene_halves(scenes: list[str], seed: int = 0) -> dict[str, int]:
    """scene -> 0 | 1, by a seeded hash, balanced to within one scene."""
    ranked = sorted(set(scenes), key=lambda s: hashlib.sha1(f"audit{seed}:{s}".encode()).hexdigest())
    return {s: i % 2 for i, s in enumerate(ranked)}


def audit(records: list[QARecord], seed: int = 0) -> dict:
    """Blind baselines per family/type, fitted on one half of the scenes and scored on the other (both ways)."""
    items = items_of(records)
    half = scene_halves([it.scene for it in items], seed)
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.key].append(it)
    rows = [_row(key, group, half) for key, group in sorted(groups.items())]
    return {"records": len(records), "items": len(items), "scenes": len(half), "seed": seed,
            "method": "fit on one scene-disjoint half, score the other, both ways; ties among k options earn 1/k",
            "rows": rows}


def _row(key: str, group: list[Item], half: dict[str, int]) -> dict:
    kinds = Counter(it.answer_type for it in group)
    kind = kinds.most_common(1)[0][0]
    group = [it for it in group if it.answer_type == kind]
    texts = Counter(it.answer_text for it in group)
    p = np.array(list(texts.values()), dtype=np.float64) / len(group)
    top_share = float(p.max())
    row = {"type": key, "kind": kind, "n": len(group), "distinct_answers": len(texts),
           "entropy_bits": round(float(-(p * np.log2(p)).sum()), 3), "top_answer": texts.most_common(1)[0][0][:60],
           "top_share": round(top_share, 4), "top_share_limit": round(max(1.5 / len(texts), 0.15), 4)}
    folds = [([it for it in group if half[it.scene] != h], [it for it in group if half[it.scene] == h]) for h in (0, 1)]
    folds = [(fit, score) for fit, score in folds if fit and score]
    if not folds:
        row.update(baselines={}, chance=None, best=None, best_name=None, ok=None, note="needs scenes in both halves")
        return row
    scored = sum(len(s) for _, s in folds)
    names = {"mc": MC_BASELINES, "number": NUMBER_BASELINES, "text": TEXT_BASELINES}[kind]
    totals = dict.fromkeys(names, 0.0)
    for fit, score in folds:
        for name, values in {"mc": _mc, "number": _number, "text": _text}[kind](fit, score).items():
            totals[name] += float(np.sum(values))
    baselines = {k: round(v / scored, 4) for k, v in totals.items()}
    best_name = max(baselines, key=baselines.get)
    best = baselines[best_name]
    if kind == "mc":
        chance = float(np.mean([1.0 / len(it.options) for _, s in folds for it in s]))
        ok = best <= chance + MC_MARGIN
    elif kind == "number":
        chance, ok = None, best <= NUMBER_LIMIT
    else:  # free text: the most frequent answer's hit rate is its share, judged by the share limit below
        chance, ok = None, True
    # the standard error of one baseline at chance: the noise to read a small type's best score against
    se = None if chance is None else round(float(np.sqrt(chance * (1 - chance) / scored)), 4)
    row.update(scored=scored, chance=None if chance is None else round(chance, 4), se_at_chance=se,
               baselines=baselines, best=best, best_name=best_name, ok=bool(ok and top_share <= row["top_share_limit"]))
    return row


# ------------------------------------------------------------------------------------------------ multiple choice


def _argmax_credit(scores: list[float], answer: int) -> float:
    """1/k when the answer is among the k options with the highest score, else 0."""
    s = np.asarray(scores, dtype=np.float64)
    top = np.flatnonzero(s >= s.max() - 1e-12)
    return 1.0 / len(top) if answer in top else 0.0


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _mc(fit: list[Item], score: list[Item]) -> dict[str, list[float]]:
    letters = Counter(it.answer for it in fit)
    correct = Counter(it.options[it.answer] for it in fit)
    offered = Counter(o for it in fit for o in it.options)
    out: dict[str, list[float]] = {name: [] for name in MC_BASELINES}
    bow = _BagOfWords(fit)
    for it in score:
        n = len(it.options)
        out["letter"].append(_argmax_credit([letters.get(i, 0) for i in range(n)], it.answer))
        out["answer_text"].append(_argmax_credit([correct.get(o, 0) for o in it.options], it.answer))
        out["option_prior"].append(_argmax_credit(
            [(correct.get(o, 0) + 1.0) / (offered.get(o, 0) + n) for o in it.options], it.answer))
        lengths = [len(o) for o in it.options]
        out["longest"].append(_argmax_credit(lengths, it.answer))
        out["shortest"].append(_argmax_credit([-x for x in lengths], it.answer))
        words = [set(_tokens(o)) for o in it.options]
        sim = [np.mean([len(w & v) / max(len(w | v), 1) for j, v in enumerate(words) if j != i]) if n > 1 else 0.0
               for i, w in enumerate(words)]
        out["medoid"].append(_argmax_credit(sim, it.answer))
    out["bow"] = bow.credit(score)
    return out


class _BagOfWords:
    """Conditional logit over each question's options on sparse bag-of-words features, L2-regularised, full-batch
    Adam: a text-only classifier that sees everything a blind model sees. The vocabulary is the fit half's; a
    feature never seen in fitting carries no weight."""

    STEPS = 120
    L2 = 1e-4

    def __init__(self, fit: list[Item]):
        self.vocab: dict[str, int] = {}
        x, starts = self._features(fit, grow=True)
        y = np.concatenate([np.eye(len(it.options))[it.answer] for it in fit])
        self.w = self._train(x, starts, y)

    def _features(self, items: list[Item], grow: bool = False):
        import scipy.sparse as sp

        vocab = self.vocab
        rows, cols, starts = [], [], [0]
        r = 0
        for it in items:
            q = sorted(set(_tokens(it.question)))
            for o in it.options:
                toks = _tokens(o)
                feats = {f"o:{t}" for t in toks} | {f"b:{a}_{b}" for a, b in zip(toks, toks[1:], strict=False)}
                feats |= {f"t:{o}"} | {f"q:{w}|{o}" for w in q}
                for f in feats:
                    j = vocab.get(f)
                    if j is None and grow:
                        j = vocab[f] = len(vocab)
                    if j is not None:
                        cols.append(j)
                        rows.append(r)
                r += 1
            starts.append(r)
        x = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(r, max(len(vocab), 1)))
        return x, np.asarray(starts)

    @staticmethod
    def _softmax(z: np.ndarray, starts: np.ndarray) -> np.ndarray:
        seg = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
        zmax = np.maximum.reduceat(z, starts[:-1])[seg]
        e = np.exp(z - zmax)
        return e / np.add.reduceat(e, starts[:-1])[seg]

    def _train(self, x, starts, y) -> np.ndarray:
        w = np.zeros(x.shape[1])
        m, v = np.zeros_like(w), np.zeros_like(w)
        n_q = len(starts) - 1
        xt = x.T.tocsr()
        for step in range(1, self.STEPS + 1):
            p = self._softmax(x @ w, starts)
            g = xt @ (p - y) / n_q + self.L2 * w
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w -= 0.1 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        return w

    def credit(self, items: list[Item]) -> list[float]:
        if not items:
            return []
        x, starts = self._features(items)
        z = x @ self.w
        return [_argmax_credit(z[starts[i]:starts[i + 1]].tolist(), it.answer) for i, it in enumerate(items)]


# ------------------------------------------------------------------------------------------------ numbers, text


def _number(fit: list[Item], score: list[Item]) -> dict[str, list[float]]:
    by_type: dict[str | None, list[float]] = defaultdict(list)
    by_label: dict[tuple, list[float]] = defaultdict(list)
    for it in fit:
        by_type[it.unit].append(it.answer)
        by_label[(it.unit, it.labels)].append(it.answer)
    all_med = float(np.median([it.answer for it in fit]))
    med_type = {u: float(np.median(v)) for u, v in by_type.items()}
    med_label = {k: float(np.median(v)) for k, v in by_label.items() if len(v) >= MIN_LABEL_COUNT}
    out: dict[str, list[float]] = {"median_type": [], "median_label": []}
    for it in score:
        t = med_type.get(it.unit, all_med)
        out["median_type"].append(mean_relative_accuracy(t, it.answer, zero_gt="absolute"))
        out["median_label"].append(mean_relative_accuracy(med_label.get((it.unit, it.labels), t), it.answer,
                                                          zero_gt="absolute"))
    return out


def _text(fit: list[Item], score: list[Item]) -> dict[str, list[float]]:
    top = Counter(str(it.answer) for it in fit).most_common(1)[0][0]
    return {"answer_text": [float(str(it.answer) == top) for it in score]}


# ------------------------------------------------------------------------------------------------ report


def render(report: dict) -> str:
    """A Markdown table: one row per type; best blind score against chance (mc) or the MRA limit (numbers)."""
    lines = [f"Blind audit: {report['items']} items ({report['records']} records) from {report['scenes']} scenes; "
             f"{report['method']}.", "",
             "| type | kind | n | distinct | entropy | top share (limit) | chance (±SE) | best blind | baseline | ok |",
             "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    for r in report["rows"]:
        chance = "" if r.get("chance") is None else f"{r['chance']:.3f} (±{r['se_at_chance']:.3f})"
        best = "" if r.get("best") is None else f"{r['best']:.3f}"
        ok = {True: "yes", False: "NO", None: "n/a"}[r.get("ok")]
        lines.append(f"| {r['type']} | {r['kind']} | {r['n']} | {r['distinct_answers']} | {r['entropy_bits']:.2f} | "
                     f"{r['top_share']:.3f} ({r['top_share_limit']:.3f}) | {chance} | {best} | "
                     f"{r.get('best_name') or ''} | {ok} |")
    return "\n".join(lines)


def audit_paths(out: str) -> tuple[str, str]:
    """``OUT.audit.json`` and ``OUT.audit.md`` beside ``out`` (its suffix replaced)."""
    p = Path(out)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return str(p.with_name(stem + ".audit.json")), str(p.with_name(stem + ".audit.md"))


def write_audit(report: dict, out: str) -> tuple[str, str]:
    """Write the report as JSON and Markdown beside ``out``, atomically; return both paths."""
    paths = audit_paths(out)
    for path, text in zip(paths, (json.dumps(report, indent=2) + "\n", render(report) + "\n"), strict=True):
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".partial")
        tmp.write_text(text)
        tmp.replace(p)
    return paths


@dataclass
class BlindConfig:
    """`spatialctl eval blind QA_FILE`."""

    out: str | None = opt(None, "Write OUT.audit.json and OUT.audit.md. Default: beside QA_FILE (QA.audit.json, "
                          "QA.audit.md).", runtime=True)
    seed: int = opt(0, "Seed of the scene-disjoint halves.")
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        check_fields(self)


def run(config: BlindConfig, qa_file: str) -> dict:
    """Audit the records of ``qa_file``; write the report beside it (or at ``config.out``)."""
    config.validate()
    report = audit(read_qa(qa_file), seed=config.seed)
    return {"audit": report, "files": list(write_audit(report, config.out or qa_file))}
