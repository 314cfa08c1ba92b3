"""QA records -> (image, chat token ids with answer labels) examples for the three stages.

The image of a record is its frame (multi-turn records ask about one frame, ``metadata["frame"]``; otherwise the
first of ``frames``), taken from the exported JPEGs (``images``), else the scene store, else the video.
The chat is ChatML (Qwen2.5's format); the image's projected tokens go right after the first ``user`` header,
LLaVA style, and only the answers (and their closing ``<|im_end|>``) are supervised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from spatialctl import qa_format, store
from spatialctl.errors import SpatialctlError

SYSTEM = "You are a helpful assistant."
IGNORE = -100


@dataclass
class Example:
    record_id: str
    frame: np.ndarray  # (H, W, 3) uint8
    pre_ids: list[int]  # tokens before the image
    post_ids: list[int]  # tokens after the image
    post_labels: list[int]  # IGNORE except answer tokens


def record_frame(record: qa_format.QARecord) -> int:
    if "frame" in (record.metadata or {}):
        return int(record.metadata["frame"])
    if record.frames:
        return int(record.frames[0])
    return 0


class FrameSource:
    """Reads one frame of a record, caching opened stores and decoded videos."""

    def __init__(self, qa_dir: str, scenes_dir: str | None = None):
        self.qa_dir = Path(qa_dir)
        self.scenes_dir = scenes_dir
        self._stores: dict[str, store.SceneStore] = {}
        self._videos: dict[str, np.ndarray] = {}

    def _path(self, p: str) -> str:
        if os.path.isabs(p) or "://" in p:
            return p
        # make-qa writes paths as it was given them: relative to the QA file's folder or to its working directory.
        beside = self.qa_dir / p
        return str(beside) if beside.exists() or not os.path.exists(p) else p

    def _scene_url(self, record) -> str | None:
        if self.scenes_dir is not None or os.path.isabs(record.scene):
            try:
                return store.resolve_scene(record.scene, self.scenes_dir)
            except SpatialctlError:
                return None
        if record.video:  # synth and reconstruct keep the store beside the video
            url = str(Path(self._path(record.video)).parent / "scene.zarr")
            if store.exists(url) and store.node_header(url) is not None:
                return url
        return None

    def __call__(self, record: qa_format.QARecord) -> np.ndarray:
        f = record_frame(record)
        if record.images:
            names = [Path(p).stem for p in record.images]
            path = self._path(record.images[names.index(f"{f:06d}")] if f"{f:06d}" in names else record.images[0])
            try:
                with Image.open(path) as im:
                    return np.asarray(im.convert("RGB"))
            except OSError as e:
                raise SpatialctlError(f"{path}: cannot read image of record {record.id} ({type(e).__name__})") from e
        url = self._scene_url(record)
        if url is not None:
            if url not in self._stores:
                self._stores[url] = store.open_scene(url)
            s = self._stores[url]
            if not 0 <= f < s.n_frames:
                raise SpatialctlError(f"{url}: record {record.id} asks for frame {f} of {s.n_frames}")
            return s.read("frames", [f])[0]
        if record.video:
            from spatialctl.video import read_video

            path = self._path(record.video)
            if path not in self._videos:
                self._videos[path] = read_video(path)[0]
            frames = self._videos[path]
            if not 0 <= f < len(frames):
                raise SpatialctlError(f"{path}: record {record.id} asks for frame {f} of {len(frames)}")
            return frames[f]
        raise SpatialctlError(f"record {record.id}: no images, scene store or video for scene {record.scene!r}; "
                              "pass --scenes")


def turns_for_stage(record: qa_format.QARecord, stage: int) -> list[dict]:
    """Stage 1 aligns on one turn (the last: a multi-turn sample's scene description); later stages use all."""
    turns = record.turns()
    return turns[-1:] if stage == 1 else turns


def select_records(records: list[qa_format.QARecord], stage: int, path: str) -> list[qa_format.QARecord]:
    if stage == 3:
        chosen = [r for r in records if r.family == "multiturn"]
        if not chosen:
            raise SpatialctlError(f"{path}: stage 3 needs hierarchical multi-turn records "
                                  "(make-qa --families multiturn)")
        return chosen
    return records


def encode_chat(tokenizer, turns: list[dict], max_length: int) -> tuple[list[int], list[int], list[int]]:
    """ChatML token ids split at the image: (pre_ids, post_ids, post_labels)."""

    def enc(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    pre = enc(f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n")
    ids: list[int] = []
    labels: list[int] = []
    budget = max(1, max_length - len(pre))
    for i, t in enumerate(turns):
        prompt = qa_format.prompt_text(t["question"], t.get("options"), t["answer_type"])
        head = ("\n" if i == 0 else "<|im_start|>user\n") + f"{prompt}<|im_end|>\n<|im_start|>assistant\n"
        head_ids = enc(head)
        answer_ids = enc(qa_format.answer_text(t["answer"], t["answer_type"]) + "<|im_end|>")
        tail_ids = enc("\n")
        turn_ids = head_ids + answer_ids + tail_ids
        if ids and len(ids) + len(turn_ids) > budget:
            break  # whole turns only: a cut turn would teach a cut answer
        ids += turn_ids
        labels += [IGNORE] * len(head_ids) + answer_ids + [IGNORE] * len(tail_ids)
    return pre, ids[:budget], labels[:budget]


def build_examples(records, stage: int, tokenizer, frames: FrameSource, max_length: int) -> list[Example]:
    out = []
    for r in records:
        pre, post, labels = encode_chat(tokenizer, turns_for_stage(r, stage), max_length)
        if all(v == IGNORE for v in labels):
            continue  # truncated past every answer: nothing to learn from
        out.append(Example(r.id, frames(r), pre, post, labels))
    return out
