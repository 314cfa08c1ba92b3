"""view: a scene store as a Rerun recording (``.rrd``), a time series over the video's frames.

Per frame (timelines ``frame`` and ``time``): the camera (Transform3D + Pinhole, so the frustum and the image sit
in 3D), its RGB frame, depth, confidence and the tracked objects' masks (SegmentationImage; the AnnotationContext
names each class "label #id"), the coloured world points of that frame (confident ones, evenly subsampled), and
per object its 3D box, centroid trajectory so far and velocity arrow (1 s of motion). The whole camera path is
static. Entities live under ``world/`` (``world/truth`` and ``world/estimate`` side by side with ``--gt``, the
estimate placed in the truth's frame by a Sim(3) fitted on matching camera centres, as trajectory evaluation does).

Rerun is an optional dependency (``pip install "spatialctl[view]"``); it is imported only when a recording is made.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialctl import __version__, camera, jobs
from spatialctl.camera import gravity_basis
from spatialctl.config import check_fields, opt, overwrite_opt, quiet_opt
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.visual import SceneView, box_rotation, object_colour, open_view

log = logging.getLogger("spatialctl.view")

# DUSt3R's demo drops points below confidence 3; synth truth stores conf 1 on every valid pixel.
DUST3R_MIN_CONF = 3.0
APP_ID = "spatialctl"


@dataclass
class ViewConfig:
    out: str | None = opt(None, "Output file (.rrd). Default: the store's path with .rrd (OUT/scene.zarr -> "
                          "OUT/scene.rrd).", short="-o", show_default=False)
    gt: str | None = opt(None, "Ground-truth store (synth) to show beside SCENE: world/truth and world/estimate, "
                         "the estimate aligned to the truth by Sim(3) on camera centres. Default: none.",
                         show_default=False)
    spawn: bool = opt(False, "Open the Rerun viewer on the written file when one is installed; otherwise print "
                      "the command that opens it.")
    max_points: int = opt(5000, "World points logged per frame, at most (an even subsample of the confident ones).")
    min_conf: float | None = opt(None, "Confidence below which points are dropped. Default: 3 (DUSt3R's demo) for "
                                 "reconstructed stores, every valid pixel for synth truth.", show_default=False)
    jpeg_quality: int = opt(90, "JPEG quality of the logged RGB frames, 1-100; 0 logs them uncompressed.")
    overwrite: bool = overwrite_opt("Replace OUT when it exists.")
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        if self.max_points < 0:
            raise UsageError(f"--max-points {self.max_points}: give 0 or more")
        if not 0 <= self.jpeg_quality <= 100:
            raise UsageError(f"--jpeg-quality {self.jpeg_quality}: give 0 (raw) or 1-100")
        check_fields(self)


def default_out(scene_url: str) -> str:
    p = Path(scene_url.rstrip("/"))
    return str(p.with_suffix(".rrd")) if p.suffix else str(p) + ".rrd"


def import_rerun():
    try:
        import rerun as rr
    except ImportError:
        raise SpatialctlError('view needs the Rerun SDK: pip install "spatialctl[view]"') from None
    return rr


def _our_recording(path: Path) -> bool:
    """A Rerun recording (``RRF`` magic) whose store info, at its start, names our application id."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:  # a folder, unreadable: not ours
        return False
    return head.startswith(b"RRF") and APP_ID.encode() in head


