"""The examples run as users run them: the shell pipeline on one video, and the sbatch array script with SLURM's
variables set, followed by `spatialctl status`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from dust3r_tiny import save_tiny_dust3r
from track_models import build_grounding_dino, build_sam2_video

from spatialctl import store

EXAMPLES = Path(__file__).parents[1] / "examples"


def _run(args, env, **kw):
    return subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("example_models")
    return {
        "DUST3R_MODEL": str(save_tiny_dust3r(root).folder),
        "DETECTOR_MODEL": build_grounding_dino(root / "gdino"),
        "SAM2_MODEL": build_sam2_video(root / "sam2"),
    }


def test_pipeline_script(tmp_path, models):
    env = {**models, "SYNTH_ARGS": "--preset indoor --frames 4 --size 64x48 --objects 2 --moving 0",
           "EXTRA_RECONSTRUCT": "--niter 10 --device cpu",
           "EXTRA_TRACK": "--box-threshold 0.05 --text-threshold 0.05 --device cpu"}
    work = tmp_path / "work"
    result = _run(["bash", str(EXAMPLES / "pipeline.sh"), "", str(work)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    scene = store.open_scene(str(work / "scene.zarr"))
    assert scene.n_frames == 4 and scene.has("tracks")
    assert scene.provenance["stage"] == "reconstruct"
    assert (work / "qa.jsonl").exists()
    report = json.loads((work / "geometry" / "report.json").read_text())  # scored against the synth truth
    assert report["n_frames"] == 4 and report["gt_kind"] == "store"
    assert np.isfinite(report["trajectory"]["ate"]["rmse"]) and 0 <= report["depth"]["delta1"] <= 1
    assert "schema_version=2" in result.stdout  # `info` printed the store


def test_sbatch_array_over_a_manifest(tmp_path, models):
    videos = tmp_path / "videos"
    made = _run(["spatialctl", "synth", str(tmp_path / "syn"), "--seed", "0", "--count", "3", "--frames", "3",
                 "--size", "64x48", "--objects", "1", "--moving", "0", "--quiet"], {})
    assert made.returncode == 0, made.stderr
    videos.mkdir()
    names = []
    for i, folder in enumerate(sorted((tmp_path / "syn").iterdir())):
        shutil.copy(folder / "video.mp4", videos / f"clip{i}.mp4")
        names.append(f"clip{i}.mp4")
    (videos / "broken.mp4").write_bytes(b"\x00" * 512)
    manifest = tmp_path / "videos.txt"
    manifest.write_text("\n".join(f"videos/{n}" for n in [*names, "broken.mp4"]) + "\n")
    out = tmp_path / "scenes"

    env = {"DUST3R_MODEL": models["DUST3R_MODEL"], "EXTRA_RECONSTRUCT": "--niter 5 --device cpu",
           "SLURM_ARRAY_TASK_COUNT": "2"}
    produced = []
    for task in ("0", "1"):
        before = {p.name for p in out.glob("*.zarr")} if out.exists() else set()
        result = _run(["bash", str(EXAMPLES / "slurm_array.sbatch"), str(manifest), str(out)],
                      {**env, "SLURM_ARRAY_TASK_ID": task})
        # Task 1 holds broken.mp4 (items 1 and 3): it fails that item (exit 1) and still finishes the other.
        assert result.returncode == (1 if task == "1" else 0), result.stderr[-2000:]
        produced.append({p.name for p in out.glob("*.zarr")} - before)
    assert produced[0] == {"clip0.zarr", "clip2.zarr"} and produced[1] == {"clip1.zarr"}

    status = _run(["spatialctl", "status", str(manifest), "--stage", "reconstruct", "--out", str(out), "--json"], {})
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert (report["done"], report["failed"], report["pending"]) == (3, 1, 0)
    (failed_input, error), = report["failures"].items()
    assert failed_input.endswith("broken.mp4") and "broken.mp4" in error and "\n" not in error

    # A rerun of a finished task skips its items: the stores are not rewritten.
    written = {name: store.open_scene(str(out / name)).provenance["time"] for name in produced[0]}
    stamp = (out / "clip0.zarr" / "zarr.json").stat().st_mtime_ns
    again = _run(["bash", str(EXAMPLES / "slurm_array.sbatch"), str(manifest), str(out)],
                 {**env, "SLURM_ARRAY_TASK_ID": "0"})
    assert again.returncode == 0, again.stderr[-2000:]
    assert (out / "clip0.zarr" / "zarr.json").stat().st_mtime_ns == stamp
    assert {name: store.open_scene(str(out / name)).provenance["time"] for name in produced[0]} == written
