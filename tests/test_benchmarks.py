"""The benchmarks stay runnable: benchmarks/gpu.sh --dry-run runs every GPU benchmark at smoke size on the CPU and
appends each table (device, command, numbers) to the file it is given, leaving benchmarks/RESULTS.md alone; the
harness interleaves variants in rotating order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def test_interleave_rotates_the_order_and_keeps_only_timed_rounds():
    import harness

    calls = []
    out = harness.interleave([(n, lambda n=n: calls.append(n)) for n in "abc"], repeats=3, warmup=1)
    assert calls == list("abc" "bca" "cab" "abc")  # round 0 is the warm-up
    assert all(len(r["seconds"]) == 3 and r["min_s"] <= r["median_s"] <= r["max_s"] for r in out.values())


def test_gpu_script_budgets_fit_in_eight_minutes():
    text = (REPO / "benchmarks" / "gpu.sh").read_text()
    budgets = [int(b) for b in re.findall(r"^bench \w+ (\d+) (?:append|stdout) ", text, re.M)]
    assert len(budgets) == 4 and sum(budgets) < 8 * 60


def test_gpu_script_dry_run_appends_every_table(tmp_path):
    results = tmp_path / "results.md"
    before = (REPO / "benchmarks" / "RESULTS.md").read_bytes()
    env = {**os.environ, "SPATIALCTL_RESULTS": str(results), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = results.read_text()
    assert "gpu.sh --dry-run" in text
    for title, rows in (("reconstruct network", ["reference (mini-dust3r, fp32)", "ours (fp32)"]),
                        ("Global alignment", ["| reference |", "| ours |"]),
                        ("extract-gen-features", ["truncated (blocks 0..1)", "full forward + hook"]),
                        ("train-gsm", ["| off | plain |", "| on | plain |",
                                       "| on-zero2 | CPU: ZeRO-2 config filled, trained without DeepSpeed |"]),
                        ("track", ["gdino-sam2", "sam3"])):
        section = text[text.index(f"### {title}"):]
        assert "Device: " in section and "Command: `python benchmarks/" in section, title
        for row in rows:
            assert row in section, (title, row)
    assert (REPO / "benchmarks" / "RESULTS.md").read_bytes() == before
