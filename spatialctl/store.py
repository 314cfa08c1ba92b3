"""Scene store I/O: atomic writes, validation on read, provenance.

An *item* (a whole scene store, or one group such as ``tracks`` added to a store) is written aside, moved into
place, and only then marked complete in its own ``zarr.json`` (a single-file write, atomic on local disks and on
object stores). A killed job therefore leaves either a complete item or an incomplete one that readers refuse and
reruns replace; never a half-written item that looks finished.

Paths may be local paths or fsspec URLs (``file://``, ``s3://``, ...).
"""

from __future__ import annotations

import json
import math
import os
import uuid
import zlib
from collections.abc import Mapping
from typing import Any

import fsspec
import numpy as np
import zarr
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

from spatialctl import schema
from spatialctl.errors import SchemaError, SpatialctlError, UsageError

# ---------------------------------------------------------------------------------------------------- paths


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = url_to_fs(url)
    return fs, path.rstrip("/")


def _is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def _zarr_store(url: str, *, read_only: bool):
    fs, path = _fs(url)
    if _is_local(fs):
        return zarr.storage.LocalStore(path, read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, read_only=read_only)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def exists(url: str) -> bool:
    fs, path = _fs(url)
    return fs.exists(path)


def remove(url: str) -> None:
    fs, path = _fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_text(url: str, text: str) -> None:
    """Write a small file atomically where the filesystem allows it (local: write aside, rename)."""
    fs, path = _fs(url)
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    fs.makedirs(parent, exist_ok=True)
    if _is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.partial"
        try:
            with open(tmp, "w") as f:
                f.write(text)
            fs.mv(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        fs.pipe_file(path, text.encode())


def read_text(url: str) -> str:
    fs, path = _fs(url)
    with fs.open(path, "r") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------------- writing


def _header(kind: str, complete: bool) -> dict:
    return {"kind": kind, "schema_version": schema.SCHEMA_VERSION, "complete": complete}


def _chunks(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    # Per-frame chunks for frame-major arrays; per object-frame for masks; whole array for small ones.
    if name == "masks":
        return (1, 1, shape[2])
    if len(shape) >= 3 and math.prod(shape) > 65536:
        return (1, *shape[1:])
    return shape


def _write_node(group: zarr.Group, arrays: Mapping[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        group.create_array(name, data=value, chunks=_chunks(name, value.shape) if value.ndim else None)


def beside(url: str, suffix: str) -> str:
    """A sibling path for ``url`` plus ``suffix`` that is never inside a Zarr hierarchy: for a group of a store
    (``scene.zarr/tracks``) it sits beside the store (``scene.zarr.tracks<suffix>``), whatever the store's name."""
    head, _, tail = url.rstrip("/").rpartition("/")
    if head and (head.endswith(".zarr") or exists(join(head, "zarr.json"))):
        return f"{head}.{tail}{suffix}"
    return f"{url.rstrip('/')}{suffix}"


def check_replaceable(url: str, kind: str) -> None:
    """Refuse (UsageError, exit 2) when ``url`` holds something spatialctl did not write as a ``kind`` node.

    Only a Zarr node whose header says it is a spatialctl ``kind`` (complete or not), or an empty folder, may be
    replaced; a file, a foreign folder or another kind of store is the user's and is never touched."""
    fs, path = _fs(url)
    if not fs.exists(path):
        return
    if fs.isfile(path):
        raise UsageError(f"{url}: exists and is a file, not a spatialctl {kind} store; refusing to replace it "
                         "(choose another output or move it away)")
    try:
        header = node_header(url)
    except SchemaError:
        header = None
    if header is None and not fs.ls(path):
        return  # an empty folder: nothing to lose
    found = (header or {}).get("kind")
    if found != kind:
        what = f"a spatialctl {found} node" if found else "a folder spatialctl did not write"
        raise UsageError(f"{url}: exists and is {what}, not a spatialctl {kind} store; refusing to replace it "
                         "(choose another output or move it away)")
    for entry in fs.ls(path, detail=False):  # a node holds its zarr.json and Zarr nodes; anything else is a user's
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if name != "zarr.json" and not fs.exists(f"{path}/{name}/zarr.json"):
            raise UsageError(f"{url}: holds {name}, which spatialctl did not write; refusing to replace it "
                             "(move it out first)")


def _siblings(fs, final: str, tag: str) -> list[str]:
    return sorted(fs.glob(f"{_temp_base(final)}.{tag}-*"))


def _temp_base(final: str) -> str:
    return beside(final, "")


def recover(url: str) -> str | None:
    """Undo what a kill during a replacement left: if ``url`` is gone but the store it replaced was set aside,
    move that store back. Returns the restored path's old name, or None."""
    fs, final = _fs(url)
    aside = _siblings(fs, final, "replaced")
    if aside and not fs.exists(final):
        fs.mv(aside[-1], final, recursive=True)
        return aside[-1]
    return None


def _swap_in(fs, tmp: str, final: str) -> None:
    """Move the finished ``tmp`` to ``final``; an old ``final`` is set aside first and removed only once the new
    one is in place, so a kill at any point leaves one whole store (``recover`` restores a set-aside one)."""
    if not fs.exists(final):
        fs.mv(tmp, final, recursive=True)
        return
    old = f"{_temp_base(final)}.replaced-{uuid.uuid4().hex[:8]}"
    fs.mv(final, old, recursive=True)
    fs.mv(tmp, final, recursive=True)
    fs.rm(old, recursive=True)


def _file_digest(fs, path: str) -> str:
    return f"{zlib.crc32(fs.cat_file(path)):08x}"


def _node_files(fs, path: str, arrays: set[str] | None = None) -> dict[str, int]:
    """Files of a node's arrays (metadata and chunks), relative to the node, with their sizes."""
    out = {}
    for name, info in fs.find(path, detail=True).items():
        rel = name[len(path):].lstrip("/")
        top = rel.split("/", 1)[0]
        if rel == "zarr.json" or (arrays is not None and top not in arrays):
            continue
        out[rel] = int(info.get("size") or 0)
    return out


def _manifest(fs, path: str, arrays: set[str]) -> dict[str, list]:
    """{relative file: [size, crc32]} for every file of the node's arrays (chunks Zarr skipped as all-fill are
    simply absent, and stay absent)."""
    return {rel: [size, _file_digest(fs, f"{path}/{rel}")] for rel, size in sorted(_node_files(fs, path, arrays).items())}


def _mark_complete(url: str, manifest: dict) -> None:
    group = zarr.open_group(store=_zarr_store(url, read_only=False), mode="r+")
    header = dict(group.attrs["spatialctl"])
    header["complete"] = True
    header["files"] = manifest
    group.attrs["spatialctl"] = header


def _check_finite(url: str, spec: schema.NodeSpec, arrays: Mapping[str, np.ndarray]) -> None:
    for name, value in arrays.items():
        try:
            a = spec.array(name)
        except KeyError:
            continue
        if not a.allow_nan and np.issubdtype(np.asarray(value).dtype, np.floating) and not np.isfinite(value).all():
            raise SchemaError(f"{url}: refusing to write array '{name}' with NaN or infinite values")


def write_node(url: str, kind: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], provenance: Mapping) -> None:
    """Write one node (a scene root, or a group added to a store) aside, mark it complete with the manifest of
    its files, and move it into place; an existing node is replaced only if spatialctl wrote it."""
    spec = schema.NODES[kind]
    _check_finite(url, spec, arrays)
    check_replaceable(url, kind)
    fs, final = _fs(url)
    recover(url)
    for stale in _siblings(fs, final, "partial"):  # left by a killed earlier attempt at this item
        fs.rm(stale, recursive=True)
    tmp = f"{_temp_base(final)}.partial-{uuid.uuid4().hex[:8]}"
    protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
    try:
        group = zarr.open_group(store=_zarr_store(protocol + tmp, read_only=False), mode="w")
        group.attrs.update({**attrs, "spatialctl": _header(kind, complete=False), "provenance": dict(provenance)})
        _write_node(group, arrays)
        validate(protocol + tmp, kind, group=group, require_complete=False)
        manifest = _manifest(fs, tmp, set(arrays))
        if _is_local(fs):  # a rename is atomic here: mark first, so what lands at the final path is whole
            _mark_complete(protocol + tmp, manifest)
            _swap_in(fs, tmp, final)
        else:  # object stores copy file by file: mark only once every file has arrived
            _swap_in(fs, tmp, final)
            _mark_complete(url, manifest)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp, recursive=True)


def write_scene(url: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], provenance: Mapping) -> None:
    """Write a whole scene store atomically (an existing store at ``url`` is replaced)."""
    write_node(url, "scene", arrays, attrs, provenance)


def write_group(scene_url: str, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], provenance: Mapping) -> None:
    """Add (or replace) the group ``name`` of an existing, complete scene store, atomically."""
    open_scene(scene_url)  # the store must be valid before we add to it
    write_node(join(scene_url, name), name, arrays, attrs, provenance)


