"""`eval run`: answer QA records with Qwen2.5-VL (optionally with a train-gsm adapter), greedy, batched.

Frames come from the record's scene store (its ``frames``, thinned to ``num_frames``) when ``scenes_dir``
holds it, else from its ``video`` (``num_frames`` spread over the record's ``timestamps`` or the whole video).
With ``--layout vsibench|dsrbench|spacevista`` the records are a benchmark's released file and the frames and
text are what that benchmark's reference harness gives the model (`released` for DSR-Bench and SpaceVista-Bench).
Each answer is appended to the predictions JSONL and flushed as soon as its batch is done, so a killed run
resumes where it stopped: ids already in the file are skipped. A sidecar ``<out>.run.json`` records the
config; resuming with another model, adapter or prompt setting is refused (it would mix two models' answers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialctl import gsm, io, jobs, qa_format, qwen, store, vega
from spatialctl.config import check_fields, device_opt, opt, overwrite_opt, quiet_opt
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.hub import resolve_model_dir
from spatialctl.stages.eval import released

log = logging.getLogger("spatialctl.eval")

STAGE = "eval-run"
# Frames per question by layout. vsibench: lmms-eval's qwen2_5_vl (the harness VSI-Bench's code runs) keeps
# max_num_frames = 32 frames at np.linspace(0, n - 1, 32).astype(int) of the whole video. dsrbench, spacevista:
# their released harnesses (sources in `released`).
REFERENCE_FRAMES = {"ours": 8, "vsibench": 32, **released.REFERENCE_FRAMES}
REFERENCE_MAX_NEW_TOKENS = {"ours": 16, "vsibench": 16, **released.REFERENCE_MAX_NEW_TOKENS}
LAYOUTS = ("ours", "vsibench", *released.LAYOUTS)


@dataclass
class RunnerConfig:
    out: str = opt(help="Predictions JSONL; appended per batch, so a rerun resumes.", runtime=True)
    # hub id or folder; "": the adapter's base model, else qwen.DEFAULT_BASE
    model: str = opt("", "Qwen2.5-VL hub id or folder. Default: the adapter's base model, else "
                     "Qwen/Qwen2.5-VL-7B-Instruct.")
    adapter: str | None = opt(None, "A train-gsm adapter folder (LoRA or full weights, optionally + GSM, fusion, "
                              "SpatialBoost tower); one trained with --views N is asked with N views, not --frames.")
    num_frames: int = opt(0, "Frames per question (the record's frames thinned, or spread over the video); 0: the "
                          "layout's reference (ours: 8, vsibench: 32, dsrbench: 32, spacevista: 16).", flag="--frames")
    scenes_dir: str | None = opt(None, "Folder of scene stores named by the records' `scene` (SCENES/NAME/scene.zarr "
                                 "or SCENES/NAME.zarr). Default: records are read from their video.", flag="--scenes")
    layout: str = opt("ours", "Layout of --qa: ours (make-qa records); or a benchmark's released file, its frames and "
                      "prompt as its reference harness gives them (--frames overrides the count): vsibench "
                      "(VIDEOS/<dataset>/<scene_name>.mp4, 32 frames), dsrbench (benchmark.parquet, "
                      "VIDEOS/<videoID>.mp4, 32 frames), spacevista (the bench .json, frame paths under VIDEOS, 16 "
                      "frames).", choices=LAYOUTS)
    videos: str | None = opt(None, "The benchmark's media folder (vsibench, dsrbench: its videos; spacevista: the "
                             "folder its frame paths are relative to). Default: the folder of --qa.")
    batch_size: int = opt(1, "Questions per generate call.", runtime=True)
    max_new_tokens: int = opt(0, "Longest answer, in tokens (greedy decoding); 0: the layout's reference (ours, "
                              "vsibench: 16, dsrbench: 2048, spacevista: 8196).")
    device: str = device_opt()
    overwrite: bool = overwrite_opt("Start OUT afresh instead of resuming.")
    quiet: bool = quiet_opt()

    def __post_init__(self):
        if not self.num_frames:
            self.num_frames = REFERENCE_FRAMES.get(self.layout, 0)
        if not self.max_new_tokens:
            self.max_new_tokens = REFERENCE_MAX_NEW_TOKENS.get(self.layout, 0)

    def validate(self) -> None:
        check_fields(self)
        if self.num_frames < 1 or self.batch_size < 1 or self.max_new_tokens < 1:
            raise UsageError("--frames, --batch-size and --max-new-tokens must be >= 1")


# ---------------------------------------------------------------------------------------------- frames


def sample_video(path: str, num_frames: int, timestamps: list[float] | None = None, *, by_index: bool = False,
                 pick: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`num_frames` RGB frames spread over a video (or over the span of `timestamps`), decoding once and keeping
    only the chosen frames in memory. ``by_index``: frames ``linspace(0, n - 1, num_frames).astype(int)`` of the
    n frames, as lmms-eval samples (VSI-Bench); ``pick(n)``: the frame indices a benchmark's own rule gives for
    a video of n frames. Returns (frames (T,H,W,3) uint8, their times (T,))."""
    import av

    if not os.path.isfile(path):
        raise SpatialctlError(f"{path}: no such video file")
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            times = []
            for packet in container.demux(stream):
                if packet.pts is not None and packet.size:
                    times.append(float(packet.pts * stream.time_base))
    except (av.error.FFmpegError, IndexError, OSError) as e:
        raise SpatialctlError(f"{path}: cannot read video ({type(e).__name__})") from e
    if not times:
        raise SpatialctlError(f"{path}: no video frames")
    times = np.sort(np.asarray(times))
    times -= times[0]
    if by_index:
        pick = lambda n: np.linspace(0, n - 1, num_frames).astype(int)  # noqa: E731
    if pick is not None:
        targets = times[np.asarray(pick(len(times)), dtype=int)]
    elif timestamps:
        lo, hi = min(timestamps), max(timestamps)
        targets = np.linspace(lo, hi, num_frames) if len(timestamps) > num_frames else np.asarray(sorted(timestamps))
    else:
        targets = np.linspace(0.0, times[-1], min(num_frames, len(times)))
    wanted = sorted({int(np.argmin(np.abs(times - t))) for t in targets})
    keep = set(wanted)
    frames, kept_times = [], []
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            t0 = None
            for i, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else float(i)
                t0 = t if t0 is None else t0
                if i in keep:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    kept_times.append(t - t0)
                if i >= wanted[-1]:
                    break
    except (av.error.FFmpegError, OSError) as e:
        raise SpatialctlError(f"{path}: cannot decode video ({type(e).__name__})") from e
    if not frames:
        raise SpatialctlError(f"{path}: no frames decoded")
    return np.stack(frames), np.asarray(kept_times)


