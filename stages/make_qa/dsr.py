"""Dynamic spatial reasoning questions in the manner of DSR Suite.

Templates: {relative, absolute} x {distance, direction, orientation, speed, speed comparison, direction prediction}.
The viewpoint is the camera or an *agent* object. *Relative*: the viewpoint moves with the camera/agent, so each
key time is seen from where the viewer is then. *Absolute*: the viewpoint is frozen where the viewer was at the
first key time. Viewpoint axes are (right, forward, up), gravity-aligned. An agent faces its direction of motion
(no orientation model is used), and every record says so in ``metadata["agent_orientation_source"]``.

Answers are four options that describe the change step by step ("Keep nearly constant and then become larger").
A distance or speed change counts when the ratio changes by more than 0.2; a displacement component counts when
it is more than 0.3 of the unit displacement. Questions whose values fall near a threshold, or whose motion is
below the noise floor, are not asked.

Speed comes from evaluating every candidate at once: for a (template, mode, viewer), every key-frame set x target
is labelled with array maths and the ambiguous ones are dropped, then one valid candidate is drawn, with the
probability the key-frame sampler gives it (window length uniform, then start uniform). A candidate that would be
rejected costs nothing per question.
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

from .balance import ClassDraw
from .common import Draft, mc, ref_ok, try_ref
from .scene import SceneData

TYPES = ("distance", "direction", "orientation", "speed", "speed_comparison", "direction_prediction")
MODES = ("relative", "absolute")
RATIO = 0.2  # a distance/speed change counts above this relative change
RATIO_MARGIN = 0.05  # values within this of RATIO are ambiguous
DIR_THRESHOLD = 0.3  # a unit-displacement component counts above this
DIR_MARGIN = 0.05
ANGLE_MARGIN = 10.0  # degrees from a sector boundary
NOISE_FRACTION = 0.01  # position noise as a fraction of the scene extent

CHANGE_PHRASE = {"up": "become larger", "down": "become smaller", "flat": "keep nearly constant"}
SPEED_PHRASE = {"up": "become faster", "down": "become slower", "flat": "keep nearly constant"}
FACING_PHRASE = {"same": "face the same direction as the viewpoint", "opposite": "face toward the viewpoint",
                 "left": "face left", "right": "face right"}
COMPARE_PHRASE = {"a": "object 1 is faster", "b": "object 2 is faster", "same": "they move at about the same speed"}
CHANGE_KEYS = ("up", "down", "flat")  # codes 0, 1, 2 of change_codes
FACING_KEYS = ("same", "opposite", "left", "right")
COMPARE_KEYS = ("a", "b", "same")


def direction_name(fb: str, lr: str, ud: str) -> str:
    horiz = "-".join(x for x in (fb, lr) if x)
    return " and ".join(x for x in (horiz, ud) if x)


ALL_DIRECTIONS = [direction_name(fb, lr, ud) for fb in ("forward", "backward", "") for lr in ("left", "right", "")
                  for ud in ("upward", "downward", "") if fb or lr or ud]
# direction code fb * 9 + lr * 3 + ud (each 0, 1 or 2 = none) -> name
DIRECTION_NAMES = [direction_name(fb, lr, ud) for fb in ("forward", "backward", "") for lr in ("left", "right", "")
                   for ud in ("upward", "downward", "")]
MOVE_PHRASE = {d: "move " + d for d in ALL_DIRECTIONS}


def _three_way(x: np.ndarray, t: float) -> np.ndarray:
    """0 where x > t, 1 where x < -t, else 2."""
    return np.where(x > t, 0, np.where(x < -t, 1, 2))


def change_codes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive values (..., k) -> (codes (..., k-1) into CHANGE_KEYS, ambiguous (...)): ratio change vs RATIO."""
    r = v[..., 1:] / v[..., :-1] - 1.0
    return _three_way(r, RATIO), (np.abs(np.abs(r) - RATIO) < RATIO_MARGIN).any(-1)


