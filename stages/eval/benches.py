"""Readers for benchmark record layouts, all normalised to one item dict the scorer understands.

An item: ``id`` (str), ``question``, ``options`` (list or None), ``answer``, ``answer_type`` (mc|number|text),
``task`` (what per-task scores group by), ``scale`` (or None), ``family`` (or None).

Layouts:

- ``ours``: spatialctl's QA records (`qa_format.read_qa`: .jsonl in any form, or .parquet).
- ``vsibench``: VSI-Bench rows: ``id``, ``question_type``, ``question``, ``options`` (``"A. ..."`` strings, or
  null for numeric questions), ``ground_truth`` (a letter, or a number as text).
- ``dsr``: DSR-Bench rows (parquet): ``videoID``, ``question``, ``options``, ``answer`` (a letter), ``type``.
  Rows carry no id; an item's id is its row index (as text), or ``id`` / ``index`` when the file has one.
- ``vlm4d``: VLM4D rows (``data/real_mc.json``, and its released model outputs): ``id``, ``question``,
  ``choices`` (``{"A": text, ...}``), ``answer`` (the text of the right choice; ``ground_truth_answer`` in the
  judged outputs), ``question_type`` (``multiple-choice``). A model's reply is in ``response``.
- ``spacevista``: SpaceVista-Bench rows: ``question``, ``ground_truth``, ``answer_type``
  (``mc``/``numerical``/``text``), ``question_type`` or ``original_type``, ``category`` (the scale:
  Indoor/Outdoor/Tabletop/TinyTabletop).

Files may be .parquet, .jsonl or .json (a list of rows). The layout is detected from the records' fields
(`detect_layout`): every record must match exactly one layout, and the whole file the same one, else the error
asks for ``--bench``. Predictions may also be lmms-eval ``--log_samples`` lines (``doc`` + ``filtered_resps``),
whose ``doc`` is the benchmark's own record, so such a file scores without ``--gt``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from spatialctl import qa_format
from spatialctl.errors import SpatialctlError

LAYOUTS = ("auto", "ours", "vsibench", "dsr", "spacevista", "vlm4d")  # "auto": detect from the records

# VSI-Bench's official split of question types into multiple-choice and numeric answers.
VSI_MC_TYPES = (
    "object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
    "object_rel_distance", "route_planning", "obj_appearance_order",
)
VSI_NUMBER_TYPES = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")


# What marks each layout's rows. A row must match exactly one; a file must be one layout throughout.
_LAYOUT_KEYS = {
    "vsibench": lambda k: {"question_type", "ground_truth"} <= k and "answer_type" not in k,
    "spacevista": lambda k: {"ground_truth", "answer_type"} <= k,
    "dsr": lambda k: {"videoID", "answer", "type"} <= k and "answer_type" not in k,
    "ours": lambda k: {"id", "answer", "answer_type", "type"} <= k and "ground_truth" not in k,
    "vlm4d": lambda k: "choices" in k and bool({"answer", "ground_truth_answer"} & k) and "answer_type" not in k,
}


def layouts_of(row: dict) -> list[str]:
    """Every layout whose marking fields `row` carries."""
    keys = set(row)
    return [name for name, test in _LAYOUT_KEYS.items() if test(keys)]


def detect_layout(rows: list[dict], source: str | Path) -> str:
    """The one layout all `rows` share; an error naming `source` when none, several or a mix match."""
    found = set()
    for row in rows:
        names = layouts_of(row) if isinstance(row, dict) else []
        if len(names) != 1:
            what = "matches no known layout" if not names else f"matches several layouts ({', '.join(names)})"
            keys = ", ".join(sorted(row)[:12]) if isinstance(row, dict) else type(row).__name__
            raise SpatialctlError(f"{source}: a record {what} (keys: {keys}); pass --bench")
        found.add(names[0])
    if len(found) != 1:
        raise SpatialctlError(f"{source}: records of several layouts ({', '.join(sorted(found))})")
    return found.pop()


def parse_options(value: Any) -> list[str] | None:
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


def row_id(row: dict, n: int) -> str:
    """A row's id: its ``id`` or ``index`` field, else its row number (DSR-Bench's rows carry none)."""
    return str(row.get("id", row.get("index", n)))


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
        options = parse_options(row.get("options"))
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
        options = parse_options(row.get("options"))
        if not options:
            raise SpatialctlError(f"{path}: row {n} has no options (DSR-Bench is multiple choice)")
        items.append({
            "id": row_id(row, n), "question": row.get("question", ""), "options": options,
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
            "id": row_id(row, n), "question": row.get("question", ""),
            "options": parse_options(row.get("options")), "answer": answer, "answer_type": kind, "task": str(task),
            "scale": row.get("category"), "family": None,
        })
    return items


def _from_vlm4d(rows: list[dict], path: Path) -> list[dict]:
    items = []
    for n, row in enumerate(rows):
        choices = row["choices"]
        if not isinstance(choices, dict) or not choices:
            raise SpatialctlError(f"{path}: row {n} choices is not a {{letter: text}} mapping (VLM4D layout)")
        answer = row.get("answer", row.get("ground_truth_answer"))
        letters = [k for k, v in choices.items() if str(v).strip() == str(answer).strip()]
        if len(letters) != 1:
            raise SpatialctlError(f"{path}: row {n} answer {answer!r} is not exactly one of its choices")
        items.append({
            "id": str(row.get("id", n)), "question": row.get("question", ""),
            "options": [f"{k}: {v}" for k, v in choices.items()], "answer": letters[0], "answer_type": "mc",
            "task": str(row.get("question_type", "multiple-choice")), "scale": None, "family": None,
        })
    return items


def load_items(path: str | Path, layout: str = "auto") -> tuple[list[dict], str]:
    """Ground-truth items of a benchmark file and its layout. `layout` "auto" detects it from the records;
    a declared layout that differs from the detected one is an error (scoring a file by another benchmark's
    rules gives a wrong number without any other sign)."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise SpatialctlError(f"{path}: unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")
    rows = qa_format.read_rows(path)
    if not rows:
        raise SpatialctlError(f"{path}: no records")
    return items_from_rows(rows, path, layout, carried=False)


