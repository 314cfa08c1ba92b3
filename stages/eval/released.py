"""DSR-Bench and SpaceVista-Bench as released, for `eval run`: their rows, their media, and what each benchmark's
reference harness shows the model (which frames, at what resolution, with what text).

Every rule names the released file it follows. The prediction lines carry each benchmark's own truth fields, so
`eval qa PREDICTIONS` detects the benchmark and scores it by that benchmark's rules.

DSR-Bench. TencentARC/DSR_Suite README ("Benchmark Evaluation"): `benchmark.parquet` (HF dataset
TencentARC/DSR_Suite-Data), videos at PATH_TO_VIDEO_ROOT/<videoID>.mp4 (Koala-36M clips, published as URLs only),
run through the repository's VLMEvalKit copy as ``run.py --data Spatial-Reasoning --model
Qwen2.5-VL-7B-Instruct-ForVideo``. Files read at Tiamat-Tech/DSR_Suite @ 56a60bc (a fork of TencentARC/DSR_Suite;
these files are unchanged since its first commit 1bfe8e3), under model/qwen-vl-finetune/:

- VLMEvalKit_mine/vlmeval/dataset/spatial_reasoning.py: ``index`` = row number; the user turn is an empty text,
  the video, ``FRAMES_TMPL_NOSUB``, then ``"Question: {question}\\n{options joined by newlines}\\nAnswer: "``.
- VLMEvalKit_mine/run.py: the dataset is built with ``nframe=32``; vlmeval/inference_video.py then sets the
  model's nframe to 32 and its fps to None, so the video goes to qwen-vl-utils as ``nframes`` (the dataset's
  own ``save_video_frames`` indices are not used for a VIDEO_LLM).
- VLMEvalKit_mine/vlmeval/vlm/qwen2_vl/model.py (``_prepare_content``): ``nframes`` = 32, or the video's frame
  count rounded down to even when it has fewer; the processor's own chat template (Qwen's default system turn);
  top_k=1 (greedy), max_new_tokens=2048.
- VLMEvalKit_mine/vlmeval/config.py, "Qwen2.5-VL-7B-Instruct-ForVideo": min_pixels 128*28*28, max_pixels
  768*28*28, total_pixels 24576*28*28.
- qwen-vl-utils/src/qwen_vl_utils/vision_process.py (0.0.11, vendored): nframes rounded to a multiple of 2; frames
  ``round(linspace(0, n - 1, nframes))``; per-frame pixel cap min(max_pixels, max(min(768*28*28, total_pixels /
  nframes * 2), 1.05 * min_pixels)); smart_resize by 28. No fps reaches the processor, so Qwen2.5-VL's processor
  takes its default 2 fps (1 s per temporal patch).

SpaceVista-Bench. PeiwenSun2000/SpaceVista @ 920a9b7, eval/README.md and eval/evaluate_api_video.py (the
harness that sends the frames as a video; eval/evaluate_api.py applies the same rules but sends separate images):

- the benchmark JSON (a list; HF dataset SpaceVista/SpaceVista-Bench): ``id``, ``question``, ``answer``,
  ``videos`` ([[frame paths]]), ``input_type``, ``annotations``, ``metadata`` {category, scale, original_type}.
- frames: all when there are at most ``--num_frames`` (16), else ``linspace(0, n - 1, 16, dtype=int)``; visual
  prompts drawn on the full-size frames (`marks`), then the longest side resized to 448 (LANCZOS) when larger;
  the frames make a video at ``--fps 2``.
- text: ``question + "\\n\\n" + suffix`` by answer type (``classify_answer_type``: A-E is mc, a float numerical,
  else text), sent before the video; temperature 0, max_tokens 8196.
- result lines: id, input_type, category, scale, original_type, question, ground_truth, answer_type,
  num_frames_sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spatialctl import qa_format
from spatialctl.errors import SpatialctlError
from spatialctl.stages.eval import benches, marks

LAYOUTS = ("dsrbench", "spacevista")
REFERENCE_FRAMES = {"dsrbench": 32, "spacevista": 16}
REFERENCE_MAX_NEW_TOKENS = {"dsrbench": 2048, "spacevista": 8196}
HARNESS_FPS = 2.0  # DSR: Qwen2.5-VL's processor default; SpaceVista: evaluate_api_video.py --fps 2

FRAME_FACTOR = 2  # qwen-vl-utils
DSR_MIN_PIXELS = 128 * 28 * 28
DSR_MAX_PIXELS = 768 * 28 * 28
DSR_TOTAL_PIXELS = 24576 * 28 * 28
QWEN_UTILS_VIDEO_MAX_PIXELS = 768 * 28 * 28
DSR_PROMPT = ("\nThese are the frames of a video. Select the best answer to the following multiple-choice question "
              "based on the video. Respond with only the letter (A, B, C, or D) of the correct option.\n")

SPACEVISTA_MAX_SIZE = 448
_THINK = "Please provide the thinking process within the <think> </think> tags.\n"
SPACEVISTA_SUFFIX = {
    "mc": _THINK + "Please provide only the single option letter (e.g., A, B, C, D, etc.) within the <answer> "
                   "</answer> tags.",
    "numerical": _THINK + "Please provide the numerical value (e.g., 42 or 3.14) within the <answer> </answer> tags.",
    "text": _THINK + "Please provide the answer within the <answer> </answer> tags.",
}


@dataclass
class BenchItem:
    """One question as its harness poses it: the user's text verbatim, where the media goes, the frames."""

    id: str
    prompt: str
    line: dict  # the benchmark's own truth fields, written beside the prediction
    video: str | None = None  # DSR: the video file, sampled by `pick`
    pick: Callable[[int], np.ndarray] | None = None
    frame_paths: list[str] = field(default_factory=list)  # SpaceVista: the sampled frames, resolved
    marks: list[dict] = field(default_factory=list)  # SpaceVista: visual prompts, on sampled positions
    text_first: bool = False


