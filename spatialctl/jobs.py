"""Running a stage over many items: manifests, shards, provenance, skip-what-is-done, failure records.

Conventions every data stage follows:

- It takes one input or a manifest (a ``.txt``/``.lst``/``.manifest`` file of paths, one per line; ``#`` starts a
  comment; relative paths are relative to the manifest's folder).
- ``--shard I/N`` (0 <= I < N) takes items ``I, I+N, I+2N, ...`` of the manifest; without it, SLURM's array
  variables choose the shard. Shards are disjoint and their union is the manifest.
- Its module defines ``output_for(input, out) -> str``: where an input's output node lives (a store URL, or
  ``<store>/tracks`` for a group). ``spatialctl status`` uses the same function, so status reads the artifacts.
- A failed item leaves a one-line record at ``failure_record(output)`` (beside the store, never inside it); the rest
  go on, and the command exits 1.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialctl import __version__, lock, schema, store
from spatialctl.errors import SpatialctlError, UsageError

log = logging.getLogger("spatialctl")

MANIFEST_SUFFIXES = (".txt", ".lst", ".manifest")

# ---------------------------------------------------------------------------------------------------- inputs


def is_manifest(path: str) -> bool:
    return path.endswith(MANIFEST_SUFFIXES) and Path(path).is_file()


def resolve_inputs(arg: str | Sequence[str]) -> list[str]:
    """One input, several inputs, or manifests -> the list of input paths, in order."""
    args = [arg] if isinstance(arg, str) else list(arg)
    out: list[str] = []
    for a in args:
        if is_manifest(a):
            base = Path(a).parent
            for line in Path(a).read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    out.append(line if "://" in line or os.path.isabs(line) else str(base / line))
        else:
            out.append(a)
    if not out:
        raise UsageError(f"{args[0] if args else 'manifest'}: no inputs")
    return out


# ---------------------------------------------------------------------------------------------------- shards


def parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/8") from None
    if n < 1 or not 0 <= i < n:
        raise UsageError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def shard_from_env(env: dict | None = None) -> tuple[int, int]:
    """SLURM array variables -> (I, N); (0, 1) outside an array job."""
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env:
        return 0, 1
    task = int(env["SLURM_ARRAY_TASK_ID"])
    lo = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    if "SLURM_ARRAY_TASK_COUNT" in env:
        n = int(env["SLURM_ARRAY_TASK_COUNT"])
    elif "SLURM_ARRAY_TASK_MAX" in env:
        n = int(env["SLURM_ARRAY_TASK_MAX"]) - lo + 1
    else:
        raise UsageError("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MAX is")
    i = task - lo
    if not 0 <= i < n:
        raise UsageError(f"SLURM array task {task} is outside {lo}..{lo + n - 1}")
    return i, n


def resolve_shard(shard: str | None) -> tuple[int, int]:
    return parse_shard(shard) if shard else shard_from_env()


def select_shard(items: Sequence, shard: tuple[int, int]) -> list:
    i, n = shard
    return list(items[i::n])


# ---------------------------------------------------------------------------------------------------- provenance


def config_dict(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def result_values(config) -> dict:
    """The fields that change results (``runtime`` ones left out), sections as nested dicts."""
    out = {}
    for f in dataclasses.fields(config):
        if f.metadata.get("runtime"):
            continue
        value = getattr(config, f.name)
        out[f.name] = result_values(value) if f.metadata.get("section") else value
    return out


def config_hash(config) -> str:
    """Hash of the fields that change results; fields with ``metadata={"runtime": True}`` (device, quiet,
    overwrite, batch size, ...) are left out so a rerun on other hardware is still a cache hit."""
    text = json.dumps(result_values(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(url: str) -> str:
    """A content hash of an input: files by their bytes; Zarr stores by their root metadata (which holds their
    own provenance, time included); other folders by names and sizes."""
    fs, path = store._fs(url)
    if not fs.exists(path):
        return "missing"
    h = hashlib.sha256()
    if fs.isfile(path):
        with fs.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif fs.exists(f"{path}/zarr.json"):
        h.update(fs.cat_file(f"{path}/zarr.json"))
    else:
        for name, info in sorted(fs.find(path, detail=True).items()):
            h.update(f"{name[len(path):]}:{info.get('size')}".encode())
    return h.hexdigest()[:16]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def config_difference(stored: dict, config) -> str:
    """The result-changing fields where a stored config and ``config`` differ, as "name: old -> new"."""
    now, old = _flat(config_dict(config)), _flat(stored)
    keys = _flat(result_values(config))
    diffs = [f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in keys if old.get(k) != now.get(k)]
    return "; ".join(diffs) or f"config hash {config_hash(config)} differs"


def provenance(stage: str, config, inputs: Iterable[str]) -> dict:
    return {
        "stage": stage,
        "package_version": __version__,
        "config": config_dict(config),
        "config_hash": config_hash(config),
        "inputs": {str(p): fingerprint(str(p)) for p in inputs},
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------------- running


def failure_record(output: str) -> str:
    """Where a failed item's error goes: beside the store (``scene.zarr.error.json``,
    ``scene.zarr.tracks.error.json``), never inside a Zarr hierarchy."""
    return store.beside(output, ".error.json")


def preflight_output(output: str, kind: str | None = None) -> None:
    """Before any work: the output must be replaceable (nothing spatialctl did not write) and its folder writable.
    Raises UsageError (exit 2) naming the path. ``kind``: the node kind the stage writes (default: the group
    named by the path's last part inside a store, else a scene)."""
    head, _, tail = output.rstrip("/").rpartition("/")
    if kind is None:
        kind = tail if tail in schema.GROUPS and store.exists(store.join(head, "zarr.json")) else "scene"
    restored = store.recover(output)  # a kill mid-replacement left the old store aside: it is whole, put it back
    if restored:
        log.warning("%s: restored the store an interrupted replacement had moved to %s", output, restored)
    store.check_replaceable(output, kind)
    fs, path = store._fs(output)
    if not store._is_local(fs):
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UsageError(f"{parent}: exists and is not a folder; cannot write {output} under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{parent}: not writable; cannot write {output}")


def _input_changed(header: dict, input: str | None) -> str | None:
    """The reason an output is out of date with its input (its fingerprint differs), or None."""
    stored = header["provenance"].get("inputs") or {}
    if input is None or not stored:
        return None
    key = input if input in stored else (next(iter(stored)) if len(stored) == 1 else None)
    if key is None:
        return None
    now = fingerprint(input)
    if stored[key] != now:
        return f"input {input} changed since the output was written (fingerprint {stored[key]} -> {now})"
    return None


@dataclass
class Item:
    input: str
    output: str


@dataclass
class Summary:
    """What every stage's ``run(config, inputs, progress)`` returns: the inputs done, skipped (already done with
    this config) and failed (input -> one-line error), the outputs written, and ``details``, the stage's own
    result (a report dict, ``TrainResult``, ...) that its command's ``report`` prints."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    details: Any = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def add(self, other: Summary) -> None:
        """Fold another run's counts into this one (a stage made of several item runs)."""
        self.done += other.done
        self.skipped += other.skipped
        self.failed.update(other.failed)
        self.outputs += other.outputs


def item_state(output: str, config, input: str | None = None) -> tuple[str, str | None]:
    """('done' | 'conflict' | 'changed' | 'damaged' | 'incomplete' | 'failed' | 'pending', detail) for one item's
    output. 'changed': complete, but its input's content is not what it was made from; 'damaged': complete, but a
    file its manifest lists is missing or resized."""
    header = store.node_header(output) if store.exists(output) else None
    if header is not None:
        if not header.get("complete"):
            return "incomplete", None
        damaged = store._files_problem(output, header)
        if damaged:  # ours, and not whole: redo it (readers tell the user to rerun)
            return "damaged", damaged
        if config is not None and header["provenance"].get("config_hash") != config_hash(config):
            return "conflict", config_difference(header["provenance"].get("config", {}), config)
        changed = _input_changed(header, input)
        if changed:
            return "changed", changed
        return "done", None
    record = failure_record(output)
    if store.exists(record):
        try:
            return "failed", json.loads(store.read_text(record)).get("error")
        except (ValueError, OSError):
            return "failed", "unreadable failure record"
    return "pending", None


def run_items(
    stage: str,
    config,
    items: Sequence[Item],
    work: Callable[[Item], None],
    *,
    overwrite: bool = False,
    progress: Callable[[Iterable], Iterable] | None = None,
    kind: str | None = None,
) -> Summary:
    """Run ``work`` on each item not already done with this config; record failures and go on.

    ``work`` must write ``item.output`` through ``spatialctl.store`` (which makes it atomic) and raise
    ``SpatialctlError`` for bad input.
    """
    summary = Summary()
    outputs = [it.output for it in items]
    if len(set(outputs)) != len(outputs):
        dup = next(o for o in outputs if outputs.count(o) > 1)
        raise UsageError(f"{dup}: two inputs map to the same output; rename one or use separate --out folders")
    for item in items:
        preflight_output(item.output, kind)
    for item in progress(items) if progress else items:
        try:
            with lock.hold(item.output):
                _run_item(item, config, work, overwrite, summary)
        except lock.Busy as e:  # the other writer owns this item: no failure record, which would be about its work
            summary.failed[item.input] = str(e)
            log.error(str(e))
        except OSError as e:  # the lock file itself could not be made
            _fail(summary, item, failure_record(item.output), _os_message(e, item.output))
    return summary


def _os_message(e: OSError, where: str) -> str:
    """One line: the path the OS names (else the item's output) and the reason."""
    return " ".join(f"{e.filename or where}: {e.strerror or e}".split())


def _run_item(item: Item, config, work: Callable[[Item], None], overwrite: bool, summary: Summary) -> None:
    state, detail = item_state(item.output, config, item.input)
    if state == "done" and not overwrite:
        summary.skipped.append(item.input)
        return
    if state == "conflict" and not overwrite:
        msg = (f"{item.output}: exists with a different config ({detail}); "
               "pass --overwrite to replace it or choose another output")
        summary.failed[item.input] = msg
        log.error(msg)
        return
    if state in ("changed", "damaged"):
        log.info("%s: %s; redoing it", item.output, detail)
    record = failure_record(item.output)
    store.remove(record)
    try:
        work(item)
    except SpatialctlError as e:
        _fail(summary, item, record, str(e))
    except OSError as e:  # disk full, read-only, permissions: the path and the reason, one line
        log.debug("".join(traceback.format_exception(e)))
        _fail(summary, item, record, _os_message(e, item.output))
    except Exception as e:  # an item's bug must not stop the other 9,999 items of an array job
        log.debug("".join(traceback.format_exception(e)))
        _fail(summary, item, record, f"{item.input}: {type(e).__name__}: {' '.join(str(e).split())}")
    else:
        summary.done.append(item.input)
        summary.outputs.append(item.output)


def _fail(summary: Summary, item: Item, record: str, message: str) -> None:
    summary.failed[item.input] = message
    try:
        store.write_text(record, json.dumps({"input": item.input, "output": item.output, "error": message}) + "\n")
    except OSError as e:  # e.g. the disk that just filled up: the logged line is then the only record
        message = f"{message} (no failure record at {record}: {e.strerror or e})"
    log.error(message)
