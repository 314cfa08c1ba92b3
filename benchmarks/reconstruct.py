"""reconstruct benchmarks: ours against the reference (mini-dust3r) on the same frames and weights.

    python benchmarks/reconstruct.py                  # CPU: a reduced DUSt3R (ViT-L/ViT-B proportions), 96x128
    python benchmarks/reconstruct.py --full-size      # GPU: DUSt3R ViT-L/ViT-B 512 DPT at 512x384 (default on CUDA)
    python benchmarks/reconstruct.py --section backends [--full-size]  # π³ vs DUSt3R (ours) vs mini-dust3r, whole runs

Network section: pairs/s over the complete graph (both directions, DUSt3R's ``make_pairs`` order) at
N = 8, 16, 32 frames. The reference is mini-dust3r's model driven the way its ``inference()`` drives it
(batches of pairs, ``model(view1, view2)``, results moved to the CPU); ours is ``infer_pairs`` (each frame
encoded once, decoders batched over pairs, outputs on the CPU too). Both run the same random weights
(the reference's, loaded into ours with strict=True), at the same batch size. Also printed: FLOPs per
pair split into encoder / decoders / heads, and the speed-up that doing per-frame work once allows.

Structure: one function per section returning rows, ``main()`` prints the tables; other sections
(global alignment) add their own function and call.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import harness  # noqa: E402

from spatialctl.models.dust3r import Dust3r, Dust3rConfig, flops_per_pair  # noqa: E402
from spatialctl.models.dust3r_inference import infer_pairs  # noqa: E402
from spatialctl.models.dust3r_loading import RELEASED, parse_model_string  # noqa: E402

INF = float("inf")

# CPU stand-in: the encoder is twice as deep and 4/3 as wide as each decoder, as ViT-L (1024 x 24) is to
# ViT-B (768 x 12), so the encoder:decoder FLOP ratio per pair matches the real model's (linear head).
CPU_KWARGS = dict(pos_embed="RoPE100", img_size=(128, 128), head_type="linear", output_mode="pts3d",
                  depth_mode=("exp", -INF, INF), conf_mode=("exp", 1, INF), enc_embed_dim=256, enc_depth=8,
                  enc_num_heads=4, dec_embed_dim=192, dec_depth=4, dec_num_heads=3)
FULL_KWARGS = parse_model_string(RELEASED["DUSt3R_ViTLarge_BaseDecoder_512_dpt"])


def complete_pairs(n: int) -> list[tuple[int, int]]:
    """DUSt3R's complete scene graph, symmetrised, in make_pairs' order."""
    pairs = [(i, j) for i in range(n) for j in range(i)]
    return pairs + [(j, i) for i, j in pairs]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_models(kwargs: dict, device: torch.device, seed: int = 0):
    """(reference, ours) with identical random weights."""
    from mini_dust3r.model import AsymmetricCroCo3DStereo

    torch.manual_seed(seed)
    reference = AsymmetricCroCo3DStereo(**kwargs).eval()
    ours = Dust3r(Dust3rConfig.from_kwargs(kwargs)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference.to(device), ours.to(device)


@torch.no_grad()
def run_reference(model, images: torch.Tensor, pairs, batch_size: int) -> None:
    """mini-dust3r's inference loop: per batch, both images of every pair through the whole network."""
    device = images.device
    shape = torch.tensor(images.shape[-2:])
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        views = []
        for side in (0, 1):
            idx = [p[side] for p in batch]
            views.append({"img": images[idx], "true_shape": shape[None].repeat(len(idx), 1),
                          "idx": idx, "instance": [str(k) for k in idx]})
        pred1, pred2 = model(*views)
        for pred in (pred1, pred2):  # its inference() keeps every result on the CPU
            for value in pred.values():
                value.cpu()
    _sync(device)


def _autocast(fn, *args):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        return fn(*args)


def run_ours(model, images: torch.Tensor, pairs, batch_size: int, autocast_dtype=None,
             reduced_heads: bool = False) -> None:
    infer_pairs(model, images, pairs, batch_size=batch_size, autocast_dtype=autocast_dtype, out_device="cpu",
                reduced_heads=reduced_heads)
    _sync(images.device)