def run(config: ViewConfig, scene: str, progress: Callable | None = None) -> jobs.Summary:
    """Write the recording of the store ``scene``; ``Summary.details`` is ``{"out", "frames", "entities",
    "spawned", "open_command"}``."""
    config.validate()
    rr = import_rerun()
    if "://" in (config.out or scene):
        raise UsageError(f"{config.out or scene}: the recording is written to a local file; give --out PATH.rrd")
    out = Path(config.out or default_out(scene))
    if out.suffix != ".rrd":
        log.warning("%s: the Rerun viewer recognises recordings by their .rrd suffix", out)
    if out.exists() and not config.overwrite:
        raise UsageError(f"{out}: exists; pass --overwrite to replace it")
    if out.exists() and not _our_recording(out):
        raise UsageError(f"{out}: exists and is not a recording spatialctl view wrote; refusing to replace it, "
                         "--overwrite included (choose another --out or move it away)")
    est = open_view(scene)
    gt = open_view(config.gt) if config.gt else None
    pairs = match_frames(est, gt) if gt is not None else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    rec = rr.RecordingStream(APP_ID)  # a fresh recording id: two files opened together stay apart
    rec.save(str(tmp))
    entities: list[str] = []
    try:
        # Provenance, as every spatialctl artifact records it (a recording property, shown by the viewer).
        rec.send_property("spatialctl", rr.AnyValues(
            stage="view", package_version=__version__, scene=scene, gt=config.gt or "",
            config=json.dumps(jobs.config_dict(config), sort_keys=True, default=str),
            inputs=json.dumps([jobs.fingerprint(u) for u in [scene, *([config.gt] if config.gt else [])]])))
        rec.log("world", _view_coordinates(rr, (gt or est).world_up), static=True)
        if gt is None:
            entities += _log_scene(rr, rec, est, "world", config, progress, range(est.n_frames))
        else:
            sim3 = align_sim3(est.cam2world[[e for e, _ in pairs]][:, :3, 3], gt.cam2world[[g for _, g in pairs]][:, :3, 3])
            rec.log("world/estimate", rr.Transform3D(translation=sim3[:3, 3], mat3x3=sim3[:3, :3]), static=True)
            entities += _log_scene(rr, rec, gt, "world/truth", config, progress, [g for _, g in pairs])
            entities += _log_scene(rr, rec, est, "world/estimate", config, progress, [e for e, _ in pairs],
                                   timeline_frames=[g for _, g in pairs], timeline_times=gt.timestamps)
        rec.send_blueprint(_blueprint(["world/truth", "world/estimate"] if gt is not None else ["world"], _eye(gt or est)))
        rec.flush()
    finally:
        rec.disconnect()
    tmp.replace(out)
    command = f"rerun {out}"
    spawned = _spawn(out) if config.spawn else False
    details = {"out": str(out), "frames": len(pairs) if pairs else est.n_frames, "entities": sorted(set(entities)),
               "spawned": spawned, "open_command": command}
    return jobs.Summary(done=[scene], outputs=[str(out)], details=details)


