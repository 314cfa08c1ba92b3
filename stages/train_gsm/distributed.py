"""What the loop needs beyond accelerate for FSDP and DeepSpeed runs: FSDP2 on CPU, full weights for saving,
optimizer shards as plain tensors, and the DeepSpeed values that come from our options.

The launch config (``accelerate launch --config_file configs/accelerate/...``) chooses the backend; this module
only makes our loop correct under it.
"""

from __future__ import annotations

import contextlib
import os

import torch

from spatialctl.errors import UsageError


def check_launch() -> None:
    """Before ``Accelerator(...)``: a DeepSpeed launch without CUDA would silently train without DeepSpeed
    (accelerate only enables it on GPUs), so it is an error."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and not torch.cuda.is_available():
        raise UsageError("train-gsm: the DeepSpeed launch config needs CUDA GPUs and none is visible; on CPU "
                         "use configs/accelerate/fsdp.yaml or plain `accelerate launch --multi_gpu`")


def configure(accelerator, cfg) -> None:
    """Called right after ``Accelerator(...)``, before ``prepare``."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    wants_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if wants_fsdp and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate turns a run into FSDP only on accelerator devices (AcceleratorState: MULTI_GPU, ...), and a
        # CPU run would silently train replicated; torch's fully_shard itself shards over gloo on CPU. Set in
        # both states, as AcceleratorState itself does (prepare reads PartialState's)
        accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
    if accelerator.distributed_type == DistributedType.FSDP:
        if not accelerator.is_fsdp2:
            # FSDP1 renames parameters inside its flat units (_fsdp_wrapped_module), which the adapter files
            # are keyed by
            raise UsageError("train-gsm: FSDP needs fsdp_version: 2 in the accelerate config "
                             "(see configs/accelerate/fsdp.yaml)")
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    if sharded and (cfg.objective == "grpo" or cfg.experts.mode != "none" or cfg.boost):
        # GRPO samples from the unwrapped model outside the wrapper's forward (FSDP's weights are shards there);
        # the scale experts prepare one model per expert (FSDP2 takes one per process); the boost files are read
        # from the vision blocks' state_dict, which FSDP2 reshards. None is tested sharded.
        raise UsageError(f"train-gsm: {accelerator.distributed_type.value} runs the SFT objective without "
                         "--experts or --boost only; use DDP (accelerate launch --multi_gpu) for GRPO, --experts "
                         "and --boost")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        _fill_deepspeed(accelerator.state.deepspeed_plugin, cfg, accelerator.num_processes)


def _fill_deepspeed(plugin, cfg, world: int) -> None:
    """The DeepSpeed config's batch, accumulation and clipping values from our options: "auto" takes ours, a
    number that disagrees is an error (the run would not be the one the options describe)."""
    if plugin.zero_stage == 3:
        # ZeRO-3 partitions the parameters themselves: saving would need them gathered first
        raise UsageError("train-gsm: DeepSpeed ZeRO stage 3 is not supported (use stage 2: "
                         "configs/accelerate/deepspeed_zero2.yaml, or FSDP: configs/accelerate/fsdp.yaml)")
    if cfg.resume:
        raise UsageError("train-gsm: --resume under DeepSpeed is not supported (its ZeRO optimizer keeps its own "
                         "state layout); resume with DDP or FSDP")
    ours = {"train_micro_batch_size_per_gpu": cfg.batch_size, "gradient_accumulation_steps": cfg.grad_accum,
            "train_batch_size": cfg.batch_size * cfg.grad_accum * world, "gradient_clipping": cfg.max_grad_norm}
    config = plugin.deepspeed_config
    for key, value in ours.items():
        if key not in config or plugin.is_auto(key):
            config[key] = value
        elif float(config[key]) != float(value):
            raise UsageError(f"train-gsm: the DeepSpeed config sets {key}={config[key]} but the options give "
                             f"{value}; set it to \"auto\" or pass the matching option")


@contextlib.contextmanager
def full_params(accelerator, model):
    """The unwrapped model with every parameter whole for the duration; every process must enter (FSDP2
    all-gathers the shards), and the weights must only be read, not written. FSDP holds the whole model on every
    process meanwhile (saving then needs the memory of one unsharded copy)."""
    from accelerate.utils import DistributedType

    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type != DistributedType.FSDP:
        yield unwrapped
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in unwrapped.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield unwrapped
    finally:
        for unit in units:
            unit.reshard()


def local_state(state: dict) -> dict:
    """An optimizer state_dict with FSDP2's DTensor moments as this process's local shards (plain tensors load
    without the device mesh and stay readable with torch.load(weights_only=True))."""
    from torch.distributed.tensor import DTensor

    if "state" not in state:  # DeepSpeed's ZeRO optimizer: its own layout, plain tensors
        return state
    per_param = {i: {k: v.to_local() if isinstance(v, DTensor) else v for k, v in s.items()}
                 for i, s in state["state"].items()}
    return {**state, "state": per_param}


def sharded_state(state: dict, optimizer) -> dict:
    """``local_state``'s inverse for this optimizer: each local shard back into its parameter's DTensor layout."""
    from torch.distributed.tensor import DTensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = {}
    for i, s in state["state"].items():
        p = params[int(i)]
        if isinstance(p, DTensor):
            s = {k: DTensor.from_local(v, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                       stride=p.stride())
                 if isinstance(v, torch.Tensor) and v.shape == p.to_local().shape and v.ndim > 0 else v
                 for k, v in s.items()}
        out[i] = s
    return {**state, "state": out}
