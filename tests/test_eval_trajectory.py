"""Trajectory evaluation against evo itself (a dev dependency): association, APE, RPE and the file readers."""

import numpy as np
import pytest
from evo.core import metrics, sync
from evo.core.trajectory import PosePath3D, PoseTrajectory3D
from evo.tools import file_interface

from spatialctl import camera, geometry_metrics, store, trajectory_io
from spatialctl.errors import SpatialctlError
from spatialctl.stages.eval.geometry import GeometryEvalConfig, run

T0 = 1305031098.0  # TUM fr1-like absolute stamps


def random_trajectory(n: int, seed: int) -> np.ndarray:
    """A smooth random camera path (N,4,4): a random walk in position and orientation."""
    rng = np.random.default_rng(seed)
    pos = np.cumsum(rng.normal(0, 0.02, (n, 3)) + [0.01, 0.0, 0.005], axis=0)
    rotvec = np.cumsum(rng.normal(0, 0.02, (n, 3)), axis=0)
    poses = np.tile(np.eye(4), (n, 1, 1))
    for i, r in enumerate(rotvec):
        angle = np.linalg.norm(r)
        axis = r / angle
        poses[i, :3, :3] = camera.quaternion_to_rotation([np.cos(angle / 2), *(np.sin(angle / 2) * axis)])
    poses[:, :3, 3] = pos
    return poses


def noisy_sim3(poses: np.ndarray, s: float, seed: int) -> np.ndarray:
    """`poses` seen at scale `s` in another world frame, with position and rotation noise: an estimate."""
    rng = np.random.default_rng(seed)
    rot = camera.quaternion_to_rotation([0.9, 0.2, -0.3, 0.1])
    out = geometry_metrics.apply_sim3_to_poses(poses, s, rot, np.array([1.0, -2.0, 0.5]))
    out[:, :3, 3] += rng.normal(0, 0.01 * s, (len(poses), 3))
    for i in range(len(out)):
        small = rng.normal(0, 0.01, 3)
        out[i, :3, :3] = out[i, :3, :3] @ camera.quaternion_to_rotation([1.0, *small])
    return out


def evo_traj(poses, times=None):
    return PoseTrajectory3D(poses_se3=list(poses), timestamps=times) if times is not None else \
        PosePath3D(poses_se3=list(poses))


def test_association_matches_evo():
    rng = np.random.default_rng(0)
    gt_t = T0 + np.arange(300) * 0.01 + rng.normal(0, 0.001, 300)  # 100 Hz truth
    est_t = T0 + 0.37 + np.arange(80) / 30 + rng.normal(0, 0.004, 80)  # 30 Hz estimate, starting later
    for est_times, offset, max_diff in ((est_t, 0.0, 0.01), (est_t - 5.0, 5.0, 0.01), (est_t, 0.0, 0.002),
                                        (gt_t[::2][:200] + 0.003, 0.0, 0.01)):
        gi, ei = geometry_metrics.associate(gt_t, est_times, max_diff, offset)
        ref, est = sync.associate_trajectories(evo_traj(random_trajectory(300, 1), gt_t),
                                               evo_traj(random_trajectory(len(est_times), 2), est_times),
                                               max_diff=max_diff, offset_2=offset)
        np.testing.assert_array_equal(gt_t[gi], ref.timestamps)
        np.testing.assert_array_equal(est_times[ei], est.timestamps)
        assert len(gi) > 10


def evo_ape(ref, est, align, scale):
    est = PosePath3D(poses_se3=list(est))
    ref = PosePath3D(poses_se3=list(ref))
    if align or scale:
        est.align(ref, correct_scale=scale, correct_only_scale=scale and not align)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return ape.get_statistic(metrics.StatisticsType.rmse)


def evo_rpe(ref, est, delta, unit, all_pairs, relation, scale):
    est = PosePath3D(poses_se3=list(est))
    ref = PosePath3D(poses_se3=list(ref))
    if scale:
        est.align(ref, correct_scale=True)  # evo_rpe -as
    rpe = metrics.RPE(relation, delta, unit, 0.1, all_pairs)
    rpe.process_data((ref, est))
    return rpe.get_statistic(metrics.StatisticsType.rmse), rpe.get_statistic(metrics.StatisticsType.mean), \
        len(rpe.error)


def test_ape_matches_evo():
    gt = random_trajectory(150, 3)
    est = noisy_sim3(gt, 0.5, 4)
    for align, evo_align, evo_scale in (("sim3", True, True), ("se3", True, False)):
        ours = geometry_metrics.ate(est, gt, align).rmse
        assert ours == pytest.approx(evo_ape(gt, est, evo_align, evo_scale), rel=1e-9)
    metric_est = noisy_sim3(gt, 1.0, 5)
    assert geometry_metrics.ate(metric_est, gt, "none").rmse == pytest.approx(evo_ape(gt, metric_est, False, False),
                                                                              rel=1e-12)


