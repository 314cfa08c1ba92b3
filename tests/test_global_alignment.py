"""Global alignment on exact synthetic truth (the perfect network), and its parts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spatialctl import camera
from spatialctl.errors import SpatialctlError
from spatialctl.stages.reconstruct.align import (
    AlignConfig,
    focal_from_pointmap,
    global_align,
    quat_to_rotmat,
    rotmat_to_quat,
    weighted_umeyama,
)
from spatialctl.stages.reconstruct.graph import make_pairs
from spatialctl.stages.synth import SynthConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")


def synth_truth(n=5, h=36, w=48, preset="indoor", seed=0):
    _, truth = generate(SynthConfig(seed=seed, preset=preset, frames=n, width=w, height=h, moving=0))
    a = truth.scene_arrays
    return a["depth"].astype(np.float64), a["cam2world"], a["intrinsics"], a["pointmaps"]


def perfect_pairs(depth, cam2world, intrinsics, pairs, noise=0.0, seed=0):
    """What a perfect DUSt3R predicts: view i in camera i, view j in camera i, each pair at its own scale."""
    rng = np.random.default_rng(seed)
    cams = np.stack([camera.unproject_depth(d, k) for d, k in zip(depth, intrinsics, strict=True)])
    world = np.stack([camera.transform(c, p) for c, p in zip(cams, cam2world, strict=True)])
    valid = depth > 0
    out = {k: [] for k in ("pts_i", "conf_i", "pts_j", "conf_j")}
    for i, j in pairs:
        scale = np.exp(rng.uniform(-1.0, 1.0))  # the network's pointmaps are up to scale
        for view, src in (("i", cams[i]), ("j", camera.transform(world[j], camera.invert(cam2world[i])))):
            pts = src * scale
            if noise:
                pts = pts * (1 + noise * rng.standard_normal(pts.shape[:2] + (1,)))
            v = valid[i] if view == "i" else valid[j]
            out[f"pts_{view}"].append(np.where(v[..., None], pts, 0.0))
            out[f"conf_{view}"].append(np.where(v, 3.0, 1.0))  # conf 1 -> weight log(1) = 0 on holes
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def ate(est_c2w, gt_c2w):
    s, r, t = camera.umeyama(est_c2w[:, :3, 3], gt_c2w[:, :3, 3])
    aligned = s * est_c2w[:, :3, 3] @ r.T + t
    return float(np.sqrt(((aligned - gt_c2w[:, :3, 3]) ** 2).sum(-1).mean()))


def extent(points):
    pts = points.reshape(-1, 3)
    return float(np.linalg.norm(pts.max(0) - pts.min(0)))


def run_align(depth, c2w, k, graph, noise=0.0, **cfg):
    pairs = make_pairs(len(depth), graph)
    p = perfect_pairs(depth, c2w, k, pairs, noise=noise)
    return global_align(pairs, p["pts_i"], p["conf_i"], p["pts_j"], p["conf_j"], len(depth), AlignConfig(**cfg))


@pytest.fixture(scope="module")
def truth():
    return synth_truth()


@pytest.mark.parametrize("shared_focal", [False, True])
def test_recovers_poses_and_focal_from_perfect_pairs(truth, shared_focal):
    depth, c2w, k, points = truth
    res = run_align(depth, c2w, k, "complete", niter=60, shared_focal=shared_focal)
    err = ate(res.cam2world, c2w)
    assert err < 0.01 * extent(points), (err, extent(points))
    # Stricter than the requirement: also 1% of the camera path's own extent.
    assert err < 0.01 * extent(c2w[:, :3, 3])
    np.testing.assert_allclose(res.intrinsics[:, 0, 0], k[:, 0, 0], rtol=0.01)
    np.testing.assert_allclose(res.intrinsics[:, :2, 2], k[:, :2, 2], atol=1e-9)
    if shared_focal:
        assert np.ptp(res.intrinsics[:, 0, 0]) == 0
    # Outputs are consistent with each other: pointmaps are the depth unprojected by K and cam2world.
    for f in range(len(depth)):
        expect = camera.depth_to_pointmap(res.depth[f], res.intrinsics[f], res.cam2world[f])
        np.testing.assert_allclose(res.pointmaps[f], expect, atol=1e-4 * np.abs(expect).max())
    # Depth agrees with the truth up to the one global scale.
    ratio = np.median(depth[depth > 0] / res.depth[depth > 0])
    np.testing.assert_allclose(res.depth * ratio, depth, rtol=0.02)
    assert res.cam2world.dtype == np.float64 and res.cam2world.shape == (5, 4, 4)
    np.testing.assert_allclose(res.cam2world[:, 3], np.tile([0, 0, 0, 1.0], (5, 1)))
    assert len(res.loss_curve) == 60


def test_known_intrinsics_are_kept_fixed(truth):
    depth, c2w, k, points = truth
    pairs = make_pairs(5, "swin-2")
    p = perfect_pairs(depth, c2w, k, pairs)
    res = global_align(pairs, p["pts_i"], p["conf_i"], p["pts_j"], p["conf_j"], 5, AlignConfig(niter=20),
                       known_intrinsics=k[0])
    np.testing.assert_allclose(res.intrinsics, k, atol=1e-6)
    assert ate(res.cam2world, c2w) < 0.01 * extent(c2w[:, :3, 3])


def test_optimisation_improves_on_the_spanning_tree_with_noisy_pairs(truth):
    depth, c2w, k, points = truth
    # Same noisy predictions; only the optimisation differs. The tree uses N-1 pairs, the optimiser all of them.
    init = run_align(depth, c2w, k, "swin-2", noise=0.03, niter=0)
    opt = run_align(depth, c2w, k, "swin-2", noise=0.03, niter=100)
    assert opt.loss_curve[-1] < opt.init_loss
    assert ate(opt.cam2world, c2w) < 0.7 * ate(init.cam2world, c2w)
    assert ate(opt.cam2world, c2w) < 0.01 * extent(points)


def test_scale_does_not_collapse(truth):
    depth, c2w, k, _ = truth
    res = run_align(depth, c2w, k, "swin-1", niter=30, lr=0.05)
    init = run_align(depth, c2w, k, "swin-1", niter=0)
    # Fixing the mean pair log-scale pins the scene's size: optimisation keeps it (within a few %).
    assert 0.9 < np.median(res.depth) / np.median(init.depth) < 1.1


def test_per_frame_conf_is_max_over_own_pairs():
    rng = np.random.default_rng(0)
    pairs = make_pairs(3, "complete")
    pts = rng.uniform(1, 2, (len(pairs), 8, 8, 3)).astype(np.float32)
    conf_i = rng.uniform(1, 5, (len(pairs), 8, 8)).astype(np.float32)
    res = global_align(pairs, pts, conf_i, pts, conf_i, 3, AlignConfig(niter=0))
    for f in range(3):
        np.testing.assert_allclose(res.conf[f], conf_i[pairs[:, 0] == f].max(0))


def test_bad_inputs_raise():
    pairs = make_pairs(3, "complete")
    pts = np.ones((len(pairs), 8, 8, 3), np.float32)
    conf = np.ones((len(pairs), 8, 8), np.float32)
    bad = pts.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(SpatialctlError, match="NaN"):
        global_align(pairs, bad, conf, pts, conf, 3)
    with pytest.raises(SpatialctlError, match="out of range"):
        global_align(pairs, pts, conf, pts, conf, 2)
    one_way = np.array([[0, 1], [0, 2]])
    with pytest.raises(SpatialctlError, match="never the first view"):
        global_align(one_way, pts[:2], conf[:2], pts[:2], conf[:2], 3)


def test_rotation_helpers_roundtrip_and_umeyama():
    rng = np.random.default_rng(1)
    rots = np.stack([camera.quaternion_to_rotation(q) for q in rng.standard_normal((64, 4))])
    rots[0] = np.diag([1.0, -1.0, -1.0])  # 180 degrees: the hard case for quaternion extraction
    q = rotmat_to_quat(torch.tensor(rots))
    np.testing.assert_allclose(quat_to_rotmat(q).numpy(), rots, atol=1e-9)
    src = torch.tensor(rng.standard_normal((50, 3)))
    dst = 2.5 * src @ torch.tensor(rots[3]).T + torch.tensor([1.0, -2.0, 0.5])
    w = torch.ones(50, dtype=torch.float64)
    w[:10] = 0  # zero-weight points are ignored even when they are garbage
    dst[:10] += 100
    s, r, t = weighted_umeyama(src, dst, w)
    assert abs(float(s) - 2.5) < 1e-9
    np.testing.assert_allclose(r.numpy(), rots[3], atol=1e-9)


def test_focal_from_pointmap_is_robust_to_outliers():
    h, w, f = 24, 32, 40.0
    k = camera.intrinsics_matrix(f, f, (w - 1) / 2, (h - 1) / 2)
    pts = torch.tensor(camera.unproject_depth(np.full((h, w), 2.0), k), dtype=torch.float32)
    pts[:3] *= torch.tensor([3.0, 0.2, 1.0])  # a band of wrong points
    est = focal_from_pointmap(pts, torch.ones(h, w), torch.tensor([(w - 1) / 2, (h - 1) / 2]))
    assert abs(float(est) / f - 1) < 1e-3
