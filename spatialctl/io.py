"""Atomic local writes: every file or folder is written aside and renamed into place, so a reader (or a
killed run's rerun) never sees half of it. Scene stores on any filesystem go through ``store``."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _tmp_name(path: str | Path) -> str:
    # Unique per writer (two processes may race for one file); the suffix stays last so that writers choosing
    # a format by extension (PyAV, pyarrow) still see it.
    p = str(path).rstrip("/")
    stem, ext = os.path.splitext(p)
    return f"{stem}.partial-{uuid.uuid4().hex[:8]}{ext}"


@contextmanager
def aside(path: str | Path) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (file or folder), on failure it
    is removed and ``path`` is untouched."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        yield tmp
        commit(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            os.remove(tmp)


def commit(tmp: str | Path, path: str | Path) -> None:
    """Move a finished ``tmp`` onto ``path``; a folder replaces the previous folder (os.replace cannot)."""
    if os.path.isdir(tmp) and os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    with aside(path) as tmp:
        Path(tmp).write_text(text)


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    """Write each line, adding the newline."""
    with aside(path) as tmp, open(tmp, "w") as f:
        for line in lines:
            f.write(line + "\n")


def write_json(path: str | Path, data: Any, *, sort_keys: bool = True, default=None) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=default) + "\n")


def save_safetensors(path: str | Path, tensors: dict, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    with aside(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
