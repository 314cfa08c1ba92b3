"""report: a static HTML site of scene stores and, optionally, the questions made from them.

``run(config)`` writes ``OUT/index.html`` (scenes, paginated), one page per scene (a frame strip with masks and
object ids, a depth strip, a top-down map of the camera path and object trajectories, the reconstruction's
numbers) and, with ``--qa``, ``OUT/questions.html``: every question with its answer, options, the frames it
shows and the objects it names highlighted in them (mask, box and id: set-of-marks style), filters by family,
type and scene, pages, and make-qa's blind-audit table when ``QA.audit.json`` sits beside the QA file.
Everything is relative files; nothing is fetched, no server is needed. The site is built aside and moved into
place, so a killed run leaves no half report.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from spatialctl import __version__, jobs
from spatialctl.config import check_fields, opt, overwrite_opt, quiet_opt
from spatialctl.errors import UsageError
from spatialctl.qa_format import QARecord, read_qa
from spatialctl.visual import SceneView, open_view, scene_ids

from . import html, images
from .assets import SceneAssets, slugs
from .qa import entry

log = logging.getLogger("spatialctl.report")

MARKER = ".spatialctl-report"  # proves a folder is a report this command wrote (and may replace)
STAT_FRAMES = 64  # confidence and depth numbers come from at most this many evenly spaced frames
CHUNK = 200  # questions per data file of the browser


@dataclass
class ReportConfig:
    out: str = opt("report", "Output folder of the site (index.html, questions.html, scenes/).", short="-o")
    qa: str | None = opt(None, "QA file (make-qa's .jsonl or .parquet) to browse. Default: none.",
                         show_default=False)
    strip_frames: int = opt(8, "Frames in each scene's frame and depth strips (evenly spaced).")
    question_frames: int = opt(4, "Frames shown per question, at most (the ones its text names when recorded).")
    page_size: int = opt(50, "Questions, and scenes, per page.")
    thumb: int = opt(320, "Longest side of thumbnails, pixels.")
    overwrite: bool = overwrite_opt("Replace OUT when it holds an earlier report.")
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        check_fields(self)
        for name in ("strip_frames", "question_frames", "page_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} {getattr(self, name)}: give 1 or more")
        if self.thumb < 16:
            raise UsageError(f"--thumb {self.thumb}: give at least 16 pixels")


def run(config: ReportConfig, scenes: list[str], progress: Callable | None = None,
        question_progress: Callable | None = None) -> jobs.Summary:
    """Write the site for the stores ``scenes`` (paths, URLs or manifests); ``Summary.details`` is ``{"out",
    "scenes", "questions", "pages", "audit"}``. ``progress`` wraps the scenes, ``question_progress`` the questions."""
    config.validate()
    inputs = jobs.resolve_inputs(scenes) if scenes else []
    if not inputs:
        raise UsageError("report: no scene stores given")
    out = Path(config.out)
    _check_out(out, config.overwrite)
    views = [open_view(u) for u in inputs]  # every input is validated before anything is written
    ids = scene_ids(inputs)
    records = read_qa(config.qa) if config.qa else []
    audit, audit_path, audit_error = _read_audit(config.qa) if config.qa else (None, None, None)

    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        if not (tmp / MARKER).exists():
            raise UsageError(f"{tmp}: exists and is not a report this command started; remove it yourself")
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / MARKER).write_text(f"spatialctl {__version__} report\n")
    (tmp / "style.css").write_text(html.CSS)

    assets = [SceneAssets(v, sid, slug, tmp, config.thumb) for v, sid, slug in zip(views, ids, slugs(ids), strict=True)]
    counts = {a.scene_id: 0 for a in assets}
    for r in records:
        if r.scene in counts:
            counts[r.scene] += 1
    rows = []
    for a in (progress or _same)(assets):
        rows.append(_scene_page(a, config, counts[a.scene_id], bool(config.qa)))
    pages = _index_pages(tmp, rows, config.page_size, bool(config.qa))
    n_q = _questions(tmp, records, {a.scene_id: a for a in assets}, config, question_progress or _same, audit,
                     audit_path, audit_error)
    missing = sorted({r.scene for r in records} - set(counts))
    if missing:
        log.warning("%d questions are about scenes not given (%s): shown without frames",
                    sum(r.scene in missing for r in records), ", ".join(missing[:5]))
    summary = {"kind": "spatialctl-report", "package_version": __version__, "out": str(out), "scenes": len(assets),
               "questions": n_q, "index_pages": pages, "qa": config.qa, "audit": audit_path if audit else None,
               "scenes_missing": missing, "config": jobs.config_dict(config)}
    (tmp / "report.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _swap_in(tmp, out)
    details = {"out": str(out), "scenes": len(assets), "questions": n_q, "pages": pages,
               "audit": audit_path if audit else None}
    return jobs.Summary(done=list(scenes), outputs=[str(out)], details=details)


def _same(items):
    return items


# ---------------------------------------------------------------------------------------------------- output folder


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if (out / MARKER).exists():
        if not overwrite:
            raise UsageError(f"{out}: holds an earlier report; pass --overwrite to replace it")
    elif any(out.iterdir()):
        raise UsageError(f"{out}: a folder with other files; give a new or empty folder")


def _swap_in(tmp: Path, out: Path) -> None:
    """Move the finished site into place; an earlier report (ours, by its marker) is removed only after."""
    old = None
    if out.exists():
        if (out / MARKER).exists():
            old = out.with_name(out.name + ".old")
            if old.exists() and (old / MARKER).exists():
                shutil.rmtree(old)
            out.rename(old)
        else:
            out.rmdir()  # empty, checked before
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def _read_audit(qa: str) -> tuple[dict | None, str | None, str | None]:
    """make-qa's blind audit beside the QA file (``qa.jsonl`` -> ``qa.audit.json``), when there is one."""
    p = Path(qa)
    path = p.with_name((p.name[: -len(p.suffix)] if p.suffix else p.name) + ".audit.json")
    if not path.is_file():
        return None, None, None
    try:
        return json.loads(path.read_text()), str(path), None
    except (OSError, json.JSONDecodeError) as e:
        return None, str(path), f"not readable JSON ({type(e).__name__})"


