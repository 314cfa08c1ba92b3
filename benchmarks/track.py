"""Benchmark track: frames/s of SAM 2 propagation and of 3D lifting at 512x384, and lifting's share of the stage.

    python benchmarks/track.py [--frames 8] [--size 512x384] [--keyframe-every 8] [--device cpu]
                               [--sam2-model ID|DIR] [--detector-model ID|DIR]

Without model arguments the real architectures are built with random weights (no download needed; the compute is
the same): SAM 2.1 hiera-tiny (``Sam2VideoConfig()``'s defaults, 1024x1024 input) and Grounding DINO tiny (Swin-T
image backbone, BERT-base text encoder). The scene is a synth tabletop scene; its true boxes prompt SAM 2 (random
detectors box nothing useful) and its true masks are lifted, so the timings are for real object counts.

Stage time per frame = detection / K + propagation + lifting. Prints wall and CPU seconds of this process; on a
shared machine CPU seconds are the stable number.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keyframe-every", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sam2-model", default=None)
    ap.add_argument("--detector-model", default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    _, truth = generate(SynthConfig(seed=args.seed, frames=args.frames, width=w, height=h))
    sa, ta = truth.scene_arrays, truth.tracks_arrays
    masks = PackedMasks(ta["masks"], (h, w))
    n_obj = masks.shape[0]

    with tempfile.TemporaryDirectory() as tmp:
        sam2 = args.sam2_model or build_sam2(Path(tmp) / "sam2")
        gdino = args.detector_model or build_grounding_dino(Path(tmp) / "gdino")
        detector = Detector("grounding-dino", gdino, ["cup", "ball", "book", "bottle", "box", "can"], args.device)
        seg = Segmenter(sam2, args.device)

    frames = sa["frames"]
    with torch.no_grad():
        detector(frames[0])  # warm-up
        _, det_wall, det_cpu = timed(lambda: detector(frames[0]))

    seg.open(lambda i: frames[i], args.frames, (h, w))
    session = seg.session()
    first = masks[:, 0]
    present = [o for o in range(n_obj) if first[o].any()]
    boxes = []
    for o in present:
        rows, cols = np.flatnonzero(first[o].any(1)), np.flatnonzero(first[o].any(0))
        boxes.append([cols[0], rows[0], cols[-1], rows[-1]])
    seg.add_boxes(session, 0, present, np.array(boxes, dtype=np.float64))

    def propagate():
        for t in range(args.frames):
            seg.step(session, t)

    _, prop_wall, prop_cpu = timed(propagate)

    def lift():
        return lift_tracks(masks, sa["depth"], sa["conf"], sa["pointmaps"], sa["cam2world"], sa["timestamps"],
                           [0.0, 0.0, 1.0])

    _, lift_wall, lift_cpu = timed(lift)

    n, k = args.frames, args.keyframe_every
    per_frame_cpu = det_cpu / k + prop_cpu / n + lift_cpu / n
    per_frame_wall = det_wall / k + prop_wall / n + lift_wall / n
    print(f"track {n} frames {w}x{h}, {len(present)} objects prompted ({n_obj} lifted), device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  detection: {det_wall:.2f} s wall / {det_cpu:.2f} s CPU per keyframe (every {k} frames)")
    print(f"  propagation: {n / prop_wall:.3f} frames/s wall ({prop_wall / n:.2f} s/frame, {prop_cpu / n:.2f} s CPU)")
    print(f"  lifting: {n / lift_wall:.1f} frames/s wall ({lift_wall / n * 1000:.1f} ms/frame, "
          f"{lift_cpu / n * 1000:.1f} ms CPU)")
    print(f"  lifting share of the stage: {lift_cpu / n / per_frame_cpu:.2%} CPU, "
          f"{lift_wall / n / per_frame_wall:.2%} wall")


if __name__ == "__main__":
    main()
