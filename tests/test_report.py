"""`spatialctl report` rendered by headless Chromium: the page's own DOM must show every question, highlight
exactly the objects each question names (checked against the synth truth masks, not our overlay code), and show
the store's frames; plus a screenshot of the question browser."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from spatialctl import store
from spatialctl.qa_format import read_qa

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ID_KEYS = ("object_ids", "target_ids", "agent_id", "object_id")


@pytest.fixture(scope="module")
def synth_qa(tmp_path_factory):
    from spatialctl.stages.make_qa import MakeQAConfig
    from spatialctl.stages.make_qa import run as make_qa
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    root = tmp_path_factory.mktemp("report")
    assert synth_run(SynthConfig(seed=3, frames=10, width=128, height=96, quiet=True, out=str(root / "s3"))).exit_code == 0
    scene = str(root / "s3" / "scene.zarr")
    qa = root / "qa.jsonl"
    make_qa(MakeQAConfig(out=str(qa), per_scene=4, quiet=True), [scene])
    # An audit file as make-qa's blind audit writes beside its output (rows of per-type scores).
    audit = {"records": 16, "method": "scene-disjoint halves", "rows": [
        {"type": "dsr/speed", "kind": "mc", "n": 4, "chance": 0.25, "best": 0.3, "best_name": "letter", "ok": True},
        {"type": "static/object_size", "kind": "number", "n": 2, "best": 0.41, "best_name": "median_type"}]}
    (root / "qa.audit.json").write_text(json.dumps(audit))
    return root, scene, qa, audit


class _DOM(HTMLParser):
    """The few things the tests query, from Chromium's serialised DOM: elements with their attributes and parents."""

    VOID = {"img", "br", "meta", "link", "input", "rect", "hr"}

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[dict] = []
        self._stack: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        e = {"tag": tag, "attrs": dict(attrs), "parents": list(self._stack), "text": ""}
        self.elements.append(e)
        if tag not in self.VOID:
            self._stack.append(e)

    def handle_startendtag(self, tag, attrs):
        self.elements.append({"tag": tag, "attrs": dict(attrs), "parents": list(self._stack), "text": ""})

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i]["tag"] == tag:
                del self._stack[i:]
                break

    def handle_data(self, data):
        for e in self._stack:
            e["text"] += data

    def select(self, tag=None, cls=None, within=None, **attrs):
        out = []
        for e in self.elements:
            if tag and e["tag"] != tag:
                continue
            if cls and cls not in e["attrs"].get("class", "").split():
                continue
            if any(e["attrs"].get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            if within is not None and not any(p is within for p in e["parents"]):
                continue
            out.append(e)
        return out


def _chromium(*args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=10000", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def _dom(url: str) -> _DOM:
    return _DOM(_chromium("--dump-dom", url))


def _listed(v) -> list:
    return v if isinstance(v, list) else [] if v is None else [v]


def _named_ids(record, objects: list[dict]) -> list[str]:
    """The objects a question names, from make-qa's metadata: tracks ids, else every object of its categories."""
    ids = [str(x) for k in ID_KEYS for x in _listed(record.metadata.get(k))]
    if ids:
        return list(dict.fromkeys(ids))
    labels = {str(x) for k in ("categories", "label") for x in _listed(record.metadata.get(k))}
    return [str(o["id"]) for o in objects if o["label"] in labels]


def test_question_browser_in_chromium(synth_qa, cli, tmp_path):
    assert CHROMIUM, "headless Chromium is needed (apt-get install chromium)"
    root, scene, qa, audit = synth_qa
    records = read_qa(qa)
    out = tmp_path / "site"
    r = cli("report", scene, "--qa", qa, "--out", out, "--page-size", 1000, "--thumb", 400, "--quiet")
    assert r.exit_code == 0, r.output
    page = (out / "questions.html").as_uri()
    dom = _dom(page)
    assert dom.select("body")[0]["attrs"].get("data-ready") == "1"

    # question count, from the page
    assert int(dom.select(id="qa-count")[0]["attrs"]["data-count"]) == len(records)
    cards = dom.select("div", "qa-card")
    assert sorted(c["attrs"]["data-id"] for c in cards) == sorted(r.id for r in records)

    s = store.open_scene(scene)
    tracks = s.open_group("tracks")
    ids = [str(o["id"]) for o in tracks.attrs["objects"]]
    frames = s.read("frames")
    masks = store.unpack_mask(tracks.read("masks"), s.hw)  # (O, N, H, W) truth
    by_id = {r.id: r for r in records}
    highlighted = 0
    for c in cards:
        rec = by_id[c["attrs"]["data-id"]]
        named = _named_ids(rec, tracks.attrs["objects"])
        chips = [e["attrs"]["data-object-id"] for e in dom.select("span", "chip", within=c)]
        assert chips == named, rec.type
        figs = dom.select("figure", "qa-frame", within=c)
        assert figs, rec.id
        for fig in figs:
            f = int(fig["attrs"]["data-frame"])
            assert f in rec.frames
            # the objects highlighted in this frame are exactly the named ones visible in it (truth masks)
            expect = {i for i in named if masks[ids.index(i), f].any()}
            marks = {m["attrs"]["data-object-id"] for m in dom.select("g", "mark", within=fig)}
            overlays = {m["attrs"]["data-object-id"] for m in dom.select("img", "overlay", within=fig)}
            assert marks == expect and overlays == expect, (rec.type, f)
            highlighted += len(marks)
            # the frame image is the store's frame; each overlay covers exactly the object's truth mask
            img = dom.select("img", "frame", within=fig)
            assert len(img) == 1
            shown = np.asarray(Image.open(out / img[0]["attrs"]["src"]).convert("RGB"), dtype=np.float64)
            assert shown.shape == frames[f].shape
            err = np.abs(shown - frames).mean(axis=(1, 2, 3))
            # JPEG (quality 90) of a noisy texture: close to its own frame, and far closer than to any other
            assert err[f] < 8.0 and err[f] < 0.5 * np.delete(err, f).min(), err
            for o in dom.select("img", "overlay", within=fig):
                alpha = np.asarray(Image.open(out / o["attrs"]["src"]))[..., 3] > 0
                assert (alpha == masks[ids.index(o["attrs"]["data-object-id"]), f]).all()
    assert highlighted > len(records) // 2  # most questions name visible objects

    # filters: family (and the type menu follows it)
    fam = records[-1].family
    d2 = _dom(page + f"#family={fam}")
    n_fam = sum(r.family == fam for r in records)
    assert int(d2.select(id="qa-count")[0]["attrs"]["data-count"]) == n_fam
    assert {c["attrs"]["data-family"] for c in d2.select("div", "qa-card")} == {fam}
    types = [o["attrs"]["value"] for o in d2.select("option", within=d2.select(id="f-type")[0])]
    assert types[1:] == sorted({r.type for r in records if r.family == fam})

    # the blind-audit table beside the QA file
    table = d2.select(id="audit-table")[0]
    assert len(d2.select("tr", within=table)) == 1 + len(audit["rows"])

    shot = tmp_path / "questions.png"
    _chromium("--hide-scrollbars", "--window-size=1200,1400", f"--screenshot={shot}", page)
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(np.int64)
    assert pixels.shape[:2] == (1400, 1200)
    assert len(np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2])) > 500  # frames, not blank


