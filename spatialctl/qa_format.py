"""The QA record: one question (or one multi-turn conversation) about one scene, written once here.

make-qa writes records, eval and train-gsm read them. A record is stored as one JSON object per line (``.jsonl``)
or one row of a parquet table (``.parquet``). The ShareGPT/LLaVA (``conversations``) and Qwen2.5-VL
(``messages``) training forms are the same record with one extra key, so every file make-qa writes reads back
with :func:`read_qa`.

Answers: ``answer_type`` is ``mc`` (``answer`` is an option letter, ``options`` lists the option texts without
letters), ``number`` (``answer`` is a float in ``unit``) or ``text``. A multi-turn sample keeps its earlier turns
in ``history`` (each ``{"question", "answer", "answer_type", "unit"}``); ``question``/``answer`` is its last turn.
In files, answers (also the history's) are text, so a column has one type in every tool; ``history`` and
``metadata`` are JSON objects in JSON lines and JSON text only inside parquet (a table column needs one type).
A record about one image (``frames`` has one frame) is given to a model as that image, never as the video.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spatialctl import io
from spatialctl.errors import SpatialctlError, UsageError

QA_SCHEMA_VERSION = 1
ANSWER_TYPES = ("mc", "number", "text")
LETTERS = "ABCDEFGHIJ"

MC_POST_PROMPT = "Answer with the option's letter from the given choices directly."
NUMBER_POST_PROMPT = "Please answer the question using a single word or phrase."
# Columns that parquet stores as JSON text: their structure varies from record to record.
_JSON_COLUMNS = ("history", "metadata")


@dataclass
class QARecord:
    id: str
    scene: str
    question: str
    answer: str | float
    answer_type: str
    family: str
    type: str
    options: list[str] | None = None
    unit: str | None = None
    scale: str | None = None
    frames: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    video: str | None = None
    images: list[str] | None = None
    scale_source: str = "none"
    generator_version: str = ""
    history: list[dict] | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type {self.answer_type!r} is not one of {ANSWER_TYPES}")
        if self.answer_type == "mc":
            if not self.options or str(self.answer) not in LETTERS[: len(self.options)]:
                raise ValueError(f"mc answer {self.answer!r} does not name one of {len(self.options or [])} options")
        if self.answer_type == "number":
            self.answer = float(self.answer)

    def to_dict(self) -> dict:
        # Shallow: asdict's deep copy of every record's metadata cost as much as generating the question.
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> QARecord:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        for name in _JSON_COLUMNS:
            if isinstance(kw.get(name), str):
                kw[name] = json.loads(kw[name])
        if kw.get("metadata") is None:
            kw["metadata"] = {}
        if kw.get("history"):
            kw["history"] = [{**t, "answer": float(t["answer"])} if t.get("answer_type") == "number" else t
                             for t in kw["history"]]
        return cls(**kw)

    @property
    def answer_index(self) -> int | None:
        return LETTERS.index(str(self.answer)) if self.answer_type == "mc" else None

    @property
    def answer_option(self) -> str | None:
        return self.options[self.answer_index] if self.answer_type == "mc" else None

    def turns(self) -> list[dict]:
        """Every turn, earlier ones first: ``{"question", "answer", "answer_type", "unit", "options"}``."""
        last = {"question": self.question, "answer": self.answer, "answer_type": self.answer_type,
                "unit": self.unit, "options": self.options}
        return [*(self.history or []), last]


def record_id(scene: str, family: str, qtype: str, question: str, options: list[str] | None = None) -> str:
    """A stable id: the same question about the same scene gets the same id in every run."""
    # Fields joined by the unit separator (no field holds it): as unique as JSON, several times cheaper.
    text = "\x1f".join([scene, family, qtype, question, *(options or [])]) + ("\x1e" if options else "")
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def format_number(value: float) -> str:
    """Numbers as a model should write them: no trailing zeros, no exponent."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def answer_text(answer: Any, answer_type: str) -> str:
    return format_number(answer) if answer_type == "number" else str(answer)


def prompt_text(question: str, options: list[str] | None, answer_type: str) -> str:
    """The user's text for one turn: VSI-Bench's layout (question, lettered options, post-prompt)."""
    if answer_type == "mc":
        lines = [question, "Options:"] + [f"{LETTERS[i]}. {o}" for i, o in enumerate(options or [])]
        return "\n".join(lines + [MC_POST_PROMPT])
    if answer_type == "number":
        return f"{question}\n{NUMBER_POST_PROMPT}"
    return question


def _media(record: QARecord) -> tuple[str, list[dict]]:
    """(ShareGPT media-marker prefix, Qwen content items) for the frames or video a record references."""
    # Exported frames are the more specific reference (the question's frames), so they win over the video.
    if record.images:
        return "<image>\n" * len(record.images), [{"type": "image", "image": p} for p in record.images]
    if len(record.frames) == 1:
        raise SpatialctlError(f"record {record.id}: a one-frame question needs its image (export it with "
                              "make-qa's --frames-dir); it is not a video question")
    if record.video:
        return "<video>\n", [{"type": "video", "video": record.video}]
    return "", []


