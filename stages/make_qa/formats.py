"""Writing records: ShareGPT/LLaVA or Qwen2.5-VL JSON lines, or parquet; one file per split; frame export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from spatialctl.qa_format import QARecord, write_qa

from .scene import SceneData

FORM = {"sharegpt": "sharegpt", "qwen": "qwen", "parquet": "sharegpt"}


def output_paths(config) -> dict[str, str]:
    """split -> path. Parquet output always ends in .parquet; with --split, ``qa.jsonl`` becomes
    ``qa.train.jsonl`` and ``qa.bench.jsonl``."""
    out = Path(config.out)
    suffix = ".parquet" if config.format == "parquet" else (out.suffix or ".jsonl")
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    if config.split > 0:
        return {s: str(out.with_name(f"{stem}.{s}{suffix}")) for s in ("train", "bench")}
    return {"all": str(out.with_name(stem + suffix))}


def default_frames_dir(config) -> str:
    """Where one-frame questions' images go without --frames-dir: ``<out stem>.frames`` beside the output."""
    out = Path(config.out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return str(out.with_name(stem + ".frames"))


def write_outputs(records: list[QARecord], config) -> dict[str, str]:
    paths = output_paths(config)
    for split, path in paths.items():
        chosen = records if split == "all" else [r for r in records if r.metadata.get("split") == split]
        write_qa(path, chosen, FORM[config.format])
    return paths


def pick_frames(frames: list[int], keep: list[int], limit: int) -> list[int]:
    """At most ``limit`` frames spread over ``frames``, always keeping the ones in ``keep`` (references)."""
    keep = sorted(set(keep) & set(frames))
    if len(frames) <= limit:
        return list(frames)
    rest = max(limit - len(keep), 0)
    idx = np.round(np.linspace(0, len(frames) - 1, rest)).astype(int) if rest else []
    return sorted(set(keep) | {frames[i] for i in idx})


def export_frames(scene: SceneData, records: list[QARecord], frames_dir: str, limit: int) -> None:
    """Write the frames records use as JPEGs (``frames_dir/<scene>/<index>.jpg``) and list them in ``images``."""
    if scene.frame_reader is None:
        return
    folder = Path(frames_dir) / scene.scene_id
    folder.mkdir(parents=True, exist_ok=True)
    for r in records:
        m = r.metadata
        keep = [int(f) for f in [*m.get("key_frames", []), *m.get("ref_frames", []),
                                 *([m["frame"]] if "frame" in m else [])]]
        chosen = pick_frames(r.frames, keep, limit)
        paths = []
        for f in chosen:
            path = folder / f"{f:06d}.jpg"
            if not path.exists():
                Image.fromarray(scene.frame_reader(f)).save(path, quality=95)
            paths.append(str(path))
        r.images = paths