@pytest.mark.parametrize("delta, unit, all_pairs", [
    (1, "frames", False), (5, "frames", False), (5, "frames", True), (0.3, "m", False), (0.3, "m", True),
])
def test_rpe_matches_evo(delta, unit, all_pairs):
    gt = random_trajectory(150, 6)
    est = noisy_sim3(gt, 0.5, 7)
    ours = geometry_metrics.rpe(est, gt, delta, scale="sim3", unit=unit, all_pairs=all_pairs)
    evo_unit = metrics.Unit.frames if unit == "frames" else metrics.Unit.meters
    t_rmse, t_mean, n = evo_rpe(gt, est, delta, evo_unit, all_pairs, metrics.PoseRelation.translation_part, True)
    r_rmse, r_mean, _ = evo_rpe(gt, est, delta, evo_unit, all_pairs, metrics.PoseRelation.rotation_angle_deg, True)
    assert ours.n_pairs == n
    assert ours.trans_rmse == pytest.approx(t_rmse, rel=1e-9) and ours.trans_mean == pytest.approx(t_mean, rel=1e-9)
    assert ours.rot_rmse_deg == pytest.approx(r_rmse, rel=1e-7) and ours.rot_mean_deg == pytest.approx(r_mean, rel=1e-7)


def test_readers_match_evo(tmp_path):
    poses = random_trajectory(20, 8)
    times = T0 + np.arange(20) / 30
    tum = tmp_path / "traj.txt"
    file_interface.write_tum_trajectory_file(str(tum), evo_traj(poses, times))
    kitti = tmp_path / "kitti.txt"
    file_interface.write_kitti_poses_file(str(kitti), evo_traj(poses))
    euroc = tmp_path / "mav0" / "state_groundtruth_estimate0" / "data.csv"
    euroc.parent.mkdir(parents=True)
    lines = ["#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []"]
    for t, p in zip(times, poses, strict=True):
        w, x, y, z = camera.rotation_to_quaternion(p[:3, :3])
        lines.append(f"{int(round(t * 1e9))},{p[0, 3]:.12f},{p[1, 3]:.12f},{p[2, 3]:.12f},{w:.12f},{x:.12f},{y:.12f},{z:.12f}")
    euroc.write_text("\n".join(lines) + "\n")
    for path, reference, fmt in ((tum, file_interface.read_tum_trajectory_file(str(tum)), "tum"),
                                 (kitti, file_interface.read_kitti_poses_file(str(kitti)), "kitti"),
                                 (tmp_path, file_interface.read_euroc_csv_trajectory(str(euroc)), "euroc")):
        ours = trajectory_io.read_trajectory(path)
        assert ours.format == fmt
        np.testing.assert_allclose(ours.cam2world, np.stack(reference.poses_se3), atol=1e-9)
        if fmt != "kitti":
            np.testing.assert_allclose(ours.times, reference.timestamps, rtol=0, atol=1e-6)
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    with pytest.raises(SpatialctlError, match="bad.txt: not a trajectory file"):
        trajectory_io.read_trajectory(tmp_path / "bad.txt")


def fr1_xyz_like(tmp_path):
    """Truth at ~100 Hz and an estimate at 30 Hz, both in absolute TUM stamps, the estimate starting 0.4 s
    after the truth (as fr1_xyz's rgb.txt does) and up to scale."""
    rng = np.random.default_rng(9)
    gt_t = T0 + np.arange(400) * 0.01 + rng.normal(0, 0.0005, 400)
    gt = random_trajectory(400, 10)
    est_idx = np.arange(40, 400, 3)
    est_t = gt_t[est_idx] + rng.normal(0, 0.003, len(est_idx))
    est = noisy_sim3(gt[est_idx], 0.7, 11)
    file_interface.write_tum_trajectory_file(str(tmp_path / "groundtruth.txt"), evo_traj(gt, gt_t))
    file_interface.write_tum_trajectory_file(str(tmp_path / "estimate.txt"), evo_traj(est, est_t))
    return est, est_t


def evo_ape_files(tmp_path, align, scale):
    ref = file_interface.read_tum_trajectory_file(str(tmp_path / "groundtruth.txt"))
    est = file_interface.read_tum_trajectory_file(str(tmp_path / "estimate.txt"))
    ref, est = sync.associate_trajectories(ref, est)  # evo_ape's defaults: max_diff 0.01, offset 0
    est.align(ref, correct_scale=scale)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    return ape.get_statistic(metrics.StatisticsType.rmse), est.num_poses


