"""Benchmark synth: render and write 64 frames at 512x384 (target: under 15 s on 2 CPU cores, memory well under 2 GB).

    python benchmarks/synth.py [--frames 64] [--size 512x384] [--preset tabletop] [--camera orbit] [--out DIR]

Prints seconds (wall and CPU; render alone and render + video + store), frames/s and peak RSS of this process.
The machine may be shared: CPU seconds of this process are the stable number; wall seconds include waiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialctl.stages.synth import SynthConfig, generate, run  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--preset", default="tabletop")
    ap.add_argument("--camera", default="orbit")
    ap.add_argument("--objects", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="Folder to write into (default: a temporary folder).")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cfg = SynthConfig(seed=args.seed, preset=args.preset, frames=args.frames, width=w, height=h,
                      objects=args.objects, camera=args.camera, overwrite=True)

    t0, c0 = time.perf_counter(), time.process_time()
    generate(cfg)
    render_s, render_cpu = time.perf_counter() - t0, time.process_time() - c0

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        t0, c0 = time.perf_counter(), time.process_time()
        summary = run(dataclasses.replace(cfg, out=out))
        total_s, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    assert summary.done and not summary.failed, summary.failed
    print(f"synth {args.preset}/{args.camera} {args.frames} frames {w}x{h} ({cfg.n_objects} objects): "
          f"render {render_s:.2f} s wall / {render_cpu:.2f} s CPU ({args.frames / render_s:.1f} frames/s); "
          f"render+video+store {total_s:.2f} s wall / {total_cpu:.2f} s CPU ({args.frames / total_s:.1f} frames/s); "
          f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
