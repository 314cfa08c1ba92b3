"""Hostile inputs and interrupted runs, through the real CLI: nothing lost, nothing silently wrong.

Every fault asserts the exit code, a single output line naming the path at fault, and that every file that existed
before the command is byte-identical afterwards (new files, such as a failure record beside a store, may appear).
Commands run with --quiet, so that one line is all a user sees. Faults that need a killed process or a full disk
run the CLI in a subprocess; the rest use Typer's runner in-process.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image
from typer.testing import CliRunner

from spatialctl import jobs, store
from spatialctl.cli import app

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- helpers


def tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (the folder itself may be a file)."""
    root = Path(root)
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def fault(root: Path, args: list, code: int, path, *, says: str | None = None, within: float | None = None,
          clean: bool = True) -> str:
    """Run the CLI; assert exit ``code``, one output line naming ``path`` (and ``says``), files under ``root``
    untouched, and (with ``within``) that it took at most that many seconds. Returns the line."""
    before = tree(root)
    t0 = time.perf_counter()
    res = invoke(*args)
    elapsed = time.perf_counter() - t0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == code, res.output
    assert len(lines) == 1, res.output
    assert str(path) in lines[0], lines[0]
    if says is not None:
        assert says in lines[0], lines[0]
    after = tree(root)
    changed = [f for f, h in before.items() if after.get(f) != h]
    assert not changed, changed
    if within is not None:
        assert elapsed < within, f"{elapsed:.2f} s"
    if clean:  # nothing half-written or locked is left behind (a killed earlier run may have left some)
        assert not list(Path(root).rglob("*.partial-*")) and not list(Path(root).rglob("*.lock"))
    return lines[0]


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    """A tiny DUSt3R, a synthetic 10-frame video with its ground-truth store, and one reconstructed store."""
    from dust3r_tiny import save_tiny_dust3r

    root = tmp_path_factory.mktemp("faults")
    ckpt = save_tiny_dust3r(root / "model")
    res = invoke("synth", root / "syn", "--frames", 10, "--size", "64x48", "--preset", "indoor", "--moving", 0,
                 "--quiet")
    assert res.exit_code == 0, res.output
    kit = {"root": root, "model": ckpt.pth, "video": root / "syn" / "video.mp4", "truth": root / "syn" / "scene.zarr"}
    kit["fast"] = ["--model", ckpt.pth, "--niter", 3, "--max-frames", 4, "--quiet"]
    res = invoke("reconstruct", kit["video"], "--out", root / "good.zarr", *kit["fast"])
    assert res.exit_code == 0, res.output
    kit["good"] = root / "good.zarr"
    return kit


@pytest.fixture
def good(kit, tmp_path) -> Path:
    """A private copy of a complete reconstructed store."""
    dst = tmp_path / "scene.zarr"
    shutil.copytree(kit["good"], dst)
    return dst


def reconstruct(kit, *inputs_and_options) -> list:
    return ["reconstruct", *inputs_and_options, *kit["fast"]]


def set_header(url: Path, **fields) -> None:
    g = zarr.open_group(str(url), mode="r+")
    g.attrs["spatialctl"] = {**g.attrs["spatialctl"], **fields}


def rewrite_consistently(url: Path, name: str, index, value) -> None:
    """Change an array and re-mark the store complete with a fresh manifest: a store that proves itself whole
    but holds bad numbers (as a buggy writer would leave it)."""
    g = zarr.open_group(str(url), mode="r+")
    g[name][index] = value
    fs, path = store._fs(str(url))
    store._mark_complete(str(url), store._manifest(fs, path, set(g.array_keys())))


def faststart(src: Path, dst: Path) -> None:
    """Remux with the index (moov) first, as streaming sites serve mp4s: a cut copy then still opens."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", options={"movflags": "faststart"}) as o:
        s = i.streams.video[0]
        out = o.add_stream_from_template(s)
        for p in i.demux(s):
            if p.dts is not None:
                p.stream = out
                o.mux(p)


def cut(src: Path, dst: Path, fraction: float = 0.5) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


def colour_frames(folder: Path, n: int = 3, size=(64, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"frame-{i}.color.png")


def cli_subprocess(args: list, prelude: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter, after ``prelude`` (which may patch the process, e.g. to kill itself)."""
    code = prelude + "\nimport sys\nfrom spatialctl.cli import main\nsys.argv = ['spatialctl'] + sys.argv[1:]\nmain()\n"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code, *[str(a) for a in args]], capture_output=True, text=True,
                          env=full_env, timeout=300)


