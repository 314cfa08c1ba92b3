"""train-gsm step time, tokens/s, MFU and peak memory: GSM off, GSM on, and GSM on under DeepSpeed ZeRO-2
(``accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml``, one GPU), on a random Qwen2.5-VL; with
``--variants``, also boost mode (GSM off, SpatialBoost's Attn⁺ and gates in every vision block).

    python benchmarks/train_gsm.py --hidden 64 --layers 2 --frames 8 --size 112      # CPU, small
    python benchmarks/train_gsm.py --preset 7b --frames 32 --size 336                 # GPU, 7B-sized random
    python benchmarks/train_gsm.py --preset 7b --frames 32 --size 336 --variants off,boost   # boost's cost

Each run of each variant is its own process (peak RSS / CUDA peak is per process); the variants rotate (off on
zero2, on zero2 off, ...) ``--repeats`` times and the table gives each one's median step time. All run at the same
precision (bf16 on GPU, fp32 on CPU). DeepSpeed needs CUDA: without it (``--smoke`` on CPU) the ZeRO-2 row fills the
shipped config from the run's options, then trains without DeepSpeed, and says so. Prints one JSON line per run,
then the table.

MFU = model FLOPs per step / step time / the device's peak dense bf16 FLOP/s, with model FLOPs
6 * N_llm * T_llm + 6 * N_vision * T_vision per sample (the usual 6N: forward 2N, backward 4N): N_llm the language
model's parameters without the input embedding table (a lookup) but with lm_head, T_llm the tokens of the sequence
(text, video and GSM tokens); N_vision the vision tower's, T_vision its patches (4 per merged video token).
Attention's own FLOPs (QK^T, AV) and the GSM's are not counted, and with LoRA the frozen weights get no weight
gradients (~4N done, 6N counted): this is the conventional model-FLOPs utilisation, not the hardware's. Peaks are
NVIDIA's dense (non-sparse) bf16 tensor-core figures: H100 / H200 SXM 989.4 TFLOP/s, A100 312 TFLOP/s; other
devices get no MFU. The random models use the tiny test tokenizer (vocabulary 480), so their lm_head is ~0.5 B
parameters smaller than the released 7B's (N_llm 6.53 B here, vision 0.68 B).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "tests")]

VARIANTS = ("off", "on", "on-zero2", "boost")  # plain VLM (LoRA), + GSM, + GSM under ZeRO-2, + SpatialBoost (GSM off)
ZERO2 = os.path.join(REPO, "configs", "accelerate", "deepspeed_zero2.yaml")
PEAK_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12}  # dense, SXM; see the module docstring

PRESET_7B = dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vision_depth=32,
                 vision_hidden=1280, vision_heads=16, vision_intermediate=3420)


def make_base(path: str, a) -> str:
    """A random Qwen2.5-VL of the requested size, saved with the tiny tokenizer (vocab size is the tokenizer's)."""
    import torch
    from tiny_qwen import make_tiny_qwen

    if a.preset != "7b":
        return make_tiny_qwen(path, hidden_size=a.hidden, num_layers=a.layers)
    make_tiny_qwen(path)  # tokenizer and processor files; the weights are replaced below
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig.from_pretrained(path)
    p = PRESET_7B
    t, v = cfg.text_config, cfg.vision_config
    t.hidden_size, t.num_hidden_layers, t.num_attention_heads = p["hidden"], p["layers"], p["heads"]
    t.num_key_value_heads, t.intermediate_size = p["kv_heads"], p["intermediate"]
    t.rope_parameters = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}
    t.layer_types = ["full_attention"] * p["layers"]
    v.depth, v.hidden_size, v.num_heads, v.intermediate_size = (p["vision_depth"], p["vision_hidden"],
                                                                 p["vision_heads"], p["vision_intermediate"])
    v.out_hidden_size, v.fullatt_block_indexes = p["hidden"], [7, 15, 23, 31]
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2_5_VLForConditionalGeneration(cfg)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(path)
    return path


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in device_name), None)


def model_params(base: str) -> tuple[int, int]:
    """(language model without the input embeddings, with lm_head; vision tower) parameter counts, from the
    config on the meta device."""
    import torch
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(AutoConfig.from_pretrained(base))
    lm = model.model.language_model
    n_llm = sum(p.numel() for p in lm.parameters()) - lm.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    return n_llm, sum(p.numel() for p in model.model.visual.parameters())