def network_section(full_size: bool, device: torch.device, frames=(8, 16, 32), batch_size: int = 8,
                    image_hw: tuple[int, int] | None = None, repeats: int = 3) -> list[dict]:
    """pairs/s for the reference and ours (fp32; on CUDA also both under bf16 autocast) on complete graphs; each
    speed-up is against the reference at the same precision."""
    kwargs = FULL_KWARGS if full_size else CPU_KWARGS
    image_hw = image_hw or ((384, 512) if full_size else (96, 128))
    reference, ours = build_models(kwargs, device)
    gen = torch.Generator().manual_seed(0)
    all_images = (torch.rand(max(frames), 3, *image_hw, generator=gen) * 2 - 1).to(device)
    variants = [("reference (mini-dust3r, fp32)", lambda im, pr: run_reference(reference, im, pr, batch_size)),
                ("ours (fp32)", lambda im, pr: run_ours(ours, im, pr, batch_size))]
    if device.type == "cuda":
        variants += [
            ("reference (mini-dust3r, bf16 autocast)", lambda im, pr: _autocast(run_reference, reference, im, pr,
                                                                                 batch_size)),
            ("ours (bf16 autocast)", lambda im, pr: run_ours(ours, im, pr, batch_size, torch.bfloat16)),
            ("ours (bf16, bf16 heads)", lambda im, pr: run_ours(ours, im, pr, batch_size, torch.bfloat16, True)),
        ]
    rows = []
    for n in frames:
        pairs = complete_pairs(n)
        images = all_images[:n]
        # Interleaved (rotating order), repeated, after a warm-up round; medians; CUDA peak reset per run.
        t = harness.interleave([(name, lambda fn=fn, im=images, pr=pairs: fn(im, pr)) for name, fn in variants],
                               repeats, 1, device)
        ref = {"fp32": variants[0][0], "bf16": "reference (mini-dust3r, bf16 autocast)"}
        for name, _ in variants:
            base = t[ref["bf16" if "bf16" in name else "fp32"]]  # speed-ups at equal precision
            r = t[name]
            rows.append({"frames": n, "pairs": len(pairs), "variant": name, "seconds": r["median_s"],
                         "spread": f"{r['min_s']:.2f}-{r['max_s']:.2f}", "cpu_seconds": r["median_cpu_s"],
                         "pairs_per_s": len(pairs) / r["median_s"], "speedup": base["median_s"] / r["median_s"],
                         "cpu_speedup": base["median_cpu_s"] / r["median_cpu_s"],
                         "peak_gb": r["peak_cuda_bytes"] / 2**30 if device.type == "cuda" else float("nan")})
    return rows


def flops_section(full_size: bool, frames=(8, 16, 32), image_hw: tuple[int, int] | None = None) -> list[dict]:
    """FLOPs per pair, and the speed-up they allow when per-frame work is done once per frame, not per pair."""
    kwargs = FULL_KWARGS if full_size else CPU_KWARGS
    image_hw = image_hw or ((384, 512) if full_size else (96, 128))
    f = flops_per_pair(Dust3rConfig.from_kwargs(kwargs), image_hw)
    total = f["encoder"] + f["decoder"] + f["head"]
    rows = []
    for n in frames:
        # per-frame work (the encoder, decoder layer 1's one-view part) is shared by the N-1 pairs per frame
        shared = f["encoder"] / 2 + f["frame_layer1"]
        ours = shared / (n - 1) + f["decoder"] - f["decoder_frame_only"] + f["head"]
        rows.append({"frames": n, "encoder_gflop": f["encoder"] / 1e9, "decoder_gflop": f["decoder"] / 1e9,
                     "head_gflop": f["head"] / 1e9, "encoder_share": f["encoder"] / total,
                     "ours_gflop": ours / 1e9, "bound": total / ours})
    return rows