def test_pages_and_scene_page(synth_qa, cli, tmp_path):
    root, scene, qa, _ = synth_qa
    records = read_qa(qa)
    out = tmp_path / "site"
    assert cli("report", scene, "--qa", qa, "--out", out, "--page-size", 5, "--strip-frames", 4, "-q").exit_code == 0
    page = (out / "questions.html").as_uri()
    pages = math.ceil(len(records) / 5)
    last = _dom(page + f"#page={pages}")
    # the last page holds the last questions, in the file's order
    assert [c["attrs"]["data-id"] for c in last.select("div", "qa-card")] == [r.id for r in records[5 * (pages - 1):]]
    assert f"page {pages} of {pages}" in last.select(id="qa-count")[0]["text"]

    scene_page = next((out / "scenes").glob("*/index.html"))
    d = _DOM(scene_page.read_text())  # a static page: no script shapes it
    strip = d.select("figure", "strip-frame")
    depth = d.select("figure", "depth-frame")
    assert [int(f["attrs"]["data-frame"]) for f in strip] == [0, 3, 6, 9]
    assert len(depth) == 4
    for e in d.select("img"):
        assert (scene_page.parent / e["attrs"]["src"]).is_file()
    text = " ".join(e["text"] for e in d.select("td"))
    assert "synth" in text and "metric" in text  # scale and its source
    # every link and image in the site is relative and resolves inside it
    for html in out.rglob("*.html"):
        body = html.read_text()
        assert "http://" not in body and "https://" not in body


