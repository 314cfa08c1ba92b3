"""Our π³ / Pi3X against the reference code's outputs (tests/golden/pi3, made by tests/golden/make_pi3_golden.py
from github.com/yyfz/Pi3 at the commit in each file's metadata) on the same seeded weights and inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pi3_tiny import PI3X_CASES, fill_seeded_
from safetensors import safe_open

from spatialctl.models.pi3 import Pi3, Pi3Config, load_model, save_model
from spatialctl.models.pi3x import Pi3X, Pi3XConfig

GOLDEN = Path(__file__).parent / "golden" / "pi3"
TOL = 1e-4

pytestmark = pytest.mark.usefixtures("one_thread")


def golden(arch: str) -> tuple[dict, dict]:
    with safe_open(str(GOLDEN / f"{arch}_small.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


@pytest.mark.parametrize("arch", ["pi3", "pi3x"])
def test_outputs_equal_the_reference(arch, tmp_path):
    tensors, meta = golden(arch)
    assert len(meta["commit"]) == 40
    config = json.loads(meta["config"])
    model = Pi3(Pi3Config(**config)) if arch == "pi3" else Pi3X(Pi3XConfig(**config))
    # Same key names and shapes as the reference's state dict: the published safetensors load as they are.
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == json.loads(meta["state_dict"])
    fill_seeded_(model, int(meta["seed"]))
    # Through the user's path: saved, then loaded by folder.
    model = load_model(str(save_model(model, tmp_path / arch)), arch)
    inputs = {k[len("input."):]: v for k, v in tensors.items() if k.startswith("input.")}
    for case in json.loads(meta["cases"]):
        conditions = {name: inputs[name] for name in PI3X_CASES[case]}
        with torch.no_grad():
            res = model(inputs["images"], **conditions)
        outputs = [k.split(".", 1)[1] for k in tensors if k.startswith(case + ".")]
        assert {"points", "conf", "camera_poses"} <= set(outputs)
        for name in outputs:
            expect = tensors[f"{case}.{name}"]
            diff = (res[name].float() - expect).abs().max().item()
            assert diff <= TOL, f"{arch}/{case}/{name}: max abs diff {diff:.2e}"
        # the conditions change the outputs (a condition silently ignored would pass the comparison above
        # only if the reference ignored it too)
        if case != "plain":
            assert (tensors[f"{case}.points"] - tensors["plain.points"]).abs().max() > 1e-3


def test_wrong_architecture_and_missing_checkpoint(tmp_path):
    from pi3_tiny import tiny_model

    from spatialctl.errors import SpatialctlError

    folder = save_model(tiny_model("pi3", small=True), tmp_path / "pi3")
    with pytest.raises(SpatialctlError, match="a pi3 checkpoint, but --backend pi3x"):
        load_model(str(folder), "pi3x")
    with pytest.raises(SpatialctlError, match="huggingface-cli download yyfz233/Pi3X"):
        load_model("yyfz233/Pi3X", "pi3x")
    with pytest.raises(SpatialctlError, match="no such"):
        load_model(str(tmp_path / "nothing.safetensors"), "pi3")


def test_unconditioned_pi3x_skips_the_condition_branches(tmp_path):
    from pi3_tiny import save_tiny

    folder = save_tiny(tmp_path / "x", "pi3x")
    full, plain = load_model(str(folder), "pi3x"), load_model(str(folder), "pi3x", conditioned=False)
    assert not hasattr(plain, "depth_encoder")
    images = torch.rand(1, 2, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = full(images), plain(images)
    torch.testing.assert_close(a["points"], b["points"])
