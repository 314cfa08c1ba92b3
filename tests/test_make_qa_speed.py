"""make-qa's speed paths give what the plain paths give: ClassDraw's integer tables, the pooled-distractor tables
prepared once per pool, and the garbage collector's state around
generation."""

from __future__ import annotations

import gc
import random

import numpy as np

from spatialctl.stages.make_qa import balance, gc_paused


def test_class_draw_integer_tables_equal_the_general_path():
    gen = np.random.default_rng(0)
    for t in range(200):
        classes = gen.integers(-3, int(gen.integers(1, 30)), int(gen.integers(1, 120)))
        if t % 4 == 0:
            classes = classes > 0
        weights = gen.random(len(classes))
        fast = balance.ClassDraw(classes, weights)  # one stable sort
        plain = balance.ClassDraw(classes.astype(np.float64), weights)  # np.unique + argsort + searchsorted
        assert fast.keys == plain.keys and fast.order == plain.order and fast.bounds == plain.bounds
        assert fast.cum == plain.cum
        r1, r2 = random.Random(t), random.Random(t)
        assert [fast.draw(r1) for _ in range(50)] == [plain.draw(r2) for _ in range(50)]


def test_systematic_with_known_sum_and_index_equals_computing_them():
    texts = [f"answer {i}" for i in range(9)]
    pi = [min(1.0, 4 * c / 30) for c in (5, 4, 4, 3, 3, 3, 3, 3, 2)]
    for seed in range(100):
        truth = texts[seed % len(texts)]
        plain = balance._systematic(texts, pi, truth, 4, random.Random(seed))
        known = balance._systematic(texts, pi, truth, 4, random.Random(seed), sum(pi), texts.index(truth))
        assert known == plain and truth in plain and len(set(plain)) == 4


def test_gc_paused_restores_the_collector_state():
    was = gc.isenabled()
    try:
        for state in (True, False):
            (gc.enable if state else gc.disable)()
            with gc_paused():
                assert not gc.isenabled()
            assert gc.isenabled() is state
        gc.enable()
        try:
            with gc_paused():
                raise KeyError("x")
        except KeyError:
            pass
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_gc_pause_moves_survivors_to_the_oldest_generation():
    was = gc.isenabled()
    gc.enable()
    try:
        gc.collect()
        with gc_paused():
            assert not gc.isenabled()
            kept = [[i] for i in range(20000)]
        assert gc.isenabled()
        # nothing left to trigger a young collection that would traverse every kept list
        assert gc.get_count()[0] < 700
        assert all(gc.is_tracked(x) for x in kept[:10])  # still under the collector
        assert gc.get_freeze_count() == 0
    finally:
        if not was:
            gc.disable()


def test_gc_pause_keeps_objects_the_process_froze():
    was = gc.isenabled()
    gc.enable()
    try:
        gc.freeze()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with gc_paused():
            kept = [[i] for i in range(1000)]
        assert gc.get_freeze_count() == frozen and len(kept) == 1000
    finally:
        gc.unfreeze()
        if not was:
            gc.disable()


def test_dsr_tables_through_the_caches_equal_plain_indexing(tmp_path):
    """DSR's kept per-scene pieces (viewer headings per mode and key times, speeds shared by two types), pair offsets
    gathered with np.take and candidate values read only when drawn: the same arrays as plain indexing and as a
    fresh generator building each table first."""
    import dataclasses

    from spatialctl.stages.make_qa import dsr
    from spatialctl.stages.make_qa.scene import load_scene
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    cfg = SynthConfig(seed=1083, preset="outdoor", frames=16, width=64, height=48, moving=3, camera="walk",
                      objects=7, quiet=True, out=str(tmp_path / "s"))
    assert synth_run(dataclasses.replace(cfg)).exit_code == 0
    scene = load_scene(str(tmp_path / "s" / "scene.zarr"))
    gen = dsr.DSRGenerator(scene)
    rng = random.Random(0)
    for t in dsr.TYPES * 8:
        gen.generate(t, rng)
    assert gen.agents and len(gen._candidates) >= 12
    for mode in dsr.MODES:
        for m in (3, 4, 5):
            fs = dsr.key_frame_sets(scene.n_frames, m)[0]
            ok = gen.tables.ok
            assert np.array_equal(gen.tables._viewer_ok(fs, mode), ok[:, fs].all(-1) if mode == "relative"
                                  else ok[:, fs[:, 0]])
            (vi, ai, bi, ki), off, _ = gen._pairs(mode, m)
            loc = gen.tables.positions(mode, m)[0]
            loc = np.concatenate([loc, np.zeros(loc.shape[:2] + (1,) + loc.shape[3:])], axis=2)
            assert len(vi) and np.array_equal(off, loc[:, vi, ai, ki] - loc[:, vi, bi, ki])
    fresh = dsr.DSRGenerator(scene)  # same agent, its tables built in another order
    fresh.agents, fresh.viewer, fresh.tables = gen.agents, gen.viewer, dsr.ViewTables(scene, gen.agents)
    checked = 0
    for (qtype, mode, agent, m), cands in gen._candidates.items():
        valid, values, base = gen._tables[(qtype, mode, m)]
        valid2, values2, _ = getattr(fresh, "_table_" + qtype)(mode, m)
        assert np.array_equal(valid, valid2)
        v = gen.viewer[agent]
        idx = np.nonzero(valid[v])
        for name, x in values.items():
            assert np.array_equal(x[valid], values2[name][valid2])
            full = x[v][idx]
            for j in range(len(idx[0])):
                assert np.array_equal(cands.value(name, j), full[j])
                checked += 1
        assert np.array_equal(cands.codes, values["codes"][v][idx])
    assert checked > 50