def items_from_rows(rows: list[dict], path: str | Path, layout: str = "auto", *, carried: bool = True
                    ) -> tuple[list[dict], str]:
    """Items and layout of `rows`; `carried`: the rows are prediction lines that carry the truth along."""
    try:
        detected = detect_layout(rows, path)
    except SpatialctlError:
        if layout == "auto":
            raise
        detected = layout  # records that mark no layout: the declared bench's reader checks its own fields
    if layout not in ("auto", detected):
        raise SpatialctlError(f"{path}: records are in the {detected} layout, not {layout} as --bench says")
    reader = {"vsibench": _from_vsibench, "dsr": _from_dsr, "spacevista": _from_spacevista, "vlm4d": _from_vlm4d,
              "ours": _from_ours_rows if carried else lambda _rows, p: _from_ours(Path(p))}[detected]
    try:
        items = reader(rows, path)
    except (KeyError, TypeError, ValueError) as e:
        raise SpatialctlError(f"{path}: not {detected} records ({type(e).__name__}: {e})") from None
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise SpatialctlError(f"{path}: record ids are not unique")
    return items, detected


def _from_ours_rows(rows: list[dict], path: str | Path) -> list[dict]:
    """Our records as carried in prediction lines (what `eval run` writes)."""
    items = []
    for n, row in enumerate(rows):
        answer = row["answer"]
        if row["answer_type"] == "number":
            if not _is_number(answer):
                raise SpatialctlError(f"{path}: row {n} answer {answer!r} is not a number")
            answer = float(answer)
        items.append({"id": str(row["id"]), "question": row.get("question", ""), "options": row.get("options"),
                      "answer": answer, "answer_type": row["answer_type"], "task": row.get("type") or "all",
                      "scale": row.get("scale"), "family": row.get("family")})
    return items


def _first_text(value: Any) -> Any:
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return value


def _from_lmms_sample(row: dict) -> dict:
    """One line of an lmms-eval ``--log_samples`` file as a flat prediction line: the benchmark's own record
    (``doc``) with ``id`` (the record's, else ``doc_id``) and ``prediction`` (the filtered response)."""
    doc = row["doc"]
    resp = row.get("filtered_resps", row.get("resps"))
    return {**doc, "id": doc.get("id", row.get("doc_id")), "prediction": _first_text(resp)}


def read_predictions(path: str | Path) -> dict[str, dict]:
    """Predictions keyed by id; the last line for an id wins. Lines are ``{"id", "prediction", ...}`` (what
    `eval run` writes, or any benchmark record with a ``prediction`` field, or ``response`` as VLM4D's
    outputs name it), or lmms-eval ``--log_samples``
    lines (``doc`` + ``filtered_resps``). An empty file, or one whose predictions are all blank, is an error:
    it would score 0 without saying why."""
    path = Path(path)
    out: dict[str, dict] = {}
    for n, row in enumerate(qa_format.read_rows(path), 1):
        if isinstance(row, dict) and isinstance(row.get("doc"), dict) and ("filtered_resps" in row or "resps" in row):
            row = _from_lmms_sample(row)
        if isinstance(row, dict) and "prediction" not in row and "response" in row:  # VLM4D's output files
            row = {**row, "prediction": row["response"]}
        if not isinstance(row, dict) or row.get("id") is None or "prediction" not in row:
            raise SpatialctlError(f"{path}: line {n} needs 'id' and 'prediction'")
        out[str(row["id"])] = row
    if not out:
        raise SpatialctlError(f"{path}: no predictions")
    if all(not str(r["prediction"] or "").strip() for r in out.values()):
        raise SpatialctlError(f"{path}: all {len(out)} predictions are blank")
    return out