@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs (root only); yields a function (folder, options) -> bool; unmounts afterwards."""
    mounted = []

    def do(folder: Path, options: str) -> bool:
        folder.mkdir(parents=True, exist_ok=True)
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True).returncode == 0
        if ok:
            mounted.append(folder)
        return ok

    yield do
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# ---------------------------------------------------------------------------------------------------- 1. outputs


def test_out_is_a_user_folder(kit, tmp_path):
    out = tmp_path / "X.zarr"
    out.mkdir()
    (out / "thesis.tex").write_text("\\chapter{One}")
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", out), 2, out, says="refusing to replace")


def test_out_is_a_user_folder_even_with_overwrite(kit, tmp_path):
    out = tmp_path / "X.zarr"
    out.mkdir()
    (out / "thesis.tex").write_text("\\chapter{One}")
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", out, "--overwrite"), 2, out, says="refusing to replace")


def test_out_store_holds_a_user_file(kit, good, tmp_path):
    (good / "notes.txt").write_text("calibration was off on day 2")
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", good, "--overwrite"), 2, good, says="notes.txt")


def test_out_is_a_plain_file(kit, tmp_path):
    out = tmp_path / "X.zarr"
    out.write_text("my notes")
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", out, "--overwrite"), 2, out, says="is a file")


def test_out_folder_is_a_file(kit, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("my notes")
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", out), 2, out, says="not a folder")


def test_out_is_a_foreign_zarr_store(kit, tmp_path):
    out = tmp_path / "X.zarr"
    zarr.open_group(str(out), mode="w").create_array("data", data=np.arange(4))
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", out, "--overwrite"), 2, out, says="did not write")


def test_out_is_another_kind_of_spatialctl_store(kit, tmp_path):
    out = tmp_path / "X.zarr"
    store.write_node(str(out), "genfeat", {"features": np.zeros((2, 1, 1, 4), np.float16)}, {}, {"stage": "t"})
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", out, "--overwrite"), 2, out, says="genfeat")


def test_out_folder_read_only(kit, tmp_path, mount):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:
        assert mount(ro, "ro,size=64k"), "root could not mount a read-only tmpfs"
    else:  # permissions bind a non-root user
        ro.mkdir()
        ro.chmod(0o555)
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", ro / "X.zarr"), 2, ro, says="not writable")


def test_export_folder_holds_user_files(kit, tmp_path):
    exports = tmp_path / "X_export"
    exports.mkdir()
    (exports / "figure.pdf").write_bytes(b"%PDF")
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", tmp_path / "X.zarr", "--export", "ply"), 2, exports,
          says="figure.pdf")
    assert not (tmp_path / "X.zarr").exists()


@pytest.mark.parametrize("name, content", [("qa.jsonl", b"my labels\n"), ("qa.parquet", b"PAR1 not really")])
def test_make_qa_out_is_a_user_file(kit, tmp_path, name, content):
    out = tmp_path / name
    out.write_bytes(content)
    args = ["make-qa", kit["truth"], "--out", out, "--quiet"] + (["--format", "parquet"] if name.endswith("parquet") else [])
    fault(tmp_path, args, 2, out, says="not a QA file")


def test_eval_run_overwrite_keeps_a_users_file(tmp_path):
    out = tmp_path / "preds.jsonl"
    out.write_text('{"my": "notes"}\n')
    fault(tmp_path, ["eval", "run", "--qa", tmp_path / "qa.jsonl", "--out", out, "--overwrite", "--quiet"], 2, out,
          says="eval run did not write it")


def test_eval_reports_keep_a_users_files(kit, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "report.md").write_text("my draft")
    fault(tmp_path, ["eval", "geometry", kit["good"], "--gt", kit["truth"], "--out", out, "--no-plots"], 2,
          out / "report.md", says="did not write it")
    fault(tmp_path, ["eval", "qa", tmp_path / "preds.jsonl", "--out", out, "--quiet"], 2, out / "report.md")


def test_train_gsm_overwrite_keeps_a_users_adapter(tmp_path):
    out = tmp_path / "adapter"
    out.mkdir()
    (out / "adapter_config.json").write_text('{"r": 8}')
    (out / "adapter_model.safetensors").write_bytes(b"weights I trained elsewhere")
    fault(tmp_path, ["train-gsm", "--qa", tmp_path / "qa.jsonl", "--out", out, "--overwrite", "--quiet"], 2,
          out / "adapter_config.json", says="train-gsm did not write it")


def test_boost_encoder_keeps_a_users_projector(tmp_path):
    out = tmp_path / "boost"
    out.mkdir()
    (out / "projector.safetensors").write_bytes(b"a projector I trained elsewhere")
    fault(tmp_path, ["boost-encoder", "--qa", tmp_path / "qa.jsonl", "--out", out, "--quiet"], 2,
          out / "projector.safetensors", says="boost-encoder did not write it")


def test_view_overwrite_keeps_a_users_file(kit, tmp_path):
    out = tmp_path / "mine.rrd"
    out.write_bytes(b"RRF2 a recording some other tool wrote")
    fault(tmp_path, ["view", kit["good"], "--out", out, "--overwrite", "--quiet"], 2, out,
          says="not a recording spatialctl view wrote")
    ours = tmp_path / "ours.rrd"  # ours is replaced on --overwrite
    assert invoke("view", kit["good"], "--out", ours, "--quiet").exit_code == 0
    res = invoke("view", kit["good"], "--out", ours, "--overwrite", "--quiet")
    assert res.exit_code == 0, res.output


def test_report_keeps_a_users_folder(kit, tmp_path):
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("<p>my page</p>")
    fault(tmp_path, ["report", kit["good"], "--out", out, "--overwrite", "--quiet"], 2, out)


def test_synth_over_a_users_video(tmp_path):
    out = tmp_path / "holiday"
    out.mkdir()
    (out / "video.mp4").write_bytes(b"my holiday video")
    fault(tmp_path, ["synth", out, "--frames", 3, "--size", "32x24", "--quiet"], 2, out / "video.mp4",
          says="synth did not write it")


def test_synth_over_a_users_folder_named_scene_zarr(tmp_path):
    out = tmp_path / "run"
    (out / "scene.zarr").mkdir(parents=True)
    (out / "scene.zarr" / "notes.md").write_text("mine")
    fault(tmp_path, ["synth", out, "--frames", 3, "--size", "32x24", "--quiet"], 2, out / "scene.zarr")


def test_two_inputs_one_store(kit, tmp_path):
    out = tmp_path / "X.zarr"
    fault(tmp_path, reconstruct(kit, kit["video"], kit["video"], "--out", out), 2, out)


def test_empty_manifest(kit, tmp_path):
    manifest = tmp_path / "videos.txt"
    manifest.write_text("# nothing yet\n")
    fault(tmp_path, reconstruct(kit, manifest, "--out", tmp_path / "out"), 2, manifest, says="no inputs")


def test_track_given_a_video(kit, tmp_path):
    video = tmp_path / "clip.mp4"
    shutil.copy(kit["video"], video)
    fault(tmp_path, ["track", video, "--quiet"], 2, video, says="not a spatialctl scene store")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_track_given_a_user_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("x")
    fault(tmp_path, ["track", folder, "--quiet"], 2, folder, says="not a spatialctl scene store")


def test_second_writer_is_refused_and_named(kit, tmp_path):
    out = tmp_path / "X.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom spatialctl import lock\nwith lock.hold(sys.argv[1]):\n"
         "    print('held', flush=True)\n    time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(tmp_path)
        res = invoke(*reconstruct(kit, kit["video"], "--out", out))
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 1 and len(lines) == 1, res.output
        assert str(out) in lines[0] and f"pid {holder.pid}" in lines[0], lines[0]
        assert tree(tmp_path) == before and not out.exists()
    finally:
        holder.kill()  # kill -9: the kernel drops its lock, and the next writer goes ahead
        holder.wait()
    res = invoke(*reconstruct(kit, kit["video"], "--out", out))
    assert res.exit_code == 0, res.output
    store.verify(str(out))
    assert not list(tmp_path.glob("*.lock"))


def test_config_conflict_is_not_replaced(kit, good, tmp_path):
    fault(tmp_path, reconstruct(kit, kit["video"], "--out", good, "--lr", 0.02), 1, good, says="different config")


# ---------------------------------------------------------------------------------------------------- interruptions

KILL_AFTER_SETTING_ASIDE = """
import os, signal
from fsspec.implementations.local import LocalFileSystem
_mv = LocalFileSystem.mv
def mv(self, path1, path2, *a, **k):
    _mv(self, path1, path2, *a, **k)
    if '.replaced-' in str(path2):  # the old store is aside, the new one not yet in place
        os.kill(os.getpid(), signal.SIGKILL)
