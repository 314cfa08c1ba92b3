"""`eval geometry`: a synth store against itself under a known Sim(3), and TUM / 7-Scenes style folders."""

import json

import numpy as np
import pytest
from PIL import Image

from spatialctl import camera, store
from spatialctl.errors import SpatialctlError
from spatialctl.geometry_metrics import apply_sim3_to_poses
from spatialctl.stages.eval.geometry import GeometryEvalConfig, run
from spatialctl.stages.synth import SynthConfig, generate
from spatialctl.stages.synth.truth import scene_attrs

PROV = {"stage": "test", "config_hash": "x"}


@pytest.fixture(scope="module")
def synth_truth():
    scene, truth = generate(SynthConfig(frames=8, width=64, height=48, camera="orbit", seed=3))
    return truth.scene_arrays, scene_attrs(scene, 3)


def write_truth(tmp_path, synth_truth) -> str:
    arrays, attrs = synth_truth
    url = str(tmp_path / "gt.zarr")
    store.write_scene(url, arrays, attrs, PROV)
    return url


def perturbed(arrays: dict, s: float, rot: np.ndarray, t: np.ndarray) -> dict:
    """The same scene seen in another world frame at another scale: what a reconstruction up to Sim(3) gives."""
    out = dict(arrays)
    out["cam2world"] = apply_sim3_to_poses(arrays["cam2world"], s, rot, t)
    valid = arrays["depth"] > 0
    pm = s * arrays["pointmaps"].astype(np.float64) @ rot.T + t
    out["pointmaps"] = np.where(valid[..., None], pm, 0).astype(np.float32)
    out["depth"] = (s * arrays["depth"]).astype(np.float32)
    return out


