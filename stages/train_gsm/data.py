"""QA records + scene stores -> model inputs, in an order that a resumed run can reproduce exactly."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from torch.utils.data import Dataset, Sampler

from spatialctl import gsm, qa_format, store
from spatialctl.errors import SpatialctlError


class QADataset(Dataset):
    """Examples from :func:`spatialctl.gsm.prepare_example`, built on first use and kept in a small LRU cache."""

    def __init__(self, records: list[qa_format.QARecord], scene_urls: dict[str, str], tokenizer, video_cfg,
                 gsm_cfg: gsm.GSMConfig | None, num_frames: int, cache_size: int = 256, *, with_answer: bool = True,
                 prompt_suffix: str = "", genfeat: bool = False, image_cfg=None):
        self.records, self.scene_urls = records, scene_urls
        self.genfeat = genfeat  # VEGA-3D fusion: the generative features on the visual-token grid
        self.image_cfg = image_cfg  # --views: the frames as separate images (the image processor's settings)
        self.with_answer, self.prompt_suffix = with_answer, prompt_suffix  # prompts only (GRPO samples answers)
        self.tokenizer, self.video_cfg, self.gsm_cfg, self.num_frames = tokenizer, video_cfg, gsm_cfg, num_frames
        self.cache: OrderedDict[int, dict] = OrderedDict()
        self.cache_size = cache_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        if i in self.cache:
            self.cache.move_to_end(i)
            return self.cache[i]
        r = self.records[i]
        try:
            example = gsm.prepare_example(r, self.scene_urls[r.scene], self.tokenizer, self.video_cfg, self.gsm_cfg,
                                          num_frames=self.num_frames, with_answer=self.with_answer,
                                          prompt_suffix=self.prompt_suffix, genfeat=self.genfeat,
                                          image_cfg=self.image_cfg)
        except SpatialctlError as e:
            raise SpatialctlError(f"QA record {r.id}: {e}") from e
        self.cache[i] = example
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return example


def load_records(qa_path: str, scenes_dir: str | None,
                 scales: tuple[str, ...] = ()) -> tuple[list[qa_format.QARecord], dict[str, str]]:
    """Read the QA file (only the given scales' records, if any) and resolve every scene once (fail before
    training, not hours into it)."""
    records = qa_format.read_qa(qa_path)
    if scales:
        records = [r for r in records if r.scale in scales]
        if not records:
            raise SpatialctlError(f"{qa_path}: no QA records of scale {', '.join(scales)}")
    if not records:
        raise SpatialctlError(f"{qa_path}: no QA records")
    urls = {name: store.resolve_scene(name, scenes_dir) for name in dict.fromkeys(r.scene for r in records)}
    return records, urls


class StepBatchSampler(Sampler):
    """Micro-batches of dataset indices for one process, from optimizer step ``start_step`` to ``total_steps``.

    The sample stream is a fresh permutation per epoch (seeded by seed + epoch), consumed in order across
    steps, accumulation micro-steps and processes; a micro-batch is a pure function of (step, micro, rank), so
    resuming at a step reproduces the uninterrupted run's batches exactly.
    """

    def __init__(self, n: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int,
                 start_step: int, total_steps: int):
        self.n, self.bs, self.accum, self.world, self.rank, self.seed = n, batch_size, grad_accum, world, rank, seed
        self.start_step, self.total_steps = start_step, total_steps
        self._perms: dict[int, np.ndarray] = {}

    @property
    def samples_per_step(self) -> int:
        return self.bs * self.accum * self.world

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def batch(self, step: int, micro: int) -> list[int]:
        first = step * self.samples_per_step + (micro * self.world + self.rank) * self.bs
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(first, first + self.bs)]

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.accum):
                yield self.batch(step, micro)

    def __len__(self) -> int:
        return (self.total_steps - self.start_step) * self.accum