def direction_codes(steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Displacements (3, ...) as (right, forward, up) -> (codes into DIRECTION_NAMES, ambiguous), per step."""
    u = steps / _norm(steps)
    amb = (np.abs(np.abs(u) - DIR_THRESHOLD) < DIR_MARGIN).any(0)
    fb = _three_way(u[1], DIR_THRESHOLD)
    lr = np.where(u[0] < -DIR_THRESHOLD, 0, np.where(u[0] > DIR_THRESHOLD, 1, 2))
    return fb * 9 + lr * 3 + _three_way(u[2], DIR_THRESHOLD), amb


def facing_codes(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal headings (2, ...) as (right, forward) -> (codes into FACING_KEYS, ambiguous)."""
    ang = np.degrees(np.arctan2(h[0], h[1]))
    a = np.abs(ang)
    amb = np.minimum(np.abs(a - 45), np.abs(a - 135)) < ANGLE_MARGIN
    return np.where(a < 45, 0, np.where(a > 135, 1, np.where(ang > 0, 3, 2))), amb


def sequence_text(labels, phrase: dict, joiner: str = " and then ") -> str:
    text = joiner.join(phrase[x] for x in labels)
    return text[0].upper() + text[1:]


def sequence_options(answer: tuple, vocab: list, phrase: dict, rng, joiner: str = " and then "):
    """The answer plus three plausible wrong sequences: one step changed where possible, else two."""
    answer = tuple(answer)
    seen, cands = {answer}, []
    n = len(answer)
    for changes in (1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2):
        seq = list(answer)
        if changes == 1 or n == 1:
            seq[rng.randrange(n)] = rng.choice(vocab)
        else:
            for i in rng.sample(range(n), 2):
                seq[i] = rng.choice(vocab)
        seq = tuple(seq)
        if seq not in seen:
            seen.add(seq)
            cands.append(sequence_text(seq, phrase, joiner))
        if len(cands) == 3:
            break
    return mc(sequence_text(answer, phrase, joiner), cands, rng)


@lru_cache(maxsize=64)
def key_frame_sets(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Every set of m key frames the sampler can give for n frames, (K, m), and its probability (K,).

    The sampler: a window length uniform in [max(m-1, n//3), n-1], a start uniform among those that fit, m frames
    evenly spread over the window (sets with a repeated frame are dropped)."""
    rows, weights = [], []
    lengths = range(max(m - 1, n // 3), n) if n >= m else range(0)
    for length in lengths:
        for start in range(n - length):
            frames = [start + round(i * length / (m - 1)) for i in range(m)]
            if len(set(frames)) == m:
                rows.append(frames)
                weights.append(1.0 / (len(lengths) * (n - length)))
    fs = np.asarray(rows, dtype=np.int64).reshape(-1, m)
    w = np.asarray(weights, dtype=np.float64)
    fs.flags.writeable = w.flags.writeable = False
    return fs, w


def _norm(v: np.ndarray) -> np.ndarray:
    """Length of component-first vectors (3, ...) -> (...)."""
    return np.sqrt(sum(c * c for c in v))


class ViewTables:
    """Every viewer's pose at every frame, and every object seen from it at every key-frame set, for all viewers
    at once (viewer 0 is the camera, viewer i >= 1 the i-th moving object), computed once per scene.

    Arrays are component-first, so that every step is one elementwise operation over all candidates.
    ``positions(mode, m)`` -> (loc (3, V, O, K, m), ok (V, O, K)): object positions at the key frames of every set
    of size m, in viewpoint coordinates (right, forward, up); ``headings(mode)`` -> (h (2, V, O, K, 3), ok) the
    objects' horizontal velocities (right, forward) at the key frames of every 3-frame set."""

    def __init__(self, scene: SceneData, v_floor: float, movers: list[int]):
        self.scene, self.v_floor = scene, v_floor
        self._cache: dict = {}
        self._seen = scene.seen
        self._cen = np.nan_to_num(scene.centroid).transpose(2, 0, 1)  # (3, O, N)
        up = scene.horizontal_basis()[2]
        n = scene.n_frames
        pos = np.concatenate([scene.cam2world[None, :, :3, 3], scene.centroid[movers]])  # (V, N, 3)
        fwd = np.concatenate([scene.cam2world[None, :, :3, 2], scene.velocity[movers]])
        floor = np.array([1e-3] + [v_floor] * len(movers))[:, None]
        ok = np.concatenate([np.ones((1, n), bool), self._seen[movers] & np.isfinite(fwd[1:]).all(-1)])
        fwd = np.nan_to_num(fwd - (fwd @ up)[..., None] * up)
        norm = np.linalg.norm(fwd, axis=-1)
        self.ok = ok & (norm >= floor)  # no heading: camera looking straight down, or an agent standing still
        fwd = fwd / np.maximum(norm, 1e-12)[..., None]
        rows = np.stack([np.cross(fwd, up), fwd, np.broadcast_to(up, fwd.shape)], axis=2)  # (V, N, 3, 3)
        self.rows = rows.transpose(2, 3, 0, 1)  # (3, 3, V, N): rows[i, j] is component j of axis i
        self.pos = np.nan_to_num(pos).transpose(2, 0, 1)  # (3, V, N)

    def positions(self, mode, m):
        ck = ("pos", mode, m)
        if ck not in self._cache:
            fs = key_frame_sets(self.scene.n_frames, m)[0]
            seen = self._seen[:, fs].all(-1)[None]  # (1, O, K)
            r = self.rows
            if mode == "relative":
                if "rel" not in self._cache:
                    d = [self._cen[j][None] - self.pos[j][:, None] for j in range(3)]  # (V, O, N)
                    self._cache["rel"] = np.stack([sum(r[i, j][:, None] * d[j] for j in range(3)) for i in range(3)])
                loc = self._cache["rel"][..., fs]
                ok = self.ok[:, fs].all(-1)[:, None] & seen
            else:
                f0 = fs[:, 0]
                d = [self._cen[j][None][:, :, fs] - self.pos[j][:, f0][:, None, :, None] for j in range(3)]
                loc = np.stack([sum(r[i, j][:, f0][:, None, :, None] * d[j] for j in range(3)) for i in range(3)])
                ok = self.ok[:, f0][:, None] & seen
            self._cache[ck] = (loc, ok)
        return self._cache[ck]

    def headings(self, mode):
        ck = ("head", mode)
        if ck not in self._cache:
            fs = key_frame_sets(self.scene.n_frames, 3)[0]
            v = self.scene.velocity[:, fs]  # (O, K, 3, 3)
            ok = (self._seen[:, fs].all(-1) & np.isfinite(v).all(-1).all(-1))[None]
            v = np.nan_to_num(v).transpose(3, 0, 1, 2)[:, None]  # (3, 1, O, K, 3)
            r = self.rows
            if mode == "relative":
                h = np.stack([sum(r[i, j][:, fs][:, None] * v[j] for j in range(3)) for i in range(2)])
                ok = ok & self.ok[:, fs].all(-1)[:, None]
            else:
                f0 = fs[:, 0]
                h = np.stack([sum(r[i, j][:, f0][:, None, :, None] * v[j] for j in range(3)) for i in range(2)])
                ok = ok & self.ok[:, f0][:, None]
            self._cache[ck] = (h, ok)
        return self._cache[ck]


class _Candidates:
    """The valid candidates of one (template, mode, viewer): index arrays, per-candidate values, and weights."""

    def __init__(self, valid: np.ndarray, weight: np.ndarray, values: dict):
        idx = np.nonzero(valid)
        self.index = [i.tolist() for i in idx]  # per axis of ``valid``; the key-frame set is the last
        self.values = {k: v[idx] for k, v in values.items()}
        # The answer first (each answer the scene allows equally likely), then a candidate giving it.
        self.sampler = ClassDraw(self.values["codes"], weight[idx[-1]]) if len(idx[-1]) else None

    def __len__(self) -> int:
        return 0 if self.sampler is None else len(self.sampler)

    def draw(self, rng: random.Random) -> int:
        return self.sampler.draw(rng)


class DSRGenerator:
    family = "dsr"
    types = TYPES

    def __init__(self, scene: SceneData):
        self.scene = scene
        self.noise = NOISE_FRACTION * max(scene.extent(), 1e-6)
        self.v_floor = 2.0 * self.noise  # world units per second for a heading to count
        self.movers = [o for o in range(scene.n_objects) if scene.moving[o]]
        self.viewer = {None: 0, **{o: i + 1 for i, o in enumerate(self.movers)}}  # agent -> viewer index
        self.tables = ViewTables(scene, self.v_floor, self.movers)
        self._tables: dict = {}
        self._candidates: dict = {}

    def generate(self, qtype: str, rng: random.Random) -> Draft | None:
        s = self.scene
        if s.n_objects == 0:
            return None
        mode = rng.choice(MODES)
        kind = "agent" if self.movers and rng.random() < 0.4 else "camera"
        agent = rng.choice(self.movers) if kind == "agent" else None
        key = (qtype, mode, agent)
        if key not in self._candidates:
            if (qtype, mode) not in self._tables:
                self._tables[(qtype, mode)] = getattr(self, "_table_" + qtype)(mode)
            valid, m, values = self._tables[(qtype, mode)]
            v = self.viewer[agent]
            self._candidates[key] = _Candidates(valid[v], key_frame_sets(s.n_frames, m)[1],
                                                {k: x[v] for k, x in values.items()})
        cands = self._candidates[key]
        if not len(cands):
            return None
        d = getattr(self, "_" + qtype)(rng, mode, kind, agent, cands, cands.draw(rng))
        if d is not None:  # wrong options: other questions' true answers with as many steps (balance.py)
            d.metadata["option_pool"] = f"dsr/{qtype}/{len(d.metadata['steps'])}"
        return d

    # -- candidate tables for every viewer at once: (valid (V, O, K) or (V, O, O, K), m, values (V, ...))

    def _targets_ok(self, m, moving_only=False):
        """(V, O, K): target o may be asked about from viewer v (not the agent itself; both nameable at the
        first key frame)."""
        s = self.scene
        ck = ("targets", m, moving_only)
        if ck not in self._tables:
            fs0 = key_frame_sets(s.n_frames, m)[0][:, 0]
            named = ref_ok(s)[:, fs0]  # (O, K)
            if moving_only:
                named = named & s.moving[:, None]
            ok = np.repeat(named[None], len(self.movers) + 1, axis=0)
            for i, a in enumerate(self.movers):
                ok[i + 1, a] = False
                ok[i + 1] &= ref_ok(s)[a, fs0][None]  # the agent must be nameable too
            self._tables[ck] = ok
        return self._tables[ck]

    def _table_distance(self, mode):
        loc, ok = self.tables.positions(mode, 3)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = _norm(loc)  # (V, O, K, 3)
            codes, amb = change_codes(d)
            valid = ok & self._targets_ok(3) & (d.min(-1) >= 5 * self.noise) & ~amb
        return valid, 3, {"codes": codes, "d": d}

    def _direction_table(self, mode):
        ck = ("direction_steps", mode)
        if ck not in self._tables:
            loc, ok = self.tables.positions(mode, 3)
            steps = np.diff(loc, axis=-1)  # (3, V, O, K, 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                codes, amb = direction_codes(steps)
                big = (_norm(steps) >= 3 * self.noise).all(-1)
            self._tables[ck] = ok & self._targets_ok(3) & big & ~amb.any(-1), codes
        return self._tables[ck]

    def _table_direction(self, mode):
        valid, codes = self._direction_table(mode)
        return valid, 3, {"codes": codes}

    def _table_direction_prediction(self, mode):
        valid, codes = self._direction_table(mode)
        return valid & (key_frame_sets(self.scene.n_frames, 3)[0][:, 0] >= 2), 3, {"codes": codes}

    def _table_orientation(self, mode):
        h, ok = self.tables.headings(mode)
        with np.errstate(divide="ignore", invalid="ignore"):
            codes, amb = facing_codes(h)
        fast = (np.sqrt(h[0] * h[0] + h[1] * h[1]) >= self.v_floor).all(-1)
        return ok & self._targets_ok(3, moving_only=True) & fast & ~amb.any(-1), 3, {"codes": codes}

    def _speeds(self, mode, m):
        """(speeds (V, O, K, m-1), ok (V, O, K), dt (K, m-1)) between consecutive key frames."""
        loc, ok = self.tables.positions(mode, m)
        dt = np.diff(self.scene.timestamps[key_frame_sets(self.scene.n_frames, m)[0]], axis=1)
        return _norm(np.diff(loc, axis=-1)) / dt, ok, dt

    def _table_speed(self, mode):
        sp, ok, dt = self._speeds(mode, 4)
        with np.errstate(divide="ignore", invalid="ignore"):
            codes, amb = change_codes(sp)
            valid = ok & self._targets_ok(4) & (sp * dt >= 3 * self.noise).all(-1) & ~amb
        return valid, 4, {"codes": codes, "sp": sp}

    def _table_speed_comparison(self, mode):
        sp, ok, dt = self._speeds(mode, 3)
        sa, sb = sp[:, :, None], sp[:, None, :]  # (V, O, O, K, 2): object 1, object 2
        lim = np.log(1 + RATIO)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_sp = np.log(np.maximum(sp, 1e-12))
            q = log_sp[:, :, None] - log_sp[:, None, :]
            amb = (np.abs(np.abs(q) - lim) < RATIO_MARGIN).any(-1)
            moved = sp * dt >= 3 * self.noise  # the faster of the two moves above the noise in both intervals
            big = (moved[:, :, None] | moved[:, None, :]).all(-1)
        named = ok & self._targets_ok(3)
        pair = named[:, :, None] & named[:, None, :] & ~np.eye(sp.shape[1], dtype=bool)[:, :, None]
        codes = np.where(q > lim, 0, np.where(q < -lim, 1, 2))
        return pair & big & ~amb, 3, {"codes": codes, "sa": np.broadcast_to(sa, q.shape),
                                       "sb": np.broadcast_to(sb, q.shape)}

    # -- pieces shared by the templates

    def _viewpoint_text(self, mode, kind, agent, frames):
        t0 = self.scene.timestamps[frames[0]]
        if kind == "camera":
            who = "the camera"
        else:
            r = try_ref(self.scene, agent, frames[0])
            if r is None:
                return None
            who = r[0] + " (facing its direction of motion)"
        if mode == "relative":
            return f"Taking the viewpoint of {who} and moving with it"
        return f"Taking the viewpoint of {who} as it was at {t0:.2f} s, fixed from then on"

    def _meta(self, mode, kind, agent, frames, targets, labels, **extra):
        s = self.scene
        meta = {"mode": mode, "viewpoint": kind, "key_frames": list(frames),
                "targets": list(targets), "target_ids": [s.object_ids[t] for t in targets],
                "steps": list(labels), "noise": float(self.noise)}
        if kind == "agent":
            meta.update(agent=int(agent), agent_id=s.object_ids[agent], agent_orientation_source="direction of motion")
        meta.update(extra)
        return meta

    def _frames(self, frames, *refs):
        clip = list(range(frames[0], frames[-1] + 1))
        return clip + [f for f in refs if f is not None]

    def _times(self, frames):
        t = self.scene.timestamps
        return ", ".join(f"{t[f]:.2f} s" for f in frames[:-1]) + f" and {t[frames[-1]]:.2f} s"

    def _pick(self, cands, j, m):
        """(target, key frames) of candidate j."""
        k = cands.index[-1][j]
        return cands.index[0][j], key_frame_sets(self.scene.n_frames, m)[0][k].tolist()

    def _texts(self, mode, kind, agent, frames, *objs):
        """(viewpoint text, refs of objs) or None when something cannot be named."""
        vp = self._viewpoint_text(mode, kind, agent, frames)
        refs = [try_ref(self.scene, o, frames[0]) for o in objs]
        return None if vp is None or None in refs else (vp, refs)

    # -- templates: candidate j of a table -> question

    def _distance(self, rng, mode, kind, agent, cands, j):
        o, frames = self._pick(cands, j, 3)
        labels = [CHANGE_KEYS[c] for c in cands.values["codes"][j].tolist()]
        got = self._texts(mode, kind, agent, frames, o)
        if got is None:
            return None
        vp, (r,) = got
        q = f"{vp}, how does the distance between the viewpoint and {r[0]} change over {self._times(frames)}?"
        opts = sequence_options(tuple(labels), list(CHANGE_PHRASE), CHANGE_PHRASE, rng)
        if opts is None:
            return None
        d = [round(x, 4) for x in cands.values["d"][j].tolist()]
        return Draft("distance", q, opts[1], "mc", opts[0], frames=self._frames(frames, r[1]),
                     metadata=self._meta(mode, kind, agent, frames, [o], labels, distances=d))

    def _direction(self, rng, mode, kind, agent, cands, j):
        o, frames = self._pick(cands, j, 3)
        labels = [DIRECTION_NAMES[c] for c in cands.values["codes"][j].tolist()]
        got = self._texts(mode, kind, agent, frames, o)
        if got is None:
            return None
        vp, (r,) = got
        q = f"{vp}, in which direction does {r[0]} move over {self._times(frames)}?"
        opts = sequence_options(tuple(labels), ALL_DIRECTIONS, MOVE_PHRASE, rng, joiner=", then ")
        if opts is None:
            return None
        return Draft("direction", q, opts[1], "mc", opts[0], frames=self._frames(frames, r[1]),
                     metadata=self._meta(mode, kind, agent, frames, [o], labels))

    def _direction_prediction(self, rng, mode, kind, agent, cands, j):
        s = self.scene
        o, frames = self._pick(cands, j, 3)
        labels = [DIRECTION_NAMES[c] for c in cands.values["codes"][j].tolist()]
        observed = list(range(max(0, frames[0] - (frames[-1] - frames[0])), frames[0] + 1))
        got = self._texts(mode, kind, agent, frames, o)
        if got is None:
            return None
        vp, (r,) = got
        horizon = s.timestamps[frames[-1]] - s.timestamps[frames[0]]
        q = (f"The video is shown up to {s.timestamps[frames[0]]:.2f} s. {vp}, how will {r[0]} move over the next "
             f"{horizon:.2f} s (at {self._times(frames)})?")
        opts = sequence_options(tuple(labels), ALL_DIRECTIONS, MOVE_PHRASE, rng, joiner=", then ")
        if opts is None:
            return None
        return Draft("direction_prediction", q, opts[1], "mc", opts[0], frames=observed,
                     metadata=self._meta(mode, kind, agent, frames, [o], labels, observed_until=frames[0]))

    def _orientation(self, rng, mode, kind, agent, cands, j):
        o, frames = self._pick(cands, j, 3)
        labels = [FACING_KEYS[c] for c in cands.values["codes"][j].tolist()]
        got = self._texts(mode, kind, agent, frames, o)
        if got is None:
            return None
        vp, (r,) = got
        q = f"{vp}, which way does {r[0]} face (taken as its direction of motion) at {self._times(frames)}?"
        opts = sequence_options(tuple(labels), list(FACING_PHRASE), FACING_PHRASE, rng, joiner=", then ")
        if opts is None:
            return None
        return Draft("orientation", q, opts[1], "mc", opts[0], frames=self._frames(frames, r[1]),
                     metadata=self._meta(mode, kind, agent, frames, [o], labels,
                                         target_orientation_source="direction of motion"))

    def _speed(self, rng, mode, kind, agent, cands, j):
        o, frames = self._pick(cands, j, 4)
        labels = [CHANGE_KEYS[c] for c in cands.values["codes"][j].tolist()]
        got = self._texts(mode, kind, agent, frames, o)
        if got is None:
            return None
        vp, (r,) = got
        q = (f"{vp}, how does the speed of {r[0]} relative to the viewpoint change across the intervals between "
             f"{self._times(frames)}?")
        opts = sequence_options(tuple(labels), list(SPEED_PHRASE), SPEED_PHRASE, rng)
        if opts is None:
            return None
        sp = [round(x, 5) for x in cands.values["sp"][j].tolist()]
        return Draft("speed", q, opts[1], "mc", opts[0], frames=self._frames(frames, r[1]),
                     metadata=self._meta(mode, kind, agent, frames, [o], labels, speeds=sp))

    def _speed_comparison(self, rng, mode, kind, agent, cands, j):
        a, b = cands.index[0][j], cands.index[1][j]
        frames = key_frame_sets(self.scene.n_frames, 3)[0][cands.index[2][j]].tolist()
        labels = [COMPARE_KEYS[c] for c in cands.values["codes"][j].tolist()]
        got = self._texts(mode, kind, agent, frames, a, b)
        if got is None or got[1][0][0] == got[1][1][0]:
            return None
        vp, (ra, rb) = got
        q = (f"{vp}, compare the speed relative to the viewpoint of {ra[0]} (object 1) and {rb[0]} (object 2) "
             f"in the intervals between {self._times(frames)}.")
        opts = sequence_options(tuple(labels), list(COMPARE_PHRASE), COMPARE_PHRASE, rng,
                                joiner=" at first, and then ")
        if opts is None:
            return None
        speeds = [[round(x, 5) for x in cands.values[k][j].tolist()] for k in ("sa", "sb")]
        return Draft("speed_comparison", q, opts[1], "mc", opts[0], frames=self._frames(frames, ra[1], rb[1]),
                     metadata=self._meta(mode, kind, agent, frames, [a, b], labels, speeds=speeds))