LocalFileSystem.mv = mv
"""

KILL_BEFORE_MOVING_IN = """
import os, signal
from fsspec.implementations.local import LocalFileSystem
_mv = LocalFileSystem.mv
def mv(self, path1, path2, *a, **k):
    if '.partial-' in str(path1):
        os.kill(os.getpid(), signal.SIGKILL)
    _mv(self, path1, path2, *a, **k)
LocalFileSystem.mv = mv
"""


def test_kill_9_during_the_final_move_of_a_replacement(kit, good, tmp_path):
    before = {Path(f).relative_to(good): h for f, h in tree(good).items()}
    proc = cli_subprocess(reconstruct(kit, kit["video"], "--out", good, "--overwrite"), KILL_AFTER_SETTING_ASIDE)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    aside = list(tmp_path.glob("scene.zarr.replaced-*"))
    assert not good.exists() and len(aside) == 1
    kept = {Path(f).relative_to(aside[0]): h for f, h in tree(aside[0]).items()}
    assert kept == before  # the old store is whole, byte for byte, under the aside name
    line = fault(tmp_path, ["info", good, "--verify"], 1, good, says=str(aside[0]), clean=False)
    assert "interrupted" in line
    res = invoke(*reconstruct(kit, kit["video"], "--out", good))  # the next run puts the old store back first
    assert res.exit_code == 0 and "restored" in res.output, res.output
    assert {Path(f).relative_to(good): h for f, h in tree(good).items()} == before  # and, being done, keeps it
    res = invoke(*reconstruct(kit, kit["video"], "--out", good, "--overwrite"))
    assert res.exit_code == 0, res.output
    store.verify(str(good))
    assert not list(tmp_path.glob("scene.zarr.*"))


def test_kill_9_during_the_final_move_of_a_new_store(kit, tmp_path):
    out = tmp_path / "X.zarr"
    proc = cli_subprocess(reconstruct(kit, kit["video"], "--out", out), KILL_BEFORE_MOVING_IN)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists() and len(list(tmp_path.glob("X.zarr.partial-*"))) == 1
    fault(tmp_path, ["info", out, "--verify"], 1, out, says="no such scene store", clean=False)
    res = invoke(*reconstruct(kit, kit["video"], "--out", out))
    assert res.exit_code == 0, res.output
    store.verify(str(out))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["X.zarr"]


ENOSPC_PRELUDE = """
import errno, zarr.storage
_set = zarr.storage.LocalStore.set
async def set(self, key, value):
    raise OSError(errno.ENOSPC, "No space left on device", str(self.root / key))
