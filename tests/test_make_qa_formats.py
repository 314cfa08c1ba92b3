"""make-qa outputs: formats that load with HF datasets, splits by scene, determinism, dedup, letter balance,
stats, metric-only questions, rephrasing that must keep the answer, and the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.qa_format import QARecord, read_qa, to_qwen, to_sharegpt, write_qa


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    root = tmp_path_factory.mktemp("mqaf")
    out = []
    for seed, preset in ((11, "indoor"), (12, "tabletop"), (13, "indoor")):
        cfg = SynthConfig(seed=seed, preset=preset, frames=12, width=48, height=32, moving=2, objects=6, quiet=True)
        assert synth_run(dataclasses.replace(cfg, out=str(root / f"s{seed}"))).exit_code == 0
        out.append(str(root / f"s{seed}" / "scene.zarr"))
    return out


def _run(tmp_path, stores, **kw):
    from spatialctl.stages.make_qa import MakeQAConfig, run

    cfg = MakeQAConfig(out=str(tmp_path / "qa.jsonl"), per_scene=kw.pop("per_scene", 8), quiet=True, **kw)
    return run(cfg, stores).details


def test_formats_load_with_hf_datasets_and_read_back(tmp_path, stores):
    import datasets

    for fmt, key in (("sharegpt", "conversations"), ("qwen", "messages"), ("parquet", "conversations")):
        res = _run(tmp_path / fmt, stores, format=fmt)
        path = res["files"]["all"]
        assert path.endswith(".parquet" if fmt == "parquet" else ".jsonl")
        ds = datasets.load_dataset("parquet" if fmt == "parquet" else "json", data_files=path, split="train")
        assert len(ds) == res["records"] > 0 and key in ds.column_names
        row = ds[0]
        chat = json.loads(row[key]) if fmt == "parquet" else row[key]
        assert len(chat) >= 2
        records = read_qa(path)
        assert len(records) == len(ds)
        r = records[0]
        first = chat[0]["value"] if key == "conversations" else chat[0]["content"][-1]["text"]
        assert r.question in first
        assert {"family", "type", "scale", "frames", "timestamps", "scene", "answer_type", "unit",
                "generator_version", "scale_source"} <= set(ds.column_names)
        assert r.video and r.video.endswith("video.mp4")  # synth writes the video beside the store
        for rec in records:
            if rec.answer_type == "number":
                assert isinstance(rec.answer, float)


def test_record_conversions_and_multiturn_history():
    r = QARecord(id="x", scene="s", question="Q2?", answer=1.5, answer_type="number", family="multiturn",
                 type="hierarchical", unit="m", video="v.mp4",
                 history=[{"question": "Q1?", "answer": "yes", "answer_type": "text", "unit": None}])
    conv = to_sharegpt(r)["conversations"]
    assert [c["from"] for c in conv] == ["human", "gpt", "human", "gpt"]
    assert conv[0]["value"].startswith("<video>\nQ1?") and conv[3]["value"] == "1.5"
    msgs = to_qwen(r)["messages"]
    assert msgs[0]["content"][0] == {"type": "video", "video": "v.mp4"} and msgs[2]["content"][0]["text"].startswith("Q2?")
    with pytest.raises(ValueError):
        QARecord(id="x", scene="s", question="q", answer="E", answer_type="mc", family="f", type="t", options=["a", "b"])


def test_read_qa_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(SpatialctlError, match="line 1"):
        read_qa(bad)
    with pytest.raises(SpatialctlError, match="no such"):
        read_qa(tmp_path / "missing.jsonl")


def test_deterministic_dedup_balanced_and_split_by_scene(tmp_path, stores):
    a = _run(tmp_path / "a", stores, seed=3, split=0.34, stats=True, per_scene=20)
    b = _run(tmp_path / "b", stores, seed=3, split=0.34, per_scene=20)
    for split in ("train", "bench"):  # identical but for where the one-frame questions' images went
        assert (open(a["files"][split]).read().replace(str(tmp_path / "a"), "")
                == open(b["files"][split]).read().replace(str(tmp_path / "b"), ""))
    train, bench = read_qa(a["files"]["train"]), read_qa(a["files"]["bench"])
    assert train and bench and not ({r.scene for r in train} & {r.scene for r in bench})
    everything = train + bench
    assert len({r.id for r in everything}) == len(everything)
    assert len({(r.scene, r.type, r.question, json.dumps(r.history)) for r in everything}) == len(everything)
    for r in everything:  # distractors never equal the answer
        if r.answer_type == "mc":
            assert len(set(r.options)) == len(r.options)
    # letters balanced per type and option count over the whole output (both splits together): within one of each
    # other (options in a fixed order, e.g. yes/no, keep theirs)
    report = a["stats"]
    per_type: dict = {}
    for r in everything:
        if r.answer_type == "mc" and r.metadata.get("options_ordered") is not True:
            per_type.setdefault((r.family, r.type, len(r.options)), []).append(r.answer)
    assert per_type
    for key, letters in per_type.items():
        full = [letters.count(x) for x in "ABCD"[: key[2]]]
        assert max(full) - min(full) <= 1, (key, full)
    assert sum(sum(c.values()) for c in report["letter_balance"].values()) == sum(map(len, per_type.values()))
    assert set(report["per_type"]) == {f"{r.family}/{r.type}" for r in everything}
    assert json.load(open(a["stats_file"]))["total"] == len(everything)
    c = _run(tmp_path / "c", stores, seed=4, per_scene=20)
    assert open(c["files"]["all"]).read() != open(a["files"]["train"]).read()


def test_absolute_metric_questions_only_for_metric_scenes(tmp_path, stores):
    import shutil

    import zarr

    rel = tmp_path / "rel" / "scene.zarr"
    shutil.copytree(stores[0], rel)
    g = zarr.open_group(str(rel), mode="r+")
    g.attrs.update({"scale": "relative", "scale_source": "none"})
    res = _run(tmp_path, [str(rel)], per_scene=30)
    records = read_qa(res["files"]["all"])
    assert records
    assert not [r for r in records if r.family == "scale" or r.unit in ("m", "cm", "m²", "mm", "km")]
    for r in records:
        assert r.scale_source == "none"
        for t in r.turns():
            assert t["unit"] is None and t["answer_type"] != "number" or r.type == "object_counting"


def _tiny_lm(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = "the a of is what how many chair table in this room rewrite question words keeping every number name".split()
    vocab = {"[UNK]": 0, "[EOS]": 1, **{w: i + 2 for i, w in enumerate(words + [str(d) for d in range(10)] + list("?:.,()"))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[EOS]")
    fast.save_pretrained(path)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=16, n_layer=1, n_head=2)).save_pretrained(path)
    return str(path)


def test_rephrase_keeps_answer_or_original(tmp_path, stores):
    from spatialctl.stages.make_qa.rephrase import keeps_answer

    assert keeps_answer("How far is the chair, 2.5 m?", "What distance is the chair at, 2.5 m?", ["chair"])
    assert not keeps_answer("How far is the chair, 2.5 m?", "How far is the chair, 3.5 m?", ["chair"])
    assert not keeps_answer("Is it A or B?", "Is it A or C?", [])
    assert not keeps_answer("How many chair(s)?", "How many tables?", ["chair"])

    model = _tiny_lm(tmp_path / "lm")
    plain = read_qa(_run(tmp_path / "p", stores[:1], families=("static",), per_scene=2)["files"]["all"])
    res = _run(tmp_path / "r", stores[:1], families=("static",), per_scene=2, rephrase_model=model)
    records = read_qa(res["files"]["all"])
    by_id = {r.id: r for r in plain}
    assert len(records) == len(plain)
    for r in records:
        orig = by_id[r.id]
        assert (r.answer, r.options) == (orig.answer, orig.options) or r.answer_type == "mc"
        if "original_question" in r.metadata:
            assert keeps_answer(r.metadata["original_question"], r.question, [])
        else:
            assert r.question == orig.question
    assert res["rephrase_rejected"] + sum("original_question" in r.metadata for r in records) == len(records)
    with pytest.raises(SpatialctlError, match="huggingface-cli download"):
        _run(tmp_path / "m", stores[:1], families=("static",), rephrase_model=str(tmp_path / "no-such-model"))


def test_cli_make_qa(tmp_path, stores):
    from typer.testing import CliRunner

    from spatialctl.cli import app

    runner = CliRunner()
    out = tmp_path / "cli" / "qa.jsonl"
    res = runner.invoke(app, ["make-qa", *stores[:2], "--out", str(out), "--families", "static,scale",
                              "--per-scene", "5", "--format", "qwen", "--stats", "--quiet"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["records"] == len(read_qa(out)) > 0
    assert (tmp_path / "cli" / "qa.stats.json").is_file()
    assert {r.family for r in read_qa(out)} == {"static", "scale"}
    res = runner.invoke(app, ["make-qa", stores[0], "--families", "nope", "--out", str(out)])
    assert res.exit_code == 2
    res = runner.invoke(app, ["make-qa", str(tmp_path / "missing.zarr"), "--out", str(out)])
    assert res.exit_code == 1


def test_frames_export_references_images(tmp_path, stores):
    res = _run(tmp_path, stores[:1], families=("dsr", "multiturn"), per_scene=4, frames_dir=str(tmp_path / "fr"),
               max_images=5)
    records = read_qa(res["files"]["all"])
    assert records
    for r in records:
        assert r.images and len(r.images) <= 5 and all(p.endswith(".jpg") for p in r.images)
        assert to_sharegpt(r)["conversations"][0]["value"].startswith("<image>\n" * len(r.images))
        if r.family == "multiturn":
            assert r.images[0].endswith(f"{r.metadata['frame']:06d}.jpg")
    assert np.all([len(r.frames) == len(r.timestamps) for r in records])
    with pytest.raises(UsageError, match="--max-images 4"):  # fewer images than a question's key frames
        _run(tmp_path / "few", stores[:1], frames_dir=str(tmp_path / "fr4"), max_images=4)


def test_roundtrip_write_read(tmp_path):
    r = QARecord(id="x", scene="s", question="q", answer="B", answer_type="mc", family="static", type="t",
                 options=["a", "b"], metadata={"k": [1, 2]})
    for name in ("a.jsonl", "a.parquet"):
        write_qa(tmp_path / name, [r], "record")
        (back,) = read_qa(tmp_path / name)
        assert back == r
