"""`spatialctl info PATH`: what an artifact holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from spatialctl import schema, store
from spatialctl.errors import SchemaError, SpatialctlError


def info(
    path: Annotated[str, typer.Argument(help="A scene store (path or fsspec URL), or a folder of them.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the description as JSON.")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Check every file of every node against the manifest written with its completeness mark (size and CRC32) and decode every root array; exit 1 at the first problem.")] = False,
) -> None:
    """Print schema version, arrays (shape, dtype), provenance and completeness of a scene store or folder."""
    stores = _stores_in(path)
    if verify:
        for url in stores or [path]:
            checked = store.verify(url)
            typer.echo(f"{url}: verified, {sum(n for _, n in checked)} files in {len(checked)} nodes")
        return
    if stores is not None:
        rows = []
        for url in stores:
            header = store.node_header(url) or {}
            damaged = store._files_problem(url, header)
            rows.append({"store": url, "complete": bool(header.get("complete")) and not damaged})
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            done = sum(r["complete"] for r in rows)
            typer.echo(f"{path}: {len(rows)} stores, {done} complete, {len(rows) - done} incomplete")
            for r in rows:
                typer.echo(f"  {'complete  ' if r['complete'] else 'INCOMPLETE'}  {r['store']}")
        return
    desc = store.describe(path)
    if as_json:
        typer.echo(json.dumps(desc, indent=2, default=str))
    else:
        typer.echo(_format(desc))
    problem = desc["problem"] or next((g["problem"] for g in desc["groups"].values() if g["problem"]), None)
    if problem:  # described, but not whole: say so where scripts notice
        raise SchemaError(problem)


def _stores_in(path: str) -> list[str] | None:
    """A plain folder (not itself a Zarr node) -> the stores below it, one level deep or two (synth's OUT/x/scene.zarr)."""
    p = Path(path)
    if "://" in path or not p.is_dir() or (p / "zarr.json").exists():
        return None
    found = sorted({str(z) for pattern in ("*.zarr", "*/*.zarr") for z in p.glob(pattern) if (z / "zarr.json").exists()})
    if not found:
        raise SpatialctlError(f"{path}: no scene stores (*.zarr) here")
    return found


def _format(desc: dict) -> str:
    lines = [f"{desc['url']}"]
    lines += _format_node("root", desc)
    for name, node in desc["groups"].items():
        lines += _format_node(name, node)
    return "\n".join(lines)


def _format_node(name: str, node: dict) -> list[str]:
    header, prov = node["header"], node["provenance"]
    state = ("DAMAGED" if node.get("problem") else "complete") if header.get("complete") else "INCOMPLETE"
    version = header.get("schema_version")
    newest = "" if version == schema.SCHEMA_VERSION else f" (this spatialctl reads version {schema.SCHEMA_VERSION})"
    lines = [f"[{name}] kind={header.get('kind')} schema_version={version}{newest} {state}"]
    if prov:
        lines.append(f"  provenance: stage={prov.get('stage')} version={prov.get('package_version')} "
                     f"time={prov.get('time')} config_hash={prov.get('config_hash')}")
        for k, v in (prov.get("config") or {}).items():
            lines.append(f"    config.{k} = {v}")
        for k, v in (prov.get("inputs") or {}).items():
            lines.append(f"    input {k} sha256:{v}")
    for k, v in node["attrs"].items():
        text = json.dumps(v, default=str)
        lines.append(f"  attr {k} = {text if len(text) < 200 else text[:197] + '...'}")
    for k, v in node["arrays"].items():
        lines.append(f"  {k:<18} {v['dtype']:<8} {tuple(v['shape'])}")
    return lines
