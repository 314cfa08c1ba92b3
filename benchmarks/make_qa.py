"""make-qa throughput and blind audit on synth scenes (16 frames, 64x48): every preset x every camera path.

    python benchmarks/make_qa.py [--scenes 200] [--per-scene 40] [--cache /tmp/spatialctl-bench-mqa]
                                 [--before OLD.audit.json]

Scene i is seed 1000 + i, preset i % 4 (indoor, tabletop, tiny-tabletop, outdoor), camera (i // 4) % 4 (walk, orbit,
pan, static), 7 objects of which 3 move; scenes already in the cache with the same config are reused.

Reports generation from scenes already in memory (the generators' own speed: every array a family reads, depth,
masks, frames and the valid pointmap points, is read before the clock starts; all per-scene tables are built inside it),
the headline "kept QA per CPU-second": records kept after dedup and balancing over the CPU time of generation + dedup
+ balancing + letter balance (what ``run`` does between reading scenes and writing), ``--repeats`` passes with the
per-scene tables cleared before each (median and min-max; the first pass also pays one-time imports), per family
(a family's records balance alone exactly as in the mix: caps and pools are per type), and end to end (store reads, generation, dedup, balancing, writing JSONL), then prints the blind audit of the end
to end output (the table make-qa writes beside it), and with ``--before`` a per-type comparison against an older
audit (counts, answer entropy, best blind baseline). One process, one core: OMP/MKL threads are pinned to 1, and
time is the process's CPU time (the box is shared).

Baseline (``baseline_section``), measured in the same run: a naive per-question loop, which asks for one question
at a time (a fresh generator and fresh per-scene tables per question, as a caller looping over the public
``generate_scene`` with ``per_scene=1`` would), against ours asking for ``--baseline-questions`` per scene and
family at once. Each variant runs in its own process (peak RSS: that process's VmHWM, scenes loaded included),
alternating, ``--repeats`` times.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

PRESETS = ["indoor", "tabletop", "tiny-tabletop", "outdoor"]
CAMERAS = ["walk", "orbit", "pan", "static"]


def make_scenes(root: str, n: int) -> list[str]:
    """Synth scenes 0..n-1 under root (reused when complete); their scene.zarr paths."""
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    stores = []
    for i in range(n):
        out = Path(root) / f"s{i:03d}"
        c = SynthConfig(seed=1000 + i, preset=PRESETS[i % 4], camera=CAMERAS[(i // 4) % 4], frames=16, width=64,
                        height=48, moving=3, objects=7, quiet=True)
        synth_run(dataclasses.replace(c, out=str(out)))
        stores.append(str(out / "scene.zarr"))
    return stores


def compare(before: dict, after: dict) -> str:
    """Markdown: per type, records, answer entropy and best blind baseline before and after."""
    b = {r["type"]: r for r in before["rows"]}
    a = {r["type"]: r for r in after["rows"]}
    lines = ["| type | n before | n after | entropy before | entropy after | top share after (limit) | chance | "
             "best blind before | best blind after |", "|---|---:|---:|---:|---:|---|---:|---|---|"]

    def best(r):
        return "" if r is None or r.get("best") is None else f"{r['best']:.3f} ({r['best_name']})"

    def share(r):
        return "" if r is None else f"{r['top_share']:.3f} ({r['top_share_limit']:.3f})"

    for t in sorted(set(a) | set(b)):
        rb, ra = b.get(t), a.get(t)
        chance = next((r["chance"] for r in (ra, rb) if r and r.get("chance") is not None), None)
        lines.append(f"| {t} | {rb['n'] if rb else 0} | {ra['n'] if ra else 0} | "
                     f"{rb['entropy_bits'] if rb else ''} | {ra['entropy_bits'] if ra else ''} | {share(ra)} | "
                     f"{'' if chance is None else f'{chance:.3f}'} | {best(rb)} | {best(ra)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--per-scene", type=int, default=40)
    ap.add_argument("--cache", default="/tmp/spatialctl-bench-mqa")
    ap.add_argument("--before", help="an older OUT.audit.json to compare with, per type")
    ap.add_argument("--repeats", type=int, default=3, help="baseline: processes per variant (default 3)")
    ap.add_argument("--baseline-questions", type=int, default=5, help="baseline: questions per scene and family")
    ap.add_argument("--smoke", action="store_true", help="4 scenes, 4 questions, 1 repeat: checks the benchmark runs")
    ap.add_argument("--append-results", action="store_true", help="append the baseline table to RESULTS.md")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(baseline_worker(json.loads(args.worker))))
        return
    if args.smoke:
        args.scenes, args.per_scene, args.repeats, args.baseline_questions = 4, 4, 1, 2

    from spatialctl.qa_format import read_qa
    from spatialctl.stages.make_qa import MakeQAConfig, generate_scene, run
    from spatialctl.stages.make_qa.audit import audit, render
    from spatialctl.stages.make_qa.common import rebalance_letters
    from spatialctl.stages.make_qa.scene import load_scene

    stores = make_scenes(args.cache, args.scenes)
    config = MakeQAConfig(out=str(Path(args.cache) / "qa.jsonl"), per_scene=args.per_scene, seed=0, quiet=True)
    t = time.perf_counter()
    scenes = [load_scene(s) for s in stores]
    for s in scenes:  # what generation reads lazily (depth, masks, points, frames), read here so the timing is generation
        s.depth_reader(0)
        s.mask_reader(0, 0)
        s.points_reader()
        s.frames_reader()
    load_s = time.perf_counter() - t
    # CPU seconds of this one process: "per core", and robust to other jobs sharing the machine.
    t, w = time.process_time(), time.perf_counter()
    n = sum(len(generate_scene(s, config)) for s in scenes)
    gen_s, gen_wall = time.process_time() - t, time.perf_counter() - w
    per_family = {}
    for fam in config.families:
        for s in scenes:
            s._cache.clear()
        one = MakeQAConfig(**{**config.__dict__, "families": (fam,)})
        t = time.process_time()
        k = sum(len(generate_scene(s, one)) for s in scenes)
        per_family[fam] = {"records": k, "qa_per_cpu_s": round(k / (time.process_time() - t), 1)}
    kept = {"all": kept_rates(scenes, config, args.repeats, generate_scene, rebalance_letters)}
    for fam in config.families:
        kept[fam] = kept_rates(scenes, MakeQAConfig(**{**config.__dict__, "families": (fam,)}), args.repeats,
                               generate_scene, rebalance_letters)
    t, w = time.process_time(), time.perf_counter()
    res = run(config, stores).details
    e2e_s, e2e_wall = time.process_time() - t, time.perf_counter() - w
    assert res["records"] == kept["all"]["kept"], "the kept-QA clock must count what run keeps"
    t = time.process_time()
    report = audit(read_qa(res["files"]["all"]), seed=config.seed)
    audit_s = time.process_time() - t
    result = {
        "scenes": args.scenes, "per_scene_per_family": args.per_scene, "generated": n,
        "generation_qa_per_cpu_s": round(n / gen_s, 1), "generation_cpu_s": round(gen_s, 2),
        "generation_wall_s": round(gen_wall, 2), "per_family": per_family, "load_wall_s": round(load_s, 2),
        "records_after_balance": res["records"], "end_to_end_cpu_s": round(e2e_s, 2),
        "end_to_end_wall_s": round(e2e_wall, 2), "audit_cpu_s": round(audit_s, 2),
        "multiturn_turns_count_as": "one record (up to 12 turns)", "target_qa_per_s": 5000,
        "kept_qa_per_cpu_s": kept,
    }
    print(json.dumps(result, indent=2))
    print(render(report))
    if args.before:
        print()
        print(compare(json.loads(Path(args.before).read_text()), report))
    baseline_section(stores, args)


def kept_rates(scenes, config, repeats: int, generate_scene, rebalance_letters) -> dict:
    """Records kept after dedup + balancing per CPU-second of generation + dedup + balancing + letter balance, over
    ``repeats`` passes (per-scene tables cleared before each): median, min and max."""
    import statistics

    import numpy as np

    from spatialctl.stages.make_qa import dedup_balance

    rates, cpu = [], []
    for _ in range(max(repeats, 1)):
        for s in scenes:
            s._cache.clear()
        t = time.process_time()
        records = [r for s in scenes for r in generate_scene(s, config)]
        generated = len(records)
        records = dedup_balance(records, config)
        rebalance_letters(records, np.random.default_rng([config.seed, 7]))
        cpu.append(time.process_time() - t)
        rates.append(len(records) / cpu[-1])
    return {"generated": generated, "kept": len(records), "cpu_s_median": round(statistics.median(cpu), 2),
            "kept_per_cpu_s_median": round(statistics.median(rates), 1), "min": round(min(rates), 1),
            "max": round(max(rates), 1), "passes": len(rates)}


def baseline_worker(spec: dict) -> dict:
    """One variant in this process: generation CPU seconds over the scenes (loaded before the clock starts)."""
    import dataclasses as dc

    import harness

    from spatialctl.stages.make_qa import MakeQAConfig, generate_scene
    from spatialctl.stages.make_qa.scene import load_scene

    scenes = [load_scene(s) for s in spec["stores"]]
    for s in scenes:
        s.depth_reader(0)
        s.mask_reader(0, 0)
        s.points_reader()
    config = MakeQAConfig(out="unused.jsonl", per_scene=spec["questions"], seed=0, quiet=True)
    t, w = time.process_time(), time.perf_counter()
    if spec["variant"] == "ours":
        n = sum(len(generate_scene(s, config)) for s in scenes)
    else:  # one question per call: generators and per-scene tables rebuilt for every question
        n = 0
        for s in scenes:
            for i in range(spec["questions"]):
                s._cache.clear()
                n += len(generate_scene(s, dc.replace(config, per_scene=1, seed=i)))
    return {"records": n, "cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w,
            "peak_rss_bytes": harness.vmhwm_bytes()}


def baseline_section(stores: list[str], args) -> None:
    import statistics
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    variants = ("ours", "per-question loop")
    runs = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            spec = {"variant": v, "stores": stores, "questions": args.baseline_questions}
            runs[v].append(harness.in_subprocess([__file__, "--worker", json.dumps(spec)]))
    rows = []
    for v, rs in runs.items():
        rate = [x["records"] / x["cpu_s"] for x in rs]
        rows.append({"variant": v, "records": rs[0]["records"], "qa_per_cpu_s": statistics.median(rate),
                     "range": f"{min(rate):.0f}-{max(rate):.0f}", "peak_mb": harness.mb(max(x["peak_rss_bytes"]
                                                                                          for x in rs))})
    for row in rows:
        row["speedup"] = row["qa_per_cpu_s"] / rows[1]["qa_per_cpu_s"]
    table = harness.markdown_table(rows, [
        ("variant", "variant", ""), ("records", "records", "d"), ("QA per CPU s (median)", "qa_per_cpu_s", ".0f"),
        ("min-max", "range", ""), ("speed-up vs per-question loop", "speedup", ".2f"),
        ("peak RSS MB (VmHWM, own process)", "peak_mb", ".0f")])
    title = (f"make-qa generation, {len(stores)} scenes x 4 families x {args.baseline_questions} questions, "
             f"{args.repeats} processes per variant")
    print(f"\n{title}\n{table}")
    if args.append_results:
        harness.append_results(title, table, "python benchmarks/make_qa.py " + " ".join(sys.argv[1:]),
                               notes="CPU only, one thread.")


if __name__ == "__main__":
    main()
