"""Golden outputs of DSR Suite's and SpaceVista's own evaluation code, run outside the repo on fixed inputs.

    git --git-dir=/work/.mirror/Tiamat-Tech+DSR_Suite/repo archive 56a60bc model/qwen-vl-utils model/qwen-vl-finetune/VLMEvalKit_mine/vlmeval/vlm/qwen2_vl/model.py | tar -x -C /tmp/dsr
    git --git-dir=/work/.mirror/PeiwenSun2000+SpaceVista/repo archive 920a9b7 eval | tar -x -C /tmp/sv
    python tests/golden/make_released_golden.py /tmp/dsr 56a60bc /tmp/sv 920a9b7 tests/golden

DSR-Bench (Tiamat-Tech/DSR_Suite @ 56a60bc, a fork of TencentARC/DSR_Suite): the number of frames is decided by
``Qwen2VLChat._prepare_content`` (VLMEvalKit_mine/vlmeval/vlm/qwen2_vl/model.py; the method's source is taken from
the file and run on a stub ``self`` holding the "Qwen2.5-VL-7B-Instruct-ForVideo" settings, nframe 32 and fps None
as inference_video.py leaves them, with cv2 stubbed to report the frame count); which frames and at what size by
the vendored qwen-vl-utils ``fetch_video`` (model/qwen-vl-utils), run with decord stubbed by a reader whose frames
carry their index, and torchvision's resize stubbed to record the size it is asked for.

SpaceVista-Bench (PeiwenSun2000/SpaceVista @ 920a9b7): eval/evaluate_api_video.py's ``process_single_entry`` is
run on `released_fixtures.spacevista_bench` entries (absolute paths, as the harness opens paths as given), with
its ``call_api`` replaced by a recorder, so the frames it would encode (sampled, annotated, resized) and the prompt
are captured exactly; openai and the metrics module are stubbed (not used on this path).

Only outputs are committed: released_golden.json and spacevista_frames.npz.
"""

import ast
import importlib.util
import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from released_fixtures import spacevista_bench  # noqa: E402

FOR_VIDEO = {"min_pixels": 128 * 28 * 28, "max_pixels": 768 * 28 * 28, "total_pixels": 24576 * 28 * 28}
FRAME_COUNTS = [2, 3, 10, 31, 32, 33, 45, 64, 100, 997, 3001]
SIZES = [(720, 1280), (360, 640), (240, 320), (1080, 1920), (480, 480)]


def prepare_content(repo: Path):
    """``Qwen2VLChat._prepare_content`` from the release, bound to a stub holding the ForVideo settings."""
    src = (repo / "model/qwen-vl-finetune/VLMEvalKit_mine/vlmeval/vlm/qwen2_vl/model.py").read_text()
    tree = ast.parse(src)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Qwen2VLChat")
    fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "_prepare_content")
    counts = {}

    class Capture:
        def __init__(self, path):
            self.n = counts[path]

        def get(self, _prop):
            return self.n

        def release(self):
            pass

    sys.modules["cv2"] = types.SimpleNamespace(VideoCapture=Capture, CAP_PROP_FRAME_COUNT=7)
    ns = {"ensure_image_url": lambda v: v, "ensure_video_url": lambda v: v, "warnings": __import__("warnings")}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "model.py", "exec"), ns)
    me = types.SimpleNamespace(fps=None, nframe=32, FRAME_FACTOR=2, **FOR_VIDEO)
    return lambda path, n: (counts.__setitem__(path, n), ns["_prepare_content"](me, [
        {"type": "text", "value": ""}, {"type": "video", "value": path}, {"type": "text", "value": "q"}]))[1]


