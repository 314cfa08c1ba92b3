"""boost-encoder: SpatialBoost's three stages on a vision encoder and a text LLM, saving a small encoder delta.

``run(config, qa_paths)`` runs the stages ``config.stage`` names into ``config.out``:

- stage 1 writes ``projector.safetensors``;
- stage 2 rewrites it and writes ``llm_lora/`` (a peft adapter);
- stage 3 writes ``boost.safetensors`` (Attn⁺ weights and gates only) and ``boost_config.json``; with
  ``merge`` also ``merged/``, a full model folder.

``train_state.json`` records each finished stage (losses, config, input fingerprints); ``train_log.jsonl`` every
step's loss. A later stage run on its own reads the earlier stages' files from ``out``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from spatialctl import boost, io, jobs, qa_format
from spatialctl.boost import parse_layers
from spatialctl.config import check_fields, device_opt, opt, quiet_opt
from spatialctl.devices import resolve_device
from spatialctl.errors import SpatialctlError, UsageError

log = logging.getLogger("spatialctl.boost_encoder")

STAGES = ("1", "2", "3", "all")
DTYPES = ("float32", "bfloat16", "float16")
STATE_FILE = "train_state.json"
LOG_FILE = "train_log.jsonl"


@dataclass
class BoostConfig:
    out: str = opt(help="Output folder (projector, LoRA, boost.safetensors).", short="-o")
    encoder: str = opt(boost.DEFAULT_ENCODER, "Vision encoder: hub id or folder (DINOv3-ViT, DINOv2, SigLIP2 vision).")
    llm: str = opt("Qwen/Qwen2.5-7B-Instruct", "Text LLM (causal LM): hub id or folder.")
    stage: str = opt("all", "1 (projector), 2 (projector + LoRA), 3 (Attn⁺ and gates) or all.", choices=STAGES)
    layers: list[int] | None = opt(None, "Encoder layers to boost: all, or indices like 0,1,-1.", parse=parse_layers,
                                   show_default="all")  # None: every attention layer
    per_channel: bool = opt(False, "One gate per hidden channel instead of one per layer.")
    image_size: int = opt(224, "Side of a square of the same area the frames are resized to (aspect kept, "
                          "patch-aligned).")
    pool: int = opt(2, "Average-pool the patch grid by this factor before projecting.")
    epochs: int = opt(1, "Passes over the records per stage.")
    max_steps: int | None = opt(None, "Steps per stage (one record a step); overrides --epochs. Default: --epochs "
                                "passes.", show_default=False)
    lr_projector: float = opt(1e-3, "Learning rate of stage 1.")
    lr_llm: float = opt(2e-4, "Learning rate of stage 2 (projector + LoRA).")
    lr_boost: float = opt(1e-4, "Learning rate of stage 3 (Attn⁺ and gates).")
    lora_rank: int = opt(16, "LoRA rank of stage 2.")
    lora_alpha: int = opt(32, "LoRA alpha of stage 2.")
    max_length: int = opt(1024, "Longest text, in tokens, per record.")
    max_records: int | None = opt(None, "Use only the first N records. Default: all.", show_default=False)
    scenes_dir: str | None = opt(None, "Folder of scene stores named by the records' `scene`. Default: the records' "
                                 "images, else the store beside their video.", flag="--scenes", show_default=False)
    seed: int = opt(0, "Random seed (projector/LoRA init, record order).")
    dtype: str = opt("float32", "float32, bfloat16 or float16.", choices=DTYPES)
    merge: bool = opt(False, "Also write OUT/merged/, a full boosted model folder.")
    device: str = device_opt()
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        check_fields(self)
        for name in ("image_size", "pool", "epochs", "lora_rank", "lora_alpha", "max_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError("--max-steps must be >= 1")
        if self.merge and self.stage not in ("3", "all"):
            raise UsageError("--merge needs stage 3 (--stage 3 or all)")

    @property
    def stages(self) -> list[int]:
        return [1, 2, 3] if self.stage == "all" else [int(self.stage)]


def _read_records(paths: list[str], limit: int | None) -> list[qa_format.QARecord]:
    records = []
    for p in paths:
        records += qa_format.read_qa(p)
    if not records:
        raise SpatialctlError(f"{paths[0]}: no QA records")
    return records[:limit] if limit else records


def _read_state(out: str) -> dict:
    path = os.path.join(out, STATE_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SpatialctlError(f"{path}: unreadable ({type(e).__name__})") from e


def _check_owned(out: str) -> None:
    """Later runs replace and delete the files boost-encoder writes in ``out``: refuse (exit 2, before any work) a
    folder that holds files of those names without our state file, i.e. files boost-encoder did not write."""
    from .projector import PROJECTOR_FILE

    if not os.path.isdir(out) or os.path.isfile(os.path.join(out, STATE_FILE)):
        if os.path.exists(out) and not os.path.isdir(out):
            raise UsageError(f"{out}: exists and is not a folder; give an output folder with --out")
        return
    names = (PROJECTOR_FILE, "llm_lora", boost.BOOST_WEIGHTS, boost.BOOST_CONFIG, "merged", LOG_FILE)
    found = [n for n in names if os.path.lexists(os.path.join(out, n))]
    if found:
        raise UsageError(f"{os.path.join(out, found[0])}: boost-encoder did not write it (no {STATE_FILE} in --out); "
                         "refusing to replace it (choose another --out or move it away)")


def _remove_stale(out: str, first_stage: int) -> None:
    """Outputs of later stages were trained on the earlier stages' old results: a rerun of those replaces them."""
    import shutil

    stale = {1: ["llm_lora", boost.BOOST_WEIGHTS, boost.BOOST_CONFIG, "merged", LOG_FILE],
             2: [boost.BOOST_WEIGHTS, boost.BOOST_CONFIG, "merged"], 3: ["merged"]}[first_stage]
    for name in stale:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def run(config: BoostConfig, qa_paths: list[str], progress: Callable[[Iterable], Iterable] | None = None
        ) -> jobs.Summary:
    """Run the stages ``config.stages`` into ``config.out``; ``Summary.details`` holds each stage's numbers."""
    config.validate()
    _check_owned(config.out)
    os.makedirs(config.out, exist_ok=True)
    records = _read_records(qa_paths, config.max_records)
    state = _read_state(config.out)
    if state and state.get("encoder") != config.encoder and config.stages[0] != 1:
        raise SpatialctlError(f"{config.out}: earlier stages used encoder {state.get('encoder')!r}, not "
                              f"{config.encoder!r}; use another --out")
    tokenizer, models = _load_models(config)
    if config.stages[0] == 1:
        state = {}
    _remove_stale(config.out, config.stages[0])
    provenance = jobs.provenance("boost-encoder", config, qa_paths)
    state.update({"encoder": config.encoder, "llm": config.llm, "family": models.family.name,
                  "provenance": provenance})
    state.setdefault("stages", {})
    # written before training: a run killed in its first stage leaves files a rerun may replace (they are ours)
    io.write_json(os.path.join(config.out, STATE_FILE), state)
    files: list[str] = []
    for stage in config.stages:
        stats, written = _run_stage(stage, config, models, tokenizer, records, qa_paths, provenance, progress)
        files += written
        state["stages"][str(stage)] = stats
        io.write_json(os.path.join(config.out, STATE_FILE), state)
        log.info("stage %d: loss %.4f -> %.4f over %d steps", stage, stats["first_loss"], stats["last_loss"],
                 stats["steps"])
    if config.merge:
        files.append(boost.merge(config.encoder, config.out, os.path.join(config.out, "merged")))
    files.append(os.path.join(config.out, STATE_FILE))
    return jobs.Summary(done=list(qa_paths), outputs=sorted(set(files)), details=dict(state["stages"]))


