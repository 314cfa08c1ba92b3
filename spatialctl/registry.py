"""The stages, declared once: the command line (``spatialctl/cli_gen.py``) and ``status`` read this list instead
of guessing modules from names.

The stage protocol: a module with a typed config class (options made with ``spatialctl.config.opt``) whose
``validate()`` checks and parses the whole config; ``run(config, inputs, progress=...) -> jobs.Summary`` (inputs:
what the stage reads, None for stages whose config names everything, synth and train-gsm; progress: a wrapper
over an iterable, a tqdm bar on the command line; the stage's own result rides in ``Summary.details``); and, for
stages that run item by item through ``jobs.run_items``, ``output_for(input, out)`` naming each item's output.
Modules are imported only when a stage is used, so ``spatialctl --version`` does not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType


@dataclass(frozen=True)
class Inputs:
    """The command-line face of a stage's inputs (what ``run`` takes as its second argument)."""

    name: str  # the parameter's name
    help: str
    flag: str | None = None  # an option (e.g. "--qa"); None: a positional argument
    short: str | None = None
    many: bool = True  # several values (list[str]) or one (str)


@dataclass(frozen=True)
class Stage:
    name: str  # the command: "reconstruct", or "eval qa" for a subcommand
    module: str  # imported lazily
    config: str  # the config class in ``module``
    help: str  # the command's help (first line: its summary in `spatialctl --help`)
    inputs: Inputs | None = None
    # progress bars handed to run: keyword -> (description, unit)
    progress: dict[str, tuple[str, str]] = field(default_factory=dict)
    items: bool = False  # runs item by item (skip done, failure records, provenance): `status` can count it

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    def config_class(self) -> type:
        return getattr(self.load(), self.config)

    def output_for(self, input: str, out: str | None) -> str:
        return self.load().output_for(input, out)


_S = "spatialctl.stages."
STAGES: tuple[Stage, ...] = (
    Stage("synth", _S + "synth", "SynthConfig",
          "Render a synthetic scene with exact ground truth: video.mp4 + scene.zarr (geometry and tracks).",
          progress={"progress": ("synth", "item")}),
    Stage("reconstruct", _S + "reconstruct", "ReconstructConfig",
          "Reconstruct each input with DUSt3R and our global alignment, or with π³ / Pi3X (--backend), into a scene\n"
          "store (frames, depth, conf, world pointmaps, intrinsics, cam2world).",
          Inputs("inputs", "Videos, folders of images, or manifests of them."),
          progress={"progress": ("global alignment", "it")}, items=True),
    Stage("track", _S + "track", "TrackConfig",
          "Add a `tracks` group to each scene store: per object a label, masks, 3D centroids, boxes and velocities.",
          Inputs("inputs", "Scene stores, or manifests of them."),
          progress={"progress": ("track", "scene"), "frame_progress": ("frames", "frame")}, items=True),
    Stage("make-qa", _S + "make_qa", "MakeQAConfig",
          "Generate verified spatial QA: DSR dynamic, VSI static, hierarchical multi-turn and all-scale families.",
          Inputs("scenes", "Scene stores with tracks (paths or URLs), or manifests of them."),
          progress={"progress": ("make-qa", "scene")}),
    Stage("extract-gen-features", _S + "extract_gen_features", "GenFeatConfig",
          "Add a `genfeat` group (float16 N x gh x gw x C) to each scene store: Wan2.1 DiT block features (VEGA-3D).",
          Inputs("inputs", "Scene stores, videos, or manifests of them."),
          progress={"progress": ("extract-gen-features", "item")}, items=True),
    Stage("train-gsm", _S + "train_gsm", "TrainGSMConfig",
          "Train LoRA (or the whole LLM) + the Geometry Selection Module and write an adapter folder for "
          "`eval run --adapter`."),
    Stage("boost-encoder", _S + "boost_encoder", "BoostConfig",
          "SpatialBoost: projector alignment, instruction tuning (LoRA), then dual-channel attention on the encoder.",
          Inputs("qa", "QA records (make-qa's .jsonl/.parquet; stage 3 uses the multiturn family). Repeat for "
                 "several files.", flag="--qa"),
          progress={"progress": ("boost-encoder", "step")}),
    Stage("eval qa", _S + "eval.qa", "QAEvalConfig",
          "Score predictions against a benchmark and write a report with per-task bootstrap intervals.",
          Inputs("predictions", "Predictions JSONL: {\"id\", \"prediction\", ...} per line, benchmark records "
                 "carrying their prediction, or an lmms-eval --log_samples file.", many=False)),
    Stage("eval run", _S + "eval.runner", "RunnerConfig",
          "Answer QA records with Qwen2.5-VL (greedy, batched, resumable) into a predictions JSONL.",
          Inputs("qa", "QA records to answer (qa.jsonl or .parquet, as make-qa writes).", flag="--qa", many=False),
          progress={"progress": ("answering", "batch")}),
    Stage("eval geometry", _S + "eval.geometry", "GeometryEvalConfig",
          "ATE (Sim(3)/SE(3)), RPE, depth AbsRel / δ<1.25 and point-cloud accuracy / completeness against truth.",
          Inputs("estimate", "The estimate: a scene store (scene.zarr) or a trajectory file (TUM/KITTI .txt, "
                 "EuRoC .csv).", many=False)),
    Stage("eval blind", _S + "make_qa.audit", "BlindConfig",
          "Blind audit of QA records: text-only baselines per family and type, fitted on half the scenes and scored "
          "on the other half.",
          Inputs("qa_file", "QA records (qa.jsonl or .parquet, as make-qa writes).", many=False)),
    Stage("eval probe", _S + "probe", "ProbeConfig",
          "Linear depth probe on frozen patch features of synth frames: AbsRel of the base (and boosted) encoder.",
          Inputs("scenes", "Scene stores with depth: a store, a folder of them (synth --count), or a manifest.",
                 flag="--scenes")),
    Stage("view", _S + "view", "ViewConfig",
          "Log a scene to a Rerun recording: frames, depth, confidence, points, cameras, masks, boxes, trajectories.",
          Inputs("scene", "Scene store (path or URL).", many=False),
          progress={"progress": ("view", "frame")}),
    Stage("report", _S + "report", "ReportConfig",
          "Write a static HTML report: per scene frame/mask/depth strips, a top-down map and numbers; a QA browser.",
          Inputs("scenes", "Scene stores (paths or URLs), or manifests of them."),
          progress={"progress": ("report scenes", "scene"), "question_progress": ("report questions", "question")}),
)
GROUPS = {"eval": "Evaluate: benchmark scoring (qa), a Qwen2.5-VL runner (run), reconstruction metrics (geometry), "
                  "blind QA audit (blind)."}


def get(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise KeyError(name)
