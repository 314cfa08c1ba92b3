"""ATE / RPE / depth / point-cloud metrics against hand-computed cases and known similarity transforms."""

import numpy as np
import pytest

from spatialctl.camera import look_at, quaternion_to_rotation
from spatialctl.geometry_metrics import (
    apply_sim3_to_poses,
    associate_unique,
    ate,
    depth_eval_mask,
    depth_metrics,
    pointcloud_metrics,
    rpe,
    umeyama,
)


def rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


def random_rotation(rng) -> np.ndarray:
    return quaternion_to_rotation(rng.normal(size=4))


def orbit_poses(n: int = 12) -> np.ndarray:
    angles = np.linspace(0, 1.5 * np.pi, n)
    eyes = np.stack([3 * np.cos(angles), 3 * np.sin(angles), 1.0 + 0.2 * np.sin(3 * angles)], 1)
    return np.stack([look_at(e, np.zeros(3)) for e in eyes])


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    s, r, t = 2.5, random_rotation(rng), np.array([1.0, -2.0, 0.5])
    dst = s * src @ r.T + t
    s2, r2, t2 = umeyama(src, dst)
    assert s2 == pytest.approx(s)
    np.testing.assert_allclose(r2, r, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-10)
    with pytest.raises(ValueError):
        umeyama(src[:2], dst[:2])


def test_ate_hand_cases():
    gt = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]])
    shifted = gt + [1.0, 0, 0]
    assert ate(shifted, gt, "none").rmse == pytest.approx(1.0)
    assert ate(shifted, gt, "se3").rmse == pytest.approx(0.0, abs=1e-12)
    doubled = 2 * gt
    # SE(3) cannot undo a scale: every point stays 1 away from its truth.
    assert ate(doubled, gt, "se3").rmse == pytest.approx(1.0)
    r = ate(doubled, gt, "sim3")
    assert r.rmse == pytest.approx(0.0, abs=1e-12) and r.alignment.scale == pytest.approx(0.5)
    # x stretched by 2: by symmetry R = I, t = 0; cross-covariance diag(1, 0.5, 0), source variance
    # (4+4+1+1)/4 = 2.5, so s = 1.5/2.5 = 0.6; aligned x = ±1.2, y = ±0.6 -> errors 0.2, 0.2, 0.4, 0.4.
    stretched = gt * [2.0, 1.0, 1.0]
    r = ate(stretched, gt, "sim3")
    assert r.alignment.scale == pytest.approx(0.6)
    assert r.rmse == pytest.approx(np.sqrt(0.1)) and r.max == pytest.approx(0.4)
    assert ate(stretched, gt, "se3").rmse == pytest.approx(np.sqrt(0.5))

def test_ate_is_zero_after_sim3_of_a_transformed_trajectory():
    rng = np.random.default_rng(1)
    gt = orbit_poses()
    s, r, t = 0.37, random_rotation(rng), rng.normal(size=3)
    est = apply_sim3_to_poses(gt, s, r, t)
    res = ate(est, gt, "sim3")
    assert res.rmse < 1e-9
    assert res.alignment.scale == pytest.approx(1 / s)
    assert ate(est, gt, "se3").rmse > 0.5  # wrong scale shows without the similarity


def test_rpe_hand_cases():
    n = 6
    gt = np.tile(np.eye(4), (n, 1, 1))
    gt[:, 0, 3] = np.arange(n)  # 1 m steps along x
    est = gt.copy()
    est[:, 0, 3] = 1.1 * np.arange(n)
    r = rpe(est, gt)
    assert r.trans_mean == pytest.approx(0.1) and r.trans_rmse == pytest.approx(0.1)
    assert r.rot_mean_deg == pytest.approx(0.0, abs=1e-6) and r.n_pairs == n - 1
    assert rpe(est, gt, delta=2).trans_mean == pytest.approx(0.2)
    # An extra 10 degree yaw per step: rotation error 10 deg, translation unchanged (the step is measured in
    # the previous camera's frame, which the yaw of *that* camera turns).
    rot_est = gt.copy()
    for i in range(n):
        rot_est[i, :3, :3] = rot_z(10 * i)
    r2 = rpe(rot_est, gt)
    assert r2.rot_mean_deg == pytest.approx(10.0)
    # Step i in camera i's frame is R_z(-10 i) [1,0,0]; its distance to [1,0,0] is 2 sin(5 i deg).
    expected = np.mean([2 * np.sin(np.radians(5 * i)) for i in range(n - 1)])
    assert r2.trans_mean == pytest.approx(expected)


