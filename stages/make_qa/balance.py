"""Balanced by construction: flat answer distributions per type, and distractors drawn like real answers.

Three steps, each usable by every family:

1. :class:`ClassDraw` — inside a scene, a generator draws the *answer class* first (uniformly over the classes
   its valid candidates have, or by target weights), then a candidate of that class by its own weights. A scene
   where most candidates "keep constant" then gives "constant" no more often than any other answer it can give.
2. :func:`cap` — over the whole run, per type, each answer (its option text, its count, or its log-bin for a
   measure) is capped by water-filling: the largest cap M such that no answer exceeds ``share`` of what is kept,
   ``share = max(SPREAD / distinct, MANY_SHARE)`` (see :func:`share_limit`); a count type is drawn to its target distribution the same way (numbers: flat, or where flat leaves a constant guess above the MRA limit, the most records whose constant guess stays below it, :func:`mra_target`).
   Each step label of a multi-step answer (``metadata["steps"]``) is then capped the same way, by dropping the
   records that use the over-represented label most.
3. :func:`redraw_distractors` — records that name an ``metadata["option_pool"]`` get their wrong options replaced
   by other records' *true* answers from the same pool (same type, same number of steps), drawn in proportion to
   how often each is a true answer. The option set is then (near) exchangeable: any text is the right one about
   1 time in n when offered, so answer priors, option length, the medoid and word features of the options carry no
   signal, and no distractor is a combination that never occurs as an answer.

Which records go where is seeded and independent of input order.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from spatialctl.qa_format import LETTERS, QARecord, record_id

SPREAD = 1.3  # an answer may be at most this many times as frequent as under equal likelihood ...
CLOSED_SPREAD = 1.05  # ... and nearly flat where options are not pooled (a fixed option set shows the prior)
MANY_SHARE = 0.12  # ... or this share, whichever is larger (types with many distinct answers)
# A balance group with fewer distinct answers (measures: 1.25x bins, so a range under ~2x) is not asked at all.
MIN_GROUP_KEYS = 2
MIN_GROUP_BINS = 3
LOG_BIN = math.log(1.25)  # measures are balanced over bins 1.25x wide (MRA's own scale of "close")


class ClassDraw:
    """Draws a candidate index: its class uniformly (or by ``target`` weight) among the classes present, then a
    candidate of that class in proportion to ``weights``. Built once per candidate table (array maths, no
    per-class lists), so a draw costs two binary searches."""

    def __init__(self, classes: Sequence, weights: Sequence[float], target: dict | None = None):
        arr = np.asarray(classes)
        if arr.ndim == 1 and arr.dtype.kind in "iub" and len(arr):
            # Integer classes (the common case, built once per candidate table): one stable sort gives the keys,
            # the order and the class bounds that np.unique + argsort + searchsorted give below.
            order = np.argsort(arr, kind="stable")
            ranked = arr[order]
            first = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
            self.keys = ranked[first].tolist()
            bounds = [*first.tolist(), len(arr)]
        else:
            if arr.ndim == 2:  # rows as opaque bytes: np.unique(axis=0) is several times slower
                flat = np.ascontiguousarray(arr)
                _, first, inverse = np.unique(flat.view(np.dtype((np.void, flat.dtype.itemsize * flat.shape[1])))
                                              .ravel(), return_index=True, return_inverse=True)
                keys = arr[first]
            else:
                keys, inverse = np.unique(arr, return_inverse=True)
            inverse = inverse.reshape(-1)
            self.keys = [tuple(k.tolist()) if np.ndim(k) else k.item() for k in keys]
            order = np.argsort(inverse, kind="stable")
            bounds = np.searchsorted(inverse[order], np.arange(len(self.keys) + 1)).tolist()
        cw = np.array([float(target.get(k, 0.0)) for k in self.keys]) if target else None
        if cw is None or not (cw > 0).any():  # flat: the running sum of ones, exactly
            self.class_cum = [float(i) for i in range(1, len(self.keys) + 1)]
        else:
            self.class_cum = np.cumsum(cw).tolist()
        self.bounds = bounds
        # Python lists: a draw is two bisections on floats, cheaper than numpy calls on scalars (same numbers).
        self.cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order]).tolist()
        self.order = order.tolist()

    def __len__(self) -> int:
        return len(self.order)

    def draw(self, rng: random.Random) -> int:
        c = min(bisect.bisect_right(self.class_cum, rng.random() * self.class_cum[-1]), len(self.keys) - 1)
        lo, hi = self.bounds[c], self.bounds[c + 1]
        cum = self.cum
        base = cum[lo - 1] if lo else 0.0
        x = base + rng.random() * (cum[hi - 1] - base)
        return self.order[min(max(bisect.bisect_right(cum, x, lo, hi), lo), hi - 1)]


def answer_key(r: QARecord):
    """What is balanced for a record: its answer text, count, or the 1.25x log-bin of a measure."""
    if r.answer_type == "mc":
        return r.answer_option
    if r.answer_type == "number":
        v = float(r.answer)
        if r.unit is None:  # a count: balanced value by value
            return v
        return math.floor(math.log(v) / LOG_BIN) if v > 0 else -math.inf
    return str(r.answer)


def share_limit(counts: dict, strict: bool = True, spread: float = SPREAD) -> float:
    """The largest share one key may have. Keys under 1% of the total do not count as distinct (they could never
    fill a share); ``strict`` also keeps it under the done-when limit over *all* keys, max(1.5 / n, 0.15)."""
    total = sum(counts.values())
    n_eff = max(sum(1 for c in counts.values() if c >= 0.01 * total), 1)
    limit = max(spread / n_eff, MANY_SHARE)
    return min(limit, 0.97 * max(1.5 / max(len(counts), 1), 0.15)) if strict else limit


def _order(records: list[QARecord], seed: int) -> list[QARecord]:
    # A seeded order that does not depend on input order: ties between equal records are broken by id.
    return sorted(records, key=lambda r: hashlib.sha1(f"{seed}:{r.id}".encode()).digest())


def water_fill(counts: dict, share: float) -> int:
    """The largest cap M with max_a min(c_a, M) <= share * sum_a min(c_a, M) (at least 1)."""
    lo, hi = 1, max(counts.values())
    while lo < hi:
        m = (lo + hi + 1) // 2
        if m <= share * sum(min(c, m) for c in counts.values()):
            lo = m
        else:
            hi = m - 1
    return lo


def cap(records: list[QARecord], seed: int = 0, target: dict | None = None) -> list[QARecord]:
    """Per type (single-turn records), keep at most the water-filling cap of each answer key, then cap step labels.

    ``target``: optional ``{"family/type": {key: weight}}``; a listed type keeps each key in proportion to its
    weight (as far as the records allow) instead of flat."""
    by_type: dict[str, list[QARecord]] = defaultdict(list)
    keep: list[QARecord] = []
    for r in records:
        (keep if r.history else by_type[f"{r.family}/{r.type}"]).append(r)
    for t, whole in sorted(by_type.items()):
        # A type may balance within groups (``metadata["balance_group"]``, e.g. per object label: a measure flat
        # within each label, so that a label's typical size is no prior).
        groups: dict = defaultdict(list)
        for r in whole:
            groups[str(r.metadata.get("balance_group", ""))].append(r)
        for name, group in sorted(groups.items()):
            measure = group[0].answer_type == "number" and group[0].unit is not None
            if name and len({answer_key(r) for r in group}) < (MIN_GROUP_BINS if measure else MIN_GROUP_KEYS):
                continue  # e.g. a label whose sizes barely vary: its questions are answered by the label alone
            group = _order(_drop_unpooled(group), seed)
            for _ in range(4):  # the step and pool caps drop records, which can lift another answer's share again
                if not group:
                    break
                n = len(group)
                group = _cap_pools(_cap_steps(_cap_answers(group, target.get(t) if target else None, not name)))
                if len(group) == n:
                    break
            keep.extend(_drop_unpooled_capped(group))
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(keep, key=lambda r: order[id(r)])


def _cap_answers(group: list[QARecord], target: dict | None, whole_type: bool = True) -> list[QARecord]:
    keys = [answer_key(r) for r in group]
    counts = Counter(keys)
    keep = None
    if not target and whole_type and group[0].answer_type == "number":  # per-label groups stay flat
        keep = mra_target(counts, group[0].unit is None)
    if keep is not None:
        limit = keep
    elif target:
        limit = _target_caps(counts, target)
    else:
        pooled = all(r.metadata.get("option_pool") is not None for r in group)
        m = water_fill(counts, share_limit(counts, spread=SPREAD if pooled else CLOSED_SPREAD))
        limit = dict.fromkeys(counts, m)
    used: Counter = Counter()
    kept = []
    for r, k in zip(group, keys, strict=True):
        if used[k] < limit.get(k, 0):
            used[k] += 1
            kept.append(r)
    return kept


# Above this share of pooled records, a type's generator-option records are dropped. 0.9 kept DSR distance's 10%
# (200 synth scenes), whose made-up wrong options left the one-phase answer standing out: blind 0.347 vs 0.25; DSR
# speed, pooled per time window, has 65-80% pooled there (its other records would show their made-up options).
POOLED_SHARE = 0.5


def _sources(records: list[QARecord]) -> dict:
    """id(record) -> where the wrong options of a pooled multiple-choice record come from: ("pool", name) where its
    pool has as many distinct answers as it has options; else ("fallback", name) of its ``option_pool_fallback``,
    whose answers are those of the records that use it (not of every record naming it: the users are the questions
    of small pools, whose answers differ from the big pools'), where they are enough; else None (the generator's)."""
    pooled = [r for r in records if r.answer_type == "mc" and r.metadata.get("option_pool") is not None]
    distinct: dict = defaultdict(set)
    for r in pooled:
        distinct[("pool", r.metadata["option_pool"])].add(r.answer_option)
    src = {}
    for r in pooled:
        key = ("pool", r.metadata["option_pool"])
        if len(distinct[key]) < len(r.options):
            key = ("fallback", r.metadata.get("option_pool_fallback"))
            distinct[key].add(r.answer_option)
        src[id(r)] = key
    return {i: None if k[1] is None or len(distinct[k]) < n else k
            for (i, k), n in zip(src.items(), (len(r.options) for r in pooled), strict=True)}


def _drop_unpooled(group: list[QARecord]) -> list[QARecord]:
    """The records :func:`redraw_distractors` would leave with the generator's options, dropped where at least
    ``POOLED_SHARE`` of the group is pooled: here, before the caps, so that the kept answers stay within them."""
    src = _sources(group)
    unpooled = {i for i, k in src.items() if k is None}
    if not unpooled or len(unpooled) > (1 - POOLED_SHARE) * len(src):
        return group
    return [r for r in group if id(r) not in unpooled]


def _drop_unpooled_capped(group: list[QARecord]) -> list[QARecord]:
    """The caps can leave a pool with too few answers to draw from: its records, which :func:`redraw_distractors`
    would drop after the caps, go here, and no answer of the rest stays above the done-when share (a rarer answer
    gone lifts the others: DSR distance, 0.154 against 0.150 on 200 synth scenes)."""
    kept = _drop_unpooled(group)
    if len(kept) == len(group):
        return group
    counts = Counter(r.answer_option for r in kept)
    m = water_fill(counts, 0.97 * max(1.5 / len(counts), 0.15))
    used: Counter = Counter()
    out = []
    for r in kept:
        used[r.answer_option] += 1
        if used[r.answer_option] <= m:
            out.append(r)
    return out


def _cap_pools(group: list[QARecord]) -> list[QARecord]:
    """Within each option pool (and among the users of each fallback pool, :func:`_sources`), no answer above 1/n
    (n options): the condition for exchangeable option sets (:func:`redraw_distractors`)."""
    src = _sources(group)
    pools: dict = defaultdict(list)
    for r in group:
        pools[src.get(id(r))].append(r)
    out = list(pools.pop(None, []))
    for _, members in sorted(pools.items()):
        n = max(len(r.options) for r in members)
        counts = Counter(r.answer_option for r in members)
        if len(counts) < n:
            out.extend(members)
            continue
        m = water_fill(counts, 1.0 / n)
        used: Counter = Counter()
        for r in members:
            k = r.answer_option
            if used[k] < m:
                used[k] += 1
                out.append(r)
    return out


MRA_LIMIT = 0.35  # the done-when limit on the best blind MRA (audit.NUMBER_LIMIT)
MRA_AIM = 0.32  # where the data allow, a constant guess is held this far below the limit (room for sampling noise)


def mra_target(counts, is_count: bool) -> dict | None:
    """None (flat) where a flat distribution already keeps every constant guess's mean MRA (VSI-Bench's scorer) at
    most ``MRA_LIMIT``; else how many records of each key to keep: the most records (an integer program) whose
    best constant guess scores at most max(``MRA_AIM``, the least any weighting of the common keys allows). Few
    distinct values need it: counts of 1-4 of a kind, or room areas within a factor of 5, leave a constant guess at
    ~0.4 when flat. Measures are taken at their log-bin's centre.

    A value under 1% of the records (as in share_limit) is rare: it does not set the limit (weights that lean on
    one 6 among hundreds of 1s are out of reach of its one record: the integer program then keeps a handful), but
    the integer program may keep it, up to its count, where it lets more records through at that limit. So rare
    values are neither needed nor able to shrink the type."""
    from scipy.optimize import Bounds, LinearConstraint, linprog, milp

    from spatialctl.scoring import MRA_THRESHOLDS

    total = sum(counts.values())
    keys = sorted(k for k in counts if math.isfinite(k))
    common = np.array([counts[k] >= 0.01 * total for k in keys])
    if common.sum() < 2:
        return None
    gt = np.array(keys, dtype=np.float64) if is_count else np.exp((np.array(keys, dtype=np.float64) + 0.5) * LOG_BIN)
    # A guess's MRA (the scorer's closed intervals, |guess - gt| <= (1 - threshold) gt) only changes at
    # gt * (1 +- (1 - threshold)): those breakpoints and one guess between each two cover every constant guess.
    tol = 1.0 - MRA_THRESHOLDS
    edges = np.unique(np.concatenate([gt * (1.0 - tol[:, None]), gt * (1.0 + tol[:, None])], axis=None))
    guesses = np.r_[edges, (edges[1:] + edges[:-1]) / 2]
    rel = np.abs(guesses[:, None] - gt[None]) / gt[None]  # (G, K)
    mra = (rel[..., None] <= tol + 1e-9).mean(-1)  # (G, K)
    if mra[:, common].mean(1).max() <= MRA_LIMIT:
        return None
    # the least reachable with the common keys: minimise t subject to mra @ p <= t for every guess, sum(p) = 1
    m = mra[:, common]
    k = m.shape[1]
    res = linprog(np.r_[np.zeros(k), 1.0], A_ub=np.c_[m, -np.ones(len(guesses))], b_ub=np.zeros(len(guesses)),
                  A_eq=np.r_[np.ones(k), 0.0][None], b_eq=[1.0], bounds=[(0.0, 1.0)] * k + [(None, None)])
    if not res.success:
        return None
    # the most records, integers n_k <= counts_k, with mra @ n <= limit * sum(n) for every guess and no key above
    # the share limit of the keys kept (the done-when's answer-frequency limit: counts of 1 are the most plentiful):
    # over every key and over the common keys alone (a rare key's few records lower the share limit of the rest),
    # whichever keeps more: a rare key is kept only where it lets more records through; where the share limit
    # leaves no solution (counts 1-4: the least reachable guess needs more 1s), the most records without it
    limit = max(MRA_AIM, float(res.x[k]) + 1e-3)
    best = None
    every = np.ones(len(keys), dtype=bool)
    for allowed, share_cap in ((every, True), (common, True), (every, False)):
        if share_cap is False and best is not None:
            break
        cap = np.array([float(counts[key]) if ok else 0.0 for key, ok in zip(keys, allowed, strict=True)])
        share = 0.97 * max(1.5 / int(allowed.sum()), 0.15) if share_cap else 1.0  # the audit's limit, as share_limit
        most = milp(-np.ones(len(keys)),
                    constraints=[LinearConstraint(mra - limit, -np.inf, 0.0),
                                 LinearConstraint(np.eye(len(keys)) - share, -np.inf, 0.0)],
                    integrality=np.ones(len(keys)), bounds=Bounds(np.zeros(len(keys)), cap),
                    options={"time_limit": 5.0})
        if most.x is not None and most.x.sum() >= 1.0 and (best is None or most.x.sum() > best.sum() + 0.5):
            best = np.round(most.x)
    if best is not None:
        n = best
    else:  # no integer solution found: the common keys' minimising weights, scaled to the rarest of them
        p = np.zeros(len(keys))
        p[common] = np.where(res.x[:k] > 1e-6, res.x[:k], 0.0)
        n = np.floor(p * min(c / w for c, w in zip(cap, p, strict=True) if w > 0) + 1e-6)
    return {key: int(v) for key, v in zip(keys, n, strict=True)} | {key: 0 for key in counts if key not in keys}


def _target_caps(counts: Counter, weights: dict) -> dict:
    """Per key, the most records kept so that the kept counts follow ``weights`` (keys with weight 0 dropped)."""
    w = {k: float(weights.get(k, 0.0)) for k in counts}
    scale = min((counts[k] / w[k] for k in counts if w[k] > 0), default=0.0)
    return {k: int(math.floor(scale * w[k] + 1e-9)) if w[k] > 0 else 0 for k in counts}


def _cap_steps(group: list[QARecord]) -> list[QARecord]:
    """Drop records until no step label is used more than the water-filling cap over all steps of the type."""
    steps = [list(r.metadata.get("steps") or []) for r in group]
    if not any(steps):
        return group
    counts = Counter(s for st in steps for s in st)
    m = water_fill(counts, share_limit(counts, strict=False))
    alive = [True] * len(group)
    for label, _ in counts.most_common():
        # drop the records (last in the seeded order first) that use the label most, until it is within the cap
        users = sorted((i for i in range(len(group)) if alive[i] and label in steps[i]),
                       key=lambda i: (-steps[i].count(label), -i))
        for i in users:
            if counts[label] <= m:
                break
            alive[i] = False
            counts.subtract(steps[i])
    return [r for r, a in zip(group, alive, strict=True) if a]


def redraw_distractors(records: list[QARecord], seed: int = 0) -> list[QARecord]:
    """Replace the wrong options of pooled records by other records' true answers of the same pool, so that every
    option set is exchangeable: given the set, each member is the answer with probability 1/n.

    With p(d) the share of answer d in the pool (at most 1/n after :func:`cap`), the sets are drawn by systematic
    sampling with inclusion probabilities pi(d) = n p(d) (Madow), conditioned on containing the true answer: the
    pool's answers in a random order, laid end to end with lengths pi(d); a point x uniform in the true answer's
    stretch; the n options are the answers under x, x + 1, ..., x + n - 1 (mod n). Then p(a) P(S | a) = P(S) / n
    for every a in S. A pool with fewer than n distinct answers draws from the answers of the records that use the
    same coarser ``metadata["option_pool_fallback"]`` (capped like a pool, :func:`_sources`) if they are enough,
    else (a small run) keeps the generator's options (dropped where at least ``POOLED_SHARE`` of its type's records
    have pooled ones);
    ``metadata["options_from"]`` says which. Ids are recomputed (options are part of them)."""
    src = _sources(records)
    pools: dict = defaultdict(list)
    for r in records:
        if id(r) in src:
            pools[src[id(r)]].append(r)
    for r in pools.pop(None, []):
        r.metadata["options_from"] = "generator"
    for key, group in sorted(pools.items()):
        rng = random.Random(f"{seed}:{key[1]}" if key[0] == "pool" else f"{seed}:fallback:{key[1]}")
        group = _order(group, seed)
        counts = Counter(r.answer_option for r in group)
        # (texts, inclusion probabilities, their sum, text -> index) per number of options: the counts do not change
        # while a pool is redrawn (true answers stay), so they are built once, not per record.
        prepared: dict = {}
        for r in group:
            n = len(r.options)
            truth = r.answer_option
            if n not in prepared:
                texts = sorted(counts)
                pi = [min(1.0, n * counts[t] / len(group)) for t in texts]
                prepared[n] = (texts, pi, sum(pi), {t: i for i, t in enumerate(texts)})
            texts, pi, pi_sum, where = prepared[n]
            chosen = _systematic(texts, pi, truth, n, rng, pi_sum, where[truth])
            r.metadata["options_from"] = "pool" if key[0] == "pool" else "fallback pool"
            r.options = chosen
            r.answer = LETTERS[chosen.index(truth)]
            r.id = record_id(r.scene, r.family, r.type,
                             "\n".join([h["question"] for h in r.history or []] + [r.question]), r.options)
    # Where nearly all of a type's options are pooled (a run with enough answers), the few records left with the
    # generator's own wrong options would stand out (made-up sequences): they are dropped. A small run keeps them.
    kinds: dict = defaultdict(Counter)
    for r in records:
        if r.metadata.get("options_from"):
            kinds[(r.family, r.type)][r.metadata["options_from"] == "generator"] += 1
    mostly = {t for t, c in kinds.items() if c[False] >= POOLED_SHARE * (c[False] + c[True])}
    return [r for r in records if not (r.metadata.get("options_from") == "generator" and (r.family, r.type) in mostly)]


def _systematic(texts: list[str], pi: list[float], truth: str, n: int, rng: random.Random,
                pi_sum: float | None = None, truth_index: int | None = None) -> list[str]:
    """n distinct texts containing ``truth``: Madow systematic sampling with inclusion probabilities ``pi``
    (rescaled to sum to n), conditioned on ``truth`` being drawn; returned in a random order. ``pi_sum`` and
    ``truth_index`` (``sum(pi)``, ``texts.index(truth)``) may be given when known."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    scale = n / (sum(pi) if pi_sum is None else pi_sum)
    lengths = [min(1.0, pi[i] * scale) for i in order]
    cum = list(itertools.accumulate(lengths))
    total = cum[-1]
    k = order.index(texts.index(truth) if truth_index is None else truth_index)
    lo = cum[k] - lengths[k]
    x = lo + rng.random() * lengths[k]
    picked = {order[k]}
    for j in range(1, n):
        y = (x + j) % total
        picked.add(order[min(bisect.bisect_right(cum, y), len(cum) - 1)])
    while len(picked) < n:  # only where clipping at 1 left the lengths short of n (a pool over its cap)
        picked.add(rng.randrange(len(texts)))
    out = [texts[i] for i in picked]
    rng.shuffle(out)
    return out


