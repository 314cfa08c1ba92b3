"""The scene store schema, written down once.

A scene store is a Zarr v3 group (``scene.zarr``). Its root holds one video's frames and geometry; stages
add groups (``tracks``, ``genfeat``). Every node that a stage writes carries ``attrs["spatialctl"]``:

    {"kind": "scene" | "tracks" | "genfeat", "schema_version": 2, "complete": bool, "files": {...}}

``files`` (version 2) is the manifest written with the completeness mark: every file of the node's arrays with
its size and CRC32, so a reader can prove the node whole (Zarr would read a lost chunk as zeros).

and ``attrs["provenance"]`` (stage, package version, config, config hash, input fingerprints, time).

Conventions
-----------
- Camera: OpenCV (x right, y down, z forward). ``cam2world`` maps camera coordinates to a right-handed world.
- ``intrinsics`` are in pixels of the stored frames (H x W); pixel centres at integer coordinates.
- ``depth`` is z-depth along the camera's optical axis; 0 marks a pixel with no surface (sky, invalid).
- Units are metres when the root attribute ``scale`` is ``"metric"``; otherwise an arbitrary but consistent unit
  (``scale_source`` says where metric scale came from: ``synth``, ``depthpro``, ``pi3x``, ``known``, or
  ``none``).
- ``world_up`` is a unit vector in world coordinates (synth: ``[0, 0, 1]``), used for gravity-aligned boxes.
- Masks in ``tracks`` are ``np.packbits`` of the flattened H x W boolean mask, one chunk per object and frame.

Dimension symbols in shapes: N frames, H x W pixels, O objects, M packed mask bytes = ceil(H*W/8), h x w and C for
feature grids. A literal int is a fixed size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEMA_VERSION = 2


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    shape: tuple  # of str symbols and ints
    doc: str
    required: bool = True
    allow_nan: bool = False


@dataclass(frozen=True)
class NodeSpec:
    kind: str
    arrays: tuple[ArraySpec, ...]
    attrs: tuple[str, ...]  # required attributes besides "spatialctl" and "provenance"
    doc: str

    def array(self, name: str) -> ArraySpec:
        for spec in self.arrays:
            if spec.name == name:
                return spec
        raise KeyError(name)


SCENE = NodeSpec(
    kind="scene",
    doc="One video: frames, camera poses, intrinsics and per-pixel geometry.",
    attrs=("scale", "scale_source", "world_up"),
    arrays=(
        ArraySpec("frames", "uint8", ("N", "H", "W", 3), "RGB frames."),
        ArraySpec("timestamps", "float64", ("N",), "Frame times in seconds: from the start of a video; an image "
                  "folder's own clock (TUM-style names: those absolute seconds)."),
        ArraySpec("intrinsics", "float64", ("N", 3, 3), "Pinhole intrinsics K in pixels of the stored frames."),
        ArraySpec("cam2world", "float64", ("N", 4, 4), "OpenCV camera to world, rigid transform."),
        ArraySpec("depth", "float32", ("N", "H", "W"), "z-depth; 0 = no surface."),
        ArraySpec("conf", "float32", ("N", "H", "W"), "Confidence (DUSt3R, π³: >= 1); 0 where depth is 0."),
        ArraySpec("pointmaps", "float32", ("N", "H", "W", 3), "World coordinates of each pixel; 0 where invalid."),
        ArraySpec(
            "encoder_features",
            "float16",
            ("N", "h", "w", "C"),
            "Optional per-frame features on the patch grid, for train-gsm (DUSt3R: encoder tokens; π³/Pi3X: the "
            "decoder output its heads read).",
            required=False,
        ),
    ),
)

TRACKS = NodeSpec(
    kind="tracks",
    doc="Objects through the video (group `tracks`).",
    # objects: list of {"id", "label", "score", optional "kind", "true_size", "found_by", "completion"};
    # track also writes "labels": [{"label", "source": user|default|auto, ...}]
    attrs=("objects",),
    arrays=(
        ArraySpec("masks", "uint8", ("O", "N", "M"), "np.packbits of each flattened H x W instance mask."),
        ArraySpec("visible", "bool", ("O", "N"), "Whether the object is visible in the frame."),
        ArraySpec("centroid", "float32", ("O", "N", 3), "3D centroid in world; NaN when not visible.", allow_nan=True),
        ArraySpec(
            "box",
            "float32",
            ("O", "N", 7),
            "Gravity-aligned oriented box: centre xyz, size (box x, box y, up), yaw about world_up (rad).",
            allow_nan=True,
        ),
        ArraySpec("aabb", "float32", ("O", "N", 6), "Axis-aligned box: min xyz, max xyz.", allow_nan=True),
        ArraySpec("velocity", "float32", ("O", "N", 3), "World units per second; NaN when unknown.", allow_nan=True),
        ArraySpec("moving", "bool", ("O",), "True for objects that move during the video."),
        ArraySpec("score", "float32", ("O",), "Detection score (1 for ground truth)."),
    ),
)

GENFEAT = NodeSpec(
    kind="genfeat",
    doc="VEGA-3D generative features from a video diffusion transformer (group `genfeat` of a scene store, or a "
    "standalone `<video>.genfeat.zarr` for a video without geometry).",
    attrs=(),
    arrays=(
        ArraySpec("features", "float16", ("N", "h", "w", "C"), "Per-frame features on a patch grid."),
        ArraySpec("timestamps", "float64", ("N",), "Frame times in seconds (standalone stores only).", required=False),
    ),
)

NODES = {spec.kind: spec for spec in (SCENE, TRACKS, GENFEAT)}
GROUPS = ("tracks", "genfeat")  # groups a scene store may hold, named as their kind


def packed_mask_bytes(height: int, width: int) -> int:
    return math.ceil(height * width / 8)


def markdown() -> str:
    """The schema as a markdown table (the README's schema section is checked against this)."""
    lines = []
    for spec in NODES.values():
        where = "root" if spec.kind == "scene" else f"group `{spec.kind}`"
        lines.append(f"**{spec.kind}** ({where}): {spec.doc}\n")
        lines.append("| array | dtype | shape | meaning |")
        lines.append("| --- | --- | --- | --- |")
        for a in spec.arrays:
            shape = "(" + ", ".join(str(s) for s in a.shape) + ")"
            note = a.doc + ("" if a.required else " (optional)") + (" NaN allowed." if a.allow_nan else "")
            lines.append(f"| `{a.name}` | {a.dtype} | {shape} | {note} |")
        lines.append("")
    return "\n".join(lines)


README_BEGIN = "<!-- schema: generated by `python -m spatialctl.schema README.md`; do not edit by hand -->"
README_END = "<!-- schema: end -->"


def with_schema_section(text: str) -> str:
    """A README's text with the part between the schema markers replaced by :func:`markdown`."""
    head, begin, rest = text.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not begin or not end:
        raise ValueError(f"no schema markers ({README_BEGIN} ... {README_END})")
    return f"{head}{README_BEGIN}\n{markdown()}\n{README_END}{tail}"


if __name__ == "__main__":  # python -m spatialctl.schema README.md: regenerate the README's schema tables
    import sys
    from pathlib import Path

    path = Path(sys.argv[1])
    path.write_text(with_schema_section(path.read_text()))