zarr.storage.LocalStore.set = set
"""


def test_disk_full(kit, tmp_path, mount):
    """A 32 KiB tmpfs holds the lock and the record but not the store (root); otherwise ENOSPC is raised by a
    patched store in a subprocess, which checks the same handling without a real full disk."""
    full = tmp_path / "full"
    out = full / "X.zarr"
    if mount(full, "size=32k"):
        fault(tmp_path, reconstruct(kit, kit["video"], "--out", out), 1, out, says="No space left")
    else:
        proc = cli_subprocess(reconstruct(kit, kit["video"], "--out", out), ENOSPC_PRELUDE)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and str(out) in lines[0] and "No space" in lines[0], proc.stderr
    assert not out.exists() and not list(full.glob("*.partial-*"))


# ---------------------------------------------------------------------------------------------------- 2. integrity


def first_chunk(url: Path, name: str) -> Path:
    return sorted((url / name / "c").rglob("*"), key=lambda p: (not p.is_file(), str(p)))[0]


def test_missing_chunk_verify(good, tmp_path):
    first_chunk(good, "depth").unlink()
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="array 'depth' is missing")


def test_missing_chunk_plain_info(good, tmp_path):
    first_chunk(good, "depth").unlink()
    before = tree(tmp_path)
    res = invoke("info", good)
    assert res.exit_code == 1 and "DAMAGED" in res.output and "error: " in res.output, res.output
    error = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and str(good) in error[0] and "array 'depth'" in error[0]
    assert tree(tmp_path) == before


def test_missing_chunk_refused_by_make_qa(kit, tmp_path):
    scene = tmp_path / "scene.zarr"
    shutil.copytree(kit["truth"], scene)
    first_chunk(scene, "cam2world").unlink()
    fault(tmp_path, ["make-qa", scene, "--out", tmp_path / "qa.jsonl", "--quiet"], 1, scene,
          says="array 'cam2world' is missing")
    assert not (tmp_path / "qa.jsonl").exists()


def test_missing_chunk_refused_by_eval_geometry(kit, good, tmp_path):
    first_chunk(good, "depth").unlink()
    fault(tmp_path, ["eval", "geometry", good, "--gt", kit["truth"], "--out", tmp_path / "rep"], 1,
          good, says="array 'depth'")


def test_damaged_store_is_redone_by_a_rerun(kit, good, tmp_path):
    first_chunk(good, "depth").unlink()
    res = invoke("status", kit["video"], "--stage", "reconstruct", "--out", good)
    assert res.exit_code == 0 and "pending 1" in res.output, res.output
    res = invoke(*reconstruct(kit, kit["video"], "--out", good))  # the messages say "rerun": a rerun repairs it
    assert res.exit_code == 0, res.output
    store.verify(str(good))


def test_truncated_chunk(good, tmp_path):
    chunk = first_chunk(good, "pointmaps")
    chunk.write_bytes(chunk.read_bytes()[:50])
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="array 'pointmaps'")


def test_corrupt_chunk_same_size(good, tmp_path):
    chunk = first_chunk(good, "conf")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="checksum")


def test_unlisted_chunk(good, tmp_path):
    chunk = first_chunk(good, "depth")
    shutil.copy(chunk, chunk.parent / "7")
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="does not list")


def test_nan_in_a_store(good, tmp_path):
    rewrite_consistently(good, "depth", (0, 0, 0), np.nan)
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="NaN")


def test_inf_in_a_store(good, tmp_path):
    rewrite_consistently(good, "cam2world", (1, 0, 3), np.inf)
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="NaN or infinite")


def test_newer_schema_version(good, tmp_path):
    set_header(good, schema_version=99)
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="newer")


def test_older_schema_version(good, tmp_path):
    set_header(good, schema_version=1)
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="older")


def test_incomplete_store(good, tmp_path):
    set_header(good, complete=False)
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="incomplete")


def test_complete_without_manifest(good, tmp_path):
    g = zarr.open_group(str(good), mode="r+")
    g.attrs["spatialctl"] = {k: v for k, v in g.attrs["spatialctl"].items() if k != "files"}
    fault(tmp_path, ["info", good, "--verify"], 1, good, says="no file manifest")


def test_damaged_group_record_lands_beside_the_store(kit, tmp_path):
    """make-qa reads the tracks group; a lost chunk there is named; and a failure record of an in-place stage
    never lands inside a store, even one not named .zarr."""
    scene = tmp_path / "myscene"
    shutil.copytree(kit["truth"], scene)
    first_chunk(scene / "tracks", "visible").unlink()
    fault(tmp_path, ["make-qa", scene, "--out", tmp_path / "qa.jsonl", "--quiet"], 1, scene / "tracks",
          says="array 'visible'")
    assert jobs.failure_record(str(scene / "tracks")) == f"{scene}.tracks.error.json"


# ---------------------------------------------------------------------------------------------------- 3. inputs


def test_truncated_faststart_mp4(kit, tmp_path):
    whole, video = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    faststart(kit["video"], whole)
    cut(whole, video)
    out = tmp_path / "X.zarr"
    fault(tmp_path, reconstruct(kit, video, "--out", out), 1, video, says="truncated")
    assert not out.exists()


def test_truncated_faststart_mp4_allowed_is_flagged(kit, tmp_path):
    whole, video = tmp_path / "whole.mp4", tmp_path / "cut.mp4"
    faststart(kit["video"], whole)
    cut(whole, video, 0.7)
    out = tmp_path / "X.zarr"
    res = invoke(*reconstruct(kit, video, "--out", out, "--allow-truncated"))
    assert res.exit_code == 0 and "truncated" in res.output, res.output  # the warning shows under --quiet
    source = store.open_scene(str(out)).provenance["source"]
    assert source["truncated"] is True and source["frames_declared"] == 10 and source["frames_total"] < 10


def test_truncated_mp4_without_index(kit, tmp_path):
    video = tmp_path / "cut.mp4"
    cut(kit["video"], video)  # the moov atom was at the end: gone
    fault(tmp_path, reconstruct(kit, video, "--out", tmp_path / "X.zarr"), 1, video, says="cannot decode")


def test_not_a_video(kit, tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00not a video" * 64)
    fault(tmp_path, reconstruct(kit, video, "--out", tmp_path / "X.zarr"), 1, video)


def test_missing_input(kit, tmp_path):
    video = tmp_path / "absent.mp4"
    fault(tmp_path, reconstruct(kit, video, "--out", tmp_path / "X.zarr"), 1, video, says="no such")


def test_folder_of_depth_maps_only(kit, tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((48, 64), 1000 + i, np.uint16)).save(folder / f"frame-{i}.png")
    fault(tmp_path, reconstruct(kit, folder, "--out", tmp_path / "X.zarr", "--fps", 30), 1, folder,
          says="no colour images")


def test_folder_mixed_sizes(kit, tmp_path):
    folder = tmp_path / "seq"
    colour_frames(folder, 3)
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(folder / "frame-3.color.png")
    fault(tmp_path, reconstruct(kit, folder, "--out", tmp_path / "X.zarr", "--fps", 30, "--max-frames", 0), 1,
          folder / "frame-3.color.png", says="64x40")


def test_folder_pattern_matches_nothing(kit, tmp_path):
    folder = tmp_path / "seq"
    colour_frames(folder, 3)
    fault(tmp_path, reconstruct(kit, folder, "--out", tmp_path / "X.zarr", "--fps", 30, "--pattern", "*.jpg"), 1,
          folder, says="--pattern")


def test_folder_pattern_picks_depth(kit, tmp_path):
    folder = tmp_path / "seq"
    colour_frames(folder, 3)
    for i in range(3):
        Image.fromarray(np.full((48, 64), 1000 + i, np.uint16)).save(folder / f"frame-{i}.depth.png")
    fault(tmp_path, reconstruct(kit, folder, "--out", tmp_path / "X.zarr", "--fps", 30, "--pattern", "*.depth.png"),
          1, folder / "frame-0.depth.png", says="not a colour image")


def test_seven_scenes_folder_uses_colour_frames_and_their_numbers(kit, tmp_path):
    folder = tmp_path / "seq-01"
    colour_frames(folder, 3)
    for i in range(3):
        Image.fromarray(np.full((48, 64), 1000 + i, np.uint16)).save(folder / f"frame-{i}.depth.png")
    out = tmp_path / "X.zarr"
    res = invoke(*reconstruct(kit, folder, "--out", out, "--fps", 30))
    assert res.exit_code == 0, res.output
    scene = store.open_scene(str(out))
    assert scene.n_frames == 3  # 3 colour frames, not 6
    np.testing.assert_allclose(scene.read("timestamps"), np.arange(3) / 30)


# ---------------------------------------------------------------------------------------------------- 4. models


def test_tum_folder_names_are_the_timestamps_and_eval_matches_evo(kit, tmp_path):
    """rgb/1305031102.175304.png: the name is the time in seconds (not frame 175304), so `eval geometry` pairs
    the store with TUM's groundtruth.txt (same absolute clock) without options, as evo_ape does."""
    import json

    from evo.core import metrics, sync
    from evo.core.trajectory import PoseTrajectory3D
    from evo.tools import file_interface

    rgb = tmp_path / "rgb"
    rgb.mkdir()
    rng = np.random.default_rng(3)
    # Unequal fractions, one with fewer digits: a natural sort would put .9 after .175304
    names = ["1305031102.175304", "1305031102.211214", "1305031102.243211", "1305031102.9", "1305031103.011762"]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(rgb / f"{name}.png")
    out = tmp_path / "est.zarr"
    res = invoke("reconstruct", rgb, "--out", out, "--model", kit["model"], "--niter", 3, "--quiet")
    assert res.exit_code == 0, res.output
    stamps = store.open_scene(str(out)).read("timestamps")
    np.testing.assert_array_equal(stamps, [float(n) for n in names])
    # --fps would be a second clock for the same frames: the item is refused (exit 1), naming the folder
    fault(tmp_path, ["reconstruct", rgb, "--out", tmp_path / "Y.zarr", "--fps", 30, "--model", kit["model"],
                     "--quiet"], 1, rgb, says="timestamps in seconds")
    # Truth at 100 Hz on the same absolute clock, starting before the first frame
    gt_t = 1305031102.0 + np.arange(150) * 0.01
    gt = np.tile(np.eye(4), (150, 1, 1))
    gt[:, :3, 3] = np.cumsum(rng.normal(0, 0.02, (150, 3)), axis=0)
    file_interface.write_tum_trajectory_file(str(tmp_path / "groundtruth.txt"),
                                             PoseTrajectory3D(poses_se3=list(gt), timestamps=gt_t))
    res = invoke("eval", "geometry", out, "--gt", tmp_path / "groundtruth.txt", "--out", tmp_path / "r", "--no-plots")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    ref = file_interface.read_tum_trajectory_file(str(tmp_path / "groundtruth.txt"))
    est = PoseTrajectory3D(poses_se3=list(store.open_scene(str(out)).read("cam2world")), timestamps=stamps)
    ref, est = sync.associate_trajectories(ref, est)  # evo_ape's defaults: max_diff 0.01 s, no offset
    est.align(ref, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref, est))
    assert rep["n_frames"] == est.num_poses == len(names) and rep["time_offset"] == 0.0
    assert rep["trajectory"]["ate"]["rmse"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.rmse), rel=1e-5)


