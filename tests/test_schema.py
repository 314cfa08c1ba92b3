"""Reading validates: each kind of bad artifact gets a one-line error naming the path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from spatialctl import schema, store
from spatialctl.errors import SchemaError


def _set_header(url: str, **changes) -> None:
    group = zarr.open_group(url, mode="r+")
    group.attrs["spatialctl"] = {**group.attrs["spatialctl"], **changes}


def _expect(url: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as err:
        store.open_scene(url)
    message = str(err.value)
    assert "\n" not in message and url in message and fragment in message, message


def test_valid_store_opens(make_scene):
    url = make_scene(n=3, h=6, w=8)
    scene = store.open_scene(url)
    assert scene.n_frames == 3 and scene.hw == (6, 8) and scene.is_metric
    assert scene.read("depth", frames=[0, 2]).shape == (2, 6, 8)


def test_newer_schema_version(make_scene):
    url = make_scene()
    _set_header(url, schema_version=schema.SCHEMA_VERSION + 1)
    _expect(url, "newer")


def test_older_schema_version(make_scene):
    url = make_scene()
    _set_header(url, schema_version=0)
    _expect(url, "older")


def test_wrong_kind(make_scene):
    url = make_scene()
    _set_header(url, kind="tracks")
    _expect(url, "not a spatialctl scene store")


def test_incomplete_store(make_scene):
    url = make_scene()
    _set_header(url, complete=False)
    _expect(url, "incomplete")


def test_missing_array(make_scene):
    url = make_scene()
    zarr.open_group(url, mode="r+").__delitem__("cam2world")
    _expect(url, "missing array 'cam2world'")


def test_wrong_dtype(make_scene):
    url = make_scene(n=2, h=4, w=4)
    group = zarr.open_group(url, mode="r+")
    del group["depth"]
    group.create_array("depth", data=np.ones((2, 4, 4), np.float64))
    _expect(url, "dtype float64")


def test_wrong_shape(make_scene):
    url = make_scene(n=3, h=4, w=4)
    group = zarr.open_group(url, mode="r+")
    del group["conf"]
    group.create_array("conf", data=np.ones((3, 4, 5), np.float32))
    _expect(url, "conf")


def test_missing_attribute(make_scene):
    url = make_scene()
    group = zarr.open_group(url, mode="r+")
    attrs = dict(group.attrs)
    del attrs["world_up"]
    group.attrs.clear()
    group.attrs.update(attrs)
    _expect(url, "world_up")


def test_nan_where_none_allowed(make_scene):
    url = make_scene(n=2, h=4, w=4)
    zarr.open_group(url, mode="r+")["depth"][0, 1, 1] = np.nan
    scene = store.open_scene(url)  # opening is cheap and does not scan data...
    with pytest.raises(SchemaError, match="depth: contains NaN"):
        scene.read("depth")  # ...reading does


def test_not_a_store(tmp_path):
    url = str(tmp_path / "nothing.zarr")
    _expect(url, "no such scene store")
    Path(url).mkdir()
    (Path(url) / "zarr.json").write_text("{ truncated")
    _expect(url, "not a Zarr v3 group")


def test_writer_refuses_nan(tmp_path):
    from conftest import SCENE_ATTRS, scene_arrays

    arrays = scene_arrays(n=2, h=4, w=4)
    arrays["pointmaps"][0, 0, 0, 0] = np.nan
    url = str(tmp_path / "bad.zarr")
    with pytest.raises(SchemaError, match="NaN"):
        store.write_scene(url, arrays, SCENE_ATTRS, {})
    assert not Path(url).exists() and not list(tmp_path.iterdir()), "no half-written artifact"


def _tracks(n, h, w, objects=2):
    return {
        "masks": store.pack_masks(np.zeros((objects, n, h, w), bool)),
        "visible": np.zeros((objects, n), bool),
        "centroid": np.full((objects, n, 3), np.nan, np.float32),
        "box": np.full((objects, n, 7), np.nan, np.float32),
        "aabb": np.full((objects, n, 6), np.nan, np.float32),
        "velocity": np.full((objects, n, 3), np.nan, np.float32),
        "moving": np.zeros(objects, bool),
        "score": np.ones(objects, np.float32),
    }


def test_tracks_group_validated_against_scene(make_scene):
    url = make_scene(n=3, h=6, w=8)
    objects = [{"id": 0, "label": "cup", "score": 1.0}, {"id": 1, "label": "box", "score": 1.0}]
    store.write_group(url, "tracks", _tracks(3, 6, 8), {"objects": objects}, {"stage": "test"})
    tracks = store.open_scene(url).open_group("tracks")
    assert np.isnan(tracks.read("centroid")).all()  # NaN allowed where the schema says so
    # a tracks group whose frame count disagrees with the scene is refused
    store.write_group(url, "tracks", _tracks(2, 6, 8), {"objects": objects}, {"stage": "test"})
    with pytest.raises(SchemaError, match="tracks/masks"):
        store.open_scene(url).open_group("tracks")


def test_mask_packing_roundtrip():
    rng = np.random.default_rng(1)
    masks = rng.random((2, 3, 7, 9)) > 0.5
    packed = store.pack_masks(masks)
    assert packed.shape == (2, 3, schema.packed_mask_bytes(7, 9)) and packed.dtype == np.uint8
    assert np.array_equal(store.unpack_mask(packed, (7, 9)), masks)


def test_readme_schema_section_is_generated_from_the_schema():
    """The README's tables are exactly ``schema.markdown()`` (regenerate: ``python -m spatialctl.schema README.md``),
    so an array, dtype, shape or doc changed in schema.py without the README fails here."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert schema.with_schema_section(readme) == readme, "README schema section is stale: python -m spatialctl.schema README.md"
    assert schema.markdown() in readme
    for spec in schema.NODES.values():
        for a in spec.arrays:
            assert f"| `{a.name}` | {a.dtype} |" in readme, f"README misses array {a.name}"
    assert "OpenCV" in readme and "right-handed" in readme
    stale = readme.replace("| `depth` | float32 |", "| `depth` | float16 |")
    assert schema.with_schema_section(stale) != stale  # the comparison sees a one-word drift


def test_describe_lists_everything(make_scene):
    url = make_scene(n=2, h=4, w=4)
    desc = store.describe(url)
    assert desc["header"] == {"kind": "scene", "schema_version": 2, "complete": True, "files": 14}
    assert desc["arrays"]["pointmaps"] == {"shape": [2, 4, 4, 3], "dtype": "float32"}
    json.dumps(desc)
