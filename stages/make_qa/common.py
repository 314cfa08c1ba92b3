"""What every question family shares: object references, option sets, record building, small geometry."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from spatialctl.qa_format import LETTERS, QARecord, record_id

from .refer import namer
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
    ref_frames: list[int] | None = None  # frames the question's object phrases cite (always among ``frames``)


def finish(scene: SceneData, family: str, d: Draft) -> QARecord:
    const = scene._cache.get("finish")
    if const is None:  # what every record of the scene shares, looked up once
        const = scene._cache["finish"] = (
            [round(t, 4) for t in scene.timestamps.tolist()], scene.scale,
            scene_scale(scene)[0] if scene.metric else None, list(range(scene.n_frames)))
    times, scale_kind, scene_scale_tag, every_frame = const
    if d.frames is None:
        frames = list(every_frame)
    elif len(d.frames) == 1:
        frames = [int(d.frames[0])]
    else:
        frames = sorted(set(map(int, d.frames)))
    meta = dict(d.metadata) if d.metadata else {}
    if "scale_kind" not in meta:
        meta["scale_kind"] = scale_kind
    if d.ref_frames:
        ref_frames = sorted(set(map(int, d.ref_frames)))
        assert set(ref_frames) <= set(frames), "an object phrase cites a frame the question does not show"
        meta["ref_frames"] = ref_frames
    history = d.history
    text = "\n".join([h["question"] for h in history] + [d.question]) if history else d.question
    return QARecord(
        id=record_id(scene.scene_id, family, d.type, text, d.options),
        scene=scene.scene_id,
        question=d.question,
        answer=d.answer,
        answer_type=d.answer_type,
        family=family,
        type=d.type,
        options=d.options,
        unit=d.unit,
        scale=d.scale or scene_scale_tag,
        frames=frames,
        timestamps=[times[f] for f in frames],
        video=scene.video,
        scale_source=scene.scale_source,
        generator_version=GENERATOR_VERSION,
        history=history,
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
    """Move each MC answer to a letter so that letters are used equally often (±1) per option count, and also per
    type and option count: each type takes a contiguous run of one letter cycle, shuffled within the run."""
    by_n: dict[int, list[QARecord]] = {}
    for r in records:
        if r.answer_type == "mc" and r.metadata.get("options_ordered") is not True:
            by_n.setdefault(len(r.options), []).append(r)
    for n, group in sorted(by_n.items()):
        group = sorted(group, key=lambda r: (r.family, r.type))  # stable: the input order within a type
        targets = (np.arange(len(group)) + int(rng.integers(n))) % n
        start = 0
        for i in range(1, len(group) + 1):
            if i == len(group) or (group[i].family, group[i].type) != (group[start].family, group[start].type):
                rng.shuffle(targets[start:i])
                start = i
        for r, t in zip(group, targets, strict=True):
            i = r.answer_index
            if i == t:
                continue
            opts = list(r.options)
            opts[i], opts[t] = opts[t], opts[i]
            r.options = opts
            r.answer = LETTERS[int(t)]


BOX_KEEP = 0.12  # a question that can only name an object by its pixel box is kept with this probability


def last_resort(d: Draft | None, rng: random.Random) -> Draft | None:
    """Pixel boxes only as a last resort: a draft that needs one survives with probability BOX_KEEP (the other
    types of the scene fill its place)."""
    if d is None:
        return None
    boxed = ("pixel box" in d.question or any("pixel box" in o for o in d.options or ())
             or any("pixel box" in h["question"] for h in d.history or ()))
    return d if not boxed or rng.random() < BOX_KEEP else None


def ref(scene: SceneData, o: int, frame: int | None = None, size: bool = True, image: bool = False,
        near: bool = True) -> tuple[str, int | None]:
    """A phrase a person would use for object o (see ``refer.py``), and the frame it cites (None if none).

    ``frame``: the one frame the phrase may cite (a shown frame); ``size=False`` for questions about sizes;
    ``image=True`` for questions about one image ("in this image"). LookupError when o cannot be singled out."""
    from .refer import namer

    got = namer(scene).name(o, frame, size, image, near)
    if got is None:
        raise LookupError(f"object {o} cannot be referred to unambiguously")
    return got


class RefTable:
    """Which (object, frame) pairs name an object unambiguously by label + pixel box, for every pair at once.

    ``hint_ok[o, f]``: the object's box in frame f is big enough and no same-label object's box overlaps it
    much; ``fallback[o]``: the frame, of up to 8 spread over the frames where it is seen, with the largest such
    box (None if none)."""

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
        self.boxes = boxes
        self.big = big
        self.area = area


def ref_table(scene: SceneData) -> RefTable:
    if "ref_table" not in scene._cache:
        scene._cache["ref_table"] = RefTable(scene)
    return scene._cache["ref_table"]


def try_ref(scene: SceneData, o: int, frame: int | None = None, size: bool = True, image: bool = False,
            near: bool = True) -> tuple[str, int | None] | None:
    return namer(scene).name(o, frame, size, image, near)


def ground_xy(scene: SceneData, p: np.ndarray) -> np.ndarray:
    """World points -> coordinates in the floor plane."""
    e1, e2, _ = scene.horizontal_basis()
    return np.stack([p @ e1, p @ e2], axis=-1)


def round_unit(value_m: float, unit: str) -> float:
    """A length in metres, converted to ``unit`` and rounded as that unit is usually written."""
    factor, decimals = UNITS[unit]
    return round(value_m * factor, decimals)


UNITS = {"mm": (1000.0, 0), "cm": (100.0, 1), "m": (1.0, 2), "km": (0.001, 3)}
UNIT_NAMES = {"mm": "millimetres", "cm": "centimetres", "m": "metres", "km": "kilometres"}
# SpaceVista's scales: (scale, natural unit, largest extent in metres that still belongs to it). Outdoor lengths are
# in metres; kilometres only for a length past 1 km (:func:`natural_unit`).
SCALES = (("tiny_tabletop", "mm", 0.5), ("tabletop", "cm", 3.0), ("indoor", "m", 20.0), ("outdoor", "m", float("inf")))
KM_FROM = 1000.0


def scale_of(extent_m: float) -> tuple[str, str]:
    for name, unit, limit in SCALES:
        if extent_m < limit:
            return name, unit
    return SCALES[-1][:2]


def scene_scale(scene: SceneData) -> tuple[str, str]:
    """(scale tag, natural unit) from the scene's true extent (objects and camera path)."""
    if "scale_tag" not in scene._cache:
        scene._cache["scale_tag"] = scale_of(scene.extent())
    return scene._cache["scale_tag"]


def natural_unit(scene_unit: str, value_m: float) -> str:
    return "km" if scene_unit == "m" and value_m >= KM_FROM else scene_unit


def ref_ok(scene: SceneData) -> np.ndarray:
    """(O, N) bool: ``ref(scene, o, f)`` succeeds (all True when every label is unique: no boxes needed)."""
    from .refer import namer

    if "ref_ok" not in scene._cache:
        if all(scene.label_count(x) == 1 for x in scene.labels):
            scene._cache["ref_ok"] = np.ones((scene.n_objects, scene.n_frames), dtype=bool)
        else:
            scene._cache["ref_ok"] = namer(scene).ok_in_frame
    return scene._cache["ref_ok"]