# ---------------------------------------------------------------------------------------------------- alignment
# Global alignment, ours (stages/reconstruct/align.py) against the reference's PointCloudOptimizer, on the same
# pairwise predictions: a perfect network's pointmaps of a synth scene (each pair at its own random scale) with
# 1% multiplicative noise, conf 1 + exp(N(1, 0.5)). Each run is a fresh subprocess, so CPU peak memory is the
# process's peak RSS minus its RSS once the predictions are built (what the alignment itself adds).


def _stub_reference_imports() -> None:
    """mini-dust3r's aligner imports torchvision at module level (for image loading, unused here), which must not
    be installed in this project: a stand-in whose transforms fail if ever applied. Its spanning-tree start
    needs OpenCV's PnP for real: `pip install opencv-python-headless` (benchmark only)."""
    import types

    def missing(*_a, **_k):
        raise RuntimeError("benchmark stand-in: torchvision is not available")

    tv = types.ModuleType("torchvision")
    tvf = types.ModuleType("torchvision.transforms")
    tvf.Compose = tvf.ToTensor = tvf.Normalize = lambda *a, **k: missing  # built at import, never applied
    tv.transforms = tvf
    for name, mod in (("torchvision", tv), ("torchvision.transforms", tvf)):
        sys.modules.setdefault(name, mod)


def synthetic_pairs(n: int, hw: tuple[int, int], graph: str, noise: float = 0.01, seed: int = 0):
    """(truth c2w, truth K, scene extent, pairs, pts_i, conf_i, pts_j, conf_j) as torch float32 tensors."""
    import numpy as np

    from spatialctl import camera
    from spatialctl.stages.reconstruct.graph import make_pairs
    from spatialctl.stages.synth import SynthConfig, generate

    _, truth = generate(SynthConfig(seed=seed, preset="indoor", frames=n, width=hw[1], height=hw[0], moving=0))
    a = truth.scene_arrays
    depth, c2w, k = a["depth"].astype(np.float64), a["cam2world"], a["intrinsics"]
    cams = np.stack([camera.unproject_depth(d, kk) for d, kk in zip(depth, k, strict=True)]).astype(np.float32)
    world = a["pointmaps"].astype(np.float32)
    pairs = make_pairs(n, graph)
    gen = torch.Generator().manual_seed(seed)
    p = len(pairs)
    pts_i, pts_j = torch.empty(p, *hw, 3), torch.empty(p, *hw, 3)
    for e, (i, j) in enumerate(pairs.tolist()):
        w2c = torch.from_numpy(camera.invert(c2w[i])).float()
        scale = float(torch.empty(1).uniform_(-1, 1, generator=gen).exp())
        pts_i[e] = torch.from_numpy(cams[i]) * scale
        pts_j[e] = (torch.from_numpy(world[j]) @ w2c[:3, :3].T + w2c[:3, 3]) * scale
    pts_i *= 1 + noise * torch.randn(p, *hw, 1, generator=gen)
    pts_j *= 1 + noise * torch.randn(p, *hw, 1, generator=gen)
    conf_i = 1 + torch.exp(1 + 0.5 * torch.randn(p, *hw, generator=gen))
    conf_j = 1 + torch.exp(1 + 0.5 * torch.randn(p, *hw, generator=gen))
    ext = float(np.linalg.norm(np.ptp(world.reshape(-1, 3), 0)))
    return c2w, k, ext, pairs, pts_i, conf_i, pts_j, conf_j


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def align_worker(spec: dict) -> dict:
    """One alignment run (in its own process): seconds, peak memory added, ATE and focal error."""
    import numpy as np

    from spatialctl import camera

    device = torch.device(spec["device"])
    c2w, k, ext, pairs, pts_i, conf_i, pts_j, conf_j = synthetic_pairs(spec["frames"], tuple(spec["hw"]),
                                                                        spec["graph"])
    tensors = [t.to(device) for t in (pts_i, conf_i, pts_j, conf_j)]
    del pts_i, conf_i, pts_j, conf_j
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_bytes()
    start, cpu_start = time.perf_counter(), time.process_time()
    if spec["variant"] == "ours":
        from spatialctl.stages.reconstruct.align import AlignConfig, global_align

        cfg = AlignConfig(niter=spec["niter"], device=str(device))
        if spec.get("chunk_pairs"):
            cfg.chunk_pixels = spec["chunk_pairs"] * spec["hw"][0] * spec["hw"][1]
        res = global_align(pairs, *tensors, spec["frames"], cfg)
        est_c2w, focal = res.cam2world, res.intrinsics[:, 0, 0]
    else:
        _stub_reference_imports()
        from mini_dust3r.cloud_opt.optimizer import PointCloudOptimizer

        idx_i, idx_j = pairs[:, 0].tolist(), pairs[:, 1].tolist()
        net = PointCloudOptimizer({"idx": idx_i}, {"idx": idx_j}, {"pts3d": tensors[0], "conf": tensors[1]},
                                  {"pts3d_in_other_view": tensors[2], "conf": tensors[3]}, verbose=False).to(device)
        net.compute_global_alignment(init="mst", niter=spec["niter"], schedule="cosine", lr=0.01)
        est_c2w = net.get_im_poses().detach().cpu().double().numpy()
        focal = net.get_focals().detach().cpu().double().numpy().reshape(-1)
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _peak_rss_bytes()) - base
    s, r, t = camera.umeyama(est_c2w[:, :3, 3], c2w[:, :3, 3])
    ate = float(np.sqrt((((s * est_c2w[:, :3, 3] @ r.T + t) - c2w[:, :3, 3]) ** 2).sum(-1).mean()))
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_bytes": int(peak), "ate_rel": ate / ext,
            "focal_err": float(np.abs(focal / k[:, 0, 0] - 1).max()), "pairs": len(pairs)}


