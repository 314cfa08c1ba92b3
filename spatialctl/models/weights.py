"""Loading a state dict into a model we built from its config: every key must match, else one clear error."""

from __future__ import annotations

from torch import nn

from spatialctl.errors import SpatialctlError


def load_state(model: nn.Module, state: dict, source: str) -> None:
    """``model.load_state_dict(state)`` that names ``source`` and what is missing or unexpected when they differ."""
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]})")
    if result.unexpected_keys:
        problems.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})")
    if problems:
        raise SpatialctlError(f"{source}: weights do not match the model: " + ", ".join(problems))
