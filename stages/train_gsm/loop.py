"""The training loop: plain PyTorch through accelerate (DDP / FSDP / DeepSpeed come from accelerate's config).

Checkpoints (``out/checkpoints/step-NNNNNN``) hold the trainable weights (safetensors), each process's optimizer
and RNG state, the scheduler and the step; the data order is a function of the step (see ``StepBatchSampler``),
so ``resume`` continues to exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from spatialctl import boost, gsm, io, jobs, qwen, vega
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.hub import resolve_model_dir
from spatialctl.stages.train_gsm import distributed
from spatialctl.stages.train_gsm.config import TrainGSMConfig
from spatialctl.stages.train_gsm.data import QADataset, StepBatchSampler, load_records
from spatialctl.stages.train_gsm.grpo import GRPOObjective
from spatialctl.stages.train_gsm.model import build_model, param_groups

log = logging.getLogger("train-gsm")
CKPT_DIR = "checkpoints"
TRAIN_CONFIG = "train_config.json"
TRAIN_LOG = "train_log.jsonl"
RUN_MARKER = "train_run.json"  # written first: the folder's files are ours even if the run dies before any record
# the adapter's side files, written at the end only: another stage's (boost-encoder's boost.safetensors) when the
# folder holds no run of ours; they would be deleted, replaced, or applied by eval run with the adapter
SIDE_FILES = (gsm.GSM_CONFIG, gsm.GSM_WEIGHTS, vega.VEGA_CONFIG, vega.VEGA_WEIGHTS, boost.BOOST_CONFIG,
              boost.BOOST_WEIGHTS, gsm.PROMPT_CONFIG)


@dataclass
class TrainResult:
    out: str
    steps: int
    start_step: int
    losses: list[float] = field(default_factory=list)  # per optimizer step run in this call (process mean)
    trainable_parameters: int = 0
    rewards: list[float] = field(default_factory=list)  # GRPO: mean sampled reward per optimizer step
    experts: dict[str, TrainResult] = field(default_factory=dict)  # --experts scale: each expert's run


def run(cfg: TrainGSMConfig, inputs: None = None, on_step: Callable[[int, float], None] | None = None
        ) -> jobs.Summary:
    """Train and write the adapter folder ``cfg.out``; ``on_step(step, loss)`` runs after every optimizer step.
    The config names the QA and scenes (``inputs`` is None); the loop draws its own bar, on the main process only.
    ``Summary.details`` is the ``TrainResult``."""
    cfg.validate()
    if cfg.experts.mode == "scale":
        from spatialctl.stages.train_gsm.experts import run_experts

        result = run_experts(cfg, on_step, _train)
    else:
        result = _train(cfg, on_step)
    return jobs.Summary(done=[cfg.qa], outputs=[cfg.out], details=result)


def _train(cfg: TrainGSMConfig, on_step: Callable[[int, float], None] | None = None, build=build_model,
           router_setup=None) -> TrainResult:
    """The loop. ``build`` makes the model (the scale-experts router passes its own), ``router_setup`` is
    written into train_config.json."""
    cfg.validate()
    t = _setup(cfg, build)
    result = TrainResult(out=cfg.out, steps=t.total_steps, start_step=t.start_step,
                         trainable_parameters=sum(p.numel() for p in t.trainable))
    t.model.train()
    batches = iter(t.loader)
    main = t.accelerator.is_main_process
    bar = tqdm(total=t.total_steps, initial=t.start_step, desc="train-gsm", unit="step", file=sys.stderr,
               disable=cfg.quiet or not main, dynamic_ncols=True)
    started = time.perf_counter()
    for step in range(t.start_step, t.total_steps):
        mean_loss, row = _optimizer_step(cfg, t, batches, step)
        result.losses.append(mean_loss)
        if row:
            result.rewards.append(row["reward"])
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", **({"reward": f"{row['reward']:.3f}"} if row else {}))
        if main and (done % cfg.log_every == 0 or done == t.total_steps or done == 1):
            _append_log(cfg.out, {"step": done, "loss": mean_loss, **row, "lr": t.scheduler.get_last_lr()[0],
                                  "seconds": round(time.perf_counter() - started, 3)})
        if done % cfg.save_every == 0 or done == t.total_steps:
            _save_checkpoint(t.ckpt_root, done, t.accelerator, t.model, t.optimizer, t.scheduler, cfg)
        if on_step is not None:
            on_step(done, mean_loss)
    bar.close()
    _finish(cfg, t, result, router_setup)
    return result


@dataclass
class _Training:
    """Everything one training run holds between its steps."""

    accelerator: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    loader: torch.utils.data.DataLoader
    objective: GRPOObjective | None
    trainable: list
    gsm_cfg: object
    scene_urls: dict
    total_steps: int
    start_step: int
    samples_per_step: int
    ckpt_root: str
    use_bf16: bool


def _setup(cfg: TrainGSMConfig, build) -> _Training:
    """Accelerate, the output folder, data, model, optimizer and schedule, and the state of a resumed run."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    use_bf16 = cfg.bf16 == "yes" or (cfg.bf16 == "auto" and torch.cuda.is_available())
    distributed.check_launch()
    # cpu=True without CUDA: under torchrun / `accelerate launch --multi_gpu` accelerate then runs MULTI_CPU (gloo).
    # gradient_accumulation_steps: accelerate divides each micro-batch loss by it (DeepSpeed's engine does instead)
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not torch.cuda.is_available(),
                              gradient_accumulation_steps=cfg.grad_accum)
    distributed.configure(accelerator, cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    ckpt_root = os.path.join(cfg.out, CKPT_DIR)
    if accelerator.is_main_process:
        _check_out(cfg, ckpt_root)

    records, scene_urls = load_records(cfg.qa, cfg.scenes, cfg.scales)
    tokenizer = qwen.load_tokenizer(cfg.base)
    video_cfg = qwen.VideoProcessorConfig.from_model_dir(resolve_model_dir(cfg.base), max_pixels=cfg.max_pixels or None)
    image_cfg = (qwen.VideoProcessorConfig.from_model_dir(resolve_model_dir(cfg.base), images=True,
                                                          max_pixels=cfg.max_pixels or None) if cfg.views else None)
    encoder = vega.EncoderFeatures(cfg.fusion.encoder) if cfg.fusion.kind == "encoder" else None
    dims = _geometry_dims(cfg, records[0], scene_urls)
    if encoder is not None:
        dims["genfeat"] = encoder.width
    torch.manual_seed(cfg.seed)  # identical initial LoRA/GSM weights on every process
    model = build(cfg, tokenizer, dims, dtype=torch.bfloat16 if use_bf16 else None)
    gsm_cfg = model.gsm.cfg if model.gsm is not None else None
    if accelerator.is_main_process:  # the inputs and the model loaded: only now replace or mark anything in --out
        _claim_out(cfg, ckpt_root)
    accelerator.wait_for_everyone()
    grpo = cfg.objective == "grpo"
    dataset = QADataset(records, scene_urls, tokenizer, video_cfg, gsm_cfg, cfg.views or cfg.num_frames,
                        with_answer=not grpo, prompt_suffix=cfg.grpo.prompt if grpo else "",
                        genfeat=encoder or cfg.fusion.kind == "vega", image_cfg=image_cfg)

    samples_per_step = cfg.batch_size * cfg.grad_accum * world
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(records) / samples_per_step))
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.999), eps=1e-8)
    scheduler = get_cosine_schedule_with_warmup(optimizer, round(cfg.warmup_ratio * total_steps), total_steps)

    start_step = 0
    latest = _latest_checkpoint(ckpt_root) if cfg.resume else None
    if latest is not None:
        start_step = _load_weights(latest, model, cfg, world)
    if accelerator.is_main_process:
        _trim_log(cfg.out, start_step)
    model, optimizer = accelerator.prepare(model, optimizer)
    if latest is not None:
        _load_states(latest, optimizer, scheduler, rank)
        if not cfg.quiet:
            log.info("resumed from %s (step %d of %d)", latest, start_step, total_steps)

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.grad_accum, world, rank, cfg.seed,
                               start_step, total_steps)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    objective = GRPOObjective(cfg, tokenizer, records, total_steps, accelerator) if grpo else None
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         # GRPO builds its batches itself (prompts, then prompts + samples)
                                         collate_fn=list if grpo else lambda ex: gsm.collate(ex, pad_id),
                                         # its own generator: drawing worker seeds from the global RNG would
                                         # shift dropout after a resume
                                         generator=torch.Generator().manual_seed(cfg.seed))
    trainable = [p for p in model.parameters() if p.requires_grad]
    return _Training(accelerator, model, optimizer, scheduler, loader, objective, trainable, gsm_cfg, scene_urls,
                     total_steps, start_step, samples_per_step, ckpt_root, use_bf16)


