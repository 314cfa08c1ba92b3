"""The report's HTML, CSS and the question browser's script: static files, relative links, nothing fetched.

The browser reads its data from ``qa/index.js`` (one small row per question, for filters and pages) and
``qa/chunk-NNNNN.js`` files (full questions, loaded by ``<script>`` only for the page shown), so it works from
``file://`` with no server and stays fast for large runs.
"""

from __future__ import annotations

import json
from html import escape

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:12px 20px;color:#222}
a{color:#0b5cad} h1{font-size:22px} h2{font-size:18px;margin-top:24px} nav.top a{margin-right:14px}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3} .strip{display:flex;flex-wrap:wrap;gap:6px} .strip figure{margin:0}
.strip figcaption,.qa-frame figcaption{font-size:11px;color:#555} .pager a,.pager span{margin:0 4px}
.filters{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:8px 0}
.qa-card{border:1px solid #ccc;border-radius:6px;padding:10px;margin:10px 0}
.qa-head{font-size:12px;color:#555} .qa-q{font-weight:600;margin:6px 0;white-space:pre-wrap}
.qa-options li.correct{background:#dff5df;font-weight:600} .qa-answer{margin:4px 0}
.chip{display:inline-block;border-radius:10px;padding:0 8px;margin-right:4px;color:#fff;font-size:12px}
.qa-frames{display:flex;flex-wrap:wrap;gap:8px;margin-top:6px} .qa-frame{margin:0}
.stage{position:relative;display:inline-block;line-height:0} .stage img,.stage svg{display:block}
.stage .overlay,.stage svg{position:absolute;left:0;top:0;width:100%;height:100%}
.mark text{font:bold 12px sans-serif;fill:#fff} .note{color:#a05a00;font-size:12px}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var IDX = window.QA_INDEX;
  window.QA_CHUNKS = window.QA_CHUNKS || {};
  var SVG = "http://www.w3.org/2000/svg";
  function $(s) { return document.querySelector(s); }
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in (attrs || {})) { if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]); }
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }
  function state() {
    var p = new URLSearchParams(location.hash.slice(1));
    return {family: p.get("family") || "", type: p.get("type") || "", scene: p.get("scene") || "",
            page: Math.max(1, parseInt(p.get("page") || "1", 10) || 1)};
  }
  function go(s) {
    var p = new URLSearchParams();
    ["family", "type", "scene"].forEach(function (k) { if (s[k]) p.set(k, s[k]); });
    if (s.page > 1) p.set("page", String(s.page));
    location.hash = p.toString();
  }
  function loadChunk(i) {
    return new Promise(function (resolve, reject) {
      if (window.QA_CHUNKS[i]) return resolve(window.QA_CHUNKS[i]);
      var s = document.createElement("script");
      s.src = "qa/chunk-" + String(i).padStart(5, "0") + ".js";
      s.onload = function () { resolve(window.QA_CHUNKS[i]); };
      s.onerror = function () { reject(new Error("missing " + s.src)); };
      document.head.appendChild(s);
    });
  }
  function fillSelect(sel, values, current) {
    sel.replaceChildren(el("option", {value: "", text: "all"}));
    values.forEach(function (v) {
      var o = el("option", {value: v, text: v});
      if (v === current) o.selected = true;
      sel.appendChild(o);
    });
  }
  function frame(q, f) {
    var stage = el("div", {"class": "stage"}, [el("img", {"class": "frame", src: f.src, width: f.w, height: f.h,
                                                         alt: "frame " + f.frame, loading: "lazy"})]);
    f.overlays.forEach(function (o) {
      stage.appendChild(el("img", {"class": "overlay", src: o.src, "data-object-id": o.id, alt: ""}));
    });
    var s = svg("svg", {viewBox: "0 0 " + f.w + " " + f.h});
    f.marks.forEach(function (m) {
      var g = svg("g", {"class": "mark", "data-object-id": m.id});
      g.appendChild(svg("rect", {x: m.box[0], y: m.box[1], width: m.box[2] - m.box[0], height: m.box[3] - m.box[1],
                                 fill: "none", stroke: m.color, "stroke-width": 1.5}));
      var w = 8 + 7 * m.id.length;
      g.appendChild(svg("rect", {x: m.x - w / 2, y: m.y - 8, width: w, height: 16, rx: 3, fill: m.color,
                                 stroke: "#000", "stroke-width": 0.8}));
      var t = svg("text", {x: m.x, y: m.y + 4, "text-anchor": "middle"});
      t.textContent = m.id;
      g.appendChild(t);
      s.appendChild(g);
    });
    stage.appendChild(s);
    var cap = "frame " + f.frame + " (" + f.time + " s)";
    if (f.absent.length) cap += "; not visible: " + f.absent.join(", ");
    return el("figure", {"class": "qa-frame", "data-frame": f.frame}, [stage, el("figcaption", {text: cap})]);
  }
  function card(q) {
    var head = el("div", {"class": "qa-head"});
    head.appendChild(document.createTextNode(q.family + " / " + q.type + " \u00b7 scene "));
    head.appendChild(q.scene_href ? el("a", {href: q.scene_href, text: q.scene}) : el("span", {text: q.scene}));
    head.appendChild(document.createTextNode(" \u00b7 " + q.id + " \u00b7 scale source " + q.scale_source));
    var c = el("div", {"class": "qa-card", id: "q-" + q.id, "data-id": q.id, "data-family": q.family,
                       "data-type": q.type, "data-scene": q.scene}, [head]);
    if (q.history.length) {
      var d = el("details", {}, [el("summary", {text: q.history.length + " earlier turns"})]);
      var ol = el("ol", {"class": "qa-history"});
      q.history.forEach(function (t) { ol.appendChild(el("li", {text: t.question + " \u2192 " + t.answer})); });
      d.appendChild(ol);
      c.appendChild(d);
    }
    c.appendChild(el("div", {"class": "qa-q", text: q.question}));
    if (q.options) {
      var opts = el("ol", {"class": "qa-options", type: "A"});
      q.options.forEach(function (o, i) {
        var li = el("li", {text: o});
        if ("ABCDEFGHIJ"[i] === q.answer) li.className = "correct";
        opts.appendChild(li);
      });
      c.appendChild(opts);
    }
    c.appendChild(el("div", {"class": "qa-answer", text: "answer: " + q.answer + (q.unit ? " " + q.unit : "")}));
    var objs = el("div", {"class": "qa-objects"}, [document.createTextNode("objects: ")]);
    q.objects.forEach(function (o) {
      objs.appendChild(el("span", {"class": "chip", style: "background:" + o.color, "data-object-id": o.id,
                                   text: o.label + " #" + o.id}));
    });
    if (q.objects_from === "labels") objs.appendChild(el("span", {"class": "note", text: " (every object of the named categories)"}));
    if (q.objects_from === "none") objs.appendChild(el("span", {"class": "note", text: "not recorded in this question"}));
    if (q.missing_ids.length) objs.appendChild(el("span", {"class": "note", text: " ids not in the scene: " + q.missing_ids.join(", ")}));
    c.appendChild(objs);
    if (!q.scene_href) c.appendChild(el("div", {"class": "note", text: "scene not in this report: no frames"}));
    var fr = el("div", {"class": "qa-frames"});
    q.frames.forEach(function (f) { fr.appendChild(frame(q, f)); });
    c.appendChild(fr);
    if (q.n_frames > q.frames.length) c.appendChild(el("div", {"class": "qa-head", text: "showing " + q.frames.length + " of the question's " + q.n_frames + " frames"}));
    return c;
  }
  function pager(page, pages) {
    var p = el("div", {"class": "pager"});
    var s = state();
    for (var i = 1; i <= pages; i++) {
      if (pages > 15 && Math.abs(i - page) > 3 && i !== 1 && i !== pages) { if (i === 2 || i === pages - 1) p.appendChild(el("span", {text: "\u2026"})); continue; }
      if (i === page) { p.appendChild(el("span", {text: String(i)})); continue; }
      var a = el("a", {href: "#", text: String(i)});
      a.onclick = (function (n) { return function (ev) { ev.preventDefault(); s.page = n; go(s); }; })(i);
      p.appendChild(a);
    }
    return p;
  }
  function render() {
    var s = state();
    document.body.removeAttribute("data-ready");
    fillSelect($("#f-family"), IDX.families, s.family);
    fillSelect($("#f-type"), s.family ? IDX.types[s.family] || [] : IDX.all_types, s.type);
    fillSelect($("#f-scene"), IDX.scenes, s.scene);
    var matches = [];
    IDX.items.forEach(function (it, i) {
      if ((!s.family || it[0] === s.family) && (!s.type || it[1] === s.type) && (!s.scene || it[2] === s.scene)) matches.push(i);
    });
    var pages = Math.max(1, Math.ceil(matches.length / IDX.page_size));
    var page = Math.min(s.page, pages);
    var slice = matches.slice((page - 1) * IDX.page_size, page * IDX.page_size);
    var count = $("#qa-count");
    count.textContent = matches.length + " of " + IDX.items.length + " questions; page " + page + " of " + pages;
    count.setAttribute("data-count", matches.length);
    var chunks = Array.from(new Set(slice.map(function (i) { return Math.floor(i / IDX.chunk_size); })));
    return Promise.all(chunks.map(loadChunk)).then(function () {
      $("#qa-list").replaceChildren.apply($("#qa-list"), slice.map(function (i) {
        return card(window.QA_CHUNKS[Math.floor(i / IDX.chunk_size)][i % IDX.chunk_size]);
      }));
      $("#pager-top").replaceChildren(pager(page, pages));
      $("#pager-bottom").replaceChildren(pager(page, pages));
      document.body.setAttribute("data-ready", "1");
    }).catch(function (e) { $("#qa-list").replaceChildren(el("p", {"class": "note", text: String(e)})); });
  }
  ["family", "type", "scene"].forEach(function (k) {
    $("#f-" + k).addEventListener("change", function (ev) {
      var s = state();
      s[k] = ev.target.value;
      if (k === "family") s.type = "";
      s.page = 1;
      go(s);
    });
  });
  window.addEventListener("hashchange", render);
  render();
})();
"""


def page(title: str, body: str, root: str = "") -> str:
    """A whole HTML page; ``root`` is the relative path back to the report's top folder ("" or "../../")."""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<link rel="stylesheet" href="{root}style.css"></head><body>\n'
            f'<nav class="top"><a href="{root}index.html">scenes</a><a href="{root}questions.html">questions</a></nav>\n'
            f"<h1>{escape(title)}</h1>\n{body}\n</body></html>\n")