def test_synth_against_itself_under_a_known_sim3(tmp_path, synth_truth):
    gt_url = write_truth(tmp_path, synth_truth)
    arrays, attrs = synth_truth
    s, rot, t = 0.4, camera.quaternion_to_rotation([0.9, 0.1, -0.3, 0.2]), np.array([2.0, -1.0, 0.5])
    est_url = str(tmp_path / "est.zarr")
    store.write_scene(est_url, perturbed(arrays, s, rot, t), {**attrs, "scale": "relative", "scale_source": "none"},
                      PROV)
    out = run(GeometryEvalConfig(gt=gt_url, out=str(tmp_path / "report")), est_url)
    r = out.details
    assert r["n_frames"] == 8 and r["gt_kind"] == "store"
    assert r["trajectory"]["ate"]["rmse"] < 1e-6
    assert r["trajectory"]["ate"]["scale"] == pytest.approx(1 / s, rel=1e-6)
    assert r["trajectory"]["ate_se3"]["rmse"] > 0.05  # the scale is wrong without Sim(3)
    assert r["trajectory"]["rpe"]["trans_rmse"] < 1e-6 and r["trajectory"]["rpe"]["rot_rmse_deg"] < 1e-3
    assert r["depth"]["abs_rel"] < 1e-6 and r["depth"]["delta1"] == 1.0
    assert r["pointcloud"]["chamfer"] < 1e-5 and r["pointcloud"]["fscore"] == 1.0
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["trajectory"]["ate"]["rmse"] == pytest.approx(r["trajectory"]["ate"]["rmse"])
    assert "trajectory.ate.rmse" in (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_wrong_trajectory_scores_worse(tmp_path, synth_truth):
    gt_url = write_truth(tmp_path, synth_truth)
    arrays, attrs = synth_truth
    bad = dict(arrays)
    poses = arrays["cam2world"].copy()
    poses[4:, :3, 3] += [0.1, 0.0, 0.0]  # half the trajectory jumps 10 cm
    bad["cam2world"] = poses
    est_url = str(tmp_path / "bad.zarr")
    store.write_scene(est_url, bad, attrs, PROV)
    r = run(GeometryEvalConfig(align="se3", plots=False, gt=gt_url, out=str(tmp_path / "r")), est_url).details
    assert 0.01 < r["trajectory"]["ate"]["rmse"] < 0.1
    # Exactly one of the seven consecutive pairs sees the 10 cm jump.
    assert r["trajectory"]["rpe"]["trans_mean"] == pytest.approx(0.1 / 7, rel=1e-4)


def write_tum(folder, arrays, t0=1305031102.175304):
    (folder / "depth").mkdir(parents=True)
    times = arrays["timestamps"] + t0
    lines, dlines, rlines = ["# timestamp tx ty tz qx qy qz qw"], [], []
    for i, (ts, pose) in enumerate(zip(times, arrays["cam2world"], strict=True)):
        w, x, y, z = camera.rotation_to_quaternion(pose[:3, :3])
        tx, ty, tz = pose[:3, 3]
        lines.append(f"{ts:.6f} {tx:.9f} {ty:.9f} {tz:.9f} {x:.9f} {y:.9f} {z:.9f} {w:.9f}")
        name = f"depth/{ts:.6f}.png"
        Image.fromarray(np.round(arrays["depth"][i] * 5000).astype(np.uint16)).save(folder / name)
        dlines.append(f"{ts + 0.004:.6f} {name}")  # depth stamped a little after the pose, as in TUM
        rlines.append(f"{ts:.6f} rgb/{ts:.6f}.png")
    (folder / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    (folder / "depth.txt").write_text("# depth\n" + "\n".join(dlines) + "\n")
    (folder / "rgb.txt").write_text("\n".join(rlines) + "\n")


def test_tum_folder(tmp_path, synth_truth):
    arrays, attrs = synth_truth
    est_url = write_truth(tmp_path, synth_truth)  # a perfect estimate
    write_tum(tmp_path / "tum", arrays)
    k = arrays["intrinsics"][0]
    # The store's clock starts at 0, TUM's at an absolute time: --time-offset start, else an error saying so.
    with pytest.raises(SpatialctlError, match="clocks do not overlap: pass --time-offset start"):
        run(GeometryEvalConfig(plots=False, gt=str(tmp_path / "tum"), out=str(tmp_path / "r")), est_url)
    cfg = GeometryEvalConfig(gt=str(tmp_path / "tum"), out=str(tmp_path / "r"), plots=False, time_offset="start",
                             gt_intrinsics=(k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
    r = run(cfg, est_url).details
    assert r["gt_kind"] == "tum" and r["n_frames"] == 8
    assert r["trajectory"]["ate"]["rmse"] < 1e-6
    assert r["depth"]["abs_rel"] < 1e-3 and r["depth"]["delta1"] == 1.0  # 0.2 mm quantisation only
    assert r["pointcloud"]["chamfer"] < 1e-3


def test_seven_scenes_folder(tmp_path, synth_truth):
    arrays, _ = synth_truth
    est_url = write_truth(tmp_path, synth_truth)
    folder = tmp_path / "seq-01"
    folder.mkdir()
    for i, pose in enumerate(arrays["cam2world"]):
        np.savetxt(folder / f"frame-{i:06d}.pose.txt", pose)
        mm = np.round(arrays["depth"][i] * 1000).astype(np.uint16)
        mm[0, 0] = 65535  # 7-Scenes' "no depth"
        Image.fromarray(mm).save(folder / f"frame-{i:06d}.depth.png")
    k = arrays["intrinsics"][0]
    fps = 1.0 / float(arrays["timestamps"][1] - arrays["timestamps"][0])
    cfg = GeometryEvalConfig(gt=str(folder), out=str(tmp_path / "r"), gt_fps=fps, plots=False,
                             gt_intrinsics=(k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
    r = run(cfg, est_url).details
    assert r["gt_kind"] == "7scenes" and r["n_frames"] == 8
    assert r["trajectory"]["ate"]["rmse"] < 1e-6
    assert r["depth"]["abs_rel"] < 2e-3
    valid = arrays["depth"] > 0
    assert r["depth"]["n_pixels"] == int(valid.sum()) - int(valid[:, 0, 0].sum())  # 65535 pixels left out


def test_bad_ground_truth_is_a_one_line_error(tmp_path, synth_truth):
    est_url = write_truth(tmp_path, synth_truth)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpatialctlError, match="not a scene store, TUM folder"):
        run(GeometryEvalConfig(gt=str(tmp_path / "empty"), out=str(tmp_path / "r")), est_url)


def test_seven_scenes_frame_numbers_are_the_clock(tmp_path, synth_truth):
    """A store made from every third 7-Scenes frame carries frame-number times (k / 30 s): each estimate frame
    must meet the truth frame of the same number, not the n-th truth frame."""
    arrays, attrs = synth_truth
    folder = tmp_path / "seq-01"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(24):  # 24 truth frames; frame 3j is synth frame j, the others are elsewhere
        pose = arrays["cam2world"][k // 3].copy() if k % 3 == 0 else arrays["cam2world"][0].copy()
        if k % 3:
            pose[:3, 3] += rng.normal(0, 0.5, 3)
        np.savetxt(folder / f"frame-{k:06d}.pose.txt", pose)
    est = dict(arrays)
    est["timestamps"] = np.arange(8) * 3 / 30.0
    est_url = str(tmp_path / "est.zarr")
    store.write_scene(est_url, est, attrs, PROV)
    r = run(GeometryEvalConfig(plots=False, gt=str(folder), out=str(tmp_path / "r")), est_url).details
    assert r["n_frames"] == 8 and r["trajectory"]["ate"]["rmse"] < 1e-6
    # The same frames read from a folder that starts at frame 9 (times from 0, as the folder rule gives):
    # --time-offset start puts the estimate's first frame on the truth's first frame, 9/30 s.
    for k in range(9):
        (folder / f"frame-{k:06d}.pose.txt").unlink()
    est["cam2world"], est["timestamps"] = arrays["cam2world"][3:], np.arange(5) * 3 / 30.0
    for name in ("frames", "intrinsics", "depth", "conf", "pointmaps"):
        est[name] = arrays[name][3:]
    store.write_scene(str(tmp_path / "late.zarr"), est, attrs, PROV)
    r = run(GeometryEvalConfig(plots=False, gt=str(folder), out=str(tmp_path / "r"), time_offset="start"),
            str(tmp_path / "late.zarr")).details
    assert r["n_frames"] == 5 and r["time_offset"] == pytest.approx(9 / 30) and r["trajectory"]["ate"]["rmse"] < 1e-6