def vision_process(repo: Path):
    """The vendored qwen-vl-utils, with decord and torchvision stubbed."""
    state = {}

    class Reader:
        def __init__(self, path):
            self.n = state["n"]

        def __len__(self):
            return self.n

        def get_avg_fps(self):
            return 30.0

        def get_batch(self, idx):
            h, w = state["size"]
            frames = np.zeros((len(idx), h, w, 3), np.uint8)
            frames[:, 0, 0, 0] = np.asarray(idx) % 256
            frames[:, 0, 0, 1] = np.asarray(idx) // 256
            return types.SimpleNamespace(asnumpy=lambda: frames)

    def resize(video, size, interpolation=None, antialias=None):
        state["indices"] = (video[:, 0, 0, 0].long() + 256 * video[:, 1, 0, 0].long()).tolist()
        state["resized"] = list(size)
        return torch.zeros(video.shape[0], video.shape[1], *size)

    tv = types.ModuleType("torchvision")
    tv.__version__ = "0.20.0"
    tv.io = types.SimpleNamespace()
    tv.transforms = types.SimpleNamespace(functional=types.SimpleNamespace(resize=resize))
    sys.modules.update({"torchvision": tv, "torchvision.io": tv.io, "torchvision.transforms": tv.transforms,
                        "torchvision.transforms.functional": tv.transforms.functional,
                        "decord": types.SimpleNamespace(VideoReader=Reader)})
    sys.modules["torchvision.transforms"].InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")
    os.environ["FORCE_QWENVL_VIDEO_READER"] = "decord"
    spec = importlib.util.spec_from_file_location("qvu", repo / "model/qwen-vl-utils/src/qwen_vl_utils/vision_process.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, state


def dsr(repo: Path) -> list[dict]:
    prepare = prepare_content(repo)
    vp, state = vision_process(repo)
    out = []
    for n in FRAME_COUNTS:
        content = prepare(f"video_{n}.mp4", n)
        video = dict(content[1])
        for size in SIZES:
            state.update(n=n, size=size)
            vp.fetch_video({**video, "video": "file://x.mp4"}, return_video_sample_fps=True)
            out.append({"frames": n, "size": list(size), "nframes": video["nframes"], "indices": state["indices"],
                        "resized": state["resized"]})
    return out


def spacevista(repo: Path, out_dir: Path) -> tuple[list[dict], dict]:
    sys.modules["openai"] = types.SimpleNamespace(OpenAI=object)
    sys.modules["metrics"] = types.ModuleType("metrics")
    sys.modules["metrics.spacevista_bench"] = types.SimpleNamespace(compute_metrics=None)
    spec = importlib.util.spec_from_file_location("sv_video", repo / "eval/evaluate_api_video.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sent = {}
    mod.call_api = lambda client, model, frames, prompt, *a, **k: (sent.__setitem__("x", (frames, prompt)), "ok")[1]
    args = types.SimpleNamespace(num_frames=16, max_image_size=448, fps=2, max_retries=1, max_tokens=8196,
                                 model="m")
    rows, arrays = [], {}
    with tempfile.TemporaryDirectory() as root:
        for entry in spacevista_bench(root, prefix=root):
            result = mod.process_single_entry(entry, None, args)
            frames, prompt = sent.pop("x")
            arrays[f"entry{entry['id']}"] = np.stack([np.asarray(f) for f in frames])
            rows.append({"id": entry["id"], "prompt": prompt, "result": {k: v for k, v in result.items()
                                                                         if k != "predicted_answer"}})
    return rows, arrays


def main():
    dsr_repo, dsr_commit, sv_repo, sv_commit, out = sys.argv[1:6]
    out = Path(out)
    sv_rows, arrays = spacevista(Path(sv_repo), out)
    golden = {"dsr_suite": {"repository": "Tiamat-Tech/DSR_Suite (fork of TencentARC/DSR_Suite)",
                            "commit": dsr_commit, "for_video": FOR_VIDEO, "cases": dsr(Path(dsr_repo))},
              "spacevista": {"repository": "PeiwenSun2000/SpaceVista", "commit": sv_commit, "entries": sv_rows}}
    (out / "released_golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    np.savez_compressed(out / "spacevista_frames.npz", **arrays)


if __name__ == "__main__":
    main()
