"""track: open-vocabulary objects, video masks and 3D trajectories, as a scene store's ``tracks`` group.

Per scene, one of two backends finds objects and their masks in every frame:
- ``gdino-sam2``: Grounding DINO (or OWLv2) boxes on keyframes prompt SAM 2 video masks, propagated forward and
  backward (``propagate``);
- ``sam3``: SAM 3 with every label as a text prompt, detecting and tracking in one model, in chunks (``sam3``).
Then tracklets of one physical object are joined by mask IoU and 3D motion (``associate``); each object's masks are
lifted onto the world pointmap (``lift``) for centroids, boxes, velocities and a moving flag. ``--labels auto``
proposes each scene's labels from its frames first (``tagger``).

One scene store is one item; its output is ``<store>/tracks``, written atomically. A rerun with the same config
skips finished stores before any model is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from spatialctl import jobs, store
from spatialctl.config import check_fields, device_opt, opt, overwrite_opt, quiet_opt, shard_opt
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError, UsageError

from .associate import AssociationConfig, merge_tracklets
from .detect import AUTO, DETECTORS, Detector, parse_labels
from .lift import LiftConfig, lift_tracks
from .propagate import DEFAULT_SAM2, Segmenter, Tracklet, track_video

BACKENDS = ("gdino-sam2", "sam3")

STAGE = "track"
log = logging.getLogger("spatialctl.track")


@dataclass
class TrackConfig:
    labels: list[str] = opt(help="Comma-separated object names, e.g. \"person,car,cup\", or \"auto\" to have CLIP "
                            "propose each scene's labels. Default: a built-in vocabulary of common indoor/outdoor "
                            "objects.", default_factory=list,
                            parse=lambda text: parse_labels(text, None), show_default=False)
    labels_file: str | None = opt(None, "File of object names, one per line (or comma-separated). Default: none.",
                                  runtime=True, show_default=False)  # read into `labels` by validate()
    detector: str = opt("grounding-dino", "Open-vocabulary detector: grounding-dino or owlv2.", choices=DETECTORS)
    detector_model: str | None = opt(None, "Detector hub id or local folder. Default: IDEA-Research/grounding-dino-tiny "
                                     "(owlv2: google/owlv2-base-patch16-ensemble).", show_default=False)
    sam2_model: str = opt(DEFAULT_SAM2, "SAM 2 video model: hub id or local folder (e.g. "
                                 "facebook/sam2.1-hiera-large).")
    keyframe_every: int = opt(8, "Detect objects every K frames; new ones start tracks.")
    box_threshold: float = opt(0.35, "Minimum detection score of a box.")
    text_threshold: float = opt(0.25, "Grounding DINO: minimum score of the label's text tokens.")
    nms_iou: float = 0.5
    match_iou: float = 0.5  # a keyframe detection is a known object above this mask IoU
    max_detections: int = 20  # per keyframe
    backend: str = opt("gdino-sam2", "Object finder: gdino-sam2 (detector boxes on keyframes prompt SAM 2 video "
                       "masks) or sam3 (SAM 3, each label a text prompt, detection and tracking in one model).",
                       choices=BACKENDS)
    sam3_model: str | None = opt(None, "SAM 3 video model: hub id (already downloaded) or local folder. "
                                 "Default: facebook/sam3.", show_default=False)
    sam3_threshold: float | None = opt(None, "SAM 3: detection score needed to report or start an object. "
                                       "Default: the checkpoint's (0.5 to report, 0.7 to start).", show_default=False)
    chunk_frames: int = opt(64, "SAM 3: frames per session; objects carry into the next chunk with their last "
                            "mask, so memory follows the chunk, not the video.")
    tagger_model: str | None = opt(None, "--labels auto: CLIP model that picks each scene's labels from a fixed "
                                   "vocabulary. Default: openai/clip-vit-base-patch32.", show_default=False)
    auto_max_labels: int = opt(8, "--labels auto: at most this many labels per scene.")
    auto_min_score: float = opt(0.05, "--labels auto: keep a label whose best frame gives it at least this "
                                "probability over the vocabulary (the top label is always kept).")
    lift: LiftConfig = field(default_factory=LiftConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    device: str = device_opt()
    shard: str | None = shard_opt()
    overwrite: bool = overwrite_opt()
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        check_fields(self)
        if self.labels_file is not None:
            if self.labels:
                raise UsageError("give --labels or --labels-file, not both")
            self.labels, self.labels_file = parse_labels(None, self.labels_file), None
        if self.keyframe_every < 1:
            raise UsageError(f"--keyframe-every {self.keyframe_every}: need at least 1")
        for name in ("box_threshold", "text_threshold", "auto_min_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: expected a value in [0, 1]")
        if self.chunk_frames < 2:
            raise UsageError(f"--chunk-frames {self.chunk_frames}: need at least 2 (chunks overlap by a frame)")
        if self.sam3_threshold is not None and not 0.0 <= self.sam3_threshold <= 1.0:
            raise UsageError(f"--sam3-threshold {self.sam3_threshold}: expected a value in [0, 1]")
        if self.auto_max_labels < 1:
            raise UsageError(f"--auto-max-labels {self.auto_max_labels}: need at least 1")


def output_for(input: str, out: str | None = None) -> str:
    return store.join(input.rstrip("/"), "tracks")


def preflight_models(config: TrackConfig) -> None:
    """The backend's models must be on local disk (or in the hub cache) before any work: no downloads, no
    retries."""
    from spatialctl.hub import resolve_model_dir

    if config.backend == "sam3":
        from .sam3 import DEFAULT_SAM3

        resolve_model_dir(config.sam3_model or DEFAULT_SAM3, option="--sam3-model", what="SAM 3 model")
        return
    from .detect import DEFAULT_MODELS
    from .propagate import DEFAULT_SAM2

    resolve_model_dir(config.detector_model or DEFAULT_MODELS[config.detector], option="--detector-model",
                      what="detector model")
    resolve_model_dir(config.sam2_model or DEFAULT_SAM2, option="--sam2-model", what="SAM 2 model")


class PackedMasks:
    """(O, N, M) packed masks indexed like (O, N, H, W) bool: ``masks[:, n]`` unpacks one frame."""

    def __init__(self, packed: np.ndarray, hw: tuple[int, int]):
        self.packed, self.hw = packed, hw
        self.shape = (*packed.shape[:2], *hw)

    def __getitem__(self, index) -> np.ndarray:
        return store.unpack_mask(self.packed[index], self.hw)


class _Models:
    """The backend's models (and the tagger for ``--labels auto``), loaded on the first item that needs work and
    shared by the rest."""

    def __init__(self, config: TrackConfig):
        self.config = config
        self.loaded = False
        self.detector: Detector | None = None
        self.segmenter: Segmenter | None = None
        self.sam3 = None
        self.tagger = None

    def load(self) -> _Models:
        if self.loaded:
            return self
        c = self.config
        if c.quiet:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        device = str(resolve_device(c.device))
        labels = parse_labels(None, None) if not c.labels or c.labels == [AUTO] else c.labels
        if c.backend == "sam3":
            from .sam3 import Sam3Tracker

            self.sam3 = Sam3Tracker(c.sam3_model, device, c.sam3_threshold)
        else:
            self.detector = Detector(c.detector, c.detector_model, labels, device, c.box_threshold,
                                     c.text_threshold, c.nms_iou, c.max_detections)
            self.segmenter = Segmenter(c.sam2_model, device)
        if c.labels == [AUTO]:
            from .tagger import Tagger

            self.tagger = Tagger(c.tagger_model, device)
        self.loaded = True
        return self

    def provenance(self) -> dict:
        if self.sam3 is not None:
            return {"backend": "sam3", "sam3_model": self.sam3.model_id, "kernels": self.sam3.kernels}
        return {"backend": "gdino-sam2", "detector": self.detector.model_id, "sam2_model": self.segmenter.model_id}


def scene_labels(config: TrackConfig, models: _Models, frames, n: int) -> list[dict]:
    """The scene's labels with where each came from: the user's list, the default vocabulary, or the tagger."""
    if config.labels == [AUTO]:
        picked = models.tagger.propose(lambda i: np.asarray(frames[i]), n, config.auto_max_labels,
                                       config.auto_min_score)
        log.info("proposed labels: %s", ", ".join(f"{lab} ({p:.2f})" for lab, p in picked))
        return [{"label": lab, "source": "auto", "tagger": models.tagger.model_id, "score": p} for lab, p in picked]
    if config.labels:
        return [{"label": lab, "source": "user"} for lab in config.labels]
    return [{"label": lab, "source": "default"} for lab in parse_labels(None, None)]


def track_scene(url: str, config: TrackConfig, models: _Models,
                progress: Callable = lambda x: x) -> tuple[dict[str, np.ndarray], dict]:
    """The ``tracks`` arrays and attrs for one scene store."""
    scene = store.open_scene(url)
    n, hw = scene.n_frames, scene.hw
    frames = scene.group["frames"]
    labels = scene_labels(config, models, frames, n)
    names = [entry["label"] for entry in labels]
    if config.backend == "sam3":
        from .sam3 import track_video as sam3_video

        tracklets = sam3_video(models.sam3, lambda i: np.asarray(frames[i]), n, hw, names, config.chunk_frames,
                               progress)
        found_by = "sam3"
    else:
        detector, segmenter = models.detector, models.segmenter
        detector.set_labels(names)
        segmenter.open(lambda i: np.asarray(frames[i]), n, hw)
        tracklets = track_video(segmenter, lambda i: detector(np.asarray(frames[i])), n, hw, config.keyframe_every,
                                config.match_iou, progress)
        found_by = config.detector
    tracklets = [t for t in tracklets if t.masks.any()]
    geometry = _geometry(scene)
    packed = np.stack([t.masks for t in tracklets]) if tracklets else np.zeros((0, n, (hw[0] * hw[1] + 7) // 8), np.uint8)
    lifted = lift_tracks(PackedMasks(packed, hw), **geometry, cfg=config.lift)
    if len(tracklets) > 1:
        sizes = np.nanmax(lifted["box"][:, :, 3:6], axis=(1, 2), initial=0.0)
        groups = merge_tracklets(lambda i: PackedMasks(packed, hw)[:, i], [t.label for t in tracklets], n,
                                 lifted["centroid"].astype(np.float64), sizes, config.association)
        if len(set(groups)) < len(groups):  # some tracklets are one object: lift the joined masks again
            packed, tracklets = _merge(packed, tracklets, groups)
            lifted = lift_tracks(PackedMasks(packed, hw), **geometry, cfg=config.lift)
    objects = [{"id": i, "label": t.label, "score": round(float(t.score), 4), "found_by": found_by}
               for i, t in enumerate(tracklets)]
    lifted = dict(lifted)
    completion = lifted.pop("completion")
    for o, how in zip(objects, completion, strict=True):
        o["completion"] = how
    arrays = {
        "masks": packed,
        **lifted,
        "score": np.array([t.score for t in tracklets], np.float32),
    }
    return arrays, {"objects": objects, "labels": labels}


def _geometry(scene) -> dict:
    if scene.attrs.get("world_up") is None:
        raise SpatialctlError(f"{scene.url}: missing attribute 'world_up'")
    g = scene.group
    return {
        "depth": g["depth"], "conf": g["conf"], "pointmaps": g["pointmaps"],
        "cam2world": scene.read("cam2world"), "timestamps": scene.read("timestamps"),
        "world_up": np.asarray(scene.attrs["world_up"], dtype=np.float64),
    }


def _merge(packed: np.ndarray, tracklets: list[Tracklet], groups: list[int]) -> tuple[np.ndarray, list[Tracklet]]:
    """One object per group id: masks OR-ed, best score, earliest keyframe."""
    ids = sorted({g for g in groups if g >= 0})
    merged, objects = [], []
    for gid in ids:
        members = [i for i, g in enumerate(groups) if g == gid]
        merged.append(np.bitwise_or.reduce(packed[members], axis=0))
        best = max(members, key=lambda i: tracklets[i].score)
        objects.append(Tracklet(tracklets[best].label, max(tracklets[i].score for i in members),
                                min(tracklets[i].born for i in members), merged[-1]))
        if len(members) > 1:
            log.info("joined %d tracklets of one %s", len(members), tracklets[best].label)
    return (np.stack(merged) if merged else packed[:0]), objects


def _work(item: jobs.Item, config: TrackConfig, models: _Models, progress: Callable) -> None:
    store.open_scene(item.input)  # bad input fails before any model loads
    arrays, attrs = track_scene(item.input, config, models.load(), progress)
    attrs.update(models.provenance())
    store.write_group(item.input, "tracks", arrays, attrs, jobs.provenance(STAGE, config, [item.input]))


def run(config: TrackConfig, inputs: str | Sequence[str],
        progress: Callable[[Iterable], Iterable] | None = None,
        frame_progress: Callable[[Iterable], Iterable] | None = None) -> jobs.Summary:
    """Add a ``tracks`` group to each scene store of this shard; skip those already done with this config."""
    config.validate()
    paths = jobs.select_shard(jobs.resolve_inputs(inputs), jobs.resolve_shard(config.shard))
    for p in paths:  # an in-place stage needs scene stores: refuse anything else before any work
        try:
            header = store.node_header(p) if store.exists(p) else None
        except SpatialctlError:
            header = None
        if not header or header.get("kind") != "scene":
            raise UsageError(f"{p}: not a spatialctl scene store; track adds to the store that reconstruct or "
                             "synth writes (run `spatialctl reconstruct` on a video first)")
    preflight_models(config)
    items = [jobs.Item(p, output_for(p)) for p in paths]
    models = _Models(config)
    return jobs.run_items(STAGE, config, items, lambda it: _work(it, config, models, frame_progress or (lambda x: x)),
                          overwrite=config.overwrite, progress=progress)
