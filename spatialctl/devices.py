"""The one `--device` resolver: every stage turns its device option into a torch device here."""

from __future__ import annotations

import functools

from spatialctl.errors import UsageError


def resolve_device(name: str | None):
    """"auto" (or None) -> cuda when available, else cpu; a named device must exist (cuda needs CUDA)."""
    import torch

    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UsageError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:1, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def no_grad(fn):
    """``torch.no_grad()`` entered at call time, so that defining ``fn`` does not import torch (a missing model's
    error must come before torch's seconds of import)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return wrapper


def inference_mode(fn):
    """``torch.inference_mode()`` entered at call time, like `no_grad`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return fn(*args, **kwargs)

    return wrapper