def _spawn(out: Path) -> bool:
    """Start the native viewer (shipped with rerun-sdk as the ``rerun`` command) when a display exists."""
    viewer = shutil.which("rerun")
    if viewer is None or (sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or
                                                                      os.environ.get("WAYLAND_DISPLAY"))):
        return False
    subprocess.Popen([viewer, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    return True


# ---------------------------------------------------------------------------------------------------- alignment


def match_frames(est: SceneView, gt: SceneView) -> list[tuple[int, int]]:
    """(estimate frame, truth frame) pairs by timestamp; every estimate frame must have a truth frame within
    half of the truth's frame interval, else the two stores are not the same video."""
    if gt.n_frames < 1:
        raise SpatialctlError(f"{gt.url}: no frames")
    dt = float(np.min(np.diff(gt.timestamps))) if gt.n_frames > 1 else 1.0
    j = np.clip(np.searchsorted(gt.timestamps, est.timestamps), 0, gt.n_frames - 1)
    j_prev = np.clip(j - 1, 0, gt.n_frames - 1)
    pick = np.where(np.abs(gt.timestamps[j_prev] - est.timestamps) < np.abs(gt.timestamps[j] - est.timestamps),
                    j_prev, j)
    err = np.abs(gt.timestamps[pick] - est.timestamps)
    if (err > dt / 2).any():
        f = int(np.argmax(err))
        raise SpatialctlError(f"{est.url}: frame {f} at {est.timestamps[f]:.3f} s has no frame of {gt.url} within "
                              f"{dt / 2:.3f} s; --gt must be the store of the same video")
    return [(int(e), int(g)) for e, g in enumerate(pick)]


def align_sim3(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4x4 similarity taking estimated camera centres onto the true ones (Umeyama), or, when the camera barely
    moves and no scale is observable, the identity rotation/scale with the centroids matched."""
    spread = np.linalg.norm(src - src.mean(0), axis=1).max() if len(src) else 0.0
    if len(src) >= 3 and spread > 1e-9 and np.linalg.matrix_rank(src - src.mean(0), tol=spread * 1e-3) >= 2:
        s, rot, t = camera.umeyama(src, dst, with_scale=True)
        return camera.similarity_matrix(s, rot, t)
    log.warning("camera centres do not span a plane: the estimate is only shifted onto the truth")
    m = np.eye(4)
    m[:3, 3] = dst.mean(0) - src.mean(0)
    return m


# ---------------------------------------------------------------------------------------------------- logging


def _view_coordinates(rr, up: np.ndarray):
    """The world's up axis for the viewer: the nearest signed axis (the schema's world_up is a free vector)."""
    axis = int(np.argmax(np.abs(up)))
    return getattr(rr.ViewCoordinates, f"RIGHT_HAND_{'XYZ'[axis]}_{'UP' if up[axis] > 0 else 'DOWN'}")


def _min_conf(view: SceneView, config: ViewConfig) -> float:
    if config.min_conf is not None:
        return config.min_conf
    return 0.0 if view.is_synth else DUST3R_MIN_CONF


def _log_scene(rr, rec, view: SceneView, root: str, config: ViewConfig, progress, frames,
               timeline_frames=None, timeline_times=None) -> list[str]:
    """Log one store under ``root``; ``frames`` are its frames to log, at timeline indices ``timeline_frames``."""
    frames = list(frames)
    timeline_frames = list(timeline_frames) if timeline_frames is not None else frames
    times = timeline_times if timeline_times is not None else view.timestamps
    h, w = view.hw
    min_conf = _min_conf(view, config)
    names = [view.object_name(o) for o in range(view.n_objects)]
    colours = [object_colour(o) for o in range(view.n_objects)]
    rec.log(root, rr.AnnotationContext([rr.AnnotationInfo(id=o + 1, label=names[o], color=colours[o])
                                        for o in range(view.n_objects)]), static=True)
    path = view.cam2world[frames][:, :3, 3]
    rec.log(f"{root}/camera_path", rr.LineStrips3D([path], colors=[(255, 255, 255)]), static=True)
    logged = [root, f"{root}/camera_path", f"{root}/camera", f"{root}/camera/image", f"{root}/camera/image/depth",
              f"{root}/camera/image/conf", f"{root}/points"]
    basis = gravity_basis(view.world_up)
    wrap = progress or (lambda x: x)
    empty = 0
    for f, tf in wrap(list(zip(frames, timeline_frames, strict=True))):
        rec.set_time("frame", sequence=int(tf))
        rec.set_time("time", duration=float(times[tf]))
        pose = view.cam2world[f]
        rec.log(f"{root}/camera", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
        rec.log(f"{root}/camera/image", rr.Pinhole(image_from_camera=view.intrinsics[f], resolution=[w, h],
                                                     camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=0.1 *
                                                     _scene_size(view)))
        rgb = view.frame(f)
        image = rr.Image(rgb)
        rec.log(f"{root}/camera/image", image.compress(jpeg_quality=config.jpeg_quality) if config.jpeg_quality
                else image)
        depth, conf = view.depth(f), view.conf(f)
        rec.log(f"{root}/camera/image/depth", rr.DepthImage(depth, meter=1.0))
        rec.log(f"{root}/camera/image/conf", rr.Image(conf.astype(np.float32), color_model="L"))
        keep = (depth > 0) & (conf >= min_conf) & (conf > 0)
        v, u = np.nonzero(keep)
        empty += not len(v)
        if config.max_points and len(v) > config.max_points:
            sel = np.linspace(0, len(v) - 1, config.max_points).astype(np.int64)
            v, u = v[sel], u[sel]
        rec.log(f"{root}/points", rr.Points3D(view.pointmap(f)[v, u], colors=rgb[v, u],
                                              radii=rr.Radius.ui_points(2.5)))
        if view.n_objects:
            logged += _log_objects(rr, rec, view, root, f, frames, basis, names)
    if empty:
        log.warning("%s: %d of %d frames have no point with confidence >= %g (set --min-conf)", view.url, empty,
                    len(frames), min_conf)
    return logged


def _log_objects(rr, rec, view: SceneView, root: str, f: int, frames: list[int], basis, names) -> list[str]:
    masks = view.masks(f)
    seg = np.zeros(view.hw, dtype=np.uint16)
    for o in range(view.n_objects):  # later objects paint over earlier ones where masks overlap
        seg[masks[o]] = o + 1
    rec.log(f"{root}/camera/image/masks", rr.SegmentationImage(seg, opacity=0.5, draw_order=10.0))
    vis = [o for o in range(view.n_objects) if view.visible[o, f] and np.isfinite(view.box[o, f]).all()]
    boxes = view.box[vis, f]
    rec.log(f"{root}/objects/boxes", rr.Boxes3D(
        centers=boxes[:, :3], half_sizes=boxes[:, 3:6] / 2,
        quaternions=[_xyzw(box_rotation(b[6], basis)) for b in boxes],
        class_ids=[o + 1 for o in vis], labels=[names[o] for o in vis]))
    upto = [g for g in frames if g <= f]
    strips, ids = [], []
    for o in range(view.n_objects):
        c = view.centroid[o, upto]
        c = c[np.isfinite(c).all(1)]
        if len(c) >= 2:
            strips.append(c)
            ids.append(o + 1)
    rec.log(f"{root}/objects/trajectories", rr.LineStrips3D(strips, class_ids=ids))
    mov = [o for o in vis if np.isfinite(view.velocity[o, f]).all() and np.isfinite(view.centroid[o, f]).all()]
    # An arrow is the displacement over one second at the current velocity.
    rec.log(f"{root}/objects/velocity", rr.Arrows3D(origins=view.centroid[mov, f], vectors=view.velocity[mov, f],
                                                    class_ids=[o + 1 for o in mov]))
    return [f"{root}/camera/image/masks", f"{root}/objects/boxes", f"{root}/objects/trajectories",
            f"{root}/objects/velocity"]


def _xyzw(rot: np.ndarray) -> list[float]:
    w, x, y, z = camera.rotation_to_quaternion(rot)
    return [x, y, z, w]


def _scene_size(view: SceneView) -> float:
    centres = view.cam2world[:, :3, 3]
    extent = float(np.linalg.norm(centres.max(0) - centres.min(0)))
    return extent if extent > 0 else 1.0


def _blueprint(roots: list[str], eye: tuple[np.ndarray, np.ndarray, np.ndarray]):
    """A 3D view per root, side by side, above each root's frame with masks, depth and confidence."""
    import rerun.blueprint as rrb

    position, target, up = eye
    views3d = [rrb.Spatial3DView(name=_title(r), origin="world", contents=[f"{r}/**", f"- {r}/camera/image/conf",
                                                                          f"- {r}/camera/image/depth"],
                                 eye_controls=rrb.EyeControls3D(position=position, look_target=target, eye_up=up))
               for r in roots]
    views2d = []
    for r in roots:
        image = f"{r}/camera/image"
        views2d += [rrb.Spatial2DView(name=f"{_title(r)} frame + masks", origin=image, contents=[image, f"{image}/masks"]),
                    rrb.Spatial2DView(name=f"{_title(r)} depth", origin=image, contents=[f"{image}/depth"]),
                    rrb.Spatial2DView(name=f"{_title(r)} confidence", origin=image, contents=[f"{image}/conf"])]
    return rrb.Blueprint(rrb.Vertical(rrb.Horizontal(*views3d), rrb.Grid(*views2d) if len(roots) > 1 else
                                      rrb.Horizontal(*views2d), row_shares=[3, 2]),
                         rrb.BlueprintPanel(state="collapsed"), rrb.SelectionPanel(state="collapsed"))


def _title(root: str) -> str:
    return "scene" if root == "world" else root.split("/")[-1]


def _eye(view: SceneView) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A starting 3D viewpoint: above and behind the cameras, looking at the middle frame's surfaces."""
    mid = view.n_frames // 2
    depth = view.depth(mid)
    pts = view.pointmap(mid)[depth > 0]
    centres = view.cam2world[:, :3, 3]
    target = np.median(pts, axis=0) if len(pts) else centres.mean(0)
    back = centres.mean(0) - target
    dist = max(float(np.linalg.norm(back)), 1e-3)
    return target + 1.5 * back + 0.6 * dist * view.world_up, target, view.world_up
