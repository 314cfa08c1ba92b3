"""Truncated Wan DiT forward (blocks 0..L) vs a plain full-depth diffusers forward with a hook on block L.

    python benchmarks/genfeat.py                      # CPU: reduced width, the real 30 blocks, 832x480
    python benchmarks/genfeat.py --full-size          # GPU: Wan2.1-T2V-1.3B's real sizes, bf16

Weights are random (same compute as the real checkpoint of the same sizes). Two timings per variant:
``dit`` (the DiT on prepared noised latents: what truncation changes) and ``end-to-end`` (uint8 frames →
VAE → noise → DiT: what a user waits for). Variants are interleaved and the best of N repeats is kept (on a
shared machine other jobs only ever add time); on CPU the DiT's process CPU time is reported too, which
other processes on a loaded machine disturb far less than wall-clock time (run with OMP_NUM_THREADS=1
for it to equal compute time). Peak memory: CUDA max_memory_allocated on GPU; on CPU the peak resident set above
the resident set before the run (Linux VmHWM, reset through /proc/self/clear_refs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatialctl.models import wan_features as wf  # noqa: E402
from spatialctl.models.wan_random import WAN_1_3B, RandomWanSpec, save_random_wan  # noqa: E402

# CPU stand-in: the real depth (30 blocks) and token count (832x480 → 52x30 patches), 1/12 of the width.
CPU_SPEC = RandomWanSpec(z_dim=16, vae_base_dim=8, vae_dim_mult=(1, 2, 2, 2), heads=2, head_dim=64, ffn_dim=768,
                         num_layers=30, text_dim=64, freq_dim=64)


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Give freed heap back to the OS (glibc), so a later peak of the resident set is the new work's own."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak bytes used by the block run inside ``with``: CUDA allocator, or resident set on Linux."""

    def __init__(self, device: torch.device):
        self.device, self.peak = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _release_free_memory()
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            except OSError:
                pass
            self.base = (_status_kb("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            hwm = _status_kb("VmHWM")
            self.peak = None if hwm is None else hwm * 1024 - self.base


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-size", action="store_true", help="Wan2.1-T2V-1.3B sizes (default: the reduced CPU model)")
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--layer", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1, help="frames per forward")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="bf16 | fp32 (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--no-end-to-end", action="store_true", help="time the DiT only (skip the VAE runs)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--smoke", action="store_true", help="3 blocks at 64x32, 1 repeat: checks the benchmark runs")
    ap.add_argument("--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)
    if args.smoke:
        args.width, args.height, args.layer, args.repeats = 64, 32, 1, 1

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    spec = WAN_1_3B if args.full_size else CPU_SPEC
    if args.smoke:
        spec = RandomWanSpec(**{**CPU_SPEC.__dict__, "num_layers": 3})
    with tempfile.TemporaryDirectory() as tmp:  # saved and loaded like a user's checkpoint (fp32 islands kept)
        save_random_wan(tmp, spec, text_encoder=False)
        vae = wf.load_vae(tmp, device)
        transformer = wf.load_transformer(tmp, device, dtype)
    context = torch.randn(1, wf.TEXT_MAX_LEN, spec.text_dim)
    ex = wf.WanFeatureExtractor(vae, transformer, context, layer=args.layer, timestep=300, seed=0)
    size_hw = (args.height, args.width)
    frames = torch.randint(0, 256, (args.batch, 1, args.height, args.width, 3), dtype=torch.uint8)
    keys = list(range(args.batch))
    dit_in = ex.dit_inputs(ex.latents(frames, size_hw, keys))

    def dit(variant):
        fn = wf.truncated_forward if variant == "truncated" else wf.hooked_full_forward
        return fn(transformer, *dit_in, args.layer)

    def end_to_end(variant):
        fn = wf.truncated_forward if variant == "truncated" else wf.hooked_full_forward
        return fn(transformer, *ex.dit_inputs(ex.latents(frames, size_hw, keys)), args.layer)

    assert torch.equal(dit("truncated"), dit("full"))  # warm-up, and the outputs are the same tensor values
    variants = ("truncated", "full")
    times = {(w, v): [] for w in ("dit", "end_to_end") for v in variants}
    cpu_times = {(w, v): [] for w in ("dit", "end_to_end") for v in variants}
    for r in range(args.repeats):
        for what, fn in (("dit", dit), ("end_to_end", end_to_end))[: 1 if args.no_end_to_end else 2]:
            for v in variants[:: 1 if r % 2 == 0 else -1]:  # the order alternates between rounds
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                fn(v)
                _sync(device)
                times[(what, v)].append(time.perf_counter() - t0)
                cpu_times[(what, v)].append(time.process_time() - c0)
    peak = {}
    for v in variants:
        with PeakMemory(device) as pm:
            dit(v)
        peak[v] = pm.peak

    rows = {}
    for v in variants:
        rows[v] = {
            "dit_frames_per_s": args.batch / min(times[("dit", v)]),
            "end_to_end_frames_per_s": args.batch / min(times[("end_to_end", v)]) if times[("end_to_end", v)] else None,
            "dit_frames_per_cpu_s": args.batch / min(cpu_times[("dit", v)]),
            "end_to_end_frames_per_cpu_s": args.batch / min(cpu_times[("end_to_end", v)])
            if cpu_times[("end_to_end", v)] else None,
            "dit_peak_mib": None if peak[v] is None else peak[v] / 2**20,
        }
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "model": "Wan2.1-T2V-1.3B sizes" if args.full_size else
        f"reduced width {spec.heads * spec.head_dim} (real 1536), ffn {spec.ffn_dim}, {spec.num_layers} blocks",
        "resolution": f"{args.width}x{args.height}", "tokens_per_frame": (args.height // 16) * (args.width // 16),
        "layer": args.layer, "blocks_run": f"{args.layer + 1} of {spec.num_layers}", "batch": args.batch,
        "dtype": str(dtype).removeprefix("torch."), "repeats": args.repeats, "variants": rows,
        "dit_speedup": rows["truncated"]["dit_frames_per_s"] / rows["full"]["dit_frames_per_s"],
        "dit_speedup_cpu_time": rows["truncated"]["dit_frames_per_cpu_s"] / rows["full"]["dit_frames_per_cpu_s"],
        "end_to_end_speedup": None if args.no_end_to_end else
        rows["truncated"]["end_to_end_frames_per_s"] / rows["full"]["end_to_end_frames_per_s"],
        "end_to_end_speedup_cpu_time": None if args.no_end_to_end else
        rows["truncated"]["end_to_end_frames_per_cpu_s"] / rows["full"]["end_to_end_frames_per_cpu_s"],
        "load_average_1min": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    print()
    print("| variant | DiT frames/s | end-to-end frames/s | DiT peak memory (MiB) |")
    print("| --- | --- | --- | --- |")
    for v in variants:
        r = rows[v]
        mem = "n/a" if r["dit_peak_mib"] is None else f"{r['dit_peak_mib']:.0f}"
        name = f"truncated (blocks 0..{args.layer})" if v == "truncated" else "full forward + hook"
        e2e = "n/a" if r["end_to_end_frames_per_s"] is None else f"{r['end_to_end_frames_per_s']:.3f}"
        print(f"| {name} | {r['dit_frames_per_s']:.3f} | {e2e} | {mem} |")
    e2e = "" if result["end_to_end_speedup"] is None else (
        f", end-to-end {result['end_to_end_speedup']:.2f}x ({result['end_to_end_speedup_cpu_time']:.2f}x CPU time)")
    print(f"\nspeedup: DiT {result['dit_speedup']:.2f}x wall-clock ({result['dit_speedup_cpu_time']:.2f}x in process "
          f"CPU time){e2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.append_results:
        import harness

        table = harness.markdown_table(
            [{"variant": f"truncated (blocks 0..{args.layer})" if v == "truncated" else "full forward + hook",
              **rows[v]} for v in variants],
            [("variant", "variant", ""), ("DiT frames/s (best of repeats)", "dit_frames_per_s", ".3f"),
             ("end-to-end frames/s", "end_to_end_frames_per_s", ".3f"), ("DiT peak MiB", "dit_peak_mib", ".0f")])
        harness.append_results(f"extract-gen-features, {result['model']}, {result['resolution']}, {result['dtype']} "
                               "both variants", table, "python benchmarks/genfeat.py " + " ".join(argv or sys.argv[1:]),
                               device, notes=f"Outputs torch.equal across variants; DiT speed-up "
                               f"{result['dit_speedup']:.2f}x.")
    return result


if __name__ == "__main__":
    main()
