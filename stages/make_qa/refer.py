"""Naming objects the way a person would: "the cup", "the red box", "the larger of the two boxes", "the leftmost
of the three chairs in the frame at 1.20 s"; a pixel box only when nothing else singles the object out.

An expression is used only when it picks out exactly one object among those with its label:
- colour: the object's colour name covers at least half of its pixels and at most a fifth of every same-label
  object's pixels (pixels of up to 4 frames spread evenly over the frames where each is seen). Pixel colour names come from HSV (:func:`colour_codes`).
- size: its longest side is at least 1.5x (largest) or at most 1/1.5 (smallest) of every other same-label object's.
  Questions about sizes pass ``size=False``: "the larger box" would give their answer away. People are not
  named by colour.
- landmark: it and every same-label object stay still, and its box centre is at most 1/1.5 as far from a landmark
  (a still object of another label, named by its label alone) as every other same-label object's.
- position: in one frame every same-label object is seen, and its pixel-box centre is left (right) of every other's
  by at least a tenth of the image width.
- pixel box: its box in a frame is big enough and overlaps no same-label box much (:class:`RefTable` below).
A position or pixel box names a frame, so callers say which frame the question shows (``frame``); with ``image=True``
the question is about that one image and the phrase names no frame.
"""

from __future__ import annotations

import numpy as np

from .scene import SceneData

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "white", "gray", "black")
# Hue sectors in degrees: (upper bound, colour index); red wraps around 360.
HUE_BOUNDS = ((15.0, 0), (45.0, 1), (70.0, 2), (165.0, 3), (260.0, 4), (300.0, 5), (345.0, 6), (360.0, 0))
DARK_V = 0.25  # value below this: black
GREY_S = 0.2  # saturation below this: white (value >= 0.75) or gray
COLOUR_MAJORITY = 0.5
COLOUR_FRAMES = 4
COLOUR_OTHERS_MAX = 0.2
SIZE_RATIO = 1.5  # also the landmark distance ratio
UNCOLOURED = ("person",)
POSITION_GAP = 0.1  # of the image width
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def plural(label: str) -> str:
    irregular = {"person": "people", "die": "dice", "man": "men", "woman": "women", "child": "children"}
    if label in irregular:
        return irregular[label]
    if label.endswith(("s", "x", "ch", "sh")):
        return label + "es"
    if label.endswith("y") and label[-2:-1] not in "aeiou":
        return label[:-1] + "ies"
    return label + "s"


