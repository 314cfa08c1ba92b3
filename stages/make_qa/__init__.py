"""make-qa: spatial question-answer data from scene stores (4D geometry), four families, verified answers.

``run(config, inputs)`` reads each scene store once into a :class:`SceneData`, asks every chosen family for up to
``per_scene`` questions (spread over the family's task types), removes duplicates, balances option letters,
splits by scene and writes the records (see ``spatialctl.qa_format``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.qa_format import QARecord

from .common import GENERATOR_VERSION, finish, rebalance_letters
from .dsr import KEY_TIMES, DSRGenerator
from .multiturn import MultiTurnGenerator
from .scale import ScaleGenerator
from .scene import SceneData, load_scene
from .static import StaticGenerator

log = logging.getLogger("spatialctl.make_qa")

FAMILIES = {"dsr": DSRGenerator, "static": StaticGenerator, "multiturn": MultiTurnGenerator, "scale": ScaleGenerator}
FORMATS = ("sharegpt", "qwen", "parquet")
MAX_KEY_TIMES = max(max(v) for v in KEY_TIMES.values())  # frames an exported question must keep
GIVE_UP_AFTER = 25  # consecutive failed attempts after which a task type is dropped for a scene
GIVE_UP_FIRST = 8  # ... and for a type that has not given one question yet (most often impossible in the scene)

__all__ = ["MakeQAConfig", "run", "generate_scene", "FAMILIES", "GENERATOR_VERSION"]


@dataclass
class MakeQAConfig:
    out: str = "qa.jsonl"
    families: tuple[str, ...] = ("dsr", "static", "multiturn", "scale")
    per_scene: int = 40  # questions per scene and family, at most
    seed: int = 0
    format: str = "sharegpt"
    split: float = 0.0  # fraction of scenes held out as the benchmark split
    stats: bool = False
    rephrase_model: str | None = None
    max_turns: int = 12
    frames_dir: str | None = None
    max_images: int = 16
    balance: bool = True  # flat answers per type, distractors drawn from real answers (balance.py)
    audit: bool = True  # blind baselines per type, written beside the output (OUT.audit.json / .md)
    quiet: bool = field(default=False, metadata={"runtime": True})

    def validate(self) -> None:
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise UsageError(f"--families: unknown {', '.join(bad) or '(none)'}; choose from {', '.join(FAMILIES)}")
        if self.format not in FORMATS:
            raise UsageError(f"--format {self.format!r}: choose from {', '.join(FORMATS)}")
        if not 0.0 <= self.split < 1.0:
            raise UsageError(f"--split {self.split}: give the benchmark fraction, 0 <= F < 1")
        if self.per_scene < 1:
            raise UsageError("--per-scene must be at least 1")
        if self.frames_dir and self.max_images < MAX_KEY_TIMES:
            raise UsageError(f"--max-images {self.max_images}: a question can refer to {MAX_KEY_TIMES} key frames; "
                             f"give at least {MAX_KEY_TIMES}")
        if not 2 <= self.max_turns <= 12:
            raise UsageError("--max-turns must be between 2 and 12")


def _rng(seed: int, scene_id: str, family: str) -> random.Random:
    # Python's generator: scalar draws cost well under a microsecond, numpy's several.
    return random.Random((seed << 64) ^ (zlib.crc32(scene_id.encode()) << 32) ^ zlib.crc32(family.encode()))


def generate_scene(scene: SceneData, config: MakeQAConfig) -> list[QARecord]:
    """Every family's questions about one scene, deduplicated, deterministic for (seed, scene id)."""
    out: list[QARecord] = []
    for family in config.families:
        rng = _rng(config.seed, scene.scene_id, family)
        gen = FAMILIES[family](scene, config.max_turns) if family == "multiturn" else FAMILIES[family](scene)
        out.extend(_sample_family(scene, gen, rng, config.per_scene))
    return out


