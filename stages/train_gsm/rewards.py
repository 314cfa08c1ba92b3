"""GRPO rewards: the answer checker eval uses, a format reward, and a progressive numeric reward by scale.

Answer reward: multiple choice and text through :func:`spatialctl.scoring.score_item` (exact letter / text);
numbers through Mean Relative Accuracy over the thresholds still in play. Progressive (SpaceVista's idea of
rewards that demand more precision as training proceeds): the lowest MRA threshold rises linearly from 0.5
(plain MRA, every threshold) at the first step to a per-scale end value at the last, so a rough estimate that
earns reward early earns nothing late. Format reward: 1 for ``<think>...</think><answer>...</answer>`` and
nothing else around them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from spatialctl import scoring
from spatialctl.errors import UsageError

FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL | re.IGNORECASE)
_ALL = "*"


def format_reward(text: str) -> float:
    return 1.0 if FORMAT_RE.fullmatch(text) else 0.0


def parse_progressive(spec: tuple[str, ...]) -> dict[str, float]:
    """("0.8",) or ("indoor=0.9", "outdoor=0.7", ...) -> {scale or "*": final lowest threshold}."""
    out = {}
    for item in spec:
        name, _, value = item.rpartition("=")
        try:
            theta = float(value)
        except ValueError:
            raise UsageError(f"--progressive {item!r}: expected SCALE=THETA or THETA") from None
        if not 0.5 <= theta <= 0.95:
            raise UsageError(f"--progressive {item!r}: the final lowest MRA threshold must lie in [0.5, 0.95]")
        out[name.strip() or _ALL] = theta
    return out


def lowest_threshold(end: float, progress: float) -> float:
    return 0.5 + (end - 0.5) * min(max(progress, 0.0), 1.0)


def progressive_mra(pred: float | None, gt: float, theta_min: float) -> float:
    """MRA over the VSI-Bench thresholds >= ``theta_min`` (theta_min 0.5: exactly ``mean_relative_accuracy``).

    A ground truth of 0 uses the absolute error (SpaceVista's rule), so training never stops on one record.
    """
    if pred is None or not math.isfinite(float(pred)):
        return 0.0
    pred, gt = float(pred), float(gt)
    err = abs(pred - gt) if gt == 0.0 else abs(pred - gt) / abs(gt)
    thresholds = scoring.MRA_THRESHOLDS[scoring.MRA_THRESHOLDS >= theta_min - 1e-9]
    return float((err <= 1.0 - thresholds).mean())


@dataclass
class Reward:
    total: float
    answer: float
    format: float


class RewardFunction:
    """reward(record, completion text, training progress in [0, 1]) -> Reward."""

    def __init__(self, parser: str = "answer_tag", format_weight: float = 0.5,
                 schedule: dict[str, float] | None = None):
        """``schedule``: :func:`parse_progressive`'s output (scale or "*" -> final lowest threshold; default all
        scales 0.8), parsed once by the config."""
        try:
            self.parse = scoring.get_parser(parser)
        except ValueError as e:
            raise UsageError(f"--reward-parser: {e}") from None
        self.parser_name = parser
        self.format_weight = format_weight
        self.schedule = {_ALL: 0.8} if schedule is None else dict(schedule)

    def end_threshold(self, scale: str | None) -> float:
        return self.schedule.get(scale or "", self.schedule.get(_ALL, 0.5))

    def __call__(self, record, text: str, progress: float) -> Reward:
        if record.answer_type == "number":
            theta = lowest_threshold(self.end_threshold(record.scale), progress)
            answer = progressive_mra(self.parse(text, "number", record.options), float(record.answer), theta)
        else:
            answer = scoring.score_item(record, text, self.parse).score
        fmt = format_reward(text)
        return Reward(answer + self.format_weight * fmt, answer, fmt)


def group_advantages(rewards: np.ndarray, group_size: int, eps: float = 1e-4) -> np.ndarray:
    """(B*G,) rewards, consecutive groups of G per question -> (reward - group mean) / (group std + eps)."""
    r = np.asarray(rewards, np.float64).reshape(-1, group_size)
    adv = (r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + eps)
    return adv.reshape(-1)