@pytest.mark.parametrize("args, option", [
    (["reconstruct", "{video}", "--out", "{tmp}/X.zarr", "--model", "nobody/no-dust3r"], "--model"),
    (["reconstruct", "{video}", "--out", "{tmp}/X.zarr", "--model", "{model}", "--metric-scale", "depthpro",
      "--depthpro-model", "nobody/no-depthpro"], "--depthpro-model"),
    (["track", "{scene}", "--detector-model", "nobody/no-detector"], "--detector-model"),
    (["track", "{scene}", "--detector-model", "{tmp}", "--sam2-model", "nobody/no-sam2"], "--sam2-model"),
    (["track", "{scene}", "--backend", "sam3", "--sam3-model", "nobody/no-sam3"], "--sam3-model"),
    (["track", "{scene}", "--backend", "sam3", "--sam3-model", "{tmp}", "--labels", "auto", "--tagger-model",
      "nobody/no-clip"], "--tagger-model"),
    (["extract-gen-features", "{scene}", "--model", "nobody/no-wan"], "--model"),
], ids=["dust3r", "depthpro", "detector", "sam2", "sam3", "tagger", "wan"])
def test_missing_model_fails_fast_naming_the_option(kit, tmp_path, args, option):
    scene = tmp_path / "scene.zarr"
    shutil.copytree(kit["truth"], scene)
    (tmp_path / "config.json").write_text("{}")  # {tmp} as a stand-in detector folder, so SAM 2 is checked next
    names = {"video": kit["video"], "tmp": tmp_path, "model": kit["model"], "scene": scene}
    args = [a.format(**names) for a in args] + ["--quiet"]
    missing = next(a for a in args if a.startswith("nobody/"))
    line = fault(tmp_path, args, 2, missing, says=option, within=2.0)
    assert f"huggingface-cli download {missing}" in line