def video_example(record: qa_format.QARecord, video_path: str, tokenizer, video_cfg: qwen.VideoProcessorConfig,
                  num_frames: int, prompt_suffix: str = "", by_index: bool = False, features=None,
                  image_cfg: qwen.VideoProcessorConfig | None = None) -> dict:
    """The model inputs of one record from its video (no geometry: a GSM adapter needs a scene store);
    ``features(frames)`` adds an encoder's features for an encoder-fusion adapter; with ``image_cfg`` the frames
    are separate views (images), for a multi-view adapter."""
    frames, times = sample_video(video_path, num_frames, record.timestamps or None, by_index=by_index)
    example = gsm.frames_example(record, frames, times, tokenizer, video_cfg, prompt_suffix=prompt_suffix,
                                 image_cfg=image_cfg)
    return gsm.add_gen_tokens(example, features(frames), video_cfg) if features is not None else example


# ---------------------------------------------------------------------------------------------- resume


def vsibench_records(qa_path: str, videos: str) -> list[qa_format.QARecord]:
    """VSI-Bench's released rows (id, dataset, scene_name, question_type, question, options, ground_truth) as
    records whose video is VIDEOS/<dataset>/<scene_name>.mp4 (the layout lmms-eval's vsibench task reads)."""
    from spatialctl.stages.eval import benches

    rows = qa_format.read_rows(qa_path)
    items, _ = benches.load_items(qa_path, "vsibench")
    records = []
    for n, (row, item) in enumerate(zip(rows, items, strict=True)):
        if not row.get("dataset") or not row.get("scene_name"):
            raise SpatialctlError(f"{qa_path}: row {n} lacks dataset/scene_name (VSI-Bench layout)")
        video = os.path.join(videos, str(row["dataset"]), f"{row['scene_name']}.mp4")
        if not os.path.isfile(video):
            raise SpatialctlError(f"{qa_path}: row {n} video {video} does not exist")
        # VSI-Bench writes options as "A. chair"; the prompt letters them itself
        options = [o.split(". ", 1)[1] if o[:3] == f"{qa_format.LETTERS[i]}. " else o
                   for i, o in enumerate(item["options"] or [])] or None
        records.append(qa_format.QARecord(
            id=item["id"], scene=str(row["scene_name"]), question=item["question"], answer=item["answer"],
            answer_type=item["answer_type"], family=str(row["dataset"]), type=item["task"], options=options,
            video=video))
    return records


