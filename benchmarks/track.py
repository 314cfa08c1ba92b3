"""Benchmark track: frames/s of SAM 2 propagation and of 3D lifting at 512x384, and lifting's share of the stage.

    python benchmarks/track.py [--frames 8] [--size 512x384] [--keyframe-every 8] [--device cpu]
                               [--sam2-model ID|DIR] [--detector-model ID|DIR]

Without model arguments the real architectures are built with random weights (no download needed; the compute is
the same): SAM 2.1 hiera-tiny (``Sam2VideoConfig()``'s defaults, 1024x1024 input) and Grounding DINO tiny (Swin-T
image backbone, BERT-base text encoder). The scene is a synth tabletop scene; its true boxes prompt SAM 2 (random
detectors box nothing useful) and its true masks are lifted, so the timings are for real object counts.

Stage time per frame = detection / K + propagation + lifting. Baseline, measured in the same run: detection on
every frame (no propagation; what a tracker-free pipeline pays per frame) + lifting. The three parts run
interleaved (rotating order) ``--repeats`` times after a warm-up; medians are reported, and on CUDA each part's
peak memory (reset before each run). Prints wall and CPU seconds of this process; on a shared machine CPU seconds
are the stable number.

    python benchmarks/track.py --full-size --append-results     # GPU: 16 frames at 512x384 on cuda (gpu.sh)
    python benchmarks/track.py --smoke                           # 2 frames at 64x48: checks the benchmark runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

from spatialctl.stages.synth import SynthConfig, generate  # noqa: E402
from spatialctl.stages.track import PackedMasks  # noqa: E402
from spatialctl.stages.track.detect import Detector  # noqa: E402
from spatialctl.stages.track.lift import lift_tracks  # noqa: E402
from spatialctl.stages.track.propagate import Segmenter  # noqa: E402

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "cup", "ball", "book", "bottle", "box", "can"]


def build_sam2(folder: Path) -> str:
    from transformers import Sam2VideoConfig, Sam2VideoModel

    Sam2VideoModel(Sam2VideoConfig()).eval().save_pretrained(folder)
    return str(folder)


def build_grounding_dino(folder: Path) -> str:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    config = GroundingDinoConfig(text_config=BertConfig(vocab_size=len(WORDS)))
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(),
                           tokenizer=BertTokenizer(str(folder / "vocab.txt"))).save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keyframe-every", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sam2-model", default=None)
    ap.add_argument("--detector-model", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-size", action="store_true", help="16 frames at 512x384 on cuda")
    ap.add_argument("--smoke", action="store_true", help="2 frames at 64x48, 1 repeat: checks the benchmark runs")
    ap.add_argument("--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.full_size:
        args.frames, args.size, args.device = 16, "512x384", "cuda"
    if args.smoke:
        args.frames, args.size, args.repeats, args.keyframe_every = 2, "64x48", 1, 2
    w, h = (int(v) for v in args.size.split("x"))
    _, truth = generate(SynthConfig(seed=args.seed, frames=args.frames, width=w, height=h))
    sa, ta = truth.scene_arrays, truth.tracks_arrays
    masks = PackedMasks(ta["masks"], (h, w))
    n_obj = masks.shape[0]

    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:  # the tests' tiny random SAM 2 / Grounding DINO (same classes, small configs)
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            import track_models

            build_sam2_fn, build_gdino_fn = (lambda f: track_models.build_sam2_video(f, size=64),
                                             track_models.build_grounding_dino)
        else:
            build_sam2_fn, build_gdino_fn = build_sam2, build_grounding_dino
        sam2 = args.sam2_model or build_sam2_fn(Path(tmp) / "sam2")
        gdino = args.detector_model or build_gdino_fn(Path(tmp) / "gdino")
        detector = Detector("grounding-dino", gdino, ["cup", "ball", "book", "bottle", "box", "can"], args.device)
        seg = Segmenter(sam2, args.device)

    frames = sa["frames"]
    seg.open(lambda i: frames[i], args.frames, (h, w))
    first = masks[:, 0]
    present = [o for o in range(n_obj) if first[o].any()]
    boxes = []
    for o in present:
        rows, cols = np.flatnonzero(first[o].any(1)), np.flatnonzero(first[o].any(0))
        boxes.append([cols[0], rows[0], cols[-1], rows[-1]])

    def detect():
        with torch.no_grad():
            detector(frames[0])

    def propagate():
        session = seg.session()
        seg.add_boxes(session, 0, present, np.array(boxes, dtype=np.float64))
        for t in range(args.frames):
            seg.step(session, t)

    def lift():
        return lift_tracks(masks, sa["depth"], sa["conf"], sa["pointmaps"], sa["cam2world"], sa["timestamps"],
                           [0.0, 0.0, 1.0])

    device = torch.device(args.device)
    t = harness.interleave([("detect", detect), ("propagate", propagate), ("lift", lift)], args.repeats, 1, device)
    n, k = args.frames, args.keyframe_every
    det, prop, lif = (t[p]["median_s"] for p in ("detect", "propagate", "lift"))
    det_c, prop_c, lif_c = (t[p]["median_cpu_s"] for p in ("detect", "propagate", "lift"))
    ours = {"variant": f"ours: detect every {k} frames + SAM 2 propagation + lifting",
            "s_per_frame": det / k + prop / n + lif / n, "cpu_s_per_frame": det_c / k + prop_c / n + lif_c / n,
            "peak_mb": harness.mb(max(t[p]["peak_cuda_bytes"] for p in t))}
    base = {"variant": "baseline: detection on every frame + lifting", "s_per_frame": det + lif / n,
            "cpu_s_per_frame": det_c + lif_c / n,
            "peak_mb": harness.mb(max(t[p]["peak_cuda_bytes"] for p in ("detect", "lift")))}
    for row in (ours, base):
        row["fps"] = 1 / row["s_per_frame"]
        row["speedup"] = base["s_per_frame"] / row["s_per_frame"]
    print(f"track {n} frames {w}x{h}, {len(present)} objects prompted ({n_obj} lifted), device {args.device}, "
          f"torch threads {torch.get_num_threads()}, {args.repeats} interleaved repeats (medians)")
    print(f"  detection: {det:.2f} s wall / {det_c:.2f} s CPU per keyframe (every {k} frames)")
    print(f"  propagation: {n / prop:.3f} frames/s wall ({prop / n:.2f} s/frame, {prop_c / n:.2f} s CPU)")
    print(f"  lifting: {n / lif:.1f} frames/s wall ({lif / n * 1000:.1f} ms/frame, {lif_c / n * 1000:.1f} ms CPU)")
    print(f"  lifting share of the stage: {lif_c / n / ours['cpu_s_per_frame']:.2%} CPU, "
          f"{lif / n / ours['s_per_frame']:.2%} wall")
    peak = "peak CUDA MB (reset per part)" if device.type == "cuda" else "peak CUDA MB (n/a on CPU)"
    table = harness.markdown_table([ours, base], [
        ("variant", "variant", ""), ("s / frame (wall)", "s_per_frame", ".3f"), ("frames/s", "fps", ".2f"),
        ("CPU s / frame", "cpu_s_per_frame", ".3f"), ("speed-up vs baseline", "speedup", ".2f"),
        (peak, "peak_mb", ".0f")])
    print(table)
    if args.append_results:
        models = "tiny test models" if args.smoke else "random SAM 2.1 hiera-tiny + Grounding DINO tiny"
        harness.append_results(f"track, {n} frames {w}x{h}, {models}", table,
                               "python benchmarks/track.py " + " ".join(sys.argv[1:]), device)


if __name__ == "__main__":
    main()
