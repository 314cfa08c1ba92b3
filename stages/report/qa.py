"""Questions for the browser: which frames a question shows and which objects it names, as plain data.

A record's documented fields (``spatialctl.qa_format``) give its frames. The objects a question names are not a
documented field; make-qa records them in ``metadata`` as tracks ids (``object_ids``, ``target_ids``,
``agent_id``, ``object_id``) or as categories (``categories``, ``label``). Those keys are read when present; a
record without them is shown with its frames and no highlights, and says so.
"""

from __future__ import annotations

import numpy as np

from spatialctl.qa_format import QARecord, answer_text
from spatialctl.visual import hex_colour

from .assets import SceneAssets

ID_KEYS = ("object_ids", "target_ids", "agent_id", "object_id")
LABEL_KEYS = ("categories", "label")
FRAME_KEYS = ("key_frames", "frame")  # the frames a question's text refers to, when make-qa records them


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def named_objects(record: QARecord, assets: SceneAssets) -> tuple[list[int], str, list[str]]:
    """(object indices, how they were found: "ids" | "labels" | "none", ids the scene does not have)."""
    view, meta = assets.view, record.metadata or {}
    ids = [i for k in ID_KEYS for i in _as_list(meta.get(k))]
    if ids:
        found, missing = [], []
        for i in ids:
            o = view.index_of(i)
            if o is None:
                missing.append(str(i))
            elif o not in found:
                found.append(o)
        return found, "ids", missing
    labels = {str(x) for k in LABEL_KEYS for x in _as_list(meta.get(k))}
    if labels:
        return [o for o in range(view.n_objects) if view.labels[o] in labels], "labels", []
    return [], "none", []


def shown_frames(record: QARecord, n_frames: int, k: int) -> list[int]:
    """Up to k frames of the question: the ones its text refers to when recorded, else evenly spaced ones."""
    frames = sorted({int(f) for f in record.frames if 0 <= int(f) < n_frames}) or list(range(n_frames))
    meta = record.metadata or {}
    preferred = sorted({int(f) for key in FRAME_KEYS for f in _as_list(meta.get(key))
                        if isinstance(f, int | float) and int(f) in frames})
    pool = preferred or frames
    if len(pool) <= k:
        return pool
    return [pool[i] for i in np.linspace(0, len(pool) - 1, k).round().astype(int)]


def entry(record: QARecord, assets: SceneAssets | None, scene_href: str | None, k: int) -> dict:
    """The browser's data for one record (the frames' image files are written on the way)."""
    e = {"id": record.id, "scene": record.scene, "scene_href": scene_href, "family": record.family,
         "type": record.type, "question": record.question, "answer_type": record.answer_type,
         "answer": answer_text(record.answer, record.answer_type), "options": record.options, "unit": record.unit,
         "scale": record.scale, "scale_source": record.scale_source, "n_frames": len(record.frames),
         "history": [{"question": t.get("question", ""), "answer": answer_text(t.get("answer", ""),
                                                                              t.get("answer_type", "text"))}
                     for t in (record.history or [])],
         "objects": [], "objects_from": "none", "missing_ids": [], "frames": []}
    if assets is None:
        return e
    objs, source, missing = named_objects(record, assets)
    view = assets.view
    e["objects"] = [{"id": str(view.object_ids[o]), "label": view.labels[o],
                     "color": hex_colour(o)} for o in objs]
    e["objects_from"], e["missing_ids"] = source, missing
    e["frames"] = [assets.shown_frame(f, objs) for f in shown_frames(record, view.n_frames, k)]
    return e