# Over the run, per type, an option's text (or a word that sets options apart, a colour) named in m scenes may lean
# towards the most at most this many times sqrt(m) (see cap_option_words).
LEAN_SLACK = 1.25


def _distinct_words(options: list[str]) -> list[frozenset]:
    """Per option, the words that set it apart from the other options (``the purple box`` vs ``the pink box``)."""
    words = [frozenset(o.split()) for o in options]
    common = frozenset.intersection(*words)
    return [w - common for w in words]


def cap_option_words(records: list[QARecord], seed: int = 0) -> list[QARecord]:
    """Records with ``metadata["word_balance"]`` ask which of some objects is the most (+1: largest, closest) or the
    least (-1) of something, naming them by what should say nothing about it (a colour, a place in a frame). A set of
    objects (``objects``, and ``frame`` where given) is asked both ways; its records are one unit. A unit's lean on
    a key (an option's text, or a word that sets it apart) is the sum over its records of way x (1 if the key is
    the answer, less 1 / options): zero for a set of two asked both ways, +1 for the larger one's colour where only
    "which is the largest" is asked, and for a set of 2-4 asked both ways +1 for the largest, -1 for the smallest.

    Colours are drawn independently of sizes, but a run of scenes holds some by chance (purple boxes larger in
    most scenes that have two): its leans are what a blind model would learn. With a key's leans (about +-1 per
    scene that names it) summing to N over its m scenes, a random half of the scenes leans on it in step with the
    other half (positive covariance) only where N^2 > m. So per type, no key may lean more than ``LEAN_SLACK`` x
    sqrt(m): units are dropped, each time the one that most reduces the excess over every key, until none does.
    Keys of one scene are not counted (nothing to learn across scenes)."""
    groups: dict = defaultdict(list)
    rest = []
    for r in records:
        way = r.metadata.get("word_balance") if r.answer_type == "mc" and r.options else None
        (groups[(r.family, r.type)] if way else rest).append(r)
    keep = rest
    for _, group in sorted(groups.items()):
        units: dict = defaultdict(list)
        for r in group:
            m = r.metadata
            units[(r.scene, tuple(sorted(m["objects"])), m.get("frame"))].append(r)
        keys = sorted(units, key=lambda k: hashlib.sha1(f"{seed}:{k}".encode()).digest())
        lean = [_lean(units[k]) for k in keys]
        units_in: dict = defaultdict(Counter)  # key -> {scene: units kept that name it}
        named_by: dict = defaultdict(list)  # key -> units that name it
        for i, (k, c) in enumerate(zip(keys, lean, strict=True)):
            for x in c:
                units_in[x][k[0]] += 1
                named_by[x].append(i)
        slack = {x: _slack(len(sc)) for x, sc in units_in.items()}
        total: Counter = Counter()
        for c in lean:
            total.update(c)
        alive = [True] * len(keys)
        while True:
            over = [(abs(v) - slack[x], x) for x, v in total.items() if abs(v) > slack[x] + 1e-9]
            if not over:
                break
            _, x = max(over)
            sign = 1.0 if total[x] > 0 else -1.0
            users = [i for i in named_by[x] if alive[i] and lean[i][x] * sign > 1e-9]
            gain = {i: _excess(total, slack, lean[i]) - _excess(total, slack, lean[i], lean[i]) for i in users}
            i = max(users, key=lambda i: (round(gain[i], 9), -i))
            alive[i] = False
            total.subtract(lean[i])
            for y in lean[i]:  # fewer scenes name y now: its slack shrinks
                units_in[y][keys[i][0]] -= 1
                if not units_in[y][keys[i][0]]:
                    del units_in[y][keys[i][0]]
                    slack[y] = _slack(len(units_in[y]))
        keep.extend(r for i, k in enumerate(keys) if alive[i] for r in units[k])
    order = {id(r): i for i, r in enumerate(records)}
    return sorted(keep, key=lambda r: order[id(r)])


