"""Id association on synth-style instance masks: leaving and re-entering, crossing, late entry."""

from __future__ import annotations

import numpy as np

from spatialctl.stages.track.associate import Associator, match_masks, merge_tracklets

H, W, F = 60, 80, 40.0  # image size and focal length of a camera at the origin looking along +z


def render_masks(positions: np.ndarray, radii: np.ndarray, pan: np.ndarray) -> np.ndarray:
    """Discs of world spheres with occlusion: positions (O, N, 3), radii (O,), camera yaw per frame (N,).

    Returns (O, N, H, W) masks; an object out of view or hidden behind a nearer one has an empty mask."""
    n_obj, n = positions.shape[:2]
    v, u = np.mgrid[0:H, 0:W]
    masks = np.zeros((n_obj, n, H, W), bool)
    for t in range(n):
        c, s = np.cos(pan[t]), np.sin(pan[t])
        rot = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # world to camera: yaw about the vertical axis
        cam = positions[:, t] @ rot.T
        depth = np.full((H, W), np.inf)
        for o in np.argsort(-cam[:, 2]):  # far to near, nearer ones overwrite
            x, y, z = cam[o]
            if z <= 0.1:
                continue
            r = F * radii[o] / z
            disc = (u - (W / 2 + F * x / z)) ** 2 + (v - (H / 2 + F * y / z)) ** 2 <= r * r
            depth[disc] = z
            masks[:, t][:, disc] = False
            masks[o, t][disc] = True
    return masks


def run_associator(masks, labels, positions=None, radii=None, seed=0):
    """Feed each frame's visible observations in shuffled order; return the ids given per (object, frame)."""
    rng = np.random.default_rng(seed)
    assoc = Associator()
    n_obj, n = masks.shape[:2]
    ids = np.full((n_obj, n), -1)
    for t in range(n):
        present = [o for o in range(n_obj) if masks[o, t].any()]
        rng.shuffle(present)
        cents = None if positions is None else positions[present, t]
        sizes = None if radii is None else 2 * radii[present]
        got = assoc.step(t, masks[present, t], [labels[o] for o in present], cents, sizes)
        ids[present, t] = got
    return ids


def assert_one_id_per_object(ids, masks):
    seen = {}
    for o in range(len(ids)):
        vals = set(ids[o][masks[o].any(axis=(1, 2))].tolist())
        assert len(vals) == 1, f"object {o} got ids {vals}"
        seen[o] = vals.pop()
    assert len(set(seen.values())) == len(seen), f"two objects share an id: {seen}"


def test_object_leaving_and_reentering_keeps_its_id():
    # The camera pans away from A (static) and back, while B stays in view; both are "cup".
    n = 30
    pan = np.concatenate([np.linspace(0, 0.9, 15), np.linspace(0.9, 0, 15)])
    positions = np.zeros((2, n, 3))
    positions[0, :] = [-0.6, 0.0, 3.0]
    positions[1, :] = [1.8, 0.2, 3.0]
    radii = np.array([0.3, 0.3])
    masks = render_masks(positions, radii, pan)
    vis_a = masks[0].any(axis=(1, 2))
    assert vis_a[0] and not vis_a[15] and vis_a[-1]  # A really leaves and comes back
    ids = run_associator(masks, ["cup", "cup"], positions, radii)
    assert_one_id_per_object(ids, masks)


def test_two_objects_crossing_keep_their_ids():
    # Same label, A near and B far cross in the image; B is hidden behind A for a few frames.
    n = 24
    t = np.arange(n)
    positions = np.zeros((2, n, 3))
    positions[0, :, 0] = np.linspace(-1.2, 1.2, n)
    positions[0, :, 2] = 3.0
    positions[1, :, 0] = np.linspace(2.0, -2.0, n)
    positions[1, :, 2] = 5.0
    radii = np.array([0.35, 0.3])
    masks = render_masks(positions, radii, np.zeros(n))
    hidden_b = ~masks[1].any(axis=(1, 2))
    assert hidden_b[(t > 5) & (t < 18)].any()  # a real occlusion
    ids = run_associator(masks, ["ball", "ball"], positions, radii, seed=1)
    assert_one_id_per_object(ids, masks)
    # Without 3D the far object is re-identified as new after the occlusion: the 3D cue is what keeps it.
    ids_2d = run_associator(masks, ["ball", "ball"], seed=1)
    after = np.flatnonzero(~hidden_b & (t > 12))[0]
    assert ids_2d[1, after] != ids_2d[1, 0]


def test_late_entering_object_gets_a_new_id_and_others_keep_theirs():
    n = 20
    positions = np.zeros((3, n, 3))
    positions[0, :] = [-1.0, 0.0, 4.0]
    positions[1, :, 0] = np.linspace(0.0, 0.6, n)
    positions[1, :, 2] = 4.0
    positions[2, :] = [20.0, 0.0, 4.0]  # out of view ...
    positions[2, 10:, 0] = np.linspace(2.4, 1.2, n - 10)  # ... enters at frame 10
    radii = np.array([0.3, 0.3, 0.3])
    masks = render_masks(positions, radii, np.zeros(n))
    assert not masks[2, :10].any() and masks[2, 10].any()
    ids = run_associator(masks, ["box", "box", "box"], positions, radii, seed=2)
    assert_one_id_per_object(ids, masks)
    assert ids[2, 10] == 2  # a fresh id, not a recycled one


def test_match_masks_keyframe_matching_and_duplicates():
    v, u = np.mgrid[0:40, 0:40]
    a = (u - 10) ** 2 + (v - 10) ** 2 < 36
    b = (u - 30) ** 2 + (v - 28) ** 2 < 49
    shifted_a = (u - 11) ** 2 + (v - 10) ** 2 < 36
    part_of_b = b & (u < 30)
    new = (u - 30) ** 2 + (v - 6) ** 2 < 16
    pairs, fresh = match_masks(np.stack([a, b]), np.stack([part_of_b, new, shifted_a]),
                               ["cup", "cup"], ["cup", "cup", "cup"])
    assert (0, 2) in pairs  # a moved by a pixel: same object
    assert fresh == [1]  # half of b is b, not a new object; the disc elsewhere is new
    pairs, fresh = match_masks(np.stack([a]), np.stack([shifted_a]), ["cup"], ["car"])
    assert pairs == [] and fresh == [0]  # labels must agree


def test_merge_tracklets_joins_fragments_of_one_object():
    # Tracklets as SAM 2 leaves them when it loses an object: A before leaving, A after re-entering, and B.
    n = 30
    pan = np.concatenate([np.linspace(0, 0.9, 15), np.linspace(0.9, 0, 15)])
    positions = np.zeros((2, n, 3))
    positions[0, :] = [-0.6, 0.0, 3.0]
    positions[1, :] = [1.8, 0.2, 3.0]
    radii = np.array([0.3, 0.3])
    masks = render_masks(positions, radii, pan)
    frag = np.stack([masks[0].copy(), masks[0].copy(), masks[1]])
    frag[0, 15:] = False
    frag[1, :15] = False
    cents = np.stack([positions[0], positions[0], positions[1]])
    groups = merge_tracklets(lambda t: frag[:, t], ["cup"] * 3, n, cents, 2 * radii[[0, 0, 1]])
    assert groups[0] == groups[1] != groups[2]
