"""Room size on synth rooms: the room's floor area from its walls, asked only where the video shows the room."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import zarr

from spatialctl.stages.make_qa.scene import load_scene
from spatialctl.stages.make_qa.static import ROOM_SEEN, StaticGenerator, hull_area
from spatialctl.stages.synth import SynthConfig
from spatialctl.stages.synth import run as synth_run


@pytest.mark.parametrize(("preset", "camera", "seed"), [("indoor", "walk", 4), ("indoor", "static", 9),
                                                       ("tabletop", "orbit", 2), ("tiny-tabletop", "static", 3)])
def test_room_size_is_the_floor_area_where_the_room_is_seen(tmp_path, preset, camera, seed):
    cfg = SynthConfig(seed=seed, preset=preset, camera=camera, frames=4, width=48, height=36, objects=3, moving=1,
                      quiet=True)
    assert synth_run(dataclasses.replace(cfg, out=str(tmp_path / "s"))).exit_code == 0
    url = str(tmp_path / "s" / "scene.zarr")
    g = zarr.open_group(url, mode="r")
    lo, hi = np.array(g.attrs["synth"]["room"]["bounds_m"])
    floor = (hi[0] - lo[0]) * (hi[1] - lo[1])  # from the walls, not from the declared area
    seen = hull_area(g["pointmaps"][:][g["depth"][:] > 0][:, :2].astype(float))
    scene = load_scene(url)
    assert scene.enclosed
    draft = StaticGenerator(scene).generate("room_size", random.Random(0))
    if seen >= ROOM_SEEN * floor:
        assert draft is not None and draft.answer == round(floor, 1) and draft.unit == "m²"
        assert seen < floor + 1e-6  # the frames never show more than the room
    else:  # a close-up of a few coins: the room is hardly seen
        assert draft is None