def test_rpe_is_invariant_to_a_world_similarity_with_sim3_scale():
    rng = np.random.default_rng(2)
    gt = orbit_poses()
    est = apply_sim3_to_poses(gt, 3.0, random_rotation(rng), rng.normal(size=3))
    assert rpe(est, gt, scale="sim3").trans_rmse < 1e-9
    assert rpe(est, gt, scale="sim3").rot_rmse_deg < 1e-5
    assert rpe(est, gt).trans_rmse > 0.1  # unscaled: the steps are three times too long


def test_depth_alignments():
    rng = np.random.default_rng(3)
    gt = rng.uniform(1, 5, size=(2, 8, 8))
    gt[0, 0, 0] = 0.0  # invalid pixels are left out
    none = depth_metrics(2 * gt, gt, "none")
    assert none["abs_rel"] == pytest.approx(1.0) and none["delta1"] == 0.0
    assert none["n_pixels"] == 2 * 64 - 1
    assert depth_metrics(1.1 * gt, gt, "none")["abs_rel"] == pytest.approx(0.1)
    assert depth_metrics(1.1 * gt, gt, "none")["delta1"] == 1.0
    med = depth_metrics(2 * gt, gt, "median")
    assert med["abs_rel"] == pytest.approx(0.0, abs=1e-12) and med["delta1"] == 1.0
    ss = depth_metrics(0.5 * gt + 3.0, gt, "scale_shift")
    assert ss["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert depth_metrics(0.5 * gt + 3.0, gt, "median")["abs_rel"] > 0.01


def test_sequence_scale_keeps_frames_relative_scale():
    gt = np.ones((2, 4, 4))
    pred = np.stack([np.ones((4, 4)), 2 * np.ones((4, 4))])
    # Per-frame median alignment hides the frames' disagreement...
    assert depth_metrics(pred, gt, "median")["abs_rel"] == pytest.approx(0.0)
    # ...one sequence factor median(gt)/median(pred) = 1/1.5 leaves 2/3 and 4/3: AbsRel 1/3, no δ hits.
    seq = depth_metrics(pred, gt, "sequence")
    assert seq["abs_rel"] == pytest.approx(1 / 3) and seq["delta1"] == 0.0
    with pytest.raises(ValueError):
        depth_metrics(pred, np.zeros_like(gt))


def test_pointcloud_hand_case():
    gt = np.zeros((1, 3))
    pred = np.array([[1.0, 0, 0], [0, 0, 0]])
    m = pointcloud_metrics(pred, gt, threshold=0.5)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["completeness"] == pytest.approx(0.0)
    assert m["chamfer"] == pytest.approx(0.25)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == 1.0
    assert m["fscore"] == pytest.approx(2 / 3)
    # NaN points (invalid pixels) are dropped, not matched.
    m2 = pointcloud_metrics(np.vstack([pred, [np.nan, 0, 0]]), gt)
    assert m2["n_pred"] == 2


def eigen_reference(pred, gt, min_depth, max_depth, median=True):
    """The Eigen protocol written out from its definition (Eigen et al. 2014; monodepth2's evaluate_depth.py):
    per image, mask min < gt < max, median-scale the masked prediction, clamp, seven errors; mean over images."""
    rows = []
    for p, g in zip(pred, gt, strict=True):
        m = (g > min_depth) & (g < max_depth)
        p, g = p[m], g[m]
        if median:
            p = p * np.median(g) / np.median(p)
        p = np.minimum(np.maximum(p, min_depth), max_depth)
        t = np.maximum(g / p, p / g)
        rows.append([np.mean(np.abs(g - p) / g), np.mean((g - p) ** 2 / g), np.sqrt(np.mean((g - p) ** 2)),
                     np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)), np.mean(t < 1.25), np.mean(t < 1.25**2),
                     np.mean(t < 1.25**3)])
    return dict(zip(("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"), np.mean(rows, 0),
                    strict=True))


