"""make-qa: spatial question-answer data from scene stores (4D geometry), four families, verified answers.

``run(config, inputs)`` reads each scene store once into a :class:`SceneData`, asks every chosen family for up to
``per_scene`` questions (spread over the family's task types), removes duplicates, balances option letters,
splits by scene and writes the records (see ``spatialctl.qa_format``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spatialctl import io, jobs, store
from spatialctl.config import check_fields, opt, quiet_opt, shard_opt, split_list
from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.qa_format import QARecord, check_replaceable

from .common import GENERATOR_VERSION, finish, rebalance_letters
from .dsr import KEY_TIMES, DSRGenerator
from .multiturn import MultiTurnGenerator
from .scale import ScaleGenerator
from .scene import SceneData, load_scene
from .static import StaticGenerator

STAGE = "make-qa"
log = logging.getLogger("spatialctl.make_qa")

FAMILIES = {"dsr": DSRGenerator, "static": StaticGenerator, "multiturn": MultiTurnGenerator, "scale": ScaleGenerator}
FORMATS = ("sharegpt", "qwen", "parquet")
MAX_KEY_TIMES = max(max(v) for v in KEY_TIMES.values())  # frames an exported question must keep
GIVE_UP_AFTER = 25  # consecutive failed attempts after which a task type is dropped for a scene
GIVE_UP_FIRST = 8  # ... and for a type that has not given one question yet (most often impossible in the scene)

__all__ = ["MakeQAConfig", "run", "generate_scene", "FAMILIES", "GENERATOR_VERSION"]


@dataclass
class MakeQAConfig:
    out: str = opt("qa.jsonl", "Output file; with --split, OUT's stem gets .train/.bench.", short="-o")
    families: tuple[str, ...] = opt(("dsr", "static", "multiturn", "scale"), "Comma-separated families: dsr, static, "
                                    "multiturn, scale.", parse=split_list, show_default="dsr,static,multiturn,scale",
                                    choices=FAMILIES)
    per_scene: int = opt(40, "At most this many questions per scene and family.")
    seed: int = opt(0, "Random seed; the same seed and inputs give identical output.")
    format: str = opt("sharegpt", "sharegpt (LLaVA conversations JSONL), qwen (Qwen2.5-VL messages JSONL) or parquet.",
                      choices=FORMATS)
    split: float = opt(0.0, "Fraction of scenes held out as the benchmark split (by scene; 0 = no split).")
    stats: bool = opt(False, "Write OUT.stats.json (counts per type, letter balance, answer histograms) and print a "
                      "summary.")
    rephrase_model: str | None = opt(None, "Local folder or hub id of a transformers causal LM that rephrases "
                                     "questions (kept only if numbers, letters and labels survive). Default: none.",
                                     show_default=False)
    max_turns: int = opt(12, "Turns per multi-turn sample (2-12).")
    frames_dir: str | None = opt(None, "Export the frames each question uses as JPEGs here and reference them "
                                 "instead of the video. Default: reference the video, and export one-frame (image) "
                                 "questions' frames to OUT's stem + .frames/.", show_default=False)
    max_images: int = opt(16, "With --frames-dir: at most this many frames per question.")
    balance: bool = opt(True, "Cap each answer (and step label) per type so answers are as flat as the scenes allow, "
                        "and draw wrong options from other questions' true answers.", flag="--balance/--no-balance")
    audit: bool = opt(True, "Blind audit: text-only baselines per type, fitted on half the scenes and scored on the "
                      "other half; printed and written to OUT.audit.json/.md.", flag="--audit/--no-audit",
                      runtime=True)
    shard: str | None = shard_opt()
    quiet: bool = quiet_opt()

    def validate(self) -> None:
        check_fields(self)
        if not self.families:
            raise UsageError(f"--families: unknown (none); choose from {', '.join(FAMILIES)}")
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


@contextlib.contextmanager
def gc_paused():
    """The cyclic collector paused for the block: generation and balancing allocate many small containers that
    live on (records) or die by reference count, and would trigger a young collection every 700 of them (~12% of
    generation time).

    What the block leaves alive is mostly output (records, per-scene tables) that lives on: it is moved straight to
    the oldest generation (``freeze`` then ``unfreeze``: two list splices, no traversal) instead of being traversed
    by the young collection the block's allocations would trigger, then by the middle one, and counted towards the
    next full collection (which traversed every record again: 5-15% of generation and balancing over 200 scenes).
    Nothing is kept from the collector: full collections still see every object. Skipped where the process froze
    objects itself (``gc.freeze`` before forking): unfreezing would undo that."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()


def generate_scene(scene: SceneData, config: MakeQAConfig) -> list[QARecord]:
    """Every family's questions about one scene, deduplicated, deterministic for (seed, scene id)."""
    out: list[QARecord] = []
    with gc_paused():
        for family in config.families:
            rng = _rng(config.seed, scene.scene_id, family)
            gen = FAMILIES[family](scene, config.max_turns) if family == "multiturn" else FAMILIES[family](scene)
            out.extend(_sample_family(scene, gen, rng, config.per_scene))
    return out