def _load_models(config: BoostConfig):
    """(tokenizer, Models): the LLM, the base encoder and the projector as the first stage to run needs them (a
    new projector for stage 1, the saved one after it; stage 3 starts from the LLM with stage 2's LoRA merged)."""
    import torch

    from . import projector, train

    device = resolve_device(config.device)
    dtype = getattr(torch, config.dtype)
    torch.manual_seed(config.seed)
    tokenizer, llm, _ = train.load_llm(config.llm, dtype, device)
    encoder, family, encoder_dir = boost.load_encoder(config.encoder, dtype=dtype)
    if boost.boosted_modules(encoder):
        raise SpatialctlError(f"{encoder_dir}: already a boosted (merged) encoder; pass the base encoder")
    encoder.to(device)
    prep = boost.ImagePrep.for_model(encoder, family, encoder_dir, config.image_size)
    in_dim, out_dim = int(encoder.config.hidden_size), int(llm.config.hidden_size)
    if config.stages[0] == 1:
        proj = projector.Projector(in_dim, out_dim, config.pool)
    else:
        proj = projector.load_projector(config.out, in_dim, out_dim)
    proj.to(device=device, dtype=dtype)
    if config.stages[0] == 3:
        llm = train.merge_lora(llm, config.out)
    return tokenizer, train.Models(encoder, family, prep, proj, llm, device, dtype)