def read_done(path: Path) -> set[str]:
    """Ids already answered; a torn last line (a run killed mid-write) is dropped from the file."""
    if not path.exists():
        return set()
    lines = path.read_text().splitlines(keepends=True)
    good, done = [], set()
    for n, line in enumerate(lines):
        try:
            row = json.loads(line)
            done.add(str(row["id"]))
            good.append(line if line.endswith("\n") else line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            if n != len(lines) - 1:
                raise SpatialctlError(f"{path}: line {n + 1} is not a prediction; not resuming over it") from None
    if "".join(good) != "".join(lines):
        io.write_text(path, "".join(good))
    return done


def _check_owned(out: Path) -> None:
    """Resuming rewrites OUT and --overwrite deletes it: only a predictions file this runner wrote (its
    ``.run.json`` record beside it) may be touched; an empty file holds nothing to lose."""
    if out.exists() and not out.with_name(out.name + ".run.json").is_file() and not (out.is_file() and
                                                                                      out.stat().st_size == 0):
        raise UsageError(f"{out}: exists and eval run did not write it (no {out.name}.run.json beside it); "
                         "refusing to replace or append to it (choose another --out or move it away)")


def _check_sidecar(out: Path, config: RunnerConfig, qa_path: str) -> None:
    sidecar = out.with_name(out.name + ".run.json")
    prov = jobs.provenance(STAGE, config, [qa_path])
    if sidecar.exists() and out.exists() and not config.overwrite:
        try:
            old = json.loads(sidecar.read_text())
        except json.JSONDecodeError:
            raise SpatialctlError(f"{sidecar}: unreadable run record") from None
        if old.get("config_hash") != prov["config_hash"]:
            raise SpatialctlError(f"{out}: written with another config (model/adapter/frames/tokens); "
                                  "pass --overwrite or another --out")
        return
    io.write_json(sidecar, prov, sort_keys=False, default=str)


# ---------------------------------------------------------------------------------------------- model


def _trained_max_pixels(adapter: str) -> int | None:
    """train-gsm's --max-pixels for the adapter (its train_config.json), None when it used the model's setting."""
    path = os.path.join(adapter, "train_config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            value = json.load(f)["config"].get("max_pixels", 0)
        return int(value) or None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SpatialctlError(f"{path}: unreadable ({type(e).__name__})") from None


def _base(config: RunnerConfig) -> str:
    return config.model or (gsm.adapter_base(config.adapter) if config.adapter else qwen.DEFAULT_BASE)


def load(config: RunnerConfig):
    """(GeometryVLM wrapper, tokenizer, video config, GSM config or None) on the chosen device."""
    import torch

    base = _base(config)
    device = str(resolve_device(config.device))
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model_dir = resolve_model_dir(base)
    tokenizer = qwen.load_tokenizer(base)
    tokenizer.padding_side = "left"
    model = qwen.load_model(base, dtype=dtype, device=device)
    model.eval()
    if config.adapter:
        wrapped = gsm.load_adapter(model, config.adapter, tokenizer=tokenizer)
        wrapped.to(device)
        loaded = gsm.load_gsm_config(config.adapter)
        gsm_cfg = loaded[0] if loaded else None
    else:
        wrapped = gsm.GeometryVLM(model, None, None).eval()
        gsm_cfg = None
    # our records are asked at the resolution the adapter trained at; a released layout's harness sets its own
    trained = _trained_max_pixels(config.adapter) if config.adapter and config.layout == "ours" else None
    video_cfg = qwen.VideoProcessorConfig.from_model_dir(model_dir, max_pixels=trained)
    return wrapped, tokenizer, video_cfg, gsm_cfg


def _example(record, config, tokenizer, video_cfg, gsm_cfg, qa_dir: Path, prompt_suffix: str = "",
             genfeat: bool = False, image_cfg: qwen.VideoProcessorConfig | None = None) -> dict:
    scene_url = None
    if config.layout == "ours" and (config.scenes_dir is not None or os.path.isabs(record.scene)):
        try:
            scene_url = store.resolve_scene(record.scene, config.scenes_dir)
        except SpatialctlError:
            scene_url = None
    if scene_url is not None:
        return gsm.prepare_example(record, scene_url, tokenizer, video_cfg, gsm_cfg, num_frames=config.num_frames,
                                   with_answer=False, prompt_suffix=prompt_suffix, genfeat=genfeat,
                                   image_cfg=image_cfg)
    if gsm_cfg is not None or (genfeat and not callable(genfeat)):
        raise SpatialctlError(f"record {record.id}: the adapter's geometry module or VEGA fusion needs the scene store of "
                              f"{record.scene!r}; pass --scenes")
    if not record.video:
        raise SpatialctlError(f"record {record.id}: no scene store found for {record.scene!r} and no video; "
                              "pass --scenes")
    video = record.video if os.path.isabs(record.video) else str(qa_dir / record.video)
    return video_example(record, video, tokenizer, video_cfg, config.num_frames, prompt_suffix,
                         by_index=config.layout == "vsibench", features=genfeat or None, image_cfg=image_cfg)


def _bench_example(item: released.BenchItem, config: RunnerConfig, tokenizer, video_cfg: qwen.VideoProcessorConfig,
                   gsm_cfg, prompt_suffix: str = "", genfeat=False) -> dict:
    """The model inputs of one released-benchmark question: its harness's frames and text, verbatim."""
    if gsm_cfg is not None or (genfeat and not callable(genfeat)):
        raise SpatialctlError(f"record {item.id}: the adapter's geometry module or VEGA fusion needs a scene store; "
                              f"--layout {config.layout} has videos/frames only")
    frames = sample_video(item.video, 0, pick=item.pick)[0] if item.video else released.spacevista_frames(item)
    if config.layout == "dsrbench":  # the harness's per-frame pixel limits (qwen-vl-utils with its config)
        video_cfg = dataclasses.replace(video_cfg, min_pixels=released.DSR_MIN_PIXELS,
                                        max_pixels=released.dsr_max_pixels(len(frames)))
    # Both harnesses show the frames at 2 fps (Qwen's temporal positions follow the seconds per temporal patch).
    times = np.arange(len(frames)) / released.HARNESS_FPS
    record = qa_format.QARecord(id=item.id, scene="", question=item.prompt, answer="", answer_type="text",
                                family=config.layout, type="")
    example = gsm.frames_example(record, frames, times, tokenizer, video_cfg, prompt_suffix=prompt_suffix,
                                 text_first=item.text_first)
    return gsm.add_gen_tokens(example, genfeat(frames), video_cfg) if genfeat else example


def _bench_line(item: released.BenchItem, prediction: str, config: RunnerConfig) -> dict:
    return {"id": item.id, "prediction": prediction, **item.line, "model": config.model, "adapter": config.adapter}


def _line(record: qa_format.QARecord, prediction: str, config: RunnerConfig) -> dict:
    # The truth travels with the answer so `eval qa preds.jsonl` needs no --gt.
    return {"id": record.id, "prediction": prediction, "answer": record.answer, "answer_type": record.answer_type,
            "options": record.options, "type": record.type, "family": record.family, "scale": record.scale,
            "scene": record.scene, "unit": record.unit, "model": config.model, "adapter": config.adapter}


def run(config: RunnerConfig, qa_path: str, progress: Callable[[Iterable], Iterable] | None = None) -> jobs.Summary:
    """Answer every record of `qa_path` not yet in `config.out`: ``Summary.done`` / ``skipped`` are record ids
    answered now / already in the predictions file."""
    import torch

    config.validate()
    out_path = Path(config.out)
    _check_owned(out_path)
    media = config.videos or str(Path(qa_path).parent)
    bench = config.layout in released.LAYOUTS
    if bench:
        records = released.read(config.layout, qa_path, media, config.num_frames)
        if config.layout == "dsrbench" and qwen.model_family(resolve_model_dir(_base(config))) != "qwen2_5_vl":
            raise UsageError("--layout dsrbench: DSR Suite's harness sets frame resolution for Qwen2.5-VL only "
                             "(VLMEvalKit config Qwen2.5-VL-7B-Instruct-ForVideo); pass a Qwen2.5-VL --model")
    else:
        records = vsibench_records(qa_path, media) if config.layout == "vsibench" else qa_format.read_qa(qa_path)
    # before anything is written or replaced: the adapter's view count decides the frames (and the run record)
    image_cfg = None
    if config.adapter and (views := gsm.adapter_views(config.adapter)):
        if bench:
            raise UsageError(f"--adapter {config.adapter}: a multi-view adapter (trained with --views {views}) answers "
                             f"from separate images; --layout {config.layout} shows its harness's video frames")
        if config.num_frames not in (views, REFERENCE_FRAMES.get(config.layout)):
            raise UsageError(f"--frames {config.num_frames}: --adapter {config.adapter} was trained with --views "
                             f"{views} and is asked with {views} views")
        # a multi-view adapter is asked as it was trained: its number of views, each a separate image
        image_cfg = qwen.VideoProcessorConfig.from_model_dir(resolve_model_dir(_base(config)), images=True,
                                                             max_pixels=_trained_max_pixels(config.adapter))
        config = dataclasses.replace(config, num_frames=views)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if config.overwrite and out_path.exists():
        out_path.unlink()
    _check_sidecar(out_path, config, qa_path)
    done = read_done(out_path)
    todo = [r for r in records if r.id not in done]
    summary = jobs.Summary(skipped=[r.id for r in records if r.id in done], outputs=[str(out_path)])
    if not todo:
        return summary
    model, tokenizer, video_cfg, gsm_cfg = load(config)
    prompt_suffix = gsm.adapter_prompt_suffix(config.adapter) if config.adapter else ""  # e.g. GRPO's format
    qa_dir = Path(qa_path).parent
    genfeat = model.vega is not None  # the store's generative features, or an encoder's from the frames
    if genfeat and model.vega.cfg.encoder:
        genfeat = vega.EncoderFeatures(model.vega.cfg.encoder)
    batches = [todo[i:i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    with open(out_path, "a") as f, torch.inference_mode():
        for batch in (progress(batches) if progress else batches):
            examples = [_bench_example(r, config, tokenizer, video_cfg, gsm_cfg, prompt_suffix, genfeat) if bench
                        else _example(r, config, tokenizer, video_cfg, gsm_cfg, qa_dir, prompt_suffix, genfeat,
                                      image_cfg)
                        for r in batch]
            answers = model.answer(examples, tokenizer, max_new_tokens=config.max_new_tokens)
            for record, answer in zip(batch, answers, strict=True):
                line = _bench_line(record, answer, config) if bench else _line(record, answer, config)
                f.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                summary.done.append(record.id)
            f.flush()
            os.fsync(f.fileno())
    return summary
