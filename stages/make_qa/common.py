"""What every question family shares: object references, option sets, record building, small geometry."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from spatialctl.qa_format import LETTERS, QARecord, record_id

from .scene import SceneData

GENERATOR_VERSION = "make-qa/1"


@dataclass
class Draft:
    """A question before it becomes a record (the family fills it; :func:`finish` stamps the rest)."""

    type: str
    question: str
    answer: str | float
    answer_type: str
    options: list[str] | None = None
    unit: str | None = None
    frames: list[int] | None = None
    metadata: dict | None = None
    scale: str | None = None
    history: list[dict] | None = None


def finish(scene: SceneData, family: str, d: Draft) -> QARecord:
    frames = sorted(set(map(int, d.frames))) if d.frames is not None else list(range(scene.n_frames))
    times = scene._cache.get("timestamps_4")
    if times is None:
        times = scene._cache["timestamps_4"] = [round(t, 4) for t in scene.timestamps.tolist()]
    meta = dict(d.metadata or {})
    meta.setdefault("scale_kind", scene.scale)
    return QARecord(
        id=record_id(scene.scene_id, family, d.type, "\n".join([h["question"] for h in d.history or []] + [d.question]),
                     d.options),
        scene=scene.scene_id,
        question=d.question,
        answer=d.answer,
        answer_type=d.answer_type,
        family=family,
        type=d.type,
        options=d.options,
        unit=d.unit,
        scale=d.scale,
        frames=frames,
        timestamps=[times[f] for f in frames],
        video=scene.video,
        scale_source=scene.scale_source,
        generator_version=GENERATOR_VERSION,
        history=d.history,
        metadata=meta,
    )


def mc(answer: str, distractors: list[str], rng: random.Random, n: int = 4) -> tuple[list[str], str] | None:
    """Options with the answer at a random letter; None when there are too few distinct distractors.

    Letters are balanced once more over the whole output by :func:`rebalance_letters`."""
    pool = []
    for d in distractors:
        if d != answer and d not in pool:
            pool.append(d)
    if len(pool) < n - 1:
        return None
    options = [answer, *pool[: n - 1]]
    rng.shuffle(options)
    return options, LETTERS[options.index(answer)]


def rebalance_letters(records: list[QARecord], rng: np.random.Generator) -> None:
    """Move each MC answer to a letter so that, per type and option count, letters are used equally often (±1)."""
    by_n: dict[tuple, list[QARecord]] = {}
    for r in records:
        if r.answer_type == "mc" and r.metadata.get("options_ordered") is not True:
            by_n.setdefault((r.family, r.type, len(r.options)), []).append(r)
    for (_, _, n), group in sorted(by_n.items()):
        targets = np.arange(len(group)) % n
        rng.shuffle(targets)
        for r, t in zip(group, targets, strict=True):
            i = r.answer_index
            if i == t:
                continue
            opts = list(r.options)
            opts[i], opts[t] = opts[t], opts[i]
            r.options = opts
            r.answer = LETTERS[int(t)]


def ref(scene: SceneData, o: int, frame: int | None = None) -> tuple[str, int | None]:
    """An unambiguous way to name object o: its label when unique, else label + pixel box in a named frame.

    Returns (phrase, frame the phrase refers to or None)."""
    label = scene.labels[o]
    if scene.label_count(label) == 1:
        return f"the {label}", None
    table = ref_table(scene)
    # The hint frame if the object is clearly seen there, else the frame (of a few spread over the video)
    # where its box is largest: a sliver at the image border names nothing.
    if frame is not None and table.hint_ok[o, frame]:
        return table.phrase(o, int(frame)), int(frame)
    f = table.fallback[o]
    if f is not None:
        return table.phrase(o, f), f
    raise LookupError(f"object {o} cannot be referred to unambiguously")


class RefTable:
    """Which (object, frame) pairs name an object unambiguously by label + pixel box, for every pair at once.

    ``hint_ok[o, f]``: the object's box in frame f is big enough and no same-label object's box overlaps it
    much; ``fallback[o]``: the frame, of up to 8 spread over the frames where it is seen, with the largest such
    box (None if none); ``ok[o, f]``: ``ref(o, f)`` succeeds."""

    def __init__(self, scene: SceneData):
        self.scene = scene
        boxes = scene.pixel_boxes()  # (O, N, 4)
        h, w = scene.hw
        has = boxes[..., 0] >= 0
        bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        big = has & (bw >= max(4, w // 32)) & (bh >= max(4, h // 32))
        labels = np.asarray(scene.labels, dtype=object)
        same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)  # (O, O)
        # IoU of every same-label pair in every frame: (O, O, N); a box that overlaps another by > 0.3 is ambiguous.
        a, b = boxes[:, None], boxes[None, :]
        ix = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]))
        iy = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]))
        inter = ix * iy
        area = bw * bh
        union = area[:, None] + area[None, :] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        other = same[:, :, None] & (scene.visible & has)[None, :, :]
        clash = (other & (iou > 0.3)).any(1)
        self.hint_ok = scene.visible & big & ~clash
        self.fallback: list[int | None] = []
        for o in range(scene.n_objects):
            seen = np.flatnonzero(scene.visible[o])
            best = None
            if len(seen):
                for f in seen[np.unique(np.round(np.linspace(0, len(seen) - 1, min(8, len(seen)))).astype(int))]:
                    if self.hint_ok[o, f] and (best is None or area[o, f] > best[0]):
                        best = (area[o, f], int(f))
            self.fallback.append(None if best is None else best[1])
        unique = np.array([scene.label_count(x) == 1 for x in scene.labels], dtype=bool)
        named = np.array([f is not None for f in self.fallback], dtype=bool)
        self.ok = (unique | named)[:, None] | self.hint_ok
        self.boxes = boxes
        self._phrases: dict = {}

    def phrase(self, o: int, f: int) -> str:
        key = (o, f)
        if key not in self._phrases:
            self._phrases[key] = _phrase(self.scene, o, f, self.boxes[o, f].tolist())
        return self._phrases[key]


def ref_table(scene: SceneData) -> RefTable:
    if "ref_table" not in scene._cache:
        scene._cache["ref_table"] = RefTable(scene)
    return scene._cache["ref_table"]


def _phrase(scene: SceneData, o: int, f: int, b: list[int]) -> str:
    return f"the {scene.labels[o]} at pixel box [{b[0]}, {b[1]}, {b[2]}, {b[3]}] in the frame at {scene.timestamps[f]:.2f} s"


def try_ref(scene: SceneData, o: int, frame: int | None = None) -> tuple[str, int | None] | None:
    try:
        return ref(scene, o, frame)
    except LookupError:
        return None


def unique_label_objects(scene: SceneData, static: bool = True) -> list[int]:
    """Objects whose label is unique in the scene (VSI-style questions name objects by label alone)."""
    return [o for o in range(scene.n_objects)
            if scene.label_count(scene.labels[o]) == 1 and (not static or not scene.moving[o])
            and scene.static_box(o) is not None]


def ground_xy(scene: SceneData, p: np.ndarray) -> np.ndarray:
    """World points -> coordinates in the floor plane."""
    e1, e2, _ = scene.horizontal_basis()
    return np.stack([p @ e1, p @ e2], axis=-1)


def round_unit(value_m: float, unit: str) -> float:
    """A length in metres, converted to ``unit`` and rounded as that unit is usually written."""
    factor, decimals = UNITS[unit]
    return round(value_m * factor, decimals)


UNITS = {"mm": (1000.0, 0), "cm": (100.0, 1), "m": (1.0, 2), "km": (0.001, 3)}


def ref_ok(scene: SceneData) -> np.ndarray:
    """(O, N) bool: ``ref(scene, o, f)`` succeeds (all True when every label is unique: no boxes needed)."""
    if "ref_ok" not in scene._cache:
        if all(scene.label_count(x) == 1 for x in scene.labels):
            scene._cache["ref_ok"] = np.ones((scene.n_objects, scene.n_frames), dtype=bool)
        else:
            scene._cache["ref_ok"] = ref_table(scene).ok
    return scene._cache["ref_ok"]