def _geometry_dims(cfg: TrainGSMConfig, first, scene_urls: dict) -> dict[str, int]:
    """Channels of each geometry source, read from the first record's scene ({} without a GSM; genfeat's for the
    VEGA fusion)."""
    dims = {}
    if cfg.fusion.kind == "vega":
        dims["genfeat"] = int(vega.load_genfeat(scene_urls[first.scene], [0]).shape[-1])
    if not cfg.gsm:
        return dims
    probe_cfg = gsm.GSMConfig(hidden_size=1, num_heads=1, geometry=cfg.geometry, geo_grid=cfg.geo_grid,
                              pointmap_patch=cfg.pointmap_patch, num_queries=cfg.queries)
    frames = gsm.select_frames(_n_frames(scene_urls[first.scene]), first.frames, cfg.num_frames)[:1]
    return {**dims, **gsm.geometry_dims(gsm.load_geometry(scene_urls[first.scene], frames, probe_cfg))}


def _optimizer_step(cfg: TrainGSMConfig, t: _Training, batches, step: int) -> tuple[float, dict]:
    """One optimizer step over ``grad_accum`` micro-batches: (loss, process mean; GRPO's stats row or {})."""
    accelerator = t.accelerator
    step_loss = torch.zeros((), device=accelerator.device)
    step_stats = torch.zeros(5, device=accelerator.device)  # GRPO: reward, answer, format, kl, tokens
    for _micro in range(cfg.grad_accum):
        batch = next(batches)
        # gradients synchronise on the last micro-batch only (DDP/FSDP no_sync; DeepSpeed's accumulation boundary)
        with accelerator.accumulate(t.model):
            with accelerator.autocast():
                if t.objective is None:
                    loss = t.model(batch)
                else:
                    loss, stats = t.objective(t.model, batch, step)
                    step_stats += torch.tensor(list(vars(stats).values()), device=step_stats.device)
            if not torch.isfinite(loss):
                raise SpatialctlError(f"{cfg.qa}: non-finite loss at step {step + 1}; lower --lr or check the data")
            accelerator.backward(loss)
        step_loss += loss.detach() / cfg.grad_accum
    if cfg.max_grad_norm > 0:
        accelerator.clip_grad_norm_(t.trainable, cfg.max_grad_norm)
    t.optimizer.step()
    t.scheduler.step()
    t.optimizer.zero_grad(set_to_none=True)
    mean_loss = float(accelerator.reduce(step_loss, "mean"))
    if t.objective is None:
        return mean_loss, {}
    means = (accelerator.reduce(step_stats, "mean") / cfg.grad_accum).tolist()
    return mean_loss, dict(zip(("reward", "answer_reward", "format_reward", "kl", "completion_tokens"), means,
                               strict=True))