def colour_codes(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) int8 index into COLOURS."""
    x = rgb.astype(np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    c = mx - mn
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    safe = np.where(c > 0, c, 1.0)
    h = np.where(mx == r, ((g - b) / safe) % 6.0, np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0)) * 60.0
    out = np.zeros(h.shape, dtype=np.int8)
    lo = 0.0
    for hi, code in HUE_BOUNDS:
        out[(h >= lo) & (h < hi)] = code
        lo = hi
    grey = c < GREY_S * np.maximum(mx, 1e-6)
    out[grey] = np.where(mx[grey] >= 0.75, 7, 8)
    out[mx < DARK_V] = 9
    return out


class Namer:
    """Every way to name every object of one scene, computed once with array maths."""

    def __init__(self, scene: SceneData):
        from .common import ref_table

        self.scene = scene
        s = scene
        n_obj = s.n_objects
        self.table = ref_table(s)
        labels = s.labels
        self.groups: dict[str, list[int]] = {}
        for o, lab in enumerate(labels):
            self.groups.setdefault(lab, []).append(o)
        self.colour: list[int | None] = [None] * n_obj
        self.size_word: list[str | None] = [None] * n_obj
        shared = [o for o in range(n_obj) if len(self.groups[labels[o]]) > 1]
        self.landmark: list[int | None] = [None] * n_obj
        if shared:
            share = self._colour_shares(shared)
            for o in shared:
                c = int(np.argmax(share[o]))
                others = [p for p in self.groups[labels[o]] if p != o]
                if (labels[o] not in UNCOLOURED and share[o][c] >= COLOUR_MAJORITY
                        and all(share[p][c] <= COLOUR_OTHERS_MAX for p in others)):
                    self.colour[o] = c
            longest = {}
            for o in shared:
                b = s.static_box(o)
                longest[o] = None if b is None else float(np.max(b[3:6]))
            for members in self.groups.values():
                if len(members) < 2 or any(longest[o] is None for o in members):
                    continue
                for o in members:
                    rest = [longest[p] for p in members if p != o]
                    if longest[o] >= SIZE_RATIO * max(rest):
                        self.size_word[o] = "larger" if len(members) == 2 else "largest"
                    elif longest[o] * SIZE_RATIO <= min(rest):
                        self.size_word[o] = "smaller" if len(members) == 2 else "smallest"
            self._landmarks(shared)
        # position[o, f]: "leftmost" (1) / "rightmost" (2) / none (0) among the object's label group in frame f.
        self.position = np.zeros((n_obj, s.n_frames), dtype=np.int8)
        boxes = self.table.boxes
        big = self.table.big
        w = s.hw[1]
        cx = (boxes[..., 0] + boxes[..., 2]) / 2.0
        for members in self.groups.values():
            if len(members) < 2:
                continue
            m = np.asarray(members)
            all_seen = big[m].all(0)  # (N,)
            x = cx[m]  # (k, N)
            for i, o in enumerate(members):
                rest = np.delete(x, i, axis=0)
                self.position[o] |= np.where(all_seen & (x[i] + POSITION_GAP * w <= rest.min(0)), 1, 0).astype(np.int8)
                self.position[o] |= np.where(all_seen & (x[i] - POSITION_GAP * w >= rest.max(0)), 2, 0).astype(np.int8)
        unique = np.array([len(self.groups[lab]) == 1 for lab in labels], dtype=bool)
        plain = (unique | np.array([c is not None for c in self.colour], dtype=bool)
                 | np.array([m is not None for m in self.landmark], dtype=bool))
        self.plain = plain
        self.plain_or_size = plain | np.array([w is not None for w in self.size_word], dtype=bool)
        self.boxless = self.plain_or_size[:, None] | (self.position > 0)  # (O, N): named in f without a pixel box
        self.ok_in_frame = self.boxless | self.table.hint_ok
        self._cache: dict = {}

    def _landmarks(self, shared: list[int]) -> None:
        s = self.scene
        still = [o for o in range(s.n_objects) if not s.moving[o] and s.static_box(o) is not None]
        marks = [o for o in still if len(self.groups[s.labels[o]]) == 1]
        if not marks:
            return
        for o in shared:
            members = self.groups[s.labels[o]]
            if any(p not in still for p in members):
                continue
            for m in marks:
                d = {p: float(np.linalg.norm(s.static_box(p)[:3] - s.static_box(m)[:3])) for p in members}
                if all(d[o] * SIZE_RATIO <= d[p] for p in members if p != o):
                    self.landmark[o] = m
                    break

    def _colour_shares(self, objs: list[int]) -> dict[int, np.ndarray]:
        s = self.scene
        out = {o: np.zeros(len(COLOURS)) for o in objs}
        if s.frames_reader is None or s.mask_reader is None:
            return out
        frames = s.frames_reader()  # (N, H, W, 3)
        pixels = {}
        for o in objs:  # only the object's own pixels, in up to COLOUR_FRAMES frames spread over where it is seen
            seen = np.flatnonzero(s.visible[o])
            if not len(seen):
                continue
            pick = seen[np.unique(np.round(np.linspace(0, len(seen) - 1, min(COLOUR_FRAMES, len(seen))))
                                  .astype(int))]
            pixels[o] = np.concatenate([frames[f][s.mask_reader(o, int(f))] for f in pick])
        if not pixels:
            return out
        # One colour pass over every object's pixels (colour names are per pixel), then counted per object.
        codes = colour_codes(np.concatenate(list(pixels.values())))
        start = 0
        for o, px in pixels.items():
            counts = np.bincount(codes[start:start + len(px)], minlength=len(COLOURS)).astype(np.float64)
            start += len(px)
            out[o] = counts / max(counts.sum(), 1.0)
        return out

    def name(self, o: int, frame: int | None = None, size: bool = True, image: bool = False, near: bool = True
             ) -> tuple[str, int | None] | None:
        """(phrase, frame the phrase cites or None), or None when the object cannot be named.

        ``frame``: the only frame a position or pixel box may cite (None: any frame, chosen here); ``size``/``near``:
        whether size or landmark phrases may be used (not in questions about sizes / distances)."""
        key = (o, frame, size, image, near)
        if key in self._cache:
            return self._cache[key]
        got = self._name(o, frame, size, image, near)
        self._cache[key] = got
        return got

    def _name(self, o, frame, size, image, near):
        s = self.scene
        label = s.labels[o]
        members = self.groups[label]
        if len(members) == 1:
            return f"the {label}", None
        if self.colour[o] is not None:
            return f"the {COLOURS[self.colour[o]]} {label}", None
        if near and self.landmark[o] is not None:
            return f"the {label} nearest to the {s.labels[self.landmark[o]]}", None
        many = f"{NUMBER_WORDS.get(len(members), str(len(members)))} {plural(label)}"
        if size and self.size_word[o] is not None:
            return f"the {self.size_word[o]} of the {many}", None
        frames = [frame] if frame is not None else self._spread(o)
        for f in frames:
            p = int(self.position[o, f])
            if p:
                where = "" if image else f" in the frame at {s.timestamps[f]:.2f} s"
                return f"the {('leftmost', 'rightmost')[p - 1]} of the {many}{where}", (None if image else f)
        if frame is not None:
            if not self.table.hint_ok[o, frame]:
                return None
            f = frame
        else:
            f = self.table.fallback[o]
            if f is None:
                return None
        b = self.table.boxes[o, f].tolist()
        where = "" if image else f" in the frame at {s.timestamps[f]:.2f} s"
        return f"the {label} at pixel box [{b[0]}, {b[1]}, {b[2]}, {b[3]}]{where}", (None if image else f)

    def alike(self, objs: list[int], frame: int | None = None) -> list[tuple[str, int | None]] | None:
        """Names for objects of one label that say nothing about their geometry, for questions that compare it:
        all by colour (no frame), or, given ``frame``, all by their left-to-right place among their label in that
        frame; None when neither names every one. Never a size word (it is the answer), a landmark (an object's
        distance to its neighbours grows with its own footprint) or a pixel box (its size in pixels hints at both)."""
        s = self.scene
        if all(self.colour[o] is not None for o in objs):
            return [(f"the {COLOURS[self.colour[o]]} {s.labels[o]}", None) for o in objs]
        if frame is None or not all(self.position[o, frame] for o in objs):
            return None
        n = len(self.groups[s.labels[objs[0]]])
        many = f"{NUMBER_WORDS.get(n, str(n))} {plural(s.labels[objs[0]])}"
        where = f" in the frame at {s.timestamps[frame]:.2f} s"
        return [(f"the {('leftmost', 'rightmost')[int(self.position[o, frame]) - 1]} of the {many}{where}", frame)
                for o in objs]

    def alike_frames(self, objs: list[int]) -> np.ndarray:
        """Frames where :meth:`alike` can name every one of ``objs`` by position."""
        return np.flatnonzero((self.position[objs] > 0).all(0))

    def _spread(self, o: int) -> list[int]:
        """Frames to try for a position phrase: where the object is seen, best-seen first."""
        seen = np.flatnonzero(self.position[o] > 0)
        if not len(seen):
            return []
        area = self.table.area[o, seen]
        return seen[np.argsort(-area, kind="stable")].tolist()[:4]


def namer(scene: SceneData) -> Namer:
    if "namer" not in scene._cache:
        scene._cache["namer"] = Namer(scene)
    return scene._cache["namer"]