def _sample_family(scene: SceneData, gen, rng: random.Random, n: int) -> list[QARecord]:
    """Round-robin over the family's types so every type is represented, until n questions or no type is left; a
    type named in the generator's ``tries`` gets that many tries per round (one otherwise)."""
    alive = {t: 0 for t in gen.types}  # consecutive failures
    asked: set[str] = set()  # types that gave a question: they get GIVE_UP_AFTER tries, the others GIVE_UP_FIRST
    seen: set[tuple] = set()
    out: list[QARecord] = []
    tries = getattr(gen, "tries", {})
    while len(out) < n and alive:
        order = [t for t in alive for _ in range(tries.get(t, 1))]
        for t in rng.sample(order, len(order)):
            if t not in alive:
                continue
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


def dedup_balance(records: list[QARecord], config: MakeQAConfig) -> list[QARecord]:
    """What ``run`` keeps of the generated records: duplicates removed, then balanced (``--balance``)."""
    from . import balance

    with gc_paused():
        records = dedup(records)
        return balance.balance(records, config.seed) if config.balance else records


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


def shard_out(out: str, shard: tuple[int, int]) -> str:
    """Shard I of N writes ``qa.shardIofN.jsonl`` so the shards of an array job never overwrite each other."""
    i, n = shard
    if n == 1:
        return out
    stem, dot, ext = out.rpartition(".")
    return f"{stem}.shard{i}of{n}.{ext}" if dot else f"{out}.shard{i}of{n}"


def error_record(out: str, scene_id: str) -> str:
    """Where a scene that failed is recorded: ``<OUT stem>.errors/<scene id>.error.json``."""
    return f"{out.rpartition('.')[0] or out}.errors/{scene_id}.error.json"


def provenance_file(out: str) -> str:
    return f"{out.rpartition('.')[0] or out}.provenance.json"


def run(config: MakeQAConfig, inputs: str | list[str], progress: Callable | None = None) -> jobs.Summary:
    """Generate, split and write QA for the scene stores ``inputs``; ``Summary.details`` holds what was written and
    counts.

    A whole-run stage (the split and letter balance need every scene): a scene that fails is logged, recorded in
    ``<OUT stem>.errors/`` and left out, the others still make the output; ``<OUT stem>.provenance.json`` names
    the config, the inputs used and the failures. ``Summary.failed`` maps each failed input to its error.
    """
    from . import formats, stats

    config.validate()
    shard = jobs.resolve_shard(config.shard)
    inputs = jobs.select_shard(jobs.resolve_inputs(inputs), shard)
    config = dataclasses.replace(config, out=shard_out(config.out, shard))
    if not inputs:
        raise UsageError("make-qa: no scene stores given")
    ids = _scene_ids(inputs)
    if len(set(ids)) != len(ids):
        raise UsageError("make-qa: the same scene store is given twice")
    for path in formats.output_paths(config).values():  # before any scene is read
        check_replaceable(path)
    records: list[QARecord] = []
    used: list[str] = []
    failed: dict[str, str] = {}
    for url, sid in (progress or (lambda x: x))(list(zip(inputs, ids, strict=False))):
        record = error_record(config.out, sid)
        store.remove(record)
        try:
            scene = load_scene(url, sid)
            scene_records = generate_scene(scene, config)
            # One-frame questions are image questions: their frame is always exported (beside OUT by default).
            chosen = scene_records if config.frames_dir else [r for r in scene_records if len(r.frames) == 1]
            if chosen:
                formats.export_frames(scene, chosen, config.frames_dir or formats.default_frames_dir(config),
                                      config.max_images)
        except Exception as e:  # one bad store must not stop the others
            message = str(e) if isinstance(e, SpatialctlError) else f"{url}: {type(e).__name__}: {' '.join(str(e).split())}"
            if len(inputs) > 1:  # with one input, the error that ends the run is this message: say it once
                log.error(message)
            failed[url] = message
            io.write_json(record, {"input": url, "output": config.out, "error": message})
            continue
        used.append(url)
        records.extend(scene_records)
        # The per-scene tables refer back to the scene (a cycle): dropped here, the scene (its arrays) is freed by
        # reference count, not at a later full collection.
        scene._cache.clear()
    if not records:
        first = next(iter(failed.values()), f"{inputs[0]}: no questions could be generated (no tracked objects or "
                                            "geometry?)")
        raise SpatialctlError(first)
    records = dedup_balance(records, config)
    rejected = 0
    if config.rephrase_model:
        from .rephrase import Rephraser

        rejected = Rephraser(config.rephrase_model, seed=config.seed).apply(records)
    rebalance_letters(records, np.random.default_rng([config.seed, 7]))
    split = split_scenes(ids, config.split, config.seed) if config.split > 0 else {s: "train" for s in ids}
    for r in records:
        r.metadata["split"] = split[r.scene]
    written = formats.write_outputs(records, config)
    io.write_json(provenance_file(config.out), {**jobs.provenance(STAGE, config, used), "failed": failed},
                  sort_keys=False)
    result = {"scenes": len(used), "records": len(records), "files": written, "rephrase_rejected": rejected,
              "per_split": {k: sum(1 for r in records if r.metadata["split"] == k) for k in ("train", "bench")},
              "failed": failed}
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
    return jobs.Summary(done=used, failed=failed, outputs=list(written.values()), details=result)


def outputs_for(config: MakeQAConfig) -> list[str]:
    """The files ``run`` writes for this config (one, or one per split)."""
    from .formats import output_paths

    return list(output_paths(config).values())


__all__ += ["outputs_for", "split_scenes", "dedup", "dedup_balance", "SceneData", "load_scene"]
