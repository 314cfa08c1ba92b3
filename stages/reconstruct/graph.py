"""Scene graphs: which ordered frame pairs the network sees.

Names follow DUSt3R's ``make_pairs`` spelling so users can carry their habits over:
``complete``, ``swin-K``, ``logwin-K``, ``oneref-I``, each window graph also as ``...-noncyclic``.
Every pair is returned in both directions, because DUSt3R's prediction for (i, j) is not the
mirror of (j, i) and the alignment uses both.
"""

from __future__ import annotations

import numpy as np

from spatialctl.errors import UsageError

GRAPH_HELP = "auto | complete | swin-K | logwin-K | oneref-I, window graphs optionally with -noncyclic"
AUTO_COMPLETE_MAX = 20  # auto: the complete graph up to this many frames (380 pairs), logwin-5 beyond
AUTO_LONG = "logwin-5"


def choose_graph(n_frames: int, name: str) -> str:
    """``auto`` -> ``complete`` for few frames, ``logwin-5`` (offsets 1, 2, 4, 8, 16, cyclic: 10 pairs per frame)
    for more; any other name is kept. The complete graph grows as N^2: 200 frames would be 39,800 pairs."""
    if name.strip().lower() != "auto":
        return name
    return "complete" if n_frames <= AUTO_COMPLETE_MAX else AUTO_LONG


def _window_pairs(n: int, offsets: list[int], cyclic: bool) -> set[tuple[int, int]]:
    undirected: set[tuple[int, int]] = set()
    for i in range(n):
        for off in offsets:
            j = i + off
            if cyclic:
                j %= n
            elif j >= n:
                continue
            if i != j:
                undirected.add((min(i, j), max(i, j)))
    return undirected


def parse_scene_graph(name: str) -> tuple[str, int | None, bool]:
    """Split a graph name into (kind, parameter, cyclic); raise UsageError when malformed."""
    parts = name.strip().lower().split("-")
    kind = parts[0]
    if kind == "auto" and len(parts) == 1:
        return kind, None, True
    cyclic = True
    if parts[-1] == "noncyclic":
        cyclic = False
        parts = parts[:-1]
    if kind == "complete" and len(parts) == 1 and cyclic:
        return kind, None, True
    if kind in ("swin", "logwin", "oneref") and len(parts) == 1:
        parts.append("0" if kind == "oneref" else "3")  # DUSt3R's defaults for a bare name
    if kind in ("swin", "logwin", "oneref") and len(parts) == 2 and parts[1].isdigit():
        if kind == "oneref" and not cyclic:
            raise UsageError(f"scene graph {name!r}: oneref has no cyclic variant")
        k = int(parts[1])
        if kind != "oneref" and k < 1:
            raise UsageError(f"scene graph {name!r}: window size must be at least 1")
        return kind, k, cyclic
    raise UsageError(f"unknown scene graph {name!r}; expected {GRAPH_HELP}")


def make_pairs(n_frames: int, scene_graph: str | tuple = "complete") -> np.ndarray:
    """Ordered pairs (P, 2) int64 for ``n_frames`` frames, both directions, sorted lexicographically."""
    # a parsed graph (ReconstructConfig.graph) or its text; auto is chosen from the frame count here
    kind, k, cyclic = parse_scene_graph(scene_graph) if isinstance(scene_graph, str) else scene_graph
    if kind == "auto":
        kind, k, cyclic = parse_scene_graph(choose_graph(n_frames, "auto"))
    n = int(n_frames)
    if n < 2:
        raise UsageError(f"a scene graph needs at least 2 frames, got {n}")
    if kind == "complete":
        undirected = {(i, j) for i in range(n) for j in range(i + 1, n)}
    elif kind == "swin":
        undirected = _window_pairs(n, list(range(1, k + 1)), cyclic)
    elif kind == "logwin":
        # Offsets 1, 2, 4, ... 2^(k-1): dense near, sparse far, as in DUSt3R.
        undirected = _window_pairs(n, [2**e for e in range(k)], cyclic)
    else:
        if k >= n:
            raise UsageError(f"scene graph oneref-{k}: reference frame out of range for {n} frames")
        undirected = {(min(k, j), max(k, j)) for j in range(n) if j != k}
    directed = sorted({p for i, j in undirected for p in ((i, j), (j, i))})
    return np.asarray(directed, dtype=np.int64).reshape(-1, 2)