def _finish(cfg: TrainGSMConfig, t: _Training, result: TrainResult, router_setup) -> None:
    """The adapter folder and train_config.json (with provenance), written by the main process."""
    accelerator = t.accelerator
    accelerator.wait_for_everyone()
    with distributed.full_params(accelerator, t.model) as unwrapped:  # every rank: FSDP gathers collectively
        if accelerator.is_main_process:
            gsm.save_adapter(cfg.out, unwrapped, t.gsm_cfg, base=cfg.base,
                             prompt_suffix=cfg.grpo.prompt if cfg.objective == "grpo" else "", views=cfg.views,
                             full_lm=cfg.init_adapter is not None)
    if accelerator.is_main_process:
        provenance = jobs.provenance("train-gsm", cfg, [cfg.qa, *t.scene_urls.values()])
        io.write_json(os.path.join(cfg.out, TRAIN_CONFIG), {
            "config": jobs.config_dict(cfg), "world_size": accelerator.num_processes, "total_steps": t.total_steps,
            "distributed_type": str(accelerator.distributed_type).split(".")[-1],
            "samples_per_step": t.samples_per_step, "mixed_precision": "bf16" if t.use_bf16 else "no",
            "trainable_parameters": result.trainable_parameters, "provenance": provenance,
            **({"router": router_setup} if router_setup else {})})
    accelerator.wait_for_everyone()