def table(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def grid(header: list[str], rows: list[list[str]], raw_first: bool = False) -> str:
    """A table with a header row; ``raw_first`` keeps the first cell's HTML (a link)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if (raw_first and i == 0) else escape(c)}</td>" for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def pager_links(page_no: int, pages: int, name) -> str:
    if pages <= 1:
        return ""
    parts = [f"<span>{i}</span>" if i == page_no else f'<a href="{name(i)}">{i}</a>' for i in range(1, pages + 1)]
    return '<div class="pager">pages: ' + " ".join(parts) + "</div>"


def questions_page(n_questions: int, audit_html: str) -> str:
    body = (f'<p>{n_questions} questions. Highlighted: the objects each question names (its mask, box and id).</p>'
            '<div class="filters"><label>family <select id="f-family"></select></label>'
            '<label>type <select id="f-type"></select></label><label>scene <select id="f-scene"></select></label>'
            '<span id="qa-count"></span></div><div id="pager-top"></div><div id="qa-list"></div>'
            f'<div id="pager-bottom"></div>{audit_html}'
            '<script src="qa/index.js"></script><script src="qa.js"></script>')
    return page("Questions", body)


def js_data(name: str, value, key: int | None = None) -> str:
    """A script that sets ``window.NAME`` (or ``window.NAME[key]``) to JSON data; ``</`` is escaped so no string
    can close the script."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    if key is None:
        return f"window.{name} = {text};\n"
    return f"window.{name} = window.{name} || {{}};\nwindow.{name}[{key}] = {text};\n"


def audit_section(audit: dict | None, path: str | None, error: str | None) -> str:
    """make-qa's blind-audit report when one sits beside the QA file: its rows as a table, columns as found."""
    if error:
        return f'<h2 id="audit">Blind audit</h2><p class="note">{escape(path or "")}: {escape(error)}</p>'
    if audit is None:
        return ""
    rows = audit.get("rows") if isinstance(audit, dict) else None
    info = [(k, str(v)) for k, v in (audit.items() if isinstance(audit, dict) else [])
            if isinstance(v, str | int | float | bool) or v is None]
    out = f'<h2 id="audit">Blind audit</h2><p>from <code>{escape(path or "")}</code></p>' + table(info)
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        cols: list[str] = []
        for r in rows:
            cols += [k for k, v in r.items() if k not in cols and not isinstance(v, dict | list)]
        cells = [[_cell(r.get(c)) for c in cols] for r in rows]
        out += '<div id="audit-table">' + grid(cols, cells) + "</div>"
    return out


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)