def _run_worker(spec: dict) -> dict:
    import json
    import subprocess

    out = subprocess.run([sys.executable, __file__, "--align-worker", json.dumps(spec)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def alignment_section(device: torch.device, frames=(8, 16, 32), hw=(96, 128), niter: int = 300) -> list[dict]:
    rows = []
    for i, n in enumerate(frames):  # each run its own process (peak = its own); the order alternates
        for variant in ("reference", "ours")[:: 1 if i % 2 == 0 else -1]:
            r = _run_worker({"variant": variant, "frames": n, "hw": list(hw), "graph": "complete",
                             "niter": niter, "device": str(device)})
            rows.append({"frames": n, "variant": variant, "pairs": n * (n - 1), **r})
    return rows


def memory_growth_section(device: torch.device, n: int = 16, hw=(96, 128), windows=(1, 2, 4, 7),
                          niter: int = 20, chunk_pairs: int = 16) -> list[dict]:
    """Peak memory added by the alignment against the number of directed pairs (swin-k on N frames, so the
    per-frame state is fixed): the slope is the growth in bytes per pixel per pair. Ours runs with loss chunks of
    ``chunk_pairs`` pairs (fewer than the smallest graph) so the slope is the per-pair state alone; the chunk's
    own intermediates are a constant, measured by ``chunk_cost``."""
    rows = []
    for variant in ("reference", "ours"):
        pts = []
        for k in windows:
            r = _run_worker({"variant": variant, "frames": n, "hw": list(hw), "graph": f"swin-{k}",
                             "niter": niter, "device": str(device), "chunk_pairs": chunk_pairs})
            if "error" in r:
                rows.append({"variant": variant, "growth": float("nan"), "intercept_mb": float("nan"),
                             "error": r["error"]})
                break
            pts.append((r["pairs"], r["peak_bytes"]))
        else:
            x = torch.tensor([p for p, _ in pts], dtype=torch.float64)
            y = torch.tensor([b for _, b in pts], dtype=torch.float64)
            slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
            rows.append({"variant": variant, "growth": slope / (hw[0] * hw[1]),
                         "intercept_mb": float(y.mean() - slope * x.mean()) / 2**20,
                         "points": ", ".join(f"{p}: {b / 2**20:.0f} MB" for p, b in pts), "error": ""})
    return rows


def chunk_cost(device: torch.device, n: int = 16, hw=(96, 128), window: int = 7, niter: int = 5,
               small: int = 16) -> float:
    """Bytes per pixel-pair of the loss chunk's intermediates (forward and backward): peak with every pair in
    one chunk minus peak with ``small``-pair chunks, over the pixel-pairs the big chunk adds."""
    spec = {"variant": "ours", "frames": n, "hw": list(hw), "graph": f"swin-{window}", "niter": niter,
            "device": str(device)}
    big = _run_worker({**spec, "chunk_pairs": 10**6})
    little = _run_worker({**spec, "chunk_pairs": small})
    return (big["peak_bytes"] - little["peak_bytes"]) / ((big["pairs"] - small) * hw[0] * hw[1])


def extrapolate(growth: float, frames: int = 100, window: int = 10, hw=(384, 512), chunk_bytes: float = 0.0,
                chunk_pixels: int = 1 << 22) -> dict:
    """Bytes for frames x swin-window at hw: growth x pixels x directed pairs, + one loss chunk's intermediates
    (ours: chunk_bytes x chunk_pixels), + per-frame state (log-depth with its gradient and two Adam moments, world
    points and their gradient, per-frame conf: ~12 floats per pixel per frame)."""
    pairs = 2 * frames * window
    pixels = hw[0] * hw[1]
    per_frame = 12 * 4 * pixels * frames
    chunk = chunk_bytes * chunk_pixels
    return {"pairs": pairs, "pair_gb": growth * pixels * pairs / 1e9, "frame_gb": per_frame / 1e9,
            "chunk_gb": chunk / 1e9, "total_gb": (growth * pixels * pairs + per_frame + chunk) / 1e9}


# ---------------------------------------------------------------------------------------------------- backends

# π³ stand-in for the CPU: the published depths (24 encoder, 36 decoder, 5 per head decoder) at width 256
# (published: 1024; camera head 128 for 512), so per-token cost scales down but the layer structure does not.
PI3_CPU = dict(enc_dim=256, enc_heads=4, dec_dim=256, dec_heads=4, head_dim=256, head_heads=4, cam_dim=128)


def _vmhwm_bytes() -> int:
    """Peak resident memory of this process (VmHWM), which starts fresh in every worker process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return _peak_rss_bytes()


def backend_worker(spec: dict) -> dict:
    """One reconstruction of the first N frames of ``spec["video"]`` by one backend, network and alignment
    included, in its own process: wall and CPU seconds, VmHWM."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from spatialctl.stages.reconstruct.frames import load_frames

    device = torch.device(spec["device"])
    frames, _ = load_frames(spec["video"], max_frames=spec["frames"])
    torch.manual_seed(0)
    variant, full = spec["variant"], spec["full_size"]
    if variant == "pi3":
        from pi3_tiny import fill_seeded_, make_tile_rays_

        from spatialctl.models.pi3 import Pi3, Pi3Config
        from spatialctl.stages.reconstruct import feedforward

        model = Pi3(Pi3Config() if full else Pi3Config(**PI3_CPU))
        fill_seeded_(model)
        make_tile_rays_(model)  # random heads give no positive focal length to recover
        model = model.to(device).eval()
    else:
        reference, ours = build_models(FULL_KWARGS if full else CPU_KWARGS, device)
        model = ours if variant == "dust3r" else reference
    autocast = torch.bfloat16 if device.type == "cuda" else None
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    if variant == "pi3":
        net = feedforward.resize_frames(frames, spec["size"])
        local, poses, logits, _, _, _ = feedforward.run_windows(model, net, feedforward.windows(len(net), 64, 8),
                                                                device, autocast)
        feedforward.to_store(local, poses, logits)
        hw = net.shape[1:3]
    else:
        from spatialctl.models.dust3r_inference import encode_frames, infer_pairs, preprocess
        from spatialctl.stages.reconstruct.align import AlignConfig, global_align

        pre = preprocess(frames, spec["size"], patch_size=16)
        images = pre.images.to(device)
        pairs = complete_pairs(len(frames))
        hw = images.shape[-2:]
        if variant == "dust3r":
            encoded = encode_frames(model, images, batch_size=8, autocast_dtype=autocast)
            p = infer_pairs(model, None, pairs, batch_size=8, autocast_dtype=autocast, encoded=encoded,
                            out_device=device)
            global_align(p.pairs, p.pts_i, p.conf_i, p.pts_j, p.conf_j, len(frames),
                         AlignConfig(niter=spec["niter"], device=str(device)))
        else:
            _stub_reference_imports()
            from mini_dust3r.cloud_opt.optimizer import PointCloudOptimizer

            outs = {"pts_i": [], "conf_i": [], "pts_j": [], "conf_j": []}
            shape = torch.tensor(images.shape[-2:])
            with torch.no_grad():
                for b in range(0, len(pairs), 8):  # mini-dust3r's inference(): batches of pairs, whole network
                    batch = pairs[b:b + 8]
                    views = []
                    for side in (0, 1):
                        idx = [q[side] for q in batch]
                        views.append({"img": images[idx], "true_shape": shape[None].repeat(len(idx), 1),
                                      "idx": idx, "instance": [str(k) for k in idx]})
                    pred1, pred2 = model(*views)
                    outs["pts_i"].append(pred1["pts3d"])
                    outs["conf_i"].append(pred1["conf"])
                    outs["pts_j"].append(pred2["pts3d_in_other_view"])
                    outs["conf_j"].append(pred2["conf"])
            outs = {k: torch.cat(v) for k, v in outs.items()}
            idx_i, idx_j = [q[0] for q in pairs], [q[1] for q in pairs]
            opt = PointCloudOptimizer({"idx": idx_i}, {"idx": idx_j}, {"pts3d": outs["pts_i"], "conf": outs["conf_i"]},
                                      {"pts3d_in_other_view": outs["pts_j"], "conf": outs["conf_j"]},
                                      verbose=False).to(device)
            opt.compute_global_alignment(init="mst", niter=spec["niter"], schedule="cosine", lr=0.01)
            opt.get_im_poses().detach().cpu()
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _vmhwm_bytes()
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_bytes": int(peak), "hw": list(map(int, hw)),
            "np": int(np.prod(hw))}


def backends_section(device: torch.device, frames=(8, 16, 32), repeats: int = 2, niter: int = 100,
                     full_size: bool = False) -> list[dict]:
    """π³ vs our DUSt3R + alignment vs mini-dust3r's DUSt3R + PointCloudOptimizer, interleaved and repeated,
    each run in a fresh process on the same frames of one synth video."""
    import json
    import subprocess
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    src = "512x384" if full_size else "64x48"
    made = subprocess.run([sys.executable, "-m", "spatialctl", "synth", str(root / "syn"), "--frames",
                           str(max(frames)), "--size", src, "--preset", "indoor", "--quiet"], capture_output=True,
                          text=True)
    if made.returncode:
        raise SystemExit(made.stderr)
    video = str(root / "syn" / "video.mp4")
    variants = ("pi3", "dust3r", "reference")
    runs: dict = {}
    for rep in range(repeats):
        for n in frames:
            for variant in (variants if rep % 2 == 0 else variants[::-1]):
                # full size: π³ at the reference loader's pixel budget, DUSt3R at its 512 long side
                size = (None if variant == "pi3" else 512) if full_size else 64
                spec = {"variant": variant, "frames": n, "video": video, "device": str(device), "niter": niter,
                        "size": size, "full_size": full_size}
                out = subprocess.run([sys.executable, __file__, "--backend-worker", json.dumps(spec)],
                                     capture_output=True, text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())})
                r = (json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else
                     {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]})
                runs.setdefault((n, variant), []).append(r)
    names = {"pi3": "π³ (ours, feed-forward)", "dust3r": f"DUSt3R ours + our alignment ({niter} it)",
             "reference": f"DUSt3R mini-dust3r + its alignment ({niter} it)"}
    rows = []
    for (n, variant), rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            rows.append({"frames": n, "variant": names[variant], "error": rs[0]["error"]})
            continue
        best = min(ok, key=lambda r: r["cpu_seconds"])
        rows.append({"frames": n, "variant": names[variant], "hw": "x".join(map(str, best["hw"][::-1])),
                     "seconds": min(r["seconds"] for r in ok), "cpu_seconds": best["cpu_seconds"],
                     "cpu_all": "/".join(f"{r['cpu_seconds']:.1f}" for r in ok),
                     "peak_mb": max(r["peak_bytes"] for r in ok) / 2**20, "error": ""})
    return sorted(rows, key=lambda r: (r["frames"], r["variant"]))


