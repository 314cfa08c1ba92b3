"""What every benchmark shares, so a sceptical reader can trust its tables.

- ``interleave``: variants run in turn (A B C, then B C A, ...), each ``repeats`` times after a warm-up, so a
  machine that slows down or speeds up (other jobs, clocks, caches) hits every variant alike; the table gives the
  median and the spread (min-max) of each.
- ``in_subprocess``: one variant in a fresh Python process; its peak resident memory is that process's own
  ``VmHWM`` (from /proc), so one variant's peak never hides inside another's.
- On CUDA the peak is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` before each variant.
- ``append_results``: a markdown table with the device, the numbers and the command that made them, appended to
  ``benchmarks/RESULTS.md`` (or the file ``$SPATIALCTL_RESULTS`` names; ``benchmarks/gpu.sh --dry-run`` uses that).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def vmhwm_bytes() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _sync(device) -> None:
    if getattr(device, "type", device) == "cuda":
        import torch

        torch.cuda.synchronize()


def interleave(variants: Sequence[tuple[str, Callable[[], object]]], repeats: int = 3, warmup: int = 1,
               device=None) -> dict[str, dict]:
    """name -> {"seconds": [...], "cpu_seconds": [...], "median_s", "min_s", "max_s", "median_cpu_s",
    "peak_cuda_bytes"} over ``repeats`` interleaved runs (rotating the order each round) after ``warmup`` rounds."""
    cuda = getattr(device, "type", device) == "cuda"
    out = {name: {"seconds": [], "cpu_seconds": [], "peak_cuda_bytes": 0} for name, _ in variants}
    n = len(variants)
    for round_ in range(warmup + repeats):
        for k in range(n):
            name, fn = variants[(k + round_) % n]
            if cuda:
                import torch

                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if round_ < warmup:
                continue
            out[name]["seconds"].append(wall)
            out[name]["cpu_seconds"].append(cpu)
            if cuda:
                import torch

                out[name]["peak_cuda_bytes"] = max(out[name]["peak_cuda_bytes"], torch.cuda.max_memory_allocated())
    for r in out.values():
        r["median_s"], r["min_s"], r["max_s"] = statistics.median(r["seconds"]), min(r["seconds"]), max(r["seconds"])
        r["median_cpu_s"] = statistics.median(r["cpu_seconds"])
    return out


def in_subprocess(argv: Sequence[str], env: dict | None = None) -> dict:
    """Run ``python argv...`` (a benchmark's worker mode, which prints one JSON object as its last line) in a fresh
    process; returns that object with ``peak_rss_bytes`` (the worker's VmHWM, which it reports itself) kept."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        raise RuntimeError(f"{' '.join(argv)}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def device_line(device=None) -> str:
    """The hardware the numbers came from, in words."""
    if getattr(device, "type", device) == "cuda":
        import torch

        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}, torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"


def markdown_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (header, key, format spec) -> a markdown table."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key, "")
            cells.append(format(value, fmt) if isinstance(value, (int, float)) and fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def append_results(title: str, table: str, command: str, device=None, notes: str = "") -> Path:
    """Append a section (title, device, command, table) to the results file; returns its path."""
    path = Path(os.environ.get("SPATIALCTL_RESULTS") or RESULTS)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = (f"\n### {title} ({stamp})\n\nDevice: {device_line(device)}. Command: `{command}`.\n"
            + (f"{notes}\n" if notes else "") + f"\n{table}\n")
    with open(path, "a") as f:
        f.write(text)
    return path


def mb(nbytes: float) -> float:
    return nbytes / 2**20
