"""Dynamic spatial reasoning questions with DSR Suite's meanings.

Templates: {relative, absolute} x {distance, direction, orientation, speed, speed comparison, direction prediction}.
The viewpoint is the camera or an *agent*: an object with a facing (``SceneData.front``: synth people, cars, chairs,
sofas; tracked objects only when the tracks carry an orientation). Viewpoint axes are (right, forward, up),
gravity-aligned, forward = the camera's view direction or the agent's facing. *Relative*: the viewpoint moves with
the viewer, so each key time is seen from where the viewer is then. *Absolute*: the viewpoint is frozen where the
viewer was at the first key time.

- distance: how the distance between two objects changes (ratio 0.2 between consecutive key times);
- direction: where object A is relative to object B in the viewpoint's frame (front/back, left/right,
  above/below, combined; a unit-offset component counts above 0.3);
- direction prediction: the same at key times after the end of what is shown;
- orientation: which way an object *with a facing* faces in the viewpoint's frame (same way, toward the viewpoint,
  left, right; 45-degree sectors);
- speed: how the speed of an object relative to the viewpoint changes (ratio 0.2);
- speed comparison: which of two objects is faster in each interval (ratio 0.2).

Answers describe runs of change with a variable number of phases, "(1) getting closer (2) staying about the same":
consecutive key times with the same state or change form one phase. Questions whose values fall near a threshold,
or whose motion is below the noise floor, are not asked.

Every (template, mode, viewer, number of key times) is evaluated for all key-frame sets and targets at once with
array maths; ambiguous candidates are dropped; then the answer is drawn first (each answer the scene allows equally
likely, ``balance.ClassDraw``), then a candidate giving it, weighted as the key-frame sampler would pick it (window
length uniform, then start uniform). Wrong options are other questions' true answers (``balance.py``).
"""

from __future__ import annotations

import random
from functools import lru_cache

import numpy as np

from .balance import ClassDraw
from .common import Draft, mc, try_ref
from .refer import namer
from .scene import SceneData

TYPES = ("distance", "direction", "orientation", "speed", "speed_comparison", "direction_prediction")
MODES = ("relative", "absolute")
RATIO = 0.2  # a distance/speed change counts above this relative change
RATIO_MARGIN = 0.05  # values within this of RATIO are ambiguous
DIR_THRESHOLD = 0.3  # a unit-offset component counts above this
DIR_MARGIN = 0.05
ANGLE_MARGIN = 10.0  # degrees from a sector boundary
NOISE_FRACTION = 0.01  # position noise as a fraction of the scene extent
KEY_TIMES = {"distance": (3, 4, 5), "direction": (3, 4, 5), "direction_prediction": (3, 4, 5),
             "orientation": (2, 3, 4), "speed": (4, 5), "speed_comparison": (3, 4, 5)}

DISTANCE_PHRASE = ("getting farther apart", "getting closer", "staying about the same distance apart")
SPEED_PHRASE = ("speeding up", "slowing down", "keeping about the same speed")
FACING_PHRASE = ("facing the same way as the viewpoint", "facing toward the viewpoint", "facing left",
                 "facing right")
# "(1) keeping about the same speed" is possible in nearly every scene (most movers keep their speed for a while),
# as are "(1) staying about the same distance apart" (most pairs are still) and a one-phase facing (few objects
# turn): drawn as often as the others, they would fill most of their type's questions and the run-level cap
# (flat answers, bounded by the rarer changes) would drop them again, so a draw of one is kept with this
# probability (a try that gives no question; the scene's tries go to the rarer answers). qtype -> (the code every
# step has, None: any one code; probability).
KEEP_ONE_PHASE = {"speed": (2, 0.1), "distance": (2, 0.3), "orientation": (None, 0.3)}
# Key times and mode drawn per question, not per scene: speed, orientation and distance have the fewest usable
# questions per table (few movers, few objects with a facing, few pairs whose distance changes). More tables to
# build per scene: DSR generation takes about 1.7x the CPU time (benchmarks/RESULTS.md, round 4).
PER_QUESTION = ("speed", "orientation", "distance")
COMPARE_PHRASE = ("object 1 is faster", "object 2 is faster", "they move at about the same speed")


def position_name(fb: int, lr: int, ud: int) -> str:
    """Codes (0 = front/left/above, 1 = back/right/below, 2 = neither) -> "front-left and above" etc."""
    horiz = "-".join(x for x in (("front", "back", "")[fb], ("left", "right", "")[lr]) if x)
    return " and ".join(x for x in (horiz, ("above", "below", "")[ud]) if x)