# ---------------------------------------------------------------------------------------------------- scene pages


def _even(n: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, min(n, k)).round()})


def scene_numbers(view: SceneView) -> list[tuple[str, str]]:
    """The reconstruction's numbers: size, timing, scale and its source, confidence and depth, objects."""
    n = view.n_frames
    stat = _even(n, STAT_FRAMES)
    conf = np.concatenate([view.conf(f).ravel() for f in stat])
    depth = np.concatenate([view.depth(f).ravel() for f in stat])
    valid = depth > 0
    c = conf[valid]
    cams = view.cam2world[:, :3, 3]
    prov = view.provenance
    model = (prov.get("config") or {}).get("model") if isinstance(prov.get("config"), dict) else None
    rows = [("frames", str(n)), ("size", f"{view.hw[1]} x {view.hw[0]}"),
            ("duration", f"{float(view.timestamps[-1] - view.timestamps[0]):.3f} s"),
            ("scale", str(view.attrs.get("scale", "relative"))),
            ("scale source", str(view.attrs.get("scale_source", "none"))),
            ("world up", str(view.attrs.get("world_up", "not recorded"))),
            ("made by", f"{prov.get('stage', '?')} (spatialctl {prov.get('package_version', '?')})"
             + (f", model {model}" if model else "")),
            ("camera path length", f"{float(np.linalg.norm(np.diff(cams, axis=0), axis=1).sum()):.3f} world units"),
            ("pixels with depth", f"{valid.mean():.1%} (over {len(stat)} of {n} frames)")]
    if len(c):
        q10, q50, q90 = np.percentile(c, [10, 50, 90])
        rows.append(("confidence p10 / median / p90", f"{q10:.3g} / {q50:.3g} / {q90:.3g}"))
        if not view.is_synth:
            rows.append(("confidence >= 3 (DUSt3R's demo threshold)", f"{(c >= 3).mean():.1%}"))
        lo, hi = np.percentile(depth[valid], [2, 98])
        rows.append(("depth p2 / p98", f"{lo:.3g} / {hi:.3g}"))
    if view.tracks is not None:
        tprov = view.tracks.attrs.get("provenance", {})
        rows.append(("objects", f"{view.n_objects} ({int(view.moving.sum())} moving), tracks by "
                                f"{tprov.get('stage', '?')}"))
    else:
        rows.append(("objects", "no tracks"))
    return rows