# ---------------------------------------------------------------------------------------------- DSR-Bench


def dsr_frame_indices(n_frames: int, nframe: int = REFERENCE_FRAMES["dsrbench"]) -> np.ndarray:
    """The frames DSR Suite's VLMEvalKit run gives Qwen2.5-VL from a video of `n_frames`: `nframe`, or the frame
    count rounded down to even when shorter, rounded to even (qwen-vl-utils), at round(linspace(0, n - 1, k))."""
    k = nframe if n_frames >= nframe else n_frames // FRAME_FACTOR * FRAME_FACTOR
    k = round(k / FRAME_FACTOR) * FRAME_FACTOR
    if not FRAME_FACTOR <= k <= n_frames:
        raise SpatialctlError(f"{n_frames} frames: qwen-vl-utils needs between {FRAME_FACTOR} and the video's frame "
                              f"count, got {k}")
    return np.round(np.linspace(0, n_frames - 1, k)).astype(int)


def dsr_max_pixels(n_frames: int) -> float:
    """Per-frame pixel cap qwen-vl-utils derives from the harness's min/max/total pixels for `n_frames`."""
    cap = max(min(QWEN_UTILS_VIDEO_MAX_PIXELS, DSR_TOTAL_PIXELS / n_frames * FRAME_FACTOR), int(DSR_MIN_PIXELS * 1.05))
    return min(DSR_MAX_PIXELS, cap)


def dsr_prompt(question: str, options: list[str]) -> str:
    return DSR_PROMPT + "Question: {}\nAnswer: ".format(question + "\n" + "\n".join(options))


def dsr_items(qa_path: str, videos: str, nframe: int) -> list[BenchItem]:
    """DSR-Bench's rows (videoID, question, options, answer; ``type`` kept when present) with their videos; every
    video is checked before anything else runs."""
    rows = qa_format.read_rows(qa_path)
    if not rows:
        raise SpatialctlError(f"{qa_path}: no records")
    items, missing = [], []
    for n, row in enumerate(rows):
        lacking = [k for k in ("videoID", "question", "options", "answer") if not isinstance(row, dict) or k not in row]
        if lacking:
            raise SpatialctlError(f"{qa_path}: row {n} lacks {lacking[0]!r} (DSR-Bench rows: videoID, question, "
                                  "options, answer)")
        options = benches.parse_options(row["options"])
        if not options:
            raise SpatialctlError(f"{qa_path}: row {n} has no options (DSR-Bench is multiple choice)")
        video = os.path.join(videos, f"{row['videoID']}.mp4")
        if not os.path.isfile(video):
            missing.append(video)
        line = {"index": n, "videoID": row["videoID"], "question": row["question"], "options": options,
                "answer": str(row["answer"]).strip(), "type": str(row.get("type") or "all")}
        items.append(BenchItem(id=benches.row_id(row, n), prompt=dsr_prompt(str(row["question"]), options), line=line,
                               video=video, pick=lambda total, k=nframe: dsr_frame_indices(total, k)))
    if missing:
        raise SpatialctlError(
            f"{qa_path}: video {missing[0]} does not exist ({len(missing)} of {len(rows)} missing); DSR-Bench's videos "
            "are Koala-36M clips published as URLs: download them by videoID (TencentARC/DSR_Suite README: Panda-70M's "
            f"dataset_dataloading) into {videos}/<videoID>.mp4")
    _check_unique(items, qa_path)
    return items