def print_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    header = " | ".join(label for label, _, _ in columns)
    print(f"| {header} |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        print("| " + " | ".join(format(row[key], fmt) for _, key, fmt in columns) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--full-size", action=argparse.BooleanOptionalAction, default=None,
                    help="real ViT-L/ViT-B 512 DPT at 512x384 (default: on when the device is CUDA)")
    ap.add_argument("--frames", default="8,16,32", help="frame counts N, comma-separated (default 8,16,32)")
    ap.add_argument("--batch-size", type=int, default=8, help="pairs per batch, both sides (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--section", default="network,align,growth",
                    help="comma list of network, align, growth, backends (default: the first three)")
    ap.add_argument("--niter", type=int, default=300, help="alignment iterations (default 300)")
    ap.add_argument("--repeats", type=int, default=3, help="network, backends: interleaved timed rounds (default 3)")
    ap.add_argument("--smoke", action="store_true", help="3 frames at 32x48, 1 repeat: checks the benchmark runs")
    ap.add_argument("--append-results", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    ap.add_argument("--align-worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--backend-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.frames, args.repeats, args.niter, args.full_size = "3", 1, 5, False
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.align_worker:
        import json

        print(json.dumps(align_worker(json.loads(args.align_worker))))
        return
    if args.backend_worker:
        import json

        print(json.dumps(backend_worker(json.loads(args.backend_worker))))
        return
    device = torch.device(args.device)
    full_size = device.type == "cuda" if args.full_size is None else args.full_size
    frames = tuple(int(x) for x in args.frames.split(","))
    sections = set(args.section.split(","))
    size = "ViT-L/ViT-B 512 DPT, 384x512" if full_size else "reduced (enc 256x8, dec 192x4, linear), 96x128"
    print(f"device={device} threads={torch.get_num_threads()} model={size} batch={args.batch_size} "
          f"torch={torch.__version__}")

    if "network" in sections:
        print_table("Network FLOPs per ordered pair (reference: everything per pair; ours: per-frame work once "
                    "per frame)",
                    flops_section(full_size, frames),
                    [("N", "frames", "d"), ("encoder GFLOP", "encoder_gflop", ".2f"),
                     ("decoders GFLOP", "decoder_gflop", ".2f"), ("heads GFLOP", "head_gflop", ".2f"),
                     ("encoder share", "encoder_share", ".0%"), ("ours GFLOP", "ours_gflop", ".2f"),
                     ("speed-up bound", "bound", ".2f")])
        columns = [("N", "frames", "d"), ("pairs", "pairs", "d"), ("variant", "variant", "s"),
                   ("wall s (median)", "seconds", ".2f"), ("min-max", "spread", "s"),
                   ("process CPU s", "cpu_seconds", ".2f"), ("pairs/s", "pairs_per_s", ".1f"),
                   ("speed-up (wall, equal precision)", "speedup", ".2f"), ("speed-up (CPU time)", "cpu_speedup", ".2f"),
                   ("peak CUDA GB (reset per run)", "peak_gb", ".2f")]
        rows = network_section(full_size, device, frames, args.batch_size, (32, 48) if args.smoke else None,
                               args.repeats)
        print_table(f"Network throughput, complete graph (both directions), {args.repeats} interleaved repeats",
                    rows, columns)
        if args.append_results:
            harness.append_results(f"reconstruct network, {size}", harness.markdown_table(rows, columns),
                                   "python benchmarks/reconstruct.py " + " ".join(argv or sys.argv[1:]), device)
    if "align" in sections:
        hw = (384, 512) if full_size else (24, 32) if args.smoke else (48, 64)  # CPU: N=32 x 300 its of the reference
        rows = alignment_section(device, frames, hw, args.niter)
        for r in rows:
            r.setdefault("error", "")
            for key in ("seconds", "cpu_seconds", "peak_bytes", "ate_rel", "focal_err"):
                r.setdefault(key, float("nan"))
            r["peak_mb"] = r["peak_bytes"] / 2**20
        title = (f"Global alignment, complete graph, {hw[1]}x{hw[0]}, {args.niter} iterations "
                 "(peak = memory the alignment adds, each run in its own process)")
        columns = [("N", "frames", "d"), ("pairs", "pairs", "d"), ("variant", "variant", "s"),
                   ("wall s", "seconds", ".2f"), ("process CPU s", "cpu_seconds", ".2f"), ("peak MB", "peak_mb", ".0f"),
                   ("ATE / scene extent", "ate_rel", ".2e"), ("max focal error", "focal_err", ".2%"),
                   ("error", "error", "s")]
        print_table(title, rows, columns)
        if args.append_results:
            harness.append_results(title, harness.markdown_table(rows, columns),
                                   "python benchmarks/reconstruct.py " + " ".join(argv or sys.argv[1:]), device)
    if "backends" in sections:
        niter = 300 if full_size else min(args.niter, 100)
        rows = backends_section(device, frames, args.repeats, niter, full_size)
        what = ("full size: π³ (ViT-L + 36 x 1024), DUSt3R ViT-L/ViT-B 512 DPT, 512x384 source frames"
                if full_size else "CPU stand-ins: π³ widths 256 (published depths), DUSt3R enc 256x8 / dec 192x4 "
                "linear; 64x48 source frames")
        print_table(f"Backends, {what}; each run in its own process (peak = VmHWM, or CUDA max allocated); "
                    f"best of {args.repeats} interleaved runs", rows,
                    [("N", "frames", "d"), ("variant", "variant", "s"), ("network HxW", "hw", "s"),
                     ("wall s", "seconds", ".2f"), ("process CPU s", "cpu_seconds", ".2f"),
                     ("CPU s per run", "cpu_all", "s"), ("peak MB", "peak_mb", ".0f"), ("error", "error", "s")])
    if "growth" in sections:
        hw = (384, 512) if full_size else (96, 128)
        growth = memory_growth_section(device, hw=hw)
        print_table(f"Alignment memory growth (swin-k on 16 frames, {hw[1]}x{hw[0]}; ours with 16-pair loss chunks)",
                    growth,
                    [("variant", "variant", "s"), ("bytes / pixel / directed pair", "growth", ".1f"),
                     ("intercept MB", "intercept_mb", ".0f"), ("pairs: peak", "points", "s"),
                     ("error", "error", "s")])
        per_chunk = chunk_cost(device, hw=hw)
        print(f"\nours: loss-chunk intermediates {per_chunk:.0f} bytes per pixel-pair in a chunk "
              f"(default chunk {1 << 22} pixel-pairs = {per_chunk * (1 << 22) / 1e9:.2f} GB)")
        ex = [{"variant": g["variant"], **extrapolate(g["growth"], chunk_bytes=per_chunk if g["variant"] == "ours"
                                                      else 0.0)}
              for g in growth if g["growth"] == g["growth"]]
        # Ours by construction: 6 fp16 coordinates + 2 fp16 weights per pixel per pair (RSS slopes read a bit low).
        ex.append({"variant": "ours, 16 B by construction", **extrapolate(16.0, chunk_bytes=per_chunk)})
        print_table("Extrapolated: 100 frames, swin-10 (2000 directed pairs), 512x384 (reference: its per-pair "
                    "growth alone)", ex,
                    [("variant", "variant", "s"), ("pairs", "pairs", "d"), ("pair data GB", "pair_gb", ".1f"),
                     ("loss chunk GB", "chunk_gb", ".2f"), ("per-frame state GB", "frame_gb", ".2f"),
                     ("total GB", "total_gb", ".1f")])


if __name__ == "__main__":
    main()
