"""Benchmark track: per-frame cost of both backends in one run, and 3D lifting accuracy before/after amodal fits.

    python benchmarks/track.py [--section speed,lift] [--frames 8] [--size 512x384] [--repeats 3]
                               [--device cpu] [--full] [--before-rev REV]

speed: gdino-sam2 (Grounding DINO on keyframes every K frames + SAM 2 video propagation) against sam3 (SAM 3's
detector on every frame + its tracker), each producing masks for every frame of the same synth video through the
stage's own functions, then lifting them. Variants alternate over ``--repeats`` rounds, each run in a fresh process
(peak memory starts from zero: peak RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU), models loaded before the
clock starts, one warm-up frame first, float32 both. Random weights (no download, the compute is the same); both
backends track the scene's true object count (SAM 3 capped at it; SAM 2 prompted with the true boxes after the
detector has run). Sizes: CPU stand-ins by default (the test architectures at a
224x224 input: hidden 128, one or two layers per block); ``--full`` builds the released architectures
(``Sam3VideoConfig()``: ViT 1024 wide x 32 layers at 1008; ``Sam2VideoConfig()``: SAM 2.1 hiera-tiny at 1024;
``GroundingDinoConfig()``: Swin-T + BERT-base), the GPU mode for ``benchmarks/gpu.sh``:
``python benchmarks/track.py --section speed --full --device cuda``.

lift: 3D lifting on synth truth (true masks, true depth), seeds 0-6, 24 frames at 384x288, for the exact-input and
the default configs: centroid error (fraction of the object's largest true size, median over the frames that show
it whole), axis-aligned box IoU and gravity-aligned box IoU (a round object compared at the truth's yaw) per
object, by category. ``--before-rev REV`` also runs ``stages/track/lift.py`` as it was at git revision REV.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from spatialctl.stages.synth import SynthConfig, generate  # noqa: E402
from spatialctl.stages.track import PackedMasks  # noqa: E402

LABELS = ["cup", "ball", "book", "bottle", "box", "can"]
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *LABELS]


# ---------------------------------------------------------------------------------------------------- models


def build_full(folder: Path) -> dict[str, str]:
    """The released architectures with random weights."""
    from track_models import _char_clip_tokenizer
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam3VideoConfig,
        Sam3VideoModel,
    )

    paths = {k: folder / k for k in ("sam2", "gdino", "sam3")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    Sam2VideoModel(Sam2VideoConfig()).eval().save_pretrained(paths["sam2"])
    (paths["gdino"] / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n")
    GroundingDinoForObjectDetection(GroundingDinoConfig(text_config=BertConfig(vocab_size=len(BERT_WORDS)))) \
        .eval().save_pretrained(paths["gdino"])
    GroundingDinoProcessor(image_processor=GroundingDinoImageProcessorPil(),
                           tokenizer=BertTokenizer(str(paths["gdino"] / "vocab.txt"))).save_pretrained(paths["gdino"])
    tokenizer, _, _ = _char_clip_tokenizer(paths["sam3"])
    Sam3VideoModel(Sam3VideoConfig()).eval().save_pretrained(paths["sam3"])
    tokenizer.save_pretrained(paths["sam3"])
    return {k: str(v) for k, v in paths.items()}


def build_standin(folder: Path) -> dict[str, str]:
    from track_models import build_grounding_dino, build_sam2_video, build_sam3_video

    return {"sam2": build_sam2_video(folder / "sam2", size=224, present=True),
            "gdino": build_grounding_dino(folder / "gdino"),
            "sam3": build_sam3_video(folder / "sam3", size=224)}


# ---------------------------------------------------------------------------------------------------- speed


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _box(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def child(args) -> None:
    """One variant, one run, in this process; prints one JSON line."""
    from spatialctl.stages.track.detect import Detection, Detector
    from spatialctl.stages.track.lift import lift_tracks
    from spatialctl.stages.track.propagate import Segmenter
    from spatialctl.stages.track.propagate import track_video as sam2_video
    from spatialctl.stages.track.sam3 import Sam3Tracker
    from spatialctl.stages.track.sam3 import track_video as sam3_video

    models = json.loads(Path(args.models).read_text())
    data = np.load(args.scene)
    frames, n, hw = data["frames"], len(data["frames"]), data["frames"].shape[1:3]
    n_obj = int(data["n_obj"])
    if args.child == "sam3":
        tracker = Sam3Tracker(models["sam3"], args.device, threshold=0.0)
        tracker.model.max_num_objects = n_obj

        def run(count):
            return sam3_video(tracker, lambda i: frames[i], count, hw, LABELS, 64)
    else:
        detector = Detector("grounding-dino", models["gdino"], LABELS, args.device)
        segmenter = Segmenter(models["sam2"], args.device)
        truth = PackedMasks(data["masks"], tuple(hw))

        def detect(i):
            # The detector runs (its cost counts); its random boxes are replaced by the true ones, so SAM 2 tracks
            # the scene's objects, as many as SAM 3 is capped at.
            detector(frames[i])
            return [Detection(_box(m), 1.0, LABELS[k % len(LABELS)]) for k, m in enumerate(truth[:, i]) if m.any()]

        def run(count):
            segmenter.open(lambda i: frames[i], count, hw)
            return sam2_video(segmenter, detect, count, hw, args.keyframe_every)
    cuda = args.device.startswith("cuda")
    with torch.no_grad():
        run(1)  # warm-up
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated() / 2**20
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM)
            base = _rss_mb("VmRSS")
        t0, c0 = time.perf_counter(), time.process_time()
        tracklets = run(n)
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda else _rss_mb("VmHWM")) - base
    masks = np.stack([t.masks for t in tracklets]) if tracklets else np.zeros((0, n, data["masks"].shape[-1]), np.uint8)
    t1, c1 = time.perf_counter(), time.process_time()
    lift_tracks(PackedMasks(masks, tuple(hw)), data["depth"], data["conf"], data["pointmaps"], data["cam2world"],
                data["timestamps"], [0.0, 0.0, 1.0])
    lift_wall, lift_cpu = time.perf_counter() - t1, time.process_time() - c1
    print(json.dumps({"variant": args.child, "frames": n, "objects": len(tracklets), "wall": wall, "cpu": cpu,
                      "peak_mb": peak, "lift_wall": lift_wall, "lift_cpu": lift_cpu}))


def speed(args) -> None:
    w, h = (int(v) for v in args.size.split("x"))
    _, truth = generate(SynthConfig(seed=args.seed, frames=args.frames, width=w, height=h))
    sa, ta = truth.scene_arrays, truth.tracks_arrays
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "scene.npz", frames=sa["frames"], depth=sa["depth"], conf=sa["conf"], pointmaps=sa["pointmaps"],
                 cam2world=sa["cam2world"], timestamps=sa["timestamps"], masks=ta["masks"], n_obj=len(truth.objects))
        models = (build_full if args.full else build_standin)(tmp / "models")
        (tmp / "models.json").write_text(json.dumps(models))
        results: dict[str, list[dict]] = {"gdino-sam2": [], "sam3": []}
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for r in range(args.repeats):
            order = ["gdino-sam2", "sam3"] if r % 2 == 0 else ["sam3", "gdino-sam2"]
            for variant in order:
                cmd = [sys.executable, __file__, "--child", variant, "--models", str(tmp / "models.json"),
                       "--scene", str(tmp / "scene.npz"), "--device", args.device,
                       "--keyframe-every", str(args.keyframe_every)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
                results[variant].append(json.loads(out.strip().splitlines()[-1]))
    sizes = "full architectures" if args.full else "CPU stand-ins (test architectures at 224x224)"
    print(f"track speed: {args.frames} frames {w}x{h}, {len(truth.objects)} objects, {sizes}, device {args.device}, "
          f"{args.repeats} repeats (medians), keyframe every {args.keyframe_every}")
    print("| backend | objects | masks s/frame wall | masks s/frame CPU | peak MB | lifting ms/frame wall / CPU |")
    print("| --- | --- | --- | --- | --- | --- |")
    for variant, rows in results.items():
        med = {k: float(np.median([r[k] for r in rows])) for k in ("wall", "cpu", "peak_mb", "lift_wall", "lift_cpu")}
        n = rows[0]["frames"]
        print(f"| {variant} | {rows[0]['objects']} | {med['wall'] / n:.3f} | {med['cpu'] / n:.3f} | "
              f"{med['peak_mb']:.0f} | {1000 * med['lift_wall'] / n:.0f} / {1000 * med['lift_cpu'] / n:.0f} |")


# ---------------------------------------------------------------------------------------------------- lift accuracy


def _lift_module(rev: str | None):
    if rev is None:
        from spatialctl.stages.track import lift

        return lift
    text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:stages/track/lift.py"], capture_output=True,
                          text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"lift_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"lift_{rev}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def lift_accuracy(args) -> None:
    from test_track_lift import _box_iou_modulo_symmetry, _observed

    from spatialctl.box_metrics import aabb_iou

    versions = {"after": _lift_module(None)}
    if args.before_rev:
        versions = {"before": _lift_module(args.before_rev), **versions}
    h, w = 288, 384
    rows = []
    for seed in range(7):
        _, truth = generate(SynthConfig(seed=seed, frames=24, width=w, height=h))
        sa, ta, objects = truth.scene_arrays, truth.tracks_arrays, truth.objects
        masks = PackedMasks(ta["masks"], (h, w))
        for version, lift in versions.items():
            for name, cfg in (("exact", lift.LiftConfig(edge_rel=np.inf, extent_pct=0.0)),
                              ("default", lift.LiftConfig())):
                out = lift.lift_tracks(masks, sa["depth"], sa["conf"], sa["pointmaps"], sa["cam2world"],
                                       sa["timestamps"], [0, 0, 1], cfg)
                for o, ob in enumerate(objects):
                    size = max(ob["true_size"])
                    vis = np.flatnonzero(ta["visible"][o])
                    if len(vis) == 0 or np.median([masks[o:o + 1, n].sum() for n in vis]) < 300:
                        continue
                    full, whole = _observed(masks, sa["pointmaps"], sa["depth"], ta, o, size, (h, w))
                    if len(whole) == 0:
                        continue
                    completion = out.get("completion", ["extent"] * len(objects))[o]
                    err = np.linalg.norm(out["centroid"][o, whole] - ta["centroid"][o, whole], axis=1) / size
                    aabb = np.median([aabb_iou(out["aabb"][o, n], ta["aabb"][o, n]) for n in whole])
                    box = np.median([_box_iou_modulo_symmetry(out["box"][o, n], ta["box"][o, n], ob["kind"])
                                     for n in whole])
                    category = ("composites (cup, bottle)" if ob["kind"] == "composite" else "primitives") + \
                        (", observed" if full else ", far side never seen")
                    rows.append(dict(version=version, config=name, category=category, err=float(np.median(err)),
                                     aabb=float(aabb), box=float(box), completion=completion))
    print("lift accuracy: synth seeds 0-6, 24 frames 384x288, true masks and depth; per object: median centroid "
          "error / size over whole frames, median IoU")
    print("| version | config | objects | n | centroid error median / max | aabb IoU median / min | "
          "box IoU median / min | completion |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for category in sorted({r["category"] for r in rows}):
        for name in ("exact", "default"):
            for version in versions:
                sel = [r for r in rows if r["category"] == category and r["config"] == name and r["version"] == version]
                kinds = {}
                for r in sel:
                    kinds[r["completion"]] = kinds.get(r["completion"], 0) + 1
                e, a, b = (np.array([r[k] for r in sel]) for k in ("err", "aabb", "box"))
                print(f"| {version} | {name} | {category} | {len(sel)} | {np.median(e):.2%} / {e.max():.2%} | "
                      f"{np.median(a):.3f} / {a.min():.3f} | {np.median(b):.3f} / {b.min():.3f} | "
                      f"{', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--section", default="speed,lift")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="512x384")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keyframe-every", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full", action="store_true", help="the released architectures' sizes (GPU)")
    ap.add_argument("--before-rev", default=None, help="lift: also run lift.py as of this git revision")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--models", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--scene", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    sections = args.section.split(",")
    if "speed" in sections:
        speed(args)
    if "lift" in sections:
        lift_accuracy(args)


if __name__ == "__main__":
    main()