def test_cli_tum_absolute_stamps_match_evo_ape_without_options(tmp_path, cli):
    est, est_t = fr1_xyz_like(tmp_path)
    gt_file = str(tmp_path / "groundtruth.txt")
    r = cli("eval", "geometry", str(tmp_path / "estimate.txt"), "--gt", gt_file, "--out", str(tmp_path / "r"),
            "--no-plots")
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    sim3, n = evo_ape_files(tmp_path, True, True)
    se3, _ = evo_ape_files(tmp_path, True, False)
    assert rep["n_frames"] == n and rep["time_offset"] == 0.0
    assert rep["trajectory"]["ate"]["rmse"] == pytest.approx(sim3, rel=1e-6)  # 1e-6: 9-digit text files
    assert rep["trajectory"]["ate_se3"]["rmse"] == pytest.approx(se3, rel=1e-6)
    # A scene store with the same absolute stamps, against a TUM folder whose rgb.txt starts elsewhere.
    folder = tmp_path / "tum"
    folder.mkdir()
    (folder / "groundtruth.txt").write_text((tmp_path / "groundtruth.txt").read_text())
    (folder / "rgb.txt").write_text(f"{T0 + 0.3:.6f} rgb/x.png\n")
    url = write_store(str(tmp_path / "est.zarr"), est, est_t)
    rep = run(GeometryEvalConfig(plots=False, gt=str(folder), out=str(tmp_path / "r2")), url).details
    assert rep["trajectory"]["ate"]["rmse"] == pytest.approx(sim3, rel=1e-6)


def test_kitti_pairs_by_index(tmp_path):
    gt = random_trajectory(30, 12)
    est = noisy_sim3(gt, 1.0, 13)
    file_interface.write_kitti_poses_file(str(tmp_path / "gt.txt"), evo_traj(gt))
    file_interface.write_kitti_poses_file(str(tmp_path / "est.txt"), evo_traj(est))
    rep = run(GeometryEvalConfig(align="se3", plots=False, gt=str(tmp_path / "gt.txt"), out=str(tmp_path / "r")), str(tmp_path / "est.txt")).details
    assert rep["association"] == "by index" and rep["n_frames"] == 30
    ref = file_interface.read_kitti_poses_file(str(tmp_path / "gt.txt"))
    e = file_interface.read_kitti_poses_file(str(tmp_path / "est.txt"))
    e.align(ref)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, e))
    assert rep["trajectory"]["ate"]["rmse"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.rmse), rel=1e-6)
    file_interface.write_kitti_poses_file(str(tmp_path / "short.txt"), evo_traj(est[:20]))
    with pytest.raises(SpatialctlError, match="pairs by index; the estimate has 20 poses, the truth 30"):
        run(GeometryEvalConfig(plots=False, gt=str(tmp_path / "gt.txt"), out=str(tmp_path / "r")), str(tmp_path / "short.txt"))


def write_store(url, poses, times):
    n = len(poses)
    arrays = {"timestamps": np.asarray(times, dtype=np.float64), "cam2world": poses,
              "intrinsics": np.tile(camera.intrinsics_matrix(5, 5, 4, 3), (n, 1, 1)),
              "frames": np.zeros((n, 6, 8, 3), np.uint8), "depth": np.ones((n, 6, 8), np.float32),
              "conf": np.ones((n, 6, 8), np.float32), "pointmaps": np.ones((n, 6, 8, 3), np.float32)}
    store.write_scene(url, arrays, {"scale": "relative", "scale_source": "none", "world_up": None},
                      {"stage": "test", "config_hash": "x"})
    return url


def test_store_against_euroc_and_kitti(tmp_path):
    gt = random_trajectory(60, 14)
    t_ns = (1403636579.763555527 + np.arange(60) * 0.005) * 1e9  # EuRoC's 200 Hz nanosecond stamps
    euroc = tmp_path / "MH_01" / "mav0" / "state_groundtruth_estimate0" / "data.csv"
    euroc.parent.mkdir(parents=True)
    lines = ["#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []"]
    for t, p in zip(t_ns, gt, strict=True):
        w, x, y, z = camera.rotation_to_quaternion(p[:3, :3])
        lines.append(f"{int(t)},{p[0, 3]:.12f},{p[1, 3]:.12f},{p[2, 3]:.12f},{w:.12f},{x:.12f},{y:.12f},{z:.12f}")
    euroc.write_text("\n".join(lines) + "\n")
    est = noisy_sim3(gt[::4], 0.8, 15)  # a 50 Hz estimate on the same clock
    url = write_store(str(tmp_path / "est.zarr"), est, np.round(t_ns[::4]) / 1e9)
    rep = run(GeometryEvalConfig(plots=False, gt=str(tmp_path / "MH_01"), out=str(tmp_path / "r")), url).details
    ref = file_interface.read_euroc_csv_trajectory(str(euroc))
    e = PoseTrajectory3D(poses_se3=list(est), timestamps=np.round(t_ns[::4]) / 1e9)
    ref, e = sync.associate_trajectories(ref, e)
    e.align(ref, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, e))
    assert rep["gt_kind"] == "euroc" and rep["n_frames"] == 15
    assert rep["trajectory"]["ate"]["rmse"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.rmse), rel=1e-6)
    # A KITTI file has no stamps: the store pairs with it by index.
    file_interface.write_kitti_poses_file(str(tmp_path / "gt_kitti.txt"), evo_traj(gt[::4]))
    rep = run(GeometryEvalConfig(plots=False, gt=str(tmp_path / "gt_kitti.txt"), out=str(tmp_path / "r")), url).details
    assert rep["gt_kind"] == "kitti" and rep["association"] == "by index"
    assert rep["trajectory"]["ate"]["rmse"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.rmse), rel=1e-6)