# position code fb * 9 + lr * 3 + ud -> name (code 26, no component, cannot occur for a unit vector)
POSITION_PHRASE = tuple(position_name(c // 9, c // 3 % 3, c % 3) for c in range(27))


def _three_way(x: np.ndarray, t: float) -> np.ndarray:
    """0 where x > t, 1 where x < -t, else 2."""
    return np.where(x > t, 0, np.where(x < -t, 1, 2))


def change_codes(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive values (..., k) -> (codes (..., k-1): 0 up, 1 down, 2 flat; ambiguous (...)): ratio vs RATIO."""
    r = v[..., 1:] / v[..., :-1] - 1.0
    return _three_way(r, RATIO), (np.abs(np.abs(r) - RATIO) < RATIO_MARGIN).any(-1)


def position_codes(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (3, ...) as (right, forward, up) -> (codes into POSITION_PHRASE, ambiguous)."""
    u = d / _norm(d)
    amb = (np.abs(np.abs(u) - DIR_THRESHOLD) < DIR_MARGIN).any(0)
    fb = _three_way(u[1], DIR_THRESHOLD)
    lr = np.where(u[0] < -DIR_THRESHOLD, 0, np.where(u[0] > DIR_THRESHOLD, 1, 2))
    return fb * 9 + lr * 3 + _three_way(u[2], DIR_THRESHOLD), amb


def facing_codes(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal facings (2, ...) as (right, forward) -> (codes into FACING_PHRASE, ambiguous)."""
    ang = np.degrees(np.arctan2(h[0], h[1]))
    a = np.abs(ang)
    amb = np.minimum(np.abs(a - 45), np.abs(a - 135)) < ANGLE_MARGIN
    return np.where(a < 45, 0, np.where(a > 135, 1, np.where(ang > 0, 3, 2))), amb


def runs(codes) -> list:
    """Consecutive equal codes merged: [0, 0, 2, 2, 0] -> [0, 2, 0]."""
    out = []
    for c in codes:
        if not out or out[-1] != c:
            out.append(c)
    return out


def run_classes(codes: np.ndarray, base: int) -> np.ndarray:
    """(n, k) codes -> (n,) int64: one number per distinct run sequence (equal runs, equal number)."""
    acc = codes[:, 0].astype(np.int64) + 1
    for j in range(1, codes.shape[1]):
        acc = np.where(codes[:, j] != codes[:, j - 1], acc * base + codes[:, j] + 1, acc)
    return acc


@lru_cache(maxsize=256)
def pool_phases(k: int, states: int) -> tuple[int, ...]:
    """The numbers of phases whose answers share a pool of wrong options: k alone when there are at least 6
    sequences of k phases (states (states-1)^(k-1)), else k and k+1 (one phase of three states: three answers,
    too few for four options)."""
    if states * (states - 1) ** (k - 1) >= 6:
        return (k,) if k == 1 or states * (states - 1) ** (k - 2) >= 6 else (k - 1, k)
    return (k, k + 1)


def window_cell(first: int, last: int, n: int) -> str:
    """Where key frames ``first``..``last`` of ``n`` lie, as a question's times show it: from the first frame or
    from a third of the video, to the last frame or to a third."""
    a = "start" if first == 0 else f"third {3 * first // n + 1}"
    b = "end" if last == n - 1 else f"third {3 * last // n + 1}"
    return f"from {a} to {b}"


@lru_cache(maxsize=16)
def _n_states(phrases: tuple[str, ...]) -> int:
    return sum(1 for p in phrases if p)


def phases_text(phrases: list[str]) -> str:
    return " ".join(f"({i}) {p}" for i, p in enumerate(phrases, 1))


@lru_cache(maxsize=64)
def _fallback_options(phrases: tuple[str, ...], counts: tuple[int, ...]) -> list[str]:
    """Up to 16 fixed answers with one of ``counts`` phases (each phase differs from the one before): the wrong
    options a question keeps only when its run has too few true answers to draw from (balance.py)."""
    rng = random.Random(len(phrases) * 100 + sum(counts))
    states = [c for c, p in enumerate(phrases) if p]
    out: list[str] = []
    for _ in range(64):
        seq = [rng.choice(states)]
        for _ in range(rng.choice(counts) - 1):
            seq.append(rng.choice([c for c in states if c != seq[-1]]))
        text = phases_text([phrases[c] for c in seq])
        if text not in out:
            out.append(text)
        if len(out) == 16:
            break
    return out


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
    at once (viewer 0 is the camera, viewer i >= 1 the i-th agent), computed once per scene.

    Arrays are component-first, so that every step is one elementwise operation over all candidates.
    ``positions(mode, m)`` -> (loc (3, V, O, K, m), ok (V, O, K)): object positions at the key frames of every set
    of size m, in viewpoint coordinates (right, forward, up); ``facings(mode, m)`` -> (h (2, V, O, K, m), ok): the
    objects' facings (right, forward) in the same frames."""

    def __init__(self, scene: SceneData, agents: list[int]):
        self.scene = scene
        self._cache: dict = {}
        self._seen = scene.seen
        self._cen = np.nan_to_num(scene.centroid).transpose(2, 0, 1)  # (3, O, N)
        up = scene.horizontal_basis()[2]
        n = scene.n_frames
        facing = scene.facing()  # (O, N, 3)
        pos = np.concatenate([scene.cam2world[None, :, :3, 3], scene.centroid[agents]])  # (V, N, 3)
        fwd = np.concatenate([scene.cam2world[None, :, :3, 2], facing[agents]])
        ok = np.concatenate([np.ones((1, n), bool), self._seen[agents] & np.isfinite(fwd[1:]).all(-1)])
        fwd = np.nan_to_num(fwd - (fwd @ up)[..., None] * up)
        norm = np.linalg.norm(fwd, axis=-1)
        self.ok = ok & (norm >= 1e-3)  # no heading: a camera looking straight down
        fwd = fwd / np.maximum(norm, 1e-12)[..., None]
        rows = np.stack([np.cross(fwd, up), fwd, np.broadcast_to(up, fwd.shape)], axis=2)  # (V, N, 3, 3)
        self.rows = rows.transpose(2, 3, 0, 1)  # (3, 3, V, N): rows[i, j] is component j of axis i
        self.pos = np.nan_to_num(pos).transpose(2, 0, 1)  # (3, V, N)
        self._facing = np.nan_to_num(facing).transpose(2, 0, 1)  # (3, O, N)
        self._has_facing = np.isfinite(facing).all(-1)  # (O, N)

    def _rotate(self, vec, fs, mode):
        """World vectors (3, O, K, m) at key frames fs (K, m) -> components (3, V, O, K, m) in the axes each viewer
        had at the first key frame (absolute mode)."""
        rr = self.rows[..., fs[:, 0]]  # (3, 3, V, K)
        return np.stack([sum(rr[i, j][:, None, :, None] * vec[j][None] for j in range(3)) for i in range(3)])

    def _viewer_ok(self, fs, mode):
        """(V, K): the viewer has a heading at the key frames ``fs`` (all of them when relative, else the first);
        kept per (mode, number of key times): every table of that mode and number asks for it."""
        ck = ("viewer_ok", mode, fs.shape[1])
        if ck not in self._cache:
            self._cache[ck] = self.ok[:, fs].all(-1) if mode == "relative" else self.ok[:, fs[:, 0]]
        return self._cache[ck]

    def _relative(self, name, vec, offset):
        """Every frame at once, relative mode: (vec - viewer position if offset) in each viewer's own axes then,
        (3, V, O, N); key-frame sets then only gather from it."""
        if name not in self._cache:
            r = self.rows
            d = [vec[j][None] - self.pos[j][:, None] if offset else vec[j][None] for j in range(3)]  # (V|1, O, N)
            self._cache[name] = np.stack([sum(r[i, j][:, None] * d[j] for j in range(3)) for i in range(3)])
        return self._cache[name]

    def positions(self, mode, m):
        ck = ("pos", mode, m)
        if ck not in self._cache:
            fs = key_frame_sets(self.scene.n_frames, m)[0]
            if mode == "relative":
                loc = self._relative("rel_pos", self._cen, True)[..., fs]
            else:
                loc = self._rotate(self._cen[:, :, fs], fs, mode)
                # minus the viewer's position, in the same axes
                p = self.pos[:, :, fs[:, 0]][..., None]  # (3, V, K, 1)
                r = self.rows[..., fs[:, 0]][..., None]
                ploc = np.stack([sum(r[i, j] * p[j] for j in range(3)) for i in range(3)])  # (3, V, K, 1)
                loc = loc - ploc[:, :, None]
            ok = self._viewer_ok(fs, mode)[:, None] & self._seen[:, fs].all(-1)[None]
            self._cache[ck] = (loc, ok)
        return self._cache[ck]

    def facings(self, mode, m):
        ck = ("facing", mode, m)
        if ck not in self._cache:
            fs = key_frame_sets(self.scene.n_frames, m)[0]
            if mode == "relative":
                h = self._relative("rel_facing", self._facing, False)[:2][..., fs]
            else:
                h = self._rotate(self._facing[:, :, fs], fs, mode)[:2]
            ok = self._viewer_ok(fs, mode)[:, None] & (self._seen & self._has_facing)[:, fs].all(-1)[None]
            self._cache[ck] = (h, ok)
        return self._cache[ck]


class _Candidates:
    """The valid candidates of one (template, mode, viewer, key times): index arrays, per-candidate values, and
    a sampler that draws the answer first."""

    def __init__(self, valid: np.ndarray, weight: np.ndarray, values: dict, base: int):
        idx = np.nonzero(valid)
        self.index = idx  # per axis of ``valid``; the key-frame set is the last
        self._values = values  # read only at the drawn candidates (``value``): most are never drawn
        self.codes = values["codes"][idx]
        self.sampler = ClassDraw(run_classes(self.codes, base), weight[idx[-1]]) if len(idx[-1]) else None

    def value(self, name: str, j: int) -> np.ndarray:
        """Values ``name`` of candidate j."""
        return self._values[name][tuple(i[j] for i in self.index)]

    def __len__(self) -> int:
        return 0 if self.sampler is None else len(self.sampler)

    def draw(self, rng: random.Random) -> int:
        return self.sampler.draw(rng)


class DSRGenerator:
    family = "dsr"
    types = TYPES
    # Speed has the fewest usable questions per scene (movers only; most keep their speed, an answer the run-level
    # cap mostly drops), and its option pools are split by time window (see _draft): four tries per round.
    # Orientation (only objects with a facing, few of which turn) and distance (few pairs whose distance changes):
    # their rarer, changing answers bound the run-level cap, so they get more tries too.
    tries = {"speed": 4, "orientation": 3, "distance": 2}

    def __init__(self, scene: SceneData):
        self.scene = scene
        self.noise = NOISE_FRACTION * max(scene.extent(), 1e-6)
        self.magnitude = int(np.floor(np.log10(max(scene.extent(), 1e-6))))
        front = scene.front if scene.front is not None else np.full(scene.n_objects, np.nan)
        self.with_facing = [o for o in range(scene.n_objects) if np.isfinite(front[o])]
        self.agents: list[int] = []  # one agent per scene is the viewpoint besides the camera, chosen on first use
        self.viewer: dict = {None: 0}  # agent -> viewer index
        self.tables: ViewTables | None = None
        self._tables: dict = {}
        self._candidates: dict = {}
        self._key_times: dict = {}
        self._ts = scene.timestamps.tolist()  # Python floats: formatted in every question

    def generate(self, qtype: str, rng: random.Random) -> Draft | None:
        s = self.scene
        self._rng = rng
        if s.n_objects < (2 if qtype == "speed_comparison" else 1):
            return None
        if self.tables is None:
            self.agents = [rng.choice(self.with_facing)] if self.with_facing else []
            self.viewer = {None: 0, **{o: i + 1 for i, o in enumerate(self.agents)}}
            self.tables = ViewTables(s, self.agents)
        # One number of key times and one mode per scene and type (direction and its prediction share theirs, and
        # their table): a quarter of the tables to build; the run mixes them over scenes.
        group = "direction" if qtype == "direction_prediction" else qtype
        # PER_QUESTION types: drawn per question, so one scene gives answers of both modes and numbers of key times
        if group not in self._key_times or qtype in PER_QUESTION:
            self._key_times[group] = (rng.choice(KEY_TIMES[group]), rng.choice(MODES))
        m, mode = self._key_times[group]
        kind = "agent" if self.agents and rng.random() < 0.4 else "camera"
        agent = rng.choice(self.agents) if kind == "agent" else None
        key = (qtype, mode, agent, m)
        if key not in self._candidates:
            if (qtype, mode, m) not in self._tables:
                self._tables[(qtype, mode, m)] = getattr(self, "_table_" + qtype)(mode, m)
            valid, values, base = self._tables[(qtype, mode, m)]
            v = self.viewer[agent]
            self._candidates[key] = _Candidates(valid[v], key_frame_sets(s.n_frames, m)[1],
                                                {k: x[v] for k, x in values.items()}, base)
        cands = self._candidates[key]
        if not len(cands):
            return None
        j = cands.draw(rng)
        if qtype in KEEP_ONE_PHASE:
            code, keep = KEEP_ONE_PHASE[qtype]
            c = cands.codes[j]
            if (c == (c[0] if code is None else code)).all() and rng.random() >= keep:
                return None
        return getattr(self, "_" + qtype)(mode, kind, agent, m, cands, j)

    # -- candidate tables for every viewer at once: (valid (V, O[, O], K), values (V, ...), code base)

    def _named(self, m):
        """(V, O, K): object o may be asked about from viewer v (not the agent itself; the object and the agent
        named at the first key frame by a referring expression, without a pixel box: a box names a moving object in
        one frame only, and DSR questions span several)."""
        s = self.scene
        ck = ("named", m)
        if ck not in self._tables:
            fs0 = key_frame_sets(s.n_frames, m)[0][:, 0]
            boxless = namer(s).boxless
            named = boxless[:, fs0]  # (O, K)
            ok = np.repeat(named[None], len(self.agents) + 1, axis=0)
            for i, a in enumerate(self.agents):
                ok[i + 1, a] = False
                ok[i + 1] &= boxless[a, fs0][None]
            self._tables[ck] = ok
        return self._tables[ck]

    def _pairs(self, mode, m, upper=False):
        """(valid pairs (V, O+1, O+1, K) as index arrays (v, a, b, k), offsets (3, n, m) of a from b at them in
        viewpoint axes, the table's shape (V, O+1, O+1, K)); index O stands for the viewpoint itself (at the origin
        of its axes): "relative to the viewpoint" asks it of a single object. Only b can be the viewpoint;
        ``upper``: only a < b. Offsets are taken only where a pair can be asked about at all."""
        loc, ok = self.tables.positions(mode, m)
        ok = ok & self._named(m)
        v, o, k = ok.shape
        fs = key_frame_sets(self.scene.n_frames, m)[0]
        me = self.tables._viewer_ok(fs, mode).copy()  # (V, K)
        for i, a in enumerate(self.agents):
            me[i + 1] &= namer(self.scene).boxless[a, fs[:, 0]]
        loc = np.concatenate([loc, np.zeros(loc.shape[:2] + (1,) + loc.shape[3:])], axis=2)
        ok = np.concatenate([ok, me[:, None]], axis=1)
        pair = ok[:, :, None] & ok[:, None, :] & ~np.eye(o + 1, dtype=bool)[None, :, :, None]
        pair[:, o] = False
        if upper:
            pair &= np.triu(np.ones((o + 1, o + 1), bool), 1)[None, :, :, None]
        idx = np.nonzero(pair)
        vi, ai, bi, ki = idx
        # np.take along one flattened (viewer, object, key-frame set) axis: several times faster than indexing
        # with four index arrays (same values)
        flat = loc.reshape(3, -1, m)
        a = np.take(flat, np.ravel_multi_index((vi, ai, ki), loc.shape[1:4]), axis=1)
        b = np.take(flat, np.ravel_multi_index((vi, bi, ki), loc.shape[1:4]), axis=1)
        return idx, a - b, pair.shape

    def _table_distance(self, mode, m):
        # one of each unordered pair: the distance is symmetric
        idx, off, shape = self._pairs(mode, m, upper=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            sub_d = _norm(off)  # (n, m)
            sub_codes, amb = change_codes(sub_d)
            ok = (sub_d.min(-1) >= 5 * self.noise) & ~amb
        valid = np.zeros(shape, bool)
        valid[idx] = ok
        d = np.zeros(shape + (m,))
        d[idx] = sub_d
        codes = np.zeros(shape + (m - 1,), np.int64)
        codes[idx] = sub_codes
        return valid, {"codes": codes, "d": d}, 4

    def _position_table(self, mode, m):
        ck = ("positions", mode, m)
        if ck not in self._tables:
            idx, sub, shape = self._pairs(mode, m)  # (3, n, m) at the pairs that can be asked about
            with np.errstate(divide="ignore", invalid="ignore"):
                sub_codes, amb = position_codes(sub)
                ok = (_norm(sub) >= 3 * self.noise).all(-1) & ~amb.any(-1)
            valid = np.zeros(shape, bool)
            valid[idx] = ok
            codes = np.zeros(shape + (m,), np.int64)
            codes[idx] = sub_codes
            self._tables[ck] = valid, codes
        return self._tables[ck]

    def _table_direction(self, mode, m):
        valid, codes = self._position_table(mode, m)
        return valid, {"codes": codes}, 28

    def _table_direction_prediction(self, mode, m):
        valid, codes = self._position_table(mode, m)
        fs0 = key_frame_sets(self.scene.n_frames, m)[0][:, 0]
        return valid & (fs0 >= 2), {"codes": codes[..., 1:]}, 28  # the states after the last frame shown

    def _table_orientation(self, mode, m):
        h, ok = self.tables.facings(mode, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            codes, amb = facing_codes(h)
        return ok & self._named(m) & ~amb.any(-1), {"codes": codes}, 5

    def _speeds(self, mode, m):
        """(speeds (V, O, K, m-1), ok (V, O, K), dt (K, m-1)) between consecutive key frames; only objects that
        move (a still object's speed is the viewer's own motion, which its label would give away)."""
        ck = ("speeds", mode, m)  # speed and speed comparison share it
        if ck not in self._tables:
            loc, ok = self.tables.positions(mode, m)
            dt = np.diff(self.scene.timestamps[key_frame_sets(self.scene.n_frames, m)[0]], axis=1)
            movers = np.asarray(self.scene.moving, bool)[None, :, None]
            self._tables[ck] = _norm(np.diff(loc, axis=-1)) / dt, ok & self._named(m) & movers, dt
        return self._tables[ck]

    def _table_speed(self, mode, m):
        sp, ok, dt = self._speeds(mode, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            codes, amb = change_codes(sp)
            valid = ok & (sp * dt >= 3 * self.noise).all(-1) & ~amb
        return valid, {"codes": codes, "sp": sp}, 4

    def _table_speed_comparison(self, mode, m):
        sp, ok, dt = self._speeds(mode, m)
        lim = np.log(1 + RATIO)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_sp = np.log(np.maximum(sp, 1e-12))
            q = log_sp[:, :, None] - log_sp[:, None, :]  # (V, O, O, K, m-1): object 1 vs object 2
            amb = (np.abs(np.abs(q) - lim) < RATIO_MARGIN).any(-1)
            moved = sp * dt >= 3 * self.noise  # the faster of the two moves above the noise in every interval
            big = (moved[:, :, None] | moved[:, None, :]).all(-1)
        pair = ok[:, :, None] & ok[:, None, :] & ~np.eye(sp.shape[1], dtype=bool)[None, :, :, None]
        codes = np.where(q > lim, 0, np.where(q < -lim, 1, 2))
        return pair & big & ~amb, {"codes": codes, "sa": np.broadcast_to(sp[:, :, None], q.shape),
                                   "sb": np.broadcast_to(sp[:, None, :], q.shape)}, 4

    # -- pieces shared by the templates

    def _viewpoint_text(self, mode, kind, agent, frames):
        t0 = self._ts[frames[0]]
        if kind == "camera":
            who = "the camera"
        else:
            r = try_ref(self.scene, agent, frames[0])
            if r is None or r[1] not in (None, frames[0]):
                return None
            who = r[0] + " (looking where it faces)"
        if mode == "relative":
            return f"Taking the viewpoint of {who} and moving with it"
        return f"Taking the viewpoint of {who} as it was at {t0:.2f} s, fixed from then on"

    def _meta(self, mode, kind, agent, frames, targets, codes, phrases, **extra):
        s = self.scene
        phases = runs(codes)
        if targets[-1] == s.n_objects:  # relative to the viewpoint: the one target is the object
            targets = targets[:-1]
            extra["relative_to"] = "viewpoint"
        meta = {"mode": mode, "viewpoint": kind, "key_frames": list(frames),
                "targets": list(targets), "target_ids": [s.object_ids[t] for t in targets],
                "object_labels": [s.labels[t] for t in targets],
                "steps": [phrases[c] for c in codes], "phases": [phrases[c] for c in phases],
                "noise": float(self.noise)}
        if kind == "agent":
            meta.update(agent=int(agent), agent_id=s.object_ids[agent], facing_source="box yaw + front_yaw")
        meta.update(extra)
        return meta

    def _frames(self, frames, *refs):
        clip = list(range(frames[0], frames[-1] + 1))
        return clip + [f for f in refs if f is not None]

    def _times(self, frames):
        t = self._ts
        return ", ".join(f"{t[f]:.2f} s" for f in frames[:-1]) + f" and {t[frames[-1]]:.2f} s"

    def _pick(self, cands, j, m):
        """(objects, key frames) of candidate j."""
        k = cands.index[-1][j]
        return [int(i[j]) for i in cands.index[:-1]], key_frame_sets(self.scene.n_frames, m)[0][k].tolist()

    def _texts(self, mode, kind, agent, frames, objs, shown=None):
        """(viewpoint text, refs of objs) or None when something cannot be named (within ``shown`` frames); object
        index O is the viewpoint."""
        vp = self._viewpoint_text(mode, kind, agent, frames)
        refs = [("the viewpoint", None) if o == self.scene.n_objects else try_ref(self.scene, o, frames[0])
                for o in objs]
        if vp is None or None in refs or len({r[0] for r in refs}) < len(refs):
            return None
        if shown is not None and any(r[1] is not None and r[1] not in shown for r in refs):
            return None
        return vp, refs

    def _draft(self, qtype, question, mode, kind, agent, frames, objs, refs, codes, phrases, shown=None, **extra):
        meta = self._meta(mode, kind, agent, frames, objs, codes, phrases, **extra)
        answer = phases_text(meta["phases"])
        counts = tuple(k for k in pool_phases(len(meta["phases"]), _n_states(phrases)) if k <= len(codes))
        # Wrong options: other questions' true answers of the pool (balance.py); the generator's own, other
        # sequences with the pool's numbers of phases, are used only where the run's pool is too small.
        # Pooled with questions of the same mode, viewpoint kind, number of steps and order of magnitude of scene
        # size (distance and orientation: see below): no option has more phases than the question allows, and
        # what the question shows of its viewpoint or (through the object names) of the scene's scale tells
        # nothing about the answer.
        # Relative to the viewpoint or to another object: seen objects are mostly in front of the camera, so the two
        # never share a pool.
        ref = "/to viewpoint" if meta.get("relative_to") == "viewpoint" else ""
        if qtype == "speed":
            # A speed change is tied to when it happens (a mover stops, starts or turns back at some time), and the
            # question's times show when: pooled by where the key frames lie in the video as well, all numbers of
            # phases together, and never with a coarser pool (a pool too small keeps the generator's options).
            # Seen from a frozen viewpoint a speed is the speed in the world, whoever the viewer: one pool for both.
            cell = window_cell(frames[0], frames[-1], self.scene.n_frames)
            viewer = kind if mode == "relative" else "any viewer"
            meta["option_pool"] = f"dsr/{qtype}/{mode}/{viewer}/{len(codes)} steps/{cell}"
        elif qtype == "distance":
            # The distance between two objects is the same from every viewpoint: pairs are pooled over modes and
            # viewers (the distance to the viewpoint is not). A change of distance is tied to when a mover starts,
            # stops or turns, and the question's times show when: pooled by where the key frames lie, as speed (the
            # first and last times alone let a bag of words score 0.33 on 200 synth scenes, chance 0.25). A change is
            # a ratio, the same at every scale: no split by the scene's size (measured: no baseline gains from it).
            cell = window_cell(frames[0], frames[-1], self.scene.n_frames)
            who = f"/{mode}/{kind}" if ref else ""
            phases = "-".join(map(str, counts))
            meta["option_pool"] = f"dsr/{qtype}{ref}{who}/{len(codes)} steps/{phases} phases/{cell}"
            meta["option_pool_fallback"] = f"dsr/{qtype}{ref}/{phases} phases/{cell}"
        else:
            # orientation: a facing seen from the viewpoint, at any scale (no split by the scene's size: measured, no
            # baseline gains from it, and the pools of 200 synth scenes grow by a quarter)
            scale = "" if qtype == "orientation" else f"/1e{self.magnitude} m"
            meta["option_pool"] = (f"dsr/{qtype}{ref}/{mode}/{kind}/{len(codes)} steps/"
                                   f"{'-'.join(map(str, counts))} phases{scale}")
            meta["option_pool_fallback"] = f"dsr/{qtype}{ref}/{len(codes)} steps/{'-'.join(map(str, counts))} phases"
        fallback = _fallback_options(phrases, counts)
        rng = self._rng  # the family's generator: these options are replaced in any run with enough answers
        opts = mc(answer, rng.sample(fallback, 4), rng)
        if opts is None:
            return None
        frames_out = shown if shown is not None else self._frames(frames, *[r[1] for r in refs])
        return Draft(qtype, question, opts[1], "mc", opts[0], frames=frames_out, metadata=meta)

    # -- templates: candidate j of a table -> question

    def _distance(self, mode, kind, agent, m, cands, j):
        (a, b), frames = self._pick(cands, j, m)
        got = self._texts(mode, kind, agent, frames, (a, b))
        if got is None:
            return None
        vp, (ra, rb) = got
        q = (f"{vp}, how does the distance between {ra[0]} and {rb[0]} change over {self._times(frames)}? "
             "Describe each phase.")
        d = [round(x, 4) for x in cands.value("d", j).tolist()]
        return self._draft("distance", q, mode, kind, agent, frames, (a, b), (ra, rb),
                           cands.codes[j].tolist(), DISTANCE_PHRASE, distances=d)

    def _direction(self, mode, kind, agent, m, cands, j):
        (a, b), frames = self._pick(cands, j, m)
        got = self._texts(mode, kind, agent, frames, (a, b))
        if got is None:
            return None
        vp, (ra, rb) = got
        q = (f"{vp}, where is {ra[0]} relative to {rb[0]} (front/back, left/right, above/below) at "
             f"{self._times(frames)}? Describe each phase.")
        return self._draft("direction", q, mode, kind, agent, frames, (a, b), (ra, rb),
                           cands.codes[j].tolist(), POSITION_PHRASE)

    def _direction_prediction(self, mode, kind, agent, m, cands, j):
        (a, b), frames = self._pick(cands, j, m)
        observed = list(range(max(0, frames[0] - (frames[-1] - frames[0])), frames[0] + 1))
        got = self._texts(mode, kind, agent, frames, (a, b), shown=observed)
        if got is None:
            return None
        vp, (ra, rb) = got
        q = (f"The video is shown up to {self._ts[frames[0]]:.2f} s. {vp}, where will {ra[0]} be relative to "
             f"{rb[0]} (front/back, left/right, above/below) at {self._times(frames[1:])}? Describe each phase.")
        return self._draft("direction_prediction", q, mode, kind, agent, frames, (a, b), (ra, rb),
                           cands.codes[j].tolist(), POSITION_PHRASE, shown=observed,
                           observed_until=frames[0])

    def _orientation(self, mode, kind, agent, m, cands, j):
        (o,), frames = self._pick(cands, j, m)
        got = self._texts(mode, kind, agent, frames, (o,))
        if got is None:
            return None
        vp, (r,) = got
        q = f"{vp}, which way does {r[0]} face at {self._times(frames)}? Describe each phase."
        return self._draft("orientation", q, mode, kind, agent, frames, (o,), (r,),
                           cands.codes[j].tolist(), FACING_PHRASE, facing_source="box yaw + front_yaw")

    def _speed(self, mode, kind, agent, m, cands, j):
        (o,), frames = self._pick(cands, j, m)
        got = self._texts(mode, kind, agent, frames, (o,))
        if got is None:
            return None
        vp, (r,) = got
        q = (f"{vp}, how does the speed of {r[0]} relative to the viewpoint change across the intervals between "
             f"{self._times(frames)}? Describe each phase.")
        sp = [round(x, 5) for x in cands.value("sp", j).tolist()]
        return self._draft("speed", q, mode, kind, agent, frames, (o,), (r,), cands.codes[j].tolist(),
                           SPEED_PHRASE, speeds=sp)

    def _speed_comparison(self, mode, kind, agent, m, cands, j):
        (a, b), frames = self._pick(cands, j, m)
        got = self._texts(mode, kind, agent, frames, (a, b))
        if got is None:
            return None
        vp, (ra, rb) = got
        q = (f"{vp}, compare the speed relative to the viewpoint of {ra[0]} (object 1) and {rb[0]} (object 2) "
             f"in the intervals between {self._times(frames)}. Describe each phase.")
        speeds = [[round(x, 5) for x in cands.value(k, j).tolist()] for k in ("sa", "sb")]
        return self._draft("speed_comparison", q, mode, kind, agent, frames, (a, b), (ra, rb),
                           cands.codes[j].tolist(), COMPARE_PHRASE, speeds=speeds)