# A fresh process, as a user's shell runs it: the one line must come before torch's seconds of import. CPU time of
# the child (user + sys), not wall time, so that other jobs on a loaded machine do not decide the test; and torch
# must not have been imported at all (importing it alone costs ~2 s of CPU here).
_FRESH = ("import atexit, os, sys; atexit.register(lambda: open(os.environ['TORCH_FLAG'], 'w').write("
          "str('torch' in sys.modules))); sys.argv = ['spatialctl'] + sys.argv[1:]; "
          "from spatialctl.cli import main; main()")


@pytest.mark.parametrize("args", [
    ["reconstruct", "{video}", "--model", "/nonexistent"],
    ["reconstruct", "{video}", "--model", "nobody/no-dust3r"],
    ["reconstruct", "{video}", "--backend", "pi3", "--model", "nobody/no-pi3"],
    ["track", "{scene}", "--detector-model", "nobody/no-detector"],
    ["track", "{scene}", "--backend", "sam3", "--sam3-model", "/nonexistent"],
    ["extract-gen-features", "{scene}", "--model", "/nonexistent"],
    ["extract-gen-features", "{scene}", "--model", "nobody/no-wan"],
], ids=["dust3r-path", "dust3r-hub", "pi3-hub", "detector-hub", "sam3-path", "wan-path", "wan-hub"])
def test_missing_model_from_a_fresh_process_under_2s_cpu(kit, tmp_path, args):
    import resource

    scene = tmp_path / "scene.zarr"
    shutil.copytree(kit["truth"], scene)
    args = [a.format(video=kit["video"], scene=scene) for a in args] + ["--quiet"]
    missing = next(a for a in args if a.startswith(("nobody/", "/nonexistent")))
    flag = tmp_path.parent / f"{tmp_path.name}.torch"
    before_tree = tree(tmp_path)
    env = {**os.environ, "TORCH_FLAG": str(flag), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-c", _FRESH, *map(str, args)], capture_output=True, text=True, env=env)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(lines) == 1 and missing in lines[0], lines
    assert flag.read_text() == "False", "torch was imported before the missing model was reported"
    assert cpu < 2.0, f"{cpu:.2f} s CPU"
    assert tree(tmp_path) == before_tree


# ---------------------------------------------------------------------------------------------------- 5, 6. runs


def test_plan_line_and_bounded_default(kit, tmp_path):
    """The default samples at most 64 frames spread over the video and says so, with the graph and memory."""
    out = tmp_path / "X.zarr"
    res = invoke("reconstruct", kit["video"], "--out", out, "--model", kit["model"], "--niter", 2,
                 "--max-frames", 5)
    assert res.exit_code == 0, res.output
    plan = next(line for line in res.output.splitlines() if "plan:" in line)
    assert "5 of 10 frames" in plan and "complete: 20 pairs" in plan and "GiB" in plan
    np.testing.assert_allclose(store.open_scene(str(out)).read("timestamps"),
                               store.open_scene(str(kit["truth"])).read("timestamps")[[0, 2, 4, 7, 9]], atol=1e-6)


def test_changed_input_is_redone_and_source_recorded(kit, tmp_path):
    from spatialctl.stages.make_qa.scene import source_video

    video = tmp_path / "clip.mp4"
    shutil.copy(kit["video"], video)
    out = tmp_path / "stores" / "clip.zarr"
    assert invoke(*reconstruct(kit, video, "--out", out)).exit_code == 0
    assert source_video(str(out), store.open_scene(str(out)).provenance) == str(video.resolve())
    first = store.open_scene(str(out)).provenance["source"]["fingerprint"]
    faststart(kit["video"], tmp_path / "other.mp4")  # same frames, other bytes: a changed input
    os.replace(tmp_path / "other.mp4", video)
    res = invoke(*reconstruct(kit, video, "--out", out))
    assert res.exit_code == 0, res.output
    now = store.open_scene(str(out)).provenance
    assert now["source"]["fingerprint"] == jobs.fingerprint(str(video)) != first
    assert now["inputs"][str(video)] == jobs.fingerprint(str(video))


def test_errno_names_path_in_one_line():
    e = OSError(errno.ENOSPC, "No space left on device", "/data/x.zarr.partial-1/depth/c/0")
    assert jobs._os_message(e, "/data/x.zarr") == "/data/x.zarr.partial-1/depth/c/0: No space left on device"
    assert jobs._os_message(OSError(errno.ENOSPC, "No space left on device"), "/data/x.zarr") == \
        "/data/x.zarr: No space left on device"