def test_report_refuses_bad_input_and_foreign_folders(synth_qa, cli, tmp_path):
    _, scene, qa, _ = synth_qa
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    r = cli("report", scene, "--out", foreign)
    assert r.exit_code == 2 and "other files" in r.output
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    r = cli("report", str(tmp_path / "nope.zarr"), "--out", tmp_path / "x")
    assert r.exit_code == 1 and "nope.zarr" in r.output and not (tmp_path / "x").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    r = cli("report", scene, "--qa", bad, "--out", tmp_path / "y")
    assert r.exit_code == 1 and "bad.jsonl" in r.output and not (tmp_path / "y").exists()
    # a second run needs --overwrite and then replaces its own earlier report
    assert cli("report", scene, "--out", tmp_path / "z", "-q").exit_code == 0
    assert cli("report", scene, "--out", tmp_path / "z", "-q").exit_code == 2
    assert cli("report", scene, "--out", tmp_path / "z", "-q", "--overwrite").exit_code == 0


def test_report_of_a_store_without_tracks(make_scene, cli, tmp_path):
    url = make_scene("plain.zarr", n=3)
    assert cli("report", url, "--out", tmp_path / "site", "-q").exit_code == 0
    page = _DOM((tmp_path / "site" / "scenes" / "plain" / "index.html").read_text())
    assert "no tracks" in " ".join(e["text"] for e in page.select("td"))
    assert len(page.select("figure", "strip-frame")) == 3


def test_questions_without_object_metadata_degrade(synth_qa, tmp_path):
    """Records whose metadata names no objects (or ids the scene lacks) still show their frames, unhighlighted."""
    from spatialctl.qa_format import QARecord
    from spatialctl.stages.report.assets import SceneAssets
    from spatialctl.stages.report.qa import entry
    from spatialctl.visual import open_view

    _, scene, _, _ = synth_qa
    assets = SceneAssets(open_view(scene), "s3", "s3", tmp_path, 64)
    bare = QARecord(id="x", scene="s3", question="q?", answer="1", answer_type="text", family="f", type="t",
                    frames=[1, 2, 3, 4, 5, 6])
    e = entry(bare, assets, "scenes/s3/index.html", 4)
    assert e["objects_from"] == "none" and not e["objects"]
    assert [f["frame"] for f in e["frames"]] == [1, 3, 4, 6] and all(not f["marks"] for f in e["frames"])
    stray = QARecord(id="y", scene="s3", question="q?", answer="1", answer_type="text", family="f", type="t",
                     frames=[0], metadata={"object_ids": [999, 0], "key_frames": [0]})
    e = entry(stray, assets, "scenes/s3/index.html", 4)
    assert e["missing_ids"] == ["999"] and [o["id"] for o in e["objects"]] == ["0"]
    assert (tmp_path / e["frames"][0]["src"]).is_file()