def zero2_dry_run(cfg) -> None:
    """Without CUDA: the DeepSpeed plugin accelerate builds from the shipped config, filled from ``cfg`` as a GPU
    run fills it (checks the config and the option mapping; no DeepSpeed engine on CPU)."""
    from accelerate.utils import DeepSpeedPlugin

    from spatialctl.stages.train_gsm.distributed import _fill_deepspeed

    plugin = DeepSpeedPlugin(hf_ds_config=os.path.join(REPO, "configs", "accelerate", "deepspeed_zero2.json"))
    _fill_deepspeed(plugin, cfg, world=1)
    assert plugin.zero_stage == 2 and plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == cfg.batch_size


def variant(a) -> dict:
    import torch

    from spatialctl.stages.train_gsm import TrainGSMConfig, run

    root = a.workdir
    base = os.path.join(root, "base")
    scenes = os.path.join(root, "scenes")
    qa = os.path.join(root, "qa.jsonl")
    marks: list[float] = []
    cfg = TrainGSMConfig(qa=qa, out=os.path.join(root, f"run-{a.variant}"), scenes=scenes, base=base,
                         gsm=a.variant in ("on", "on-zero2"), boost=a.variant == "boost", lora_rank=a.lora_rank,
                         num_frames=a.frames, queries=32, geo_grid=8,
                         batch_size=a.batch, max_steps=a.warmup + a.steps, save_every=10**6, quiet=True,
                         overwrite=True, lora_dropout=0.0)
    cuda = torch.cuda.is_available()
    launch = "plain"
    if a.variant == "on-zero2":
        launch = "DeepSpeed ZeRO-2"
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") != "true":
            if cuda:
                sys.exit("on-zero2 runs under accelerate launch --config_file " + ZERO2)
            zero2_dry_run(cfg)
            launch = "CPU: ZeRO-2 config filled, trained without DeepSpeed"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run(cfg, on_step=lambda step, loss: marks.append(time.perf_counter()))
    steps = [b - a_ for a_, b in zip(marks[a.warmup - 1:], marks[a.warmup:], strict=False)]
    step_s = statistics.median(steps)
    # tokens per sample: video + geometry + text, from the prompt the data pipeline builds
    from spatialctl import qwen
    from spatialctl.stages.train_gsm.data import QADataset, load_records

    tok = qwen.load_tokenizer(base)
    records, urls = load_records(qa, scenes)
    ds = QADataset(records[:1], urls, tok, qwen.VideoProcessorConfig.from_model_dir(base), None, a.frames)
    example = ds[0]
    tokens = len(example["input_ids"]) + (32 if cfg.gsm else 0)
    patches = int(example["pixel_values_videos"].shape[0])
    peak = (torch.cuda.max_memory_allocated() / 2**30 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    n_llm, n_vision = model_params(base)
    flops_per_step = a.batch * 6 * (n_llm * tokens + n_vision * patches)
    peak_flops_s = peak_flops(torch.cuda.get_device_name()) if cuda else None
    mfu = round(100 * flops_per_step / step_s / peak_flops_s, 2) if peak_flops_s else None
    return {"variant": a.variant, "gsm": "on" if cfg.gsm else "off", "launch": launch,
            "device": "cuda" if cuda else "cpu",
            "preset": a.preset or f"hidden{a.hidden}-layers{a.layers}", "frames": a.frames, "frame_size": a.size,
            "batch": a.batch, "tokens_per_sample": tokens, "step_s": round(step_s, 4),
            "tokens_per_s": round(a.batch * tokens / step_s, 1), "vision_patches_per_sample": patches,
            "params_llm": n_llm, "params_vision": n_vision, "model_tflops_per_step": round(flops_per_step / 1e12, 3),
            "peak_tflops_s": peak_flops_s and peak_flops_s / 1e12, "mfu_percent": mfu, "peak_mem_gib": round(peak, 3),
            "peak_mem_kind": "cuda_max_allocated" if torch.cuda.is_available() else "max_rss",
            "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="", help="'7b' for Qwen2.5-VL-7B-sized random weights (GPU). Default: small")
    ap.add_argument("--hidden", type=int, default=64, help="LLM width when no preset (default 64)")
    ap.add_argument("--layers", type=int, default=2, help="LLM layers when no preset (default 2)")
    ap.add_argument("--frames", type=int, default=8, help="frames per sample (default 8)")
    ap.add_argument("--size", type=int, default=112, help="frame side in pixels (default 112)")
    ap.add_argument("--batch", type=int, default=1, help="samples per step (default 1)")
    ap.add_argument("--lora-rank", type=int, default=64, help="LoRA rank (default 64)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--repeats", type=int, default=2, help="processes per variant, alternating (default 2)")
    ap.add_argument("--smoke", action="store_true", help="width 32, 2 frames of 56x56, 2 steps: checks the benchmark runs")
    ap.add_argument("--append-results", action="store_true", help="append the table to benchmarks/RESULTS.md")
    ap.add_argument("--variants", default="off,on,on-zero2", help="compared variants, comma-separated: off (plain "
                    "VLM), on (GSM), on-zero2 (GSM under DeepSpeed ZeRO-2), boost (GSM off, --boost) "
                    "(default off,on,on-zero2)")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.smoke:
        a.preset, a.hidden, a.layers, a.frames, a.size, a.steps, a.warmup, a.repeats = "", 32, 1, 2, 56, 2, 1, 1
    if a.variant:
        print(json.dumps(variant(a)), flush=True)
        return
    with tempfile.TemporaryDirectory() as root:
        from gsm_fixtures import make_records, make_scenes, write_records

        make_base(os.path.join(root, "base"), a)
        make_scenes(root, n_scenes=2, n_frames=a.frames, size=a.size)
        write_records(os.path.join(root, "qa.jsonl"), make_records(8, n_frames=a.frames))
        import torch

        variants = [v for v in a.variants.split(",") if v]
        if not variants or set(variants) - set(VARIANTS):
            sys.exit(f"--variants {a.variants!r}: choose from {', '.join(VARIANTS)}")
        runs = {v: [] for v in variants}
        for r in range(a.repeats):
            k = r % len(variants)
            for v in variants[k:] + variants[:k]:  # rotate, so no variant always runs first
                launcher = [sys.executable]
                if v == "on-zero2" and torch.cuda.is_available():
                    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", ZERO2,
                                "--num_processes", "1", "--main_process_port", "0"]
                cmd = [*launcher, __file__, *sys.argv[1:], "--variant", v, "--workdir", root]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
                if out.returncode:
                    sys.exit(out.stderr[-3000:])
                line = out.stdout.strip().splitlines()[-1]
                print(line, flush=True)
                runs[v].append(json.loads(line))
    import harness

    rows = []
    for rs in runs.values():
        steps = [x["step_s"] for x in rs]
        rows.append({**rs[0], "step_s": statistics.median(steps), "range": f"{min(steps):.3f}-{max(steps):.3f}",
                     "tokens_per_s": statistics.median(x["tokens_per_s"] for x in rs),
                     "mfu": (f"{statistics.median(x['mfu_percent'] for x in rs):.1f} (peak {rs[0]['peak_tflops_s']} "
                             "TFLOP/s)" if rs[0]["mfu_percent"] is not None else "n/a (no known bf16 peak)"),
                     "peak_mem_gib": max(x["peak_mem_gib"] for x in rs)})
    table = harness.markdown_table(rows, [
        ("variant", "variant", ""), ("launch", "launch", ""), ("tokens / sample", "tokens_per_sample", "d"),
        ("step s (median)", "step_s", ".3f"), ("min-max", "range", ""), ("tokens/s", "tokens_per_s", ".0f"),
        ("model TFLOP / step", "model_tflops_per_step", ".3f"), ("MFU %", "mfu", ""),
        (f"peak GiB ({rows[0]['peak_mem_kind']}, own process)", "peak_mem_gib", ".3f")])
    print(table)
    if a.append_results:
        harness.append_results(f"train-gsm ({a.variants}), {rows[0]['preset']}, {a.frames} frames {a.size}x{a.size}, batch {a.batch}, "
                               f"{a.repeats} processes per variant", table,
                               "python benchmarks/train_gsm.py " + " ".join(sys.argv[1:]),
                               "cuda" if rows[0]["device"] == "cuda" else None)

if __name__ == "__main__":
    main()
