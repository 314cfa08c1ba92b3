"""Readers for benchmark record layouts, all normalised to one item dict the scorer understands.

An item: ``id`` (str), ``question``, ``options`` (list or None), ``answer``, ``answer_type`` (mc|number|text),
``task`` (what per-task scores group by), ``scale`` (or None), ``family`` (or None).

Layouts:

- ``ours``: spatialctl's QA records (`qa_format.read_qa`: .jsonl in any form, or .parquet).
- ``vsibench``: VSI-Bench rows: ``id``, ``question_type``, ``question``, ``options`` (``"A. ..."`` strings, or
  null for numeric questions), ``ground_truth`` (a letter, or a number as text).
- ``dsr``: DSR-Bench rows (parquet): ``videoID``, ``question``, ``options``, ``answer`` (a letter), ``type``.
  Rows carry no id; an item's id is its row index (as text), or ``id`` / ``index`` when the file has one.
- ``spacevista``: SpaceVista-Bench rows: ``question``, ``ground_truth``, ``answer_type``
  (``mc``/``numerical``/``text``), ``question_type`` or ``original_type``, ``category`` (the scale:
  Indoor/Outdoor/Tabletop/TinyTabletop).

Files may be .parquet, .jsonl or .json (a list of rows).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from spatialctl import qa_format
from spatialctl.errors import SpatialctlError

LAYOUTS = ("auto", "ours", "vsibench", "dsr", "spacevista")

# VSI-Bench's official split of question types into multiple-choice and numeric answers.
VSI_MC_TYPES = (
    "object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
    "object_rel_distance", "route_planning", "obj_appearance_order",
)
VSI_NUMBER_TYPES = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")


def detect_layout(row: dict) -> str:
    keys = set(row)
    if "question_type" in keys and "ground_truth" in keys and "answer_type" not in keys:
        return "vsibench"
    if "ground_truth" in keys and "answer_type" in keys:
        return "spacevista"
    if "videoID" in keys and "answer" in keys:
        return "dsr"
    if {"id", "answer", "answer_type", "type"} <= keys:
        return "ours"
    raise SpatialctlError(f"unrecognised record layout (keys: {', '.join(sorted(keys)[:12])})")


def _options(value: Any) -> list[str] | None:
    """Options as a list: lists pass; JSON or Python-literal text is parsed; empty -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = [line for line in text.splitlines() if line.strip()]
    if hasattr(value, "tolist"):
        value = value.tolist()
    value = list(value)
    return [str(v) for v in value] or None


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _from_ours(path: Path) -> list[dict]:
    items = []
    for r in qa_format.read_qa(path):
        items.append({
            "id": str(r.id), "question": r.question, "options": r.options, "answer": r.answer,
            "answer_type": r.answer_type, "task": r.type, "scale": r.scale, "family": r.family,
        })
    return items


def _from_vsibench(rows: list[dict], path: Path) -> list[dict]:
    items = []
    for n, row in enumerate(rows):
        qtype = row.get("question_type")
        if qtype is None or "ground_truth" not in row:
            raise SpatialctlError(f"{path}: row {n} lacks question_type/ground_truth (VSI-Bench layout)")
        options = _options(row.get("options"))
        if qtype in VSI_MC_TYPES:
            answer_type = "mc"
        elif qtype in VSI_NUMBER_TYPES:
            answer_type = "number"
        else:  # a variant with other task names: decide from the row itself
            answer_type = "mc" if options else ("number" if _is_number(row["ground_truth"]) else "text")
        answer = row["ground_truth"]
        if answer_type == "number":
            if not _is_number(answer):
                raise SpatialctlError(f"{path}: row {n} ground_truth {answer!r} is not a number")
            answer = float(answer)
        items.append({
            "id": str(row.get("id", n)), "question": row.get("question", ""), "options": options,
            "answer": answer, "answer_type": answer_type, "task": qtype, "scale": None,
            "family": row.get("dataset"),
        })
    return items


def _from_dsr(rows: list[dict], path: Path) -> list[dict]:
    items = []
    for n, row in enumerate(rows):
        if "answer" not in row or "type" not in row:
            raise SpatialctlError(f"{path}: row {n} lacks answer/type (DSR-Bench layout)")
        options = _options(row.get("options"))
        if not options:
            raise SpatialctlError(f"{path}: row {n} has no options (DSR-Bench is multiple choice)")
        rid = row.get("id", row.get("index", n))
        items.append({
            "id": str(rid), "question": row.get("question", ""), "options": options,
            "answer": str(row["answer"]).strip(), "answer_type": "mc", "task": str(row["type"]), "scale": None,
            "family": row.get("videoID"),
        })
    return items


def _from_spacevista(rows: list[dict], path: Path) -> list[dict]:
    kinds = {"mc": "mc", "numerical": "number", "number": "number", "text": "text"}
    items = []
    for n, row in enumerate(rows):
        kind = kinds.get(str(row.get("answer_type", "")).lower())
        if kind is None:
            raise SpatialctlError(f"{path}: row {n} answer_type {row.get('answer_type')!r} is not mc/numerical/text")
        answer = row["ground_truth"]
        if kind == "number":
            if not _is_number(answer):
                raise SpatialctlError(f"{path}: row {n} ground_truth {answer!r} is not a number")
            answer = float(answer)
        task = row.get("original_type") or row.get("question_type") or row.get("TaskType") or "all"
        items.append({
            "id": str(row.get("id", row.get("index", n))), "question": row.get("question", ""),
            "options": _options(row.get("options")), "answer": answer, "answer_type": kind, "task": str(task),
            "scale": row.get("category"), "family": None,
        })
    return items


def load_items(path: str | Path, layout: str = "auto") -> list[dict]:
    """Ground-truth items of a benchmark file in any supported layout."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise SpatialctlError(f"{path}: unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    if layout == "ours":
        return _from_ours(path)
    rows = qa_format.read_rows(path)
    if not rows:
        raise SpatialctlError(f"{path}: no records")
    if layout == "auto":
        try:
            layout = detect_layout(rows[0])
        except SpatialctlError as e:
            raise SpatialctlError(f"{path}: {e}") from None
    if layout == "ours":
        return _from_ours(path)
    reader = {"vsibench": _from_vsibench, "dsr": _from_dsr, "spacevista": _from_spacevista}[layout]
    try:
        items = reader(rows, path)
    except (KeyError, TypeError, ValueError) as e:
        raise SpatialctlError(f"{path}: malformed {layout} record ({type(e).__name__}: {e})") from None
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise SpatialctlError(f"{path}: record ids are not unique")
    return items


def read_predictions(path: str | Path) -> dict[str, dict]:
    """Predictions JSONL (``{"id", "prediction", ...}`` per line) keyed by id; the last line for an id wins."""
    path = Path(path)
    out: dict[str, dict] = {}
    for n, row in enumerate(qa_format.read_rows(path), 1):
        if not isinstance(row, dict) or "id" not in row or "prediction" not in row:
            raise SpatialctlError(f"{path}: line {n} needs 'id' and 'prediction'")
        out[str(row["id"])] = row
    return out
