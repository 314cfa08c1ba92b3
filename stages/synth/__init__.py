"""synth: synthetic 4D scenes with exact ground truth, the test bed for every stage.

``run(config)`` writes, per seed under ``config.out``, ``video.mp4`` and ``scene.zarr`` (root: frames, timestamps,
intrinsics, cam2world, depth, conf, pointmaps; group ``tracks``: the objects' masks, boxes, centroids, velocities) in the
schema of ``spatialctl.schema``. ``generate(config)`` returns the same arrays in memory (tests of other stages can
use it without touching disk); the scene layout does not depend on the frame size, so one seed rendered at two
sizes is the same scene.

Ground truth conventions (details in ``truth.py``): world z up, ground z = 0, metres; an object's ``centroid`` is
the centre of its gravity-aligned bounding box (inside the object for convex shapes, so it projects into the
mask); ``box`` is that box with yaw = the object's heading; ``velocity`` is the analytic derivative.

One seed is one item: the video is written first, then the scene store, then ``tracks``; the item counts as done
only once ``tracks`` is complete, so a killed run redoes a half-written seed and skips finished ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from spatialctl import jobs, store
from spatialctl.config import check_fields, opt, overwrite_opt, quiet_opt, shard_opt
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.video import write_video

from .scene import CAMERAS, PRESETS, Scene, build_scene
from .truth import TRACKS_DOC, Truth, render_truth, scene_attrs

STAGE = "synth"
DEFAULT_OBJECTS = {"tiny-tabletop": 5, "tabletop": 6, "indoor": 6, "outdoor": 8}


def parse_size(text: str) -> dict[str, int]:
    """"WxH" -> the width and height fields."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: expected WxH, e.g. 512x384") from None
    return {"width": w, "height": h}


@dataclass
class SynthConfig:
    out: str | None = opt(None, "Output folder: OUT/video.mp4 and OUT/scene.zarr (with --count: OUT/seed-NNNNNN/...).",
                          argument=True, runtime=True)  # None: generate() in memory only; run() needs it
    seed: int = opt(0, "Random seed; the same seed and options give bit-identical output.")
    preset: str = opt("tabletop", "Scale: tiny-tabletop (mm), tabletop (cm), indoor (m, a room), outdoor (10-100s of "
                      "m).", choices=PRESETS)
    frames: int = opt(32, "Number of frames.")
    width: int = opt(512, "Frame size WxH in pixels (even for H.264 unless --lossless).", flag="--size",
                     parse=parse_size, show_default="512x384")
    height: int = 384  # set with width by --size
    objects: int | None = opt(None, "Number of objects K. Default: the preset's (5 tiny-tabletop, 6 tabletop/indoor, "
                              "8 outdoor).", show_default=False)
    moving: int = opt(2, "How many of the K objects move (straight, curved, accelerating, stopping).")
    camera: str = opt("orbit", "Camera path: orbit, walk, pan or static.", choices=CAMERAS)
    fps: float = opt(10.0, "Frame rate; timestamps are frame / fps.")
    lossless: bool = opt(False, "Encode the video losslessly (H.264 RGB, qp 0): it decodes to the exact frames.")
    count: int | None = opt(None, "Write seeds S..S+C-1, each into OUT/seed-NNNNNN/. Default: one scene directly in "
                            "OUT.", runtime=True, show_default=False)
    shard: str | None = shard_opt()
    overwrite: bool = overwrite_opt()
    quiet: bool = quiet_opt()

    @property
    def n_objects(self) -> int:
        return DEFAULT_OBJECTS[self.preset] if self.objects is None else self.objects

    def validate(self) -> None:
        check_fields(self)
        if self.frames < 1:
            raise UsageError(f"--frames {self.frames}: need at least 1 frame")
        if self.width < 8 or self.height < 8:
            raise UsageError(f"--size {self.width}x{self.height}: need at least 8x8 pixels")
        if not self.lossless and (self.width % 2 or self.height % 2):
            raise UsageError(f"--size {self.width}x{self.height}: H.264 needs even sizes (or pass --lossless)")
        if self.n_objects < 0 or not 0 <= self.moving <= self.n_objects:
            raise UsageError(f"--objects {self.n_objects} --moving {self.moving}: need 0 <= moving <= objects")
        if not self.fps > 0:
            raise UsageError(f"--fps {self.fps}: must be positive")
        if self.seed < 0:
            raise UsageError(f"--seed {self.seed}: must be >= 0")
        if self.count is not None and self.count < 1:
            raise UsageError(f"--count {self.count}: must be >= 1")


