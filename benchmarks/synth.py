"""Benchmark synth: render and write 64 frames at 512x384 (target: under 15 s on 2 CPU cores, memory well under 2 GB).

    python benchmarks/synth.py [--frames 64] [--size 512x384] [--preset tabletop] [--camera orbit] [--repeats 3]

Baseline, measured in the same run: the reference path of the same renderer, which tests every primitive against
every pixel (per-primitive screen-rectangle culling off). Both must give bit-identical frames and depth (checked:
a hash of each variant's output), so the difference is the culling's alone. Each run of each variant is its own
process (peak RSS is that process's VmHWM), the variants alternate (A B, B A, ...), and the table gives medians
with min-max. CPU seconds of a process are the stable number on a shared machine; wall seconds include waiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

VARIANTS = ("ours (culled)", "reference (no culling)")


def worker(spec: dict) -> dict:
    """One variant, one process: render alone, then render + video + store; the output's hash; VmHWM."""
    from spatialctl.stages.synth import SynthConfig, generate, render, run

    if spec["variant"] == VARIANTS[1]:
        # Every pixel tested against every primitive: the rectangle is the whole image whenever the bounding
        # sphere is not entirely behind the camera (the culled path returns None there as well).
        culled = render._screen_rect
        render._screen_rect = lambda c, r, k, h, w: None if culled(c, r, k, h, w) is None else (0, h, 0, w)
    cfg = SynthConfig(**spec["config"])
    t0, c0 = time.perf_counter(), time.process_time()
    _, truth = generate(cfg)
    render_s, render_cpu = time.perf_counter() - t0, time.process_time() - c0
    digest = hashlib.sha256(truth.scene_arrays["frames"].tobytes() + truth.scene_arrays["depth"].tobytes()).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0 = time.perf_counter(), time.process_time()
        summary = run(dataclasses.replace(cfg, out=tmp))
        total_s, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert summary.done and not summary.failed, summary.failed
    return {"render_s": render_s, "render_cpu_s": render_cpu, "total_s": total_s, "total_cpu_s": total_cpu,
            "digest": digest, "peak_rss_bytes": harness.vmhwm_bytes()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--preset", default="tabletop")
    ap.add_argument("--camera", default="orbit")
    ap.add_argument("--objects", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="processes per variant, alternating (default 3)")
    ap.add_argument("--smoke", action="store_true", help="8 frames at 64x48, 1 repeat: checks the benchmark runs")
    ap.add_argument("--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.smoke:
        args.frames, args.size, args.repeats = 8, "64x48", 1
    w, h = (int(v) for v in args.size.split("x"))
    config = {"seed": args.seed, "preset": args.preset, "frames": args.frames, "width": w, "height": h,
              "objects": args.objects, "camera": args.camera, "overwrite": True, "quiet": True}
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for variant in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            spec = {"variant": variant, "config": config}
            runs[variant].append(harness.in_subprocess([__file__, "--worker", json.dumps(spec)]))
    digests = {x["digest"] for rs in runs.values() for x in rs}
    assert len(digests) == 1, "the reference path rendered different frames or depth"
    rows = []
    for variant, rs in runs.items():
        med = {k: sorted(x[k] for x in rs)[len(rs) // 2] for k in ("render_s", "render_cpu_s", "total_s",
                                                                    "total_cpu_s")}
        rows.append({"variant": variant, **med, "fps_cpu": args.frames / med["render_cpu_s"],
                     "render_range": f"{min(x['render_cpu_s'] for x in rs):.2f}-{max(x['render_cpu_s'] for x in rs):.2f}",
                     "peak_mb": harness.mb(max(x["peak_rss_bytes"] for x in rs))})
    for row in rows:
        row["speedup"] = rows[1]["render_cpu_s"] / row["render_cpu_s"]
    table = harness.markdown_table(rows, [
        ("variant", "variant", ""), ("render CPU s (median)", "render_cpu_s", ".2f"),
        ("render CPU s (min-max)", "render_range", ""), ("render wall s", "render_s", ".2f"),
        ("render+video+store CPU s", "total_cpu_s", ".2f"), ("render+video+store wall s", "total_s", ".2f"),
        ("frames/s (render CPU)", "fps_cpu", ".1f"), ("render speed-up vs reference", "speedup", ".2f"),
        ("peak RSS MB (VmHWM, own process)", "peak_mb", ".0f")])
    title = f"synth {args.preset}/{args.camera}, {args.frames} frames {w}x{h}, {args.repeats} processes per variant"
    print(f"{title}\n{table}\nidentical output across variants: yes")
    if args.append_results:
        harness.append_results(title, table, "python benchmarks/synth.py " + " ".join(argv or sys.argv[1:]),
                               notes="Outputs bit-identical across variants (hash checked). CPU only.")


if __name__ == "__main__":
    main()