# ---------------------------------------------------------------------------------------------- SpaceVista-Bench


def spacevista_frame_indices(n_frames: int, num_frames: int = REFERENCE_FRAMES["spacevista"]) -> list[int]:
    """SpaceVista's rule: every frame when there are at most `num_frames`, else linspace(0, n - 1, k, dtype=int)."""
    if n_frames <= num_frames:
        return list(range(n_frames))
    return np.linspace(0, n_frames - 1, num_frames, dtype=int).tolist()


def spacevista_answer_type(answer) -> str:
    """``classify_answer_type``: a letter A-E is mc, anything float() reads is numerical, else text."""
    text = str(answer).strip()
    if text in ("A", "B", "C", "D", "E"):
        return "mc"
    try:
        float(text)
    except ValueError:
        return "text"
    return "numerical"


def spacevista_prompt(question: str, answer_type: str) -> str:
    return f"{question}\n\n{SPACEVISTA_SUFFIX[answer_type]}"


def _resolve(path: str, root: str) -> str:
    return path if os.path.isabs(path) else os.path.join(root, path)


def spacevista_items(qa_path: str, root: str, num_frames: int) -> list[BenchItem]:
    """SpaceVista-Bench entries with their sampled frames (relative paths resolved against `root`) and visual
    prompts; every sampled frame and mask file is checked before anything else runs."""
    rows = qa_format.read_rows(qa_path)
    if not rows:
        raise SpatialctlError(f"{qa_path}: no records")
    items = []
    for n, entry in enumerate(rows):
        lacking = [k for k in ("id", "question", "answer", "videos", "metadata")
                   if not isinstance(entry, dict) or k not in entry]
        if lacking:
            raise SpatialctlError(f"{qa_path}: entry {n} lacks {lacking[0]!r} (SpaceVista-Bench entries: id, question, "
                                  "answer, videos, input_type, annotations, metadata)")
        videos, meta = entry["videos"], entry["metadata"]
        if not (isinstance(videos, list) and videos and isinstance(videos[0], list) and videos[0]):
            raise SpatialctlError(f"{qa_path}: entry {n} has no frames (videos must be [[frame paths]])")
        if not isinstance(meta, dict) or any(k not in meta for k in ("category", "scale", "original_type")):
            raise SpatialctlError(f"{qa_path}: entry {n} metadata lacks category/scale/original_type")
        all_paths = [str(p) for p in videos[0]]
        sampled = spacevista_frame_indices(len(all_paths), num_frames)
        paths = [_resolve(all_paths[i], root) for i in sampled]
        for p in paths:
            if not os.path.isfile(p):
                raise SpatialctlError(f"{qa_path}: entry {n} frame {p} does not exist (frame paths are read relative "
                                      "to --videos, the folder SpaceVista-Bench's image_data.tar.gz unpacks into)")
        drawn = marks.from_entry(entry, all_paths, sampled, lambda p: _resolve(p, root), f"{qa_path}: entry {n}")
        kind = spacevista_answer_type(entry["answer"])
        line = {"input_type": entry.get("input_type", ""), "category": meta["category"], "scale": meta["scale"],
                "original_type": meta["original_type"], "question": entry["question"],
                "ground_truth": entry["answer"], "answer_type": kind, "num_frames_sent": len(sampled)}
        items.append(BenchItem(id=str(entry["id"]), prompt=spacevista_prompt(str(entry["question"]), kind), line=line,
                               frame_paths=paths, marks=drawn, text_first=True))
    _check_unique(items, qa_path)
    return items


def spacevista_frames(item: BenchItem) -> np.ndarray:
    """The item's frames as the harness sends them: full size, visual prompts drawn, longest side <= 448."""
    from PIL import Image

    images = []
    for p in item.frame_paths:
        try:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        except OSError as e:
            raise SpatialctlError(f"{p}: cannot read image ({type(e).__name__})") from None
    images = [marks.fit_longest(im, SPACEVISTA_MAX_SIZE) for im in marks.draw(images, item.marks)]
    if len({im.size for im in images}) != 1:
        raise SpatialctlError(f"record {item.id}: frames differ in size ({sorted({im.size for im in images})}); one video "
                              "needs one frame size")
    return np.stack([np.asarray(im) for im in images])


# ---------------------------------------------------------------------------------------------- common


def read(layout: str, qa_path: str, media_root: str, num_frames: int) -> list[BenchItem]:
    return {"dsrbench": dsr_items, "spacevista": spacevista_items}[layout](qa_path, media_root, num_frames)


def _check_unique(items: list[BenchItem], qa_path: str) -> None:
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise SpatialctlError(f"{qa_path}: record ids are not unique")