def _n_frames(scene_url: str) -> int:
    from spatialctl import store

    return store.open_scene(scene_url).n_frames


def _check_out(cfg: TrainGSMConfig, ckpt_root: str) -> None:
    """Before any work: refuse an --out whose files of our names we did not write, or that holds a run the options
    don't say what to do with."""
    has_ckpt = os.path.isdir(ckpt_root) and any(n.startswith("step-") for n in os.listdir(ckpt_root))
    has_adapter = os.path.isfile(os.path.join(cfg.out, gsm.ADAPTER_CONFIG))
    has_marker = os.path.isfile(os.path.join(cfg.out, RUN_MARKER))
    # ours: the marker every run writes first, a finished run's train_config.json, or step checkpoints (of runs
    # from before the marker)
    owned = has_ckpt or has_marker or os.path.isfile(os.path.join(cfg.out, TRAIN_CONFIG))
    foreign = [n for n in SIDE_FILES if os.path.lexists(os.path.join(cfg.out, n))]
    if foreign and not (owned or has_adapter):
        raise UsageError(f"{os.path.join(cfg.out, foreign[0])}: train-gsm did not write it (no {RUN_MARKER}, "
                         f"{TRAIN_CONFIG} or checkpoints in --out); refusing to replace or delete it, --overwrite "
                         "included (choose another --out)")
    names = (CKPT_DIR, TRAIN_LOG, TRAIN_CONFIG, gsm.ADAPTER_CONFIG, gsm.ADAPTER_WEIGHTS)
    found = [n for n in names if os.path.lexists(os.path.join(cfg.out, n))]
    # files of our names without our record: another tool's, or a user's; replaced, appended to or deleted by us
    if found and not owned:
        raise UsageError(f"{os.path.join(cfg.out, found[0])}: train-gsm did not write it (no {RUN_MARKER}, "
                         f"{TRAIN_CONFIG} or checkpoints in --out); refusing to replace or delete it, --overwrite "
                         "included (choose another --out)")
    if (has_ckpt or has_adapter or has_marker) and not (cfg.resume or cfg.overwrite):
        raise SpatialctlError(f"{cfg.out}: holds a training run; pass --resume to continue it or --overwrite")


def _claim_out(cfg: TrainGSMConfig, ckpt_root: str) -> None:
    """--overwrite's removal of the previous run (ours, checked by ``_check_out``), then the marker, first of all."""
    if cfg.overwrite:
        for name in (CKPT_DIR, TRAIN_LOG, TRAIN_CONFIG, gsm.ADAPTER_CONFIG, gsm.ADAPTER_WEIGHTS, *SIDE_FILES):
            path = os.path.join(cfg.out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(ckpt_root, exist_ok=True)
    io.write_json(os.path.join(cfg.out, RUN_MARKER), {"stage": "train-gsm", "config_hash": jobs.config_hash(cfg)})


def _trim_log(out: str, start_step: int) -> None:
    """The log of the run being continued: rows up to its checkpoint (a killed run logged steps past it, which the
    resumed run logs again); none for a run from step 0."""
    path = os.path.join(out, TRAIN_LOG)
    if not os.path.exists(path):
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line).get("step", 0) <= start_step]
    io.write_text(path, "".join(rows)) if rows else os.remove(path)


