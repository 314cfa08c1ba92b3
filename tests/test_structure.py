"""The structure of issue 14: every command-line option reaches its config field, the whole config is validated
before any side effect, no top-level `stages` package is installed, make-qa survives a bad store."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import click
import pytest
import typer

from spatialctl import cli_gen, registry
from spatialctl.cli import app
from spatialctl.config import option_fields

# Text for options whose values have a syntax of their own, and the typed value it must become.
SPECIAL = {
    "width": ("64x48", {"width": 64, "height": 48}),
    "shard": ("1/2", None),
    "device": ("cpu", None),
    "scene_graph": ("swin-2", None),
    "grid": ("7x7", None),
    "resolution": ("416x240", None),
    "clip": ("5", 5),
    "intrinsics": ("500,501,32,24", (500.0, 501.0, 32.0, 24.0)),
    "gt_intrinsics": ("500,501,32,24", (500.0, 501.0, 32.0, 24.0)),
    "export": ("ply,colmap", ("ply", "colmap")),
    "families": ("dsr,static", ("dsr", "static")),
    "geometry": ("pointmap", ("pointmap",)),
    "progressive": ("indoor=0.9,0.7", ("indoor=0.9", "0.7")),
    "layers": ("0,-1", [0, -1]),
    "labels": ("Cup, car", ["cup", "car"]),
    "max_turns": ("5", 5),
    "stage": ("2", "2"),
    "rpe_delta": ("2", 2.0),
    "time_offset": ("start", None),
    "sam3_threshold": ("0.3", 0.3),
}
REQUIRED = {  # (command, option or positional argument) -> a value that validates
    "synth": {"out": "outdir"},
    "train-gsm": {"--qa": "qa.jsonl", "--out": "run"},
    "boost-encoder": {"--out": "boost", "--qa": "qa.jsonl"},
    "eval run": {"--qa": "qa.jsonl", "--out": "preds.jsonl"},
    "eval geometry": {"--gt": "gt.zarr"},
    "eval probe": {"--scenes": "scenes"},
}


def _sample(field: dataclasses.Field, hint, tmp_path: Path) -> tuple[list[str], dict]:
    """Command-line words setting ``field`` to a non-default value, and the config values they must give."""
    m, name = field.metadata, field.name
    flag = (m.get("flag") or "--" + name.replace("_", "-"))
    default = field.default if field.default is not dataclasses.MISSING else None
    if name in ("window", "overlap", "poses"):  # reconstruct's π³ options are accepted with a π³ backend only
        value = {"window": 63, "overlap": 7}.get(name)
        if name == "poses":
            import numpy as np

            value = str(tmp_path / "poses.npy")
            np.save(value, np.tile(np.eye(4), (3, 1, 1)))
        return ["--backend", "pi3x", flag, str(value)], {name: value, "backend": "pi3x"}
    # train-gsm options that configure another one, given with it
    if name in ("boost_layers", "boost_lr"):
        value = [0, -1] if name == "boost_layers" else 0.5
        return ["--boost", flag, "0,-1" if name == "boost_layers" else "0.5"], {name: value, "boost": True}
    if name == "views":
        return ["--no-gsm", flag, "2"], {"views": 2, "gsm": False}
    if name == "init_adapter":
        (tmp_path / "stage2").mkdir(exist_ok=True)
        (tmp_path / "stage2" / "adapter_config.json").write_text("{}")
        path = str(tmp_path / "stage2")
        return ["--full-finetune", flag, path], {name: path, "full_finetune": True}
    if name == "labels_file":
        path = tmp_path / "labels.txt"
        path.write_text("Bottle\nchair\n")
        return [flag, str(path)], {"labels": ["bottle", "chair"]}
    if name in SPECIAL:
        text, expected = SPECIAL[name]
        words = [text] if m.get("argument") else [flag, text]
        if expected is None:
            expected = text
        return words, expected if isinstance(expected, dict) else {name: expected}
    if "/" in flag:  # --plots/--no-plots, default on
        on, off = flag.split("/")
        return ([off], {name: False}) if default else ([on], {name: True})
    if m.get("invert"):
        return [flag], {name: False}
    if m.get("choices"):
        pick = next(c for c in m["choices"] if c != default and c is not None)
        return [flag, str(pick)], {name: (pick,) if typing.get_origin(hint) is tuple else pick}
    base = hint
    if typing.get_origin(hint) in (typing.Union, __import__("types").UnionType):
        base = next(a for a in typing.get_args(hint) if a is not type(None))
    if base is bool:
        return [flag], {name: True}
    if base is int:
        value = 3 if default is None else (default - 1 if default > 2 else default + 1)
    elif base is float:
        value = 2.5 if default is None else (default / 2 if default else 0.5)
    else:
        value = f"value-{name}"
    return [flag, str(value)], {name: value}


def _commands():
    for stage in registry.STAGES:
        yield pytest.param(stage, id=stage.name)


@pytest.mark.parametrize("stage", list(_commands()))
def test_every_option_reaches_its_config_field(stage, tmp_path, monkeypatch):
    """Each option of each (sub)command, given a non-default value on the command line, arrives in the config that
    the stage's run receives, validated; nothing else changes."""
    cls = stage.config_class()
    seen = []
    module = stage.load()
    monkeypatch.setattr(module, "run", lambda config, *args, **kw: seen.append((config, args)))
    monkeypatch.setattr(cli_gen, "_report_for", lambda stage: (lambda config, result: None))
    command = typer.main.get_command(app).get_command(click.Context(typer.main.get_command(app)),
                                                      stage.name.split()[0])
    if " " in stage.name:
        command = command.commands[stage.name.split()[1]]
    params = [p for p in command.params if p.name not in ("help",)]
    fields = {f.name: (sec, f, hint) for sec, f, hint in option_fields(cls)}  # sections (train-gsm's grpo) included
    base_words = [stage.name.split()] + [[k, v] if k.startswith("-") else [v]
                                         for k, v in REQUIRED.get(stage.name, {}).items()]
    base_argv = [w for ws in base_words for w in ws]
    inputs = [] if stage.inputs is None or stage.inputs.flag else ["in1.zarr"]
    assert params, stage.name
    checked = 0
    for param in params:
        if stage.inputs is not None and param.name == stage.inputs.name:
            continue
        assert param.name in fields, f"{stage.name} {param.opts}: no config field {param.name}"
        sec, field, hint = fields[param.name]
        words, expected = _sample(field, hint, tmp_path)
        if param.opts and param.opts[0] in REQUIRED.get(stage.name, {}):
            words, expected = [], {field.name: REQUIRED[stage.name][param.opts[0]]}
        seen.clear()
        result = typer.testing.CliRunner().invoke(app, base_argv + inputs + words)
        assert result.exit_code == 0, f"{stage.name} {words}: {result.output}"
        (config, args), = seen
        if inputs:
            got = args[0]
            assert got == (inputs if stage.inputs.many else inputs[0])
        holder = getattr(config, sec) if sec else config
        for name, value in expected.items():
            assert getattr(holder, name) == value, f"{stage.name} {words}: {name}={getattr(holder, name)!r}"
        checked += 1
    assert checked == len(fields)


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("argv", [
    ["train-gsm", "--qa", "{root}/qa.jsonl", "--out", "{root}/run", "--geometry", "bad", "--overwrite"],
    ["train-gsm", "--qa", "{root}/qa.jsonl", "--out", "{root}/run", "--resume", "--overwrite"],
    ["reconstruct", "{root}/video.mp4", "--out", "{root}/run/scene.zarr", "--scene-graph", "swin-x", "--overwrite"],
    ["synth", "{root}/run", "--preset", "moon", "--overwrite"],
    ["track", "{root}/run/scene.zarr", "--device", "nonsense", "--overwrite"],
    ["extract-gen-features", "{root}/run/scene.zarr", "--grid", "7y", "--overwrite"],
    ["eval", "run", "--qa", "{root}/qa.jsonl", "--out", "{root}/run/adapter_config.json", "--frames", "-1",
     "--overwrite"],
])
def test_invalid_value_with_overwrite_exits_2_and_deletes_nothing(argv, tmp_path, cli):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000001").mkdir(parents=True)
    (run / "checkpoints" / "step-000001" / "trainable.safetensors").write_bytes(b"weights")
    (run / "adapter_config.json").write_text("{}")
    (run / "scene.zarr").mkdir()
    (run / "scene.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (tmp_path / "qa.jsonl").write_text("")
    (tmp_path / "video.mp4").write_bytes(b"not a video")
    before = _tree(tmp_path)
    result = cli(*[a.format(root=tmp_path) for a in argv])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert _tree(tmp_path) == before


def test_no_top_level_stages_package(tmp_path):
    """Run from outside the repository with the installed package: `stages` is not importable, the stages live
    under `spatialctl.stages`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    bad = subprocess.run([sys.executable, "-c", "import stages"], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "No module named 'stages'" in bad.stderr
    good = subprocess.run([sys.executable, "-c", "import spatialctl.stages.synth"],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr


def test_library_never_imports_the_command_line():
    """Stages and core modules do not import typer or spatialctl.commands / cli (the CLI sits on top)."""
    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.joinpath("stages").rglob("*.py"), *root.joinpath("spatialctl").glob("*.py")]:
        if path.name in ("cli.py", "cli_gen.py", "options.py", "__main__.py"):
            continue
        text = path.read_text()
        if "import typer" in text or "spatialctl.commands" in text or "spatialctl.cli" in text \
                or "spatialctl.options" in text:
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_make_qa_bad_store_does_not_abort_the_others(tmp_path, cli):
    from spatialctl.stages.make_qa import error_record
    from spatialctl.stages.synth import SynthConfig
    from spatialctl.stages.synth import run as synth_run

    stores = []
    for seed in (21, 22):
        cfg = SynthConfig(seed=seed, preset="indoor", frames=12, width=48, height=32, moving=2, objects=6, quiet=True)
        assert synth_run(dataclasses.replace(cfg, out=str(tmp_path / f"s{seed}"))).exit_code == 0
        stores.append(str(tmp_path / f"s{seed}" / "scene.zarr"))
    bad = tmp_path / "broken" / "scene.zarr"
    bad.mkdir(parents=True)
    (bad / "zarr.json").write_text("{ not json")
    out = tmp_path / "qa.jsonl"
    result = cli("make-qa", stores[0], str(bad), stores[1], "--out", out, "--per-scene", "5", "--quiet")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["scenes"] == 2 and list(summary["failed"]) == [str(bad)]
    assert summary["records"] == len(out.read_text().splitlines()) > 0
    records = list(tmp_path.glob("qa.errors/*.error.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["input"] == str(bad)
    assert str(records[0]) == error_record(str(out), records[0].name.removesuffix(".error.json"))
    prov = json.loads((tmp_path / "qa.provenance.json").read_text())
    assert prov["stage"] == "make-qa" and sorted(prov["inputs"]) == sorted(stores)
    assert list(prov["failed"]) == [str(bad)]


def test_stale_output_is_redone_not_skipped(tmp_path):
    """Input changed, config unchanged: the item is redone (its output then matches a fresh run on the new input),
    never skipped as done. Through a real item stage (extract-gen-features on a video, tiny random Wan)."""
    import numpy as np

    from spatialctl import jobs
    from spatialctl.models.wan_random import RandomWanSpec, save_random_wan
    from spatialctl.stages import extract_gen_features as stage
    from spatialctl.video import write_video

    wan = str(save_random_wan(tmp_path / "wan", RandomWanSpec(num_layers=2)))
    config = stage.GenFeatConfig(model=wan, layer=1, grid="2x2", resolution="48x32", seed=5, quiet=True,
                                 prompt_cache=str(tmp_path / "ctx.safetensors"), out=str(tmp_path / "feats"))
    config.validate()
    video = str(tmp_path / "clip.mp4")
    rng = np.random.default_rng(0)
    write_video(video, rng.integers(0, 255, (3, 32, 48, 3), dtype=np.uint8), fps=10, lossless=True)
    url = stage.output_for(video, config.out)
    assert stage.run(config, video).done == [video]
    first = _features(url)
    assert stage.run(config, video).skipped == [video]  # unchanged: a cache hit

    write_video(video, rng.integers(0, 255, (3, 32, 48, 3), dtype=np.uint8), fps=10, lossless=True)  # new frames
    again = stage.run(config, video)
    assert again.done == [video] and not again.skipped and not again.failed
    assert jobs.item_state(url, config, video)[0] == "done"
    redone = _features(url)
    assert not np.array_equal(redone, first)
    fresh = stage.output_for(video, str(tmp_path / "fresh"))
    stage.run(dataclasses.replace(config, out=str(tmp_path / "fresh")), video)
    np.testing.assert_array_equal(redone, _features(fresh))


def _features(url: str):
    import zarr

    return zarr.open_group(url, mode="r")["features"][:]
