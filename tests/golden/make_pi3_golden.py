"""Golden outputs of the reference π³ / Pi3X code (github.com/yyfz/Pi3) on seeded random weights.

The reference is not installable and stays out of this repository. To regenerate (outside the repo):

    git clone https://github.com/yyfz/Pi3 /tmp/pi3-ref && git -C /tmp/pi3-ref checkout 9fa3ddb3f8d53041f8b2738df404f62223bbaa7b
    python tests/golden/make_pi3_golden.py --reference /tmp/pi3-ref              # writes tests/golden/pi3/*.safetensors
    python tests/golden/make_pi3_golden.py --reference /tmp/pi3-ref --full-size  # prints ours vs reference, full size

It needs only torch, numpy, huggingface_hub (the model files import nothing else).

Small configurations: the reference hard-codes its widths, so a scratch copy of it is made with these
substitutions and nothing else (each a no-op at full size): in ``pi3/models/pi3.py`` and ``pi3x.py``
1024 -> 64, 512 -> 32, ``num_heads`` 16 -> 4 and 8 -> 2; in DINOv2's ``vit_large`` embed_dim 1024 -> 64,
num_heads 16 -> 4. Depths (24 encoder, 36 decoder, 5 per head decoder), the 518-pixel position grid, register
counts, conv-head widths and every line of forward code are the reference's. Weights: ``pi3_tiny.fill_seeded_``
(seed in each file's metadata). Inputs and conditions: ``pi3_tiny.fixed_inputs``. The golden files hold the
inputs, the outputs, and the state dict's key names and shapes.

Full size: the unmodified reference ``Pi3()`` and ``Pi3X()`` and ours at the published widths, the same seeded
weights, on 2 frames of 126 x 168 in fp32 on the CPU; max abs differences are printed (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
from pi3_tiny import PI3X_CASES, TINY, TINY_X, fill_seeded_, fixed_inputs  # noqa: E402

SEED = 0
OUTPUTS = ("points", "local_points", "conf", "camera_poses")
OUTPUTS_X = OUTPUTS + ("rays", "metric")


def scaled_copy(reference: Path) -> Path:
    """A scratch copy of the reference with the widths of the small configuration."""
    root = Path(tempfile.mkdtemp(prefix="pi3-ref-small-"))
    shutil.copytree(reference / "pi3", root / "pi3")
    for name in ("pi3.py", "pi3x.py"):
        path = root / "pi3" / "models" / name
        text = path.read_text()
        text = text.replace("1024", "64").replace("512", "32")
        text = re.sub(r"num_heads(\s*)=(\s*)16\b", r"num_heads\1=\g<2>4", text)
        text = re.sub(r"num_heads(\s*)=(\s*)8\b", r"num_heads\1=\g<2>2", text)
        path.write_text(text)
    vit = root / "pi3" / "models" / "dinov2" / "models" / "vision_transformer.py"
    text = vit.read_text()
    old = "embed_dim=1024,\n        depth=24,\n        num_heads=16,"
    assert text.count(old) == 1, "vit_large not found as expected"
    vit.write_text(text.replace(old, "embed_dim=64,\n        depth=24,\n        num_heads=4,"))
    return root


def import_reference(root: Path):
    for mod in [m for m in sys.modules if m == "pi3" or m.startswith("pi3.")]:
        del sys.modules[mod]
    sys.path.insert(0, str(root))
    try:
        from pi3.models.pi3 import Pi3
        from pi3.models.pi3x import Pi3X
    finally:
        sys.path.remove(str(root))
    return Pi3, Pi3X


def commit_of(reference: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return (reference / "COMMIT").read_text().strip()


def conditions(inputs: dict, case: str) -> dict:
    return {name: inputs[name] for name in PI3X_CASES[case]}


@torch.no_grad()
def run_reference_small(reference: Path, out: Path, commit: str) -> None:
    from safetensors.torch import save_file

    Pi3, Pi3X = import_reference(scaled_copy(reference))
    inputs = fixed_inputs()
    for arch, cls, config in (("pi3", Pi3, TINY), ("pi3x", Pi3X, TINY_X)):
        torch.manual_seed(0)
        model = fill_seeded_(cls().eval(), SEED)
        keys = {k: list(v.shape) for k, v in model.state_dict().items()}
        tensors = {f"input.{k}": v.contiguous() for k, v in inputs.items()}
        cases = {"plain": ()} if arch == "pi3" else PI3X_CASES
        for case in cases:
            res = model(inputs["images"], **conditions(inputs, case)) if arch == "pi3x" else model(inputs["images"])
            names = OUTPUTS if arch == "pi3" else OUTPUTS_X
            tensors.update({f"{case}.{k}": res[k].float().contiguous() for k in names})
        meta = {"reference": "https://github.com/yyfz/Pi3", "commit": commit, "seed": str(SEED),
                "config": json.dumps(config), "state_dict": json.dumps(keys), "cases": json.dumps(list(cases))}
        save_file(tensors, str(out / f"{arch}_small.safetensors"), metadata=meta)
        print(f"{arch}: {len(keys)} tensors, {sum(torch.Size(s).numel() for s in keys.values())} parameters,"
              f" cases {list(cases)}")


@torch.no_grad()
def run_full_size(reference: Path) -> dict:
    """Unmodified reference vs ours at the published size; one model in memory at a time."""
    sys.path.insert(0, str(REPO))
    from spatialctl.models.pi3 import Pi3 as OurPi3
    from spatialctl.models.pi3x import Pi3X as OurPi3X

    RefPi3, RefPi3X = import_reference(reference)
    inputs = fixed_inputs(n=2, h=126, w=168)
    report = {}
    for arch, ref_cls, our_cls in (("pi3", RefPi3, OurPi3), ("pi3x", RefPi3X, OurPi3X)):
        cases = {"plain": ()} if arch == "pi3" else PI3X_CASES
        results = {}
        for who, cls in (("reference", ref_cls), ("ours", our_cls)):
            model = fill_seeded_(cls().eval(), SEED)
            results[who] = {}
            for case in cases:
                start = time.process_time()
                res = model(inputs["images"], **(conditions(inputs, case) if arch == "pi3x" else {}))
                results[who][case] = ({k: res[k].float() for k in (OUTPUTS if arch == "pi3" else OUTPUTS_X)},
                                      time.process_time() - start)
            params = sum(p.numel() for p in model.parameters())
            del model
            gc.collect()
        for case in cases:
            ref, t_ref = results["reference"][case]
            ours, t_ours = results["ours"][case]
            diffs = {k: float((ref[k] - ours[k]).abs().max()) for k in ref}
            report[f"{arch}/{case}"] = {"params": params, "max_abs_diff": diffs, "cpu_s_reference": round(t_ref, 2),
                                        "cpu_s_ours": round(t_ours, 2),
                                        "max_abs_value": {k: float(ref[k].abs().max()) for k in ref}}
            print(f"{arch}/{case}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
                  + f"  (CPU s: ref {t_ref:.1f}, ours {t_ours:.1f})", flush=True)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", type=Path, required=True, help="checkout of github.com/yyfz/Pi3")
    ap.add_argument("--out", type=Path, default=HERE / "pi3")
    ap.add_argument("--full-size", action="store_true", help="compare ours with the reference at full size")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    commit = commit_of(args.reference)
    print(f"reference commit {commit}")
    if args.full_size:
        print(json.dumps(run_full_size(args.reference), indent=1))
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        run_reference_small(args.reference, args.out, commit)


if __name__ == "__main__":
    main()