def _append_log(out: str, row: dict) -> None:
    with open(os.path.join(out, TRAIN_LOG), "a") as f:
        f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------------- checkpoints


def _trainable_named(model) -> dict[str, torch.Tensor]:
    # a copy even on CPU: FSDP frees the gathered storage when full_params exits
    return {k: p.detach().to("cpu", copy=True).contiguous() for k, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(root: str, step: int, accelerator, model, optimizer, scheduler, cfg: TrainGSMConfig) -> None:
    from safetensors.torch import save_file

    final = os.path.join(root, f"step-{step:06d}")
    tmp = final + ".partial"
    rank = accelerator.process_index
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    with distributed.full_params(accelerator, model) as unwrapped:  # every rank: FSDP gathers collectively
        weights = _trainable_named(unwrapped)
    torch.save(distributed.local_state(optimizer.state_dict()), os.path.join(tmp, f"optimizer-rank{rank}.pt"))
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, os.path.join(tmp, f"rng-rank{rank}.pt"))
    if accelerator.is_main_process:
        save_file(weights, os.path.join(tmp, "trainable.safetensors"), metadata={"step": str(step)})
        torch.save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
        with open(os.path.join(tmp, "state.json"), "w") as f:
            json.dump({"step": step, "world_size": accelerator.num_processes, "config_hash": jobs.config_hash(cfg)}, f)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        io.commit(tmp, final)
        done = sorted(n for n in os.listdir(root) if n.startswith("step-") and not n.endswith(".partial"))
        for old in done[: max(0, len(done) - max(1, cfg.keep_checkpoints))]:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    accelerator.wait_for_everyone()


def _latest_checkpoint(root: str) -> str | None:
    if not os.path.isdir(root):
        return None
    done = sorted(n for n in os.listdir(root) if n.startswith("step-") and not n.endswith(".partial")
                  and os.path.isfile(os.path.join(root, n, "state.json")))
    return os.path.join(root, done[-1]) if done else None


def _load_weights(ckpt: str, model, cfg: TrainGSMConfig, world: int) -> int:
    from safetensors.torch import load_file

    with open(os.path.join(ckpt, "state.json")) as f:
        state = json.load(f)
    if state["config_hash"] != jobs.config_hash(cfg):
        raise SpatialctlError(f"{ckpt}: written with another training configuration; "
                              "resume with the same options or start over with --overwrite")
    if state["world_size"] != world:
        raise SpatialctlError(f"{ckpt}: written by {state['world_size']} processes, resumed with {world}; "
                              "exact resumption needs the same number")
    weights = load_file(os.path.join(ckpt, "trainable.safetensors"))
    params = dict(model.named_parameters())
    if set(weights) != {k for k, p in params.items() if p.requires_grad}:
        raise SpatialctlError(f"{ckpt}/trainable.safetensors: parameters do not match the model being trained")
    with torch.no_grad():
        for k, v in weights.items():
            params[k].copy_(v)
    return int(state["step"])


def _load_states(ckpt: str, optimizer, scheduler, rank: int) -> None:
    state = torch.load(os.path.join(ckpt, f"optimizer-rank{rank}.pt"), map_location="cpu")
    optimizer.load_state_dict(distributed.sharded_state(state, optimizer))
    scheduler.load_state_dict(torch.load(os.path.join(ckpt, "scheduler.pt")))
    rng = torch.load(os.path.join(ckpt, f"rng-rank{rank}.pt"))
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
