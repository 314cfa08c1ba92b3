"""What `spatialctl train-gsm` prints: the steps, the loss (and GRPO reward) from first to last step.

Multi-GPU / multi-node: `accelerate launch -m spatialctl train-gsm ...` or `torchrun -m spatialctl train-gsm ...`
(DDP, FSDP or DeepSpeed come from accelerate's own config).
"""

from __future__ import annotations

import typer


def report(config, summary) -> None:
    result = summary.details
    if config.quiet:
        return
    first, last = (result.losses[0], result.losses[-1]) if result.losses else (float("nan"),) * 2
    rewards = f", reward {result.rewards[0]:.3f} -> {result.rewards[-1]:.3f}" if result.rewards else ""
    typer.echo(f"trained steps {result.start_step}..{result.steps}, loss {first:.4f} -> {last:.4f}{rewards}; "
               f"adapter in {config.out}", err=True)