def _run_stage(stage: int, config: BoostConfig, models, tokenizer, records, qa_paths: list[str], provenance: dict,
               progress) -> tuple[dict, list[str]]:
    """Train one stage and save what it makes; returns its numbers and the files written."""
    from . import data, projector, train

    layers = None
    if stage == 2:
        models.llm = train.add_lora(models.llm, config.lora_rank, config.lora_alpha)
    if stage == 3:
        if hasattr(models.llm, "merge_and_unload"):
            models.llm = models.llm.merge_and_unload()
        layers = boost.wrap(models.encoder, models.family, config.layers, config.per_channel)
    frames = data.FrameSource(str(Path(qa_paths[0]).parent), config.scenes_dir)
    examples = data.build_examples(data.select_records(records, stage, qa_paths[0]), stage, tokenizer, frames,
                                   config.max_length)
    log.info("stage %d: %d examples", stage, len(examples))
    lr = {1: config.lr_projector, 2: config.lr_llm, 3: config.lr_boost}[stage]
    wrap = (lambda it: progress(it, f"stage {stage}")) if progress else None  # noqa: E731
    stats = train.train(models, examples, stage, lr=lr, epochs=config.epochs, max_steps=config.max_steps,
                        seed=config.seed + stage, log_file=os.path.join(config.out, LOG_FILE), progress=wrap)
    stats["examples"] = len(examples)
    files = []
    if stage in (1, 2):
        files.append(projector.save_projector(models.projector, config.out))
    if stage == 2:
        files.append(train.save_lora(models.llm, config.out))
    if stage == 3:
        files += _save_boost(config, models, layers, provenance)
        alphas = [float(m.alpha.mean()) for _, m in boost.boosted_modules(models.encoder)]
        stats["alpha_mean"] = float(sum(alphas) / len(alphas))
    return stats, files


def _save_boost(config: BoostConfig, models, layers, provenance: dict) -> list[str]:
    # A local folder is recorded absolute so `boost.load` works from any working directory.
    encoder_ref = os.path.abspath(config.encoder) if os.path.isdir(config.encoder) else config.encoder
    spec = boost.BoostSpec(encoder=encoder_ref, family=models.family.name, layers=layers,
                           per_channel=config.per_channel, model_type=str(models.encoder.config.model_type))
    io.write_json(os.path.join(config.out, boost.BOOST_CONFIG), {
        "llm": config.llm, "projector": models.projector.meta(), "image_size": config.image_size,
        "provenance": provenance})
    boost.save_delta(models.encoder, spec, config.out)
    return [os.path.join(config.out, boost.BOOST_WEIGHTS), os.path.join(config.out, boost.BOOST_CONFIG)]


__all__ = ["BoostConfig", "run", "STAGES"]