def to_sharegpt(record: QARecord) -> dict:
    """The record plus LLaVA/ShareGPT ``conversations`` (media marker in the first human turn)."""
    prefix, _ = _media(record)
    conv = []
    for i, t in enumerate(record.turns()):
        conv.append({"from": "human", "value": (prefix if i == 0 else "") + prompt_text(t["question"], t.get("options"), t["answer_type"])})
        conv.append({"from": "gpt", "value": answer_text(t["answer"], t["answer_type"])})
    return {**_plain(record), "conversations": conv}


def to_qwen(record: QARecord) -> dict:
    """The record plus Qwen2.5-VL chat ``messages`` (media items before the first question)."""
    _, media = _media(record)
    messages = []
    for i, t in enumerate(record.turns()):
        text = {"type": "text", "text": prompt_text(t["question"], t.get("options"), t["answer_type"])}
        messages.append({"role": "user", "content": (media if i == 0 else []) + [text]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer_text(t["answer"], t["answer_type"])}]})
    return {**_plain(record), "messages": messages}


def _plain(record: QARecord) -> dict:
    # Answers are stored as text so one column has one type in every tool (datasets, parquet, pandas);
    # read_qa turns numbers back into floats.
    d = record.to_dict()
    d["answer"] = answer_text(record.answer, record.answer_type)
    if record.history:
        d["history"] = [{**t, "answer": answer_text(t["answer"], t["answer_type"])} for t in record.history]
    return d


FORMS = {"record": _plain, "sharegpt": to_sharegpt, "qwen": to_qwen}


_OWN_KEYS = {"id", "scene", "family", "question", "answer"}


def check_replaceable(path: str | Path) -> None:
    """Refuse (UsageError, exit 2) to replace a file that is not a QA file spatialctl wrote: its first JSON line
    (or its parquet schema) must hold a QA record's fields; an empty file holds nothing to lose."""
    path = Path(path)
    if not path.exists():
        return
    ours = False
    if path.is_file():
        try:
            if path.stat().st_size == 0:
                ours = True
            elif path.suffix == ".parquet":
                import pyarrow.parquet as pq

                ours = _OWN_KEYS <= set(pq.read_schema(path).names)
            else:
                with open(path, encoding="utf-8") as f:
                    first = json.loads(f.readline())
                ours = isinstance(first, dict) and _OWN_KEYS <= set(first)
        except Exception:  # unreadable, not JSON, not parquet: not ours
            ours = False
    if not ours:
        raise UsageError(f"{path}: exists and is not a QA file spatialctl wrote; refusing to replace it "
                         "(choose another --out or move it away)")


def write_qa(path: str | Path, records: list[QARecord], form: str = "sharegpt") -> None:
    """Write records atomically: ``.parquet`` as a table, anything else as JSON lines in ``form``."""
    path = Path(path)
    if form not in FORMS:
        raise SpatialctlError(f"{path}: unknown QA form {form!r} (choose from {', '.join(FORMS)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [FORMS[form](r) for r in records]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for row in rows:
            # Nested structures vary in keys from row to row; a table keeps them as JSON text.
            for key in ("conversations", "messages", *_JSON_COLUMNS):
                if key in row:
                    row[key] = json.dumps(row[key], sort_keys=True)
        with io.aside(path) as tmp:
            pq.write_table(pa.Table.from_pylist(rows, schema=_arrow_schema(rows)), tmp)
    else:
        io.write_lines(path, (json.dumps(row, ensure_ascii=False) for row in rows))


def _arrow_schema(rows: list[dict]):
    import pyarrow as pa

    types = {"options": pa.list_(pa.string()), "images": pa.list_(pa.string()), "frames": pa.list_(pa.int64()),
             "timestamps": pa.list_(pa.float64())}
    names = list(rows[0]) if rows else [f.name for f in dataclasses.fields(QARecord)]
    return pa.schema([(n, types.get(n, pa.string())) for n in names])


def read_rows(path: str | Path, what: str = "file", json_list: bool = True) -> list[dict]:
    """Rows of a .parquet or JSON-lines file (or, with ``json_list``, a .json list of records), as dicts."""
    path = Path(path)
    if not path.is_file():
        raise SpatialctlError(f"{path}: no such {what}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:
            raise SpatialctlError(f"{path}: not a readable parquet file ({type(e).__name__})") from e
    text = path.read_text()
    if json_list and path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpatialctlError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(rows, dict):  # {"data": [...]} and similar wrappers
            lists = [v for v in rows.values() if isinstance(v, list)]
            rows = lists[0] if len(lists) == 1 else None
        if not isinstance(rows, list):
            raise SpatialctlError(f"{path}: expected a JSON list of records")
        return rows
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise SpatialctlError(f"{path}: line {n} is not JSON") from None
    return rows


def read_qa(path: str | Path) -> list[QARecord]:
    """Read records from any file :func:`write_qa` wrote (``.jsonl`` in any form, or ``.parquet``)."""
    rows = read_rows(path, "QA file", json_list=False)
    out = []
    for n, row in enumerate(rows, 1):
        try:
            out.append(QARecord.from_dict(row))
        except (TypeError, ValueError) as e:
            raise SpatialctlError(f"{path}: record {n} is not a QA record ({e})") from None
    return out