def _sample_family(scene: SceneData, gen, rng: random.Random, n: int) -> list[QARecord]:
    """Round-robin over the family's types so every type is represented, until n questions or no type is left."""
    alive = {t: 0 for t in gen.types}  # consecutive failures
    asked: set[str] = set()  # types that gave a question: they get GIVE_UP_AFTER tries, the others GIVE_UP_FIRST
    seen: set[tuple] = set()
    out: list[QARecord] = []
    while len(out) < n and alive:
        for t in rng.sample(list(alive), len(alive)):
            draft = gen.generate(t, rng)
            key = None if draft is None else (t, draft.question, tuple(h["question"] for h in draft.history or []))
            if draft is None or key in seen:
                alive[t] += 1
                if alive[t] >= (GIVE_UP_AFTER if t in asked else GIVE_UP_FIRST):
                    del alive[t]
                continue
            alive[t] = 0
            asked.add(t)
            seen.add(key)
            out.append(finish(scene, gen.family, draft))
            if len(out) >= n:
                break
    return out


def split_scenes(scene_ids: list[str], fraction: float, seed: int) -> dict[str, str]:
    """scene id -> "train" | "bench"; by a seeded hash so a scene's split never depends on the other inputs."""
    ranked = sorted(scene_ids, key=lambda s: hashlib.sha1(f"{seed}:{s}".encode()).hexdigest())
    n_bench = int(round(fraction * len(ranked)))
    if fraction > 0 and len(ranked) >= 2:
        n_bench = min(max(n_bench, 1), len(ranked) - 1)
    bench = set(ranked[:n_bench])
    return {s: ("bench" if s in bench else "train") for s in scene_ids}


def dedup(records: list[QARecord]) -> list[QARecord]:
    seen, out = set(), []
    for r in records:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out


def _scene_ids(inputs: list[str]) -> list[str]:
    from .scene import _scene_name

    names = [_scene_name(p) for p in inputs]
    # Two stores with the same folder name get a short hash of their path, so splits and ids stay per scene.
    return [n if names.count(n) == 1 else f"{n}-{hashlib.sha1(p.encode()).hexdigest()[:6]}" for n, p in zip(names, inputs, strict=False)]


def run(config: MakeQAConfig, inputs: list[str], progress: Callable | None = None) -> dict:
    """Generate, split and write QA for the scene stores ``inputs``; returns what was written and counts."""
    from . import balance, formats, stats

    config.validate()
    if not inputs:
        raise UsageError("make-qa: no scene stores given")
    ids = _scene_ids(inputs)
    if len(set(ids)) != len(ids):
        raise UsageError("make-qa: the same scene store is given twice")
    records: list[QARecord] = []
    loaded = 0
    for url, sid in (progress or (lambda x: x))(list(zip(inputs, ids, strict=False))):
        scene = load_scene(url, sid)
        loaded += 1
        scene_records = generate_scene(scene, config)
        # One-frame questions are image questions: their frame is always exported (beside the output by default).
        chosen = scene_records if config.frames_dir else [r for r in scene_records if len(r.frames) == 1]
        if chosen:
            formats.export_frames(scene, chosen, config.frames_dir or formats.default_frames_dir(config),
                                  config.max_images)
        records.extend(scene_records)
    records = dedup(records)
    if config.balance:
        records = balance.balance(records, config.seed)
    rejected = 0
    if config.rephrase_model:
        from .rephrase import Rephraser

        rejected = Rephraser(config.rephrase_model, seed=config.seed).apply(records)
    rebalance_letters(records, np.random.default_rng([config.seed, 7]))
    split = split_scenes(ids, config.split, config.seed) if config.split > 0 else {s: "train" for s in ids}
    for r in records:
        r.metadata["split"] = split[r.scene]
    written = formats.write_outputs(records, config)
    result = {"scenes": loaded, "records": len(records), "files": written, "rephrase_rejected": rejected,
              "per_split": {k: sum(1 for r in records if r.metadata["split"] == k) for k in ("train", "bench")}}
    if config.audit:
        from . import audit

        report = audit.audit(records, seed=config.seed)
        result["audit"] = report
        result["audit_files"] = list(audit.write_audit(report, config.out))
    if config.stats:
        report = stats.distribution(records)
        path = stats.write_report(report, config.out)
        result["stats"] = report
        result["stats_file"] = path
    if not records:
        raise SpatialctlError(f"{inputs[0]}: no questions could be generated (no tracked objects or geometry?)")
    return result


def outputs_for(config: MakeQAConfig) -> list[str]:
    """The files ``run`` writes for this config (one, or one per split)."""
    from .formats import output_paths

    return list(output_paths(config).values())


__all__ += ["outputs_for", "split_scenes", "dedup", "SceneData", "load_scene"]