# ---------------------------------------------------------------------------------------------------- reading


def node_header(url: str) -> dict | None:
    """The ``spatialctl`` header of a node, or None when there is no Zarr node at ``url``."""
    try:
        group = zarr.open_group(store=_zarr_store(url, read_only=True), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    except Exception as e:  # a truncated or foreign zarr.json
        raise SchemaError(f"{url}: not a readable Zarr group ({type(e).__name__}: {e})") from e
    header = dict(group.attrs.get("spatialctl", {}))
    header["provenance"] = dict(group.attrs.get("provenance", {}))
    return header


def is_complete(url: str) -> bool:
    header = node_header(url)
    return bool(header and header.get("complete"))


def validate(url: str, kind: str, *, group: zarr.Group | None = None, require_complete: bool = True,
             dims: dict | None = None) -> dict:
    """Check a node against the schema; return the dimension sizes it binds (N, H, W, ...)."""
    if group is None:
        if not exists(url):
            fs, final = _fs(url)
            aside = _siblings(fs, final, "replaced")
            if aside:
                raise SchemaError(f"{url}: no such {kind} store; a replacement was interrupted and the previous store "
                                  f"is at {aside[-1]} (a rerun of the stage restores it)")
            raise SchemaError(f"{url}: no such {kind} store")
        try:
            group = zarr.open_group(store=_zarr_store(url, read_only=True), mode="r")
        except Exception as e:
            raise SchemaError(f"{url}: not a Zarr v3 group ({type(e).__name__})") from e
    spec = schema.NODES[kind]
    header = group.attrs.get("spatialctl")
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise SchemaError(f"{url}: not a spatialctl {kind} store (attribute 'spatialctl.kind' is {header and header.get('kind')!r})")
    version = header.get("schema_version")
    if not isinstance(version, int):
        raise SchemaError(f"{url}: schema_version missing or not an integer")
    if version > schema.SCHEMA_VERSION:
        raise SchemaError(f"{url}: schema version {version} is newer than this spatialctl reads ({schema.SCHEMA_VERSION}); upgrade spatialctl")
    if version < schema.SCHEMA_VERSION:
        raise SchemaError(f"{url}: schema version {version} is older than {schema.SCHEMA_VERSION}; rerun the stage that wrote it")
    if require_complete and not header.get("complete"):
        raise SchemaError(f"{url}: incomplete {kind} (interrupted write); rerun the stage to replace it")
    for attr in spec.attrs:
        if attr not in group.attrs:
            raise SchemaError(f"{url}: missing attribute '{attr}'")
    dims = dict(dims or {})
    members = set(group.array_keys())
    for a in spec.arrays:
        if a.name not in members:
            if a.required:
                raise SchemaError(f"{url}: missing array '{a.name}'")
            continue
        arr = group[a.name]
        if str(arr.dtype) != a.dtype:
            raise SchemaError(f"{url}/{a.name}: dtype {arr.dtype}, expected {a.dtype}")
        if len(arr.shape) != len(a.shape):
            raise SchemaError(f"{url}/{a.name}: shape {tuple(arr.shape)}, expected {_shape_str(a.shape)}")
        for sym, size in zip(a.shape, arr.shape, strict=True):
            if isinstance(sym, int):
                ok = size == sym
            else:
                ok = dims.setdefault(sym, size) == size
            if not ok:
                raise SchemaError(f"{url}/{a.name}: shape {tuple(arr.shape)} does not match {_shape_str(a.shape)} with {_dims_str(dims)}")
    if kind == "tracks" and "H" in dims and "M" in dims and dims["M"] != schema.packed_mask_bytes(dims["H"], dims["W"]):
        raise SchemaError(f"{url}/masks: {dims['M']} bytes per mask, expected {schema.packed_mask_bytes(dims['H'], dims['W'])} for {dims['H']}x{dims['W']}")
    if require_complete:
        check_files(url, header)
    return dims


def check_files(url: str, header: Mapping, *, content: bool = False) -> int:
    """Compare a complete node's files with the manifest written with its completeness mark: every file present
    with its size (and, with ``content``, its CRC32). Raises SchemaError naming the array; returns the file count.

    Zarr reads a missing chunk as the fill value, so without this check a lost file would read as zeros."""
    manifest = header.get("files")
    if not isinstance(manifest, dict):
        raise SchemaError(f"{url}: complete, but no file manifest; written by another tool or damaged")
    fs, path = _fs(url)
    arrays = {rel.split("/", 1)[0] for rel in manifest}
    found = _node_files(fs, path, arrays)
    for rel, (size, crc) in manifest.items():
        array, _, chunk = rel.partition("/")
        if rel not in found:
            raise SchemaError(f"{url}: array '{array}' is missing its file {chunk} (store damaged; rerun the stage)")
        if found[rel] != size:
            raise SchemaError(f"{url}: array '{array}' file {chunk} is {found[rel]} bytes, expected {size} "
                              "(truncated or corrupt; rerun the stage)")
        if content and _file_digest(fs, f"{path}/{rel}") != crc:
            raise SchemaError(f"{url}: array '{array}' file {chunk} fails its checksum (corrupt; rerun the stage)")
    for rel in found.keys() - manifest.keys():
        array, _, chunk = rel.partition("/")
        raise SchemaError(f"{url}: array '{array}' has a file the manifest does not list ({chunk}); store altered")
    return len(manifest)


def verify(url: str) -> list[tuple[str, int]]:
    """Check a whole store: the root and every group, schema and every file's size and checksum.
    Returns (node url, files checked) per node; raises SchemaError at the first problem."""
    scene = open_scene(url)
    checked = [(url, check_files(url, node_header(url), content=True))]
    for name in sorted(scene.group.group_keys()):
        sub = join(url, name)
        if name not in schema.NODES:
            raise SchemaError(f"{sub}: a group this spatialctl does not know")
        scene.open_group(name)
        checked.append((sub, check_files(sub, node_header(sub), content=True)))
    for name in sorted(scene.group.array_keys()):
        scene.read(name)  # decodes every chunk: NaNs and codec errors surface here
    return checked


def _read(url: str, name: str, arr, index) -> np.ndarray:
    """Read (part of) an array; a chunk that does not decode is a one-line error naming the array."""
    try:
        return np.asarray(arr[:] if index is None else arr[index])
    except Exception as e:  # zstd/blosc errors have no common base class
        raise SchemaError(f"{url}: array '{name}' does not decode ({type(e).__name__}); store corrupt, rerun the stage") from e


def check_finite(url: str, name: str, value: np.ndarray, kind: str = "scene") -> np.ndarray:
    """Raise when an array that must be finite holds NaN/inf (checked where data is read, not on every open)."""
    spec = schema.NODES[kind].array(name)
    if not spec.allow_nan and np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
        raise SchemaError(f"{url}/{name}: contains NaN or infinite values")
    return value


def _shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _dims_str(dims) -> str:
    return ", ".join(f"{k}={v}" for k, v in dims.items())


class SceneStore:
    """A validated, read-only view of a scene store."""

    def __init__(self, url: str):
        self.url = url
        self.dims = validate(url, "scene")
        self.group = zarr.open_group(store=_zarr_store(url, read_only=True), mode="r")

    @property
    def n_frames(self) -> int:
        return self.dims["N"]

    @property
    def hw(self) -> tuple[int, int]:
        return self.dims["H"], self.dims["W"]

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def provenance(self) -> dict:
        return dict(self.group.attrs.get("provenance", {}))

    @property
    def is_metric(self) -> bool:
        return self.group.attrs.get("scale") == "metric"

    def has(self, name: str) -> bool:
        """True for an array, or for a group that is complete."""
        if name in schema.GROUPS:
            return is_complete(join(self.url, name))
        return name in set(self.group.array_keys())

    def read(self, name: str, frames=None) -> np.ndarray:
        """Read an array of the root (optionally only some frames), checked for NaNs where none are allowed."""
        if name not in set(self.group.array_keys()):
            raise SchemaError(f"{self.url}: missing array '{name}'")
        arr = self.group[name]
        value = _read(self.url, name, arr if frames is None else arr.oindex, None if frames is None else _frame_index(frames))
        return check_finite(self.url, name, value)

    def open_group(self, name: str) -> GroupView:
        url = join(self.url, name)
        dims = {"N": self.dims["N"], "H": self.dims["H"], "W": self.dims["W"]}
        validate(url, name, dims=dims)
        return GroupView(url, name, zarr.open_group(store=_zarr_store(url, read_only=True), mode="r"))


class GroupView:
    """A validated group of a scene store (``tracks``, ``genfeat``)."""

    def __init__(self, url: str, kind: str, group: zarr.Group):
        self.url, self.kind, self.group = url, kind, group

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def read(self, name: str, index=None) -> np.ndarray:
        value = _read(self.url, name, self.group[name], index)
        return check_finite(self.url, name, value, self.kind)


def _frame_index(frames):
    if isinstance(frames, slice):
        return frames
    return np.asarray(frames, dtype=np.int64)


def open_scene(url: str) -> SceneStore:
    return SceneStore(url)


def resolve_scene(scene: str, scenes_dir: str | None) -> str:
    """A record's ``scene`` (a name, as make-qa writes it, or a path) -> the scene store's URL."""
    candidates = [scene] if os.path.isabs(scene) or scenes_dir is None else []
    if scenes_dir is not None:
        candidates += [os.path.join(scenes_dir, scene, "scene.zarr"), os.path.join(scenes_dir, f"{scene}.zarr"),
                       os.path.join(scenes_dir, scene)]
    for url in candidates:
        if exists(url) and node_header(url) is not None:
            return url
    raise SpatialctlError(f"scene {scene!r}: no scene store at {' or '.join(candidates)}")


# ---------------------------------------------------------------------------------------------------- masks


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(..., H, W) bool -> (..., ceil(H*W/8)) uint8, the schema's mask encoding."""
    masks = np.asarray(masks, dtype=bool)
    flat = masks.reshape(*masks.shape[:-2], -1)
    return np.packbits(flat, axis=-1)


def unpack_mask(packed: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(..., M) uint8 -> (..., H, W) bool."""
    h, w = hw
    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=-1, count=h * w)
    return flat.reshape(*flat.shape[:-1], h, w).astype(bool)


def read_mask(tracks: GroupView, obj: int, frame: int, hw: tuple[int, int]) -> np.ndarray:
    """One object's mask in one frame, reading a single chunk."""
    return unpack_mask(tracks.group["masks"][obj, frame], hw)


# ---------------------------------------------------------------------------------------------------- describe


def describe(url: str) -> dict:
    """What an artifact holds: every node's header, provenance, arrays (shape, dtype) and completeness."""
    header = node_header(url)
    if header is None:
        raise SpatialctlError(f"{url}: not a Zarr store")
    group = zarr.open_group(store=_zarr_store(url, read_only=True), mode="r")
    out = {"url": url, **_node_summary(group), "problem": _files_problem(url, header)}
    out["groups"] = {}
    for name in sorted(group.group_keys()):
        sub = join(url, name)
        out["groups"][name] = {**_node_summary(group[name]), "problem": _files_problem(sub, node_header(sub))}
    return out


def _files_problem(url: str, header: dict | None) -> str | None:
    """Why a complete node is not whole (a file missing, resized or unlisted), or None."""
    if not header or not header.get("complete"):
        return None
    try:
        check_files(url, header)
    except SchemaError as e:
        return str(e)
    return None


def _node_summary(group: zarr.Group) -> dict:
    attrs = dict(group.attrs)
    header = dict(attrs.pop("spatialctl", {}))
    if isinstance(header.get("files"), dict):
        header["files"] = len(header["files"])  # the manifest itself is for machines; say how many files it lists
    provenance = attrs.pop("provenance", {})
    arrays = {name: {"shape": list(group[name].shape), "dtype": str(group[name].dtype)} for name in sorted(group.array_keys())}
    return {"header": header, "provenance": provenance, "attrs": json.loads(json.dumps(attrs, default=str)), "arrays": arrays}