def _scene_page(a: SceneAssets, config: ReportConfig, n_questions: int, has_qa: bool) -> list[str]:
    view = a.view
    folder = a.root / a.rel
    frames = _even(view.n_frames, config.strip_frames)
    drange = images.depth_range(view, frames)
    strip, dstrip = [], []
    for f in frames:
        images.save(images.annotated_frame(view, f, a.size), folder / f"strip-{f:06d}.jpg", quality=88)
        images.save(images.depth_image(view.depth(f), drange, a.size), folder / f"depth-{f:06d}.png")
        cap = f"frame {f} ({float(view.timestamps[f]):.2f} s)"
        strip.append(f'<figure class="strip-frame" data-frame="{f}"><img src="strip-{f:06d}.jpg" width="{a.size[0]}" '
                     f'height="{a.size[1]}" alt="{cap}"><figcaption>{cap}</figcaption></figure>')
        dstrip.append(f'<figure class="depth-frame" data-frame="{f}"><img src="depth-{f:06d}.png" '
                      f'width="{a.size[0]}" height="{a.size[1]}" alt="depth {cap}"><figcaption>{cap}</figcaption>'
                      "</figure>")
    images.top_down_map(view, folder / "map.png")
    objects = [[view.object_name(o), "yes" if view.moving[o] else "no", str(int(view.visible[o].sum()))]
               for o in range(view.n_objects)]
    qa_link = (f'<p><a href="../../questions.html#scene={escape(a.scene_id)}">{n_questions} questions about this '
               "scene</a></p>") if has_qa else ""
    body = (f"<p>store: <code>{escape(view.url)}</code></p>{qa_link}<h2>Reconstruction</h2>"
            + html.table(scene_numbers(view))
            + '<h2>Frames with object masks and ids</h2><div class="strip" id="frame-strip">' + "".join(strip) + "</div>"
            + f'<h2>Depth</h2><p>turbo colour map over {drange[0]:.3g} .. {drange[1]:.3g} (2nd-98th percentile); '
              'black: no surface</p><div class="strip" id="depth-strip">' + "".join(dstrip) + "</div>"
            + '<h2>Top-down map</h2><img id="map" src="map.png" alt="top-down map">'
            + ("<h2>Objects</h2>" + html.grid(["object", "moving", "frames visible"], objects) if objects else ""))
    (folder / "index.html").write_text(html.page(f"Scene {a.scene_id}", body, root="../../"))
    numbers = dict(scene_numbers_short(view))
    return [f'<a href="{a.rel}/index.html">{escape(a.scene_id)}</a>', numbers["frames"], numbers["scale"],
            numbers["scale source"], str(view.n_objects), str(n_questions) if has_qa else ""]


def scene_numbers_short(view: SceneView) -> list[tuple[str, str]]:
    return [("frames", str(view.n_frames)), ("scale", str(view.attrs.get("scale", "relative"))),
            ("scale source", str(view.attrs.get("scale_source", "none")))]


def _index_pages(root: Path, rows: list[list[str]], page_size: int, has_qa: bool) -> int:
    pages = max(1, -(-len(rows) // page_size))

    def name(i: int) -> str:
        return "index.html" if i == 1 else f"index-{i}.html"

    header = ["scene", "frames", "scale", "scale source", "objects", "questions" if has_qa else ""]
    for i in range(1, pages + 1):
        chunk = rows[(i - 1) * page_size: i * page_size]
        body = (f"<p>{len(rows)} scenes" + (' · <a href="questions.html">question browser</a>' if has_qa else "")
                + "</p>" + html.pager_links(i, pages, name) + html.grid(header, chunk, raw_first=True)
                + html.pager_links(i, pages, name))
        (root / name(i)).write_text(html.page("spatialctl report", body))
    return pages


# ---------------------------------------------------------------------------------------------------- questions


def _questions(root: Path, records: list[QARecord], assets: dict[str, SceneAssets], config: ReportConfig, wrap,
               audit, audit_path, audit_error) -> int:
    (root / "qa").mkdir(exist_ok=True)
    (root / "qa.js").write_text(html.SCRIPT)
    index = {"page_size": config.page_size, "chunk_size": CHUNK, "items": [], "families": [], "types": {},
             "all_types": [], "scenes": []}
    chunk: list[dict] = []
    for r in wrap(records):
        a = assets.get(r.scene)
        chunk.append(entry(r, a, f"{a.rel}/index.html" if a else None, config.question_frames))
        index["items"].append([r.family, r.type, r.scene])
        if len(chunk) == CHUNK:
            _write_chunk(root, (len(index["items"]) - 1) // CHUNK, chunk)
            chunk = []
    if chunk:
        _write_chunk(root, (len(index["items"]) - 1) // CHUNK, chunk)
    fams = sorted({r.family for r in records})
    index["families"] = fams
    index["types"] = {f: sorted({r.type for r in records if r.family == f}) for f in fams}
    index["all_types"] = sorted({r.type for r in records})
    index["scenes"] = sorted({r.scene for r in records})
    (root / "qa" / "index.js").write_text(html.js_data("QA_INDEX", index))
    (root / "questions.html").write_text(html.questions_page(len(records), html.audit_section(audit, audit_path,
                                                                                            audit_error)))
    return len(records)


def _write_chunk(root: Path, i: int, entries: list[dict]) -> None:
    (root / "qa" / f"chunk-{i:05d}.js").write_text(html.js_data("QA_CHUNKS", entries, key=i))