def _excess(total: Counter, slack: dict, lean: Counter, drop: Counter | None = None) -> float:
    """Leans over their slack, summed over the keys of ``lean``, as they are (or with ``drop`` dropped)."""
    return sum(max(abs(total[x] - (drop[x] if drop else 0.0)) - slack[x], 0.0) for x in lean)


def _slack(m: int) -> float:
    """The most a key named in m scenes may lean (``cap_option_words``); any lean where one scene names it."""
    return LEAN_SLACK * math.sqrt(m) if m > 1 else math.inf


def _lean(records: list[QARecord]) -> Counter:
    """{("text" | "word", key): way x (answered - 1 / options)} summed over one unit's records."""
    out: Counter = Counter()
    for r in records:
        way = float(r.metadata["word_balance"])
        a = LETTERS.index(r.answer)
        n = len(r.options)
        for j, (text, words) in enumerate(zip(r.options, _distinct_words(r.options), strict=True)):
            v = way * ((j == a) - 1.0 / n)
            out[("text", text)] += v
            for w in words:
                out[("word", w)] += v
    return out


def complete_units(records: list[QARecord]) -> list[QARecord]:
    """Records with ``metadata["unit"]`` come in units of ``unit_size`` questions that only together say nothing
    about the answer (each option the answer once, ``scale._object_matching``): a unit the scene's budget of
    questions or the caps cut short is dropped whole."""
    count = Counter((r.scene, r.family, r.type, r.metadata["unit"]) for r in records if "unit" in (r.metadata or {}))
    return [r for r in records if "unit" not in (r.metadata or {})
            or count[(r.scene, r.family, r.type, r.metadata["unit"])] == r.metadata["unit_size"]]


def balance(records: list[QARecord], seed: int = 0, target: dict | None = None) -> list[QARecord]:
    """Cap answers and step labels per type and option words where asked, keep whole units, then redraw pooled
    distractors from the kept answers."""
    return redraw_distractors(complete_units(cap_option_words(cap(records, seed, target), seed)), seed)