def test_depth_is_the_per_image_eigen_protocol():
    rng = np.random.default_rng(4)
    gt = rng.uniform(0.5, 12.0, size=(3, 20, 30))
    gt[0, :15] = 0.0  # image 0 has far fewer valid pixels: per-image and pooled means differ
    pred = gt * rng.uniform(0.6, 1.5, size=gt.shape) * np.array([1.0, 2.0, 0.5])[:, None, None]
    pred[1, 0, :5] = 1e4  # predictions at pixels beyond max_depth must not move the median
    gt[1, 0, :5] = 50.0
    pred[2, 3, 3] = 0.0  # a hole: clamped to min_depth
    ours = depth_metrics(pred, gt, "median", min_depth=1e-3, max_depth=10.0)
    ref = eigen_reference(pred, gt, 1e-3, 10.0)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-12), key
    assert ours["n_images"] == 3
    # The pooled mean (all pixels of all images at once) is a different number.
    mask = depth_eval_mask(gt, 1e-3, 10.0)
    assert abs(ours["abs_rel"] - np.mean([
        np.abs(gt[i][mask[i]] - pred[i][mask[i]] * np.median(gt[i][mask[i]]) / np.median(pred[i][mask[i]]))
        .sum() for i in range(3)]) / mask.sum()) > 1e-4
    unscaled = depth_metrics(pred, gt, "none", max_depth=10.0)
    assert unscaled["abs_rel"] == pytest.approx(eigen_reference(pred, gt, 1e-3, 10.0, median=False)["abs_rel"],
                                                rel=1e-12)


def test_depth_crops():
    gt = np.ones((1, 375, 1242))
    garg = depth_eval_mask(gt, crop="garg")[0]
    rows, cols = np.nonzero(garg.any(1))[0], np.nonzero(garg.any(0))[0]
    # Garg crop on a KITTI frame: rows int(0.40810811*375)=153 .. int(0.99189189*375)=371 (exclusive),
    # columns int(0.03594771*1242)=44 .. int(0.96405229*1242)=1197 (exclusive).
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153, 371, 44, 1197)
    eigen = depth_eval_mask(gt, crop="eigen")[0]
    rows = np.nonzero(eigen.any(1))[0]
    assert (rows[0], rows[-1] + 1) == (int(0.3324324 * 375), int(0.91351351 * 375))
    with pytest.raises(ValueError, match="crop"):
        depth_eval_mask(gt, crop="nyu")


def test_pointcloud_dtu_outlier_cut():
    gt = np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])
    pred = np.array([[0.0, 0.1, 0], [1, 0.2, 0], [2, 0, 5.0]])  # the last point is 5 away: an outlier
    full = pointcloud_metrics(pred, gt)
    cut = pointcloud_metrics(pred, gt, max_dist=1.0)
    d_acc = [0.1, 0.2, 5.0]  # nearest truth of each predicted point
    d_comp = [min(np.linalg.norm(g - p) for p in pred) for g in gt]  # nearest prediction of each truth point
    assert full["accuracy"] == pytest.approx(np.mean(d_acc))
    assert cut["accuracy"] == pytest.approx(np.mean([0.1, 0.2]))  # DTU: mean of the distances below max_dist
    assert cut["completeness"] == pytest.approx(np.mean([d for d in d_comp if d < 1.0]))
    assert cut["chamfer"] == pytest.approx((cut["accuracy"] + cut["completeness"]) / 2)
    assert "DTU" in cut["chamfer_form"] and cut["accuracy_inliers"] == pytest.approx(2 / 3)


def test_associate_unique_is_tums_associate_rule():
    """TUM RGB-D's associate.py, written out from its definition: every pair closer than max_difference, sorted
    by (difference, a, b), taken greedily while both stamps are unused, then sorted by a."""
    rng = np.random.default_rng(5)
    a = np.sort(1305031102.0 + rng.uniform(0, 3, 90))
    b = np.sort(1305031102.0 + rng.uniform(0, 3, 80))
    candidates = sorted((abs(x - y), x, y) for x in a for y in b if abs(x - y) < 0.02)
    free_a, free_b, matches = set(a), set(b), []
    for _, x, y in candidates:
        if x in free_a and y in free_b:
            free_a.remove(x)
            free_b.remove(y)
            matches.append((x, y))
    matches.sort()
    ia, ib = associate_unique(a, b, 0.02)
    assert list(zip(a[ia], b[ib], strict=True)) == matches and len(matches) > 20