def make_scene(config: SynthConfig) -> Scene:
    config.validate()
    return build_scene(config.seed, config.preset, config.frames, config.width, config.height, config.n_objects,
                       config.moving, config.camera, config.fps)


def generate(config: SynthConfig, progress: Callable[[Iterable], Iterable] | None = None,
             keep_ids: bool = False) -> tuple[Scene, Truth]:
    """The scene and its rendered ground truth, in memory (nothing written)."""
    scene = make_scene(config)
    return scene, render_truth(scene, progress, keep_ids=keep_ids)


def item_dir(out: str, seed: int, count: int | None) -> str:
    """Where one seed's outputs go: OUT itself for a single scene, OUT/seed-NNNNNN with --count."""
    return out.rstrip("/") if count is None else store.join(out, f"seed-{seed:06d}")


def item_output(item_folder: str) -> str:
    """The node whose completeness marks a finished item (written last)."""
    return store.join(item_folder, "scene.zarr", "tracks")


def write_item(config: SynthConfig, folder: str, progress: Callable[[Iterable], Iterable] | None = None) -> None:
    """Render one seed and write scene.zarr, video.mp4 and the store's tracks group (the item's completeness mark).
    The store comes first, so a video.mp4 always has the store that proves synth wrote it beside it."""
    scene, truth = generate(config, progress)
    provenance = jobs.provenance(STAGE, config, [])
    Path(folder).mkdir(parents=True, exist_ok=True)
    scene_url = store.join(folder, "scene.zarr")
    store.write_scene(scene_url, truth.scene_arrays, scene_attrs(scene, config.seed), provenance)
    write_video(str(Path(folder) / "video.mp4"), truth.scene_arrays["frames"], config.fps, lossless=config.lossless)
    store.write_group(scene_url, "tracks", truth.tracks_arrays, {"objects": truth.objects, "doc": TRACKS_DOC},
                      provenance)


def check_item_folder(folder: str) -> None:
    """Refuse (exit 2) to write over a ``video.mp4`` spatialctl did not write (one without our scene store beside
    it); the store itself is checked like every output (``jobs.preflight_output``)."""
    jobs.preflight_output(store.join(folder, "scene.zarr"), "scene")
    video = Path(folder) / "video.mp4"
    if not (video.exists() or video.is_symlink()):
        return
    try:
        header = store.node_header(store.join(folder, "scene.zarr"))
    except SpatialctlError:
        header = None
    if not header or header.get("kind") != "scene":
        raise UsageError(f"{video}: exists and synth did not write it (no scene store beside it); refusing to "
                         "replace it (choose another OUT)")


def run(config: SynthConfig, inputs: None = None, progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Write the scene(s) of this shard under ``config.out``; seeds already complete with this config are skipped.
    synth reads no inputs (``inputs`` is None): the config names everything it makes."""
    config.validate()
    if not config.out:
        raise UsageError("synth: no output folder (OUT) given")
    out = config.out
    seeds = [config.seed] if config.count is None else list(range(config.seed, config.seed + config.count))
    seeds = jobs.select_shard(seeds, jobs.resolve_shard(config.shard))
    for seed in seeds:  # before any rendering: a folder's video.mp4 is ours only beside a store we wrote
        check_item_folder(item_dir(out, seed, config.count))
    summary = jobs.Summary()
    single = config.count is None
    for seed in progress(seeds) if (progress and not single) else seeds:
        # Each seed is its own item with its own config (and config hash), so a larger --count reuses the seeds
        # an earlier run finished.
        item_config = dataclasses.replace(config, seed=seed, objects=config.n_objects, count=None, shard=None,
                                          out=None)
        folder = item_dir(out, seed, config.count)
        item = jobs.Item(f"seed {seed}", item_output(folder))
        bar = progress if single else None
        part = jobs.run_items(STAGE, item_config, [item],
                              lambda it, c=item_config, f=folder, b=bar: write_item(c, f, b),
                              overwrite=config.overwrite)
        summary.add(part)
    return summary
