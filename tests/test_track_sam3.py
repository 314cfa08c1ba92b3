"""`spatialctl track --backend sam3` and `--labels auto` on a synth scene, with a tiny random Sam3VideoModel and a
tiny random CLIP saved to disk and loaded by path, as a user would pass downloaded checkpoints.

Random weights find nothing real: these are structure checks (every track labelled by a prompt, ids carried
across chunks by feeding masks back, a missing model failing fast), plus the tagger's scores against CLIP's own
forward on the same weights."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from track_models import build_clip, build_sam3_video

from spatialctl import store
from spatialctl.stages.synth import SynthConfig, generate
from spatialctl.stages.track import PackedMasks
from spatialctl.stages.track.sam3 import LazyFrames, Sam3Tracker, _Live, preprocess_frame, track_video
from spatialctl.stages.track.tagger import TEMPLATE, VOCABULARY, Tagger

LABELS = ["cup", "ball"]


@pytest.fixture(scope="module")
def sam3_model(tmp_path_factory):
    return build_sam3_video(tmp_path_factory.mktemp("sam3") / "model")


@pytest.fixture(scope="module")
def clip_model(tmp_path_factory):
    return build_clip(tmp_path_factory.mktemp("clip") / "model")


@pytest.fixture(scope="module")
def truth():
    _, t = generate(SynthConfig(seed=3, frames=6, width=96, height=64))
    return t


def _visible(tracklet) -> list[bool]:
    return [bool(m.any()) for m in tracklet.masks]


def test_sam3_ids_carry_across_chunks(sam3_model, truth):
    """Chunks of 3 frames over 6 track what one session does: the same objects under the same labels and ids
    (frame-0 objects carry through the second chunk's fresh session, their last masks fed back as mask prompts,
    and their hot-start bookkeeping with them), identical masks in the first chunk, nearly so after it."""
    tracker = Sam3Tracker(sam3_model, "cpu", threshold=0.1)
    frames = truth.scene_arrays["frames"]
    one = track_video(tracker, lambda i: frames[i], 6, (64, 96), LABELS, chunk_frames=6)
    two = track_video(tracker, lambda i: frames[i], 6, (64, 96), LABELS, chunk_frames=3)
    assert [(t.label, t.born) for t in one] == [(t.label, t.born) for t in two]
    first = [i for i, t in enumerate(two) if t.born == 0]
    assert {two[i].label for i in first} == set(LABELS)
    for i in first:
        assert all(_visible(two[i]))  # through frames 3-5, a new session
        assert np.array_equal(one[i].masks[:3], two[i].masks[:3])
        for f in range(3, 6):
            a, b = (np.unpackbits(t.masks[f]).astype(bool) for t in (one[i], two[i]))
            assert (a & b).sum() / (a | b).sum() > 0.9


def test_seed_feeds_masks_back(sam3_model, truth):
    """Seeding a session with masks registers the given ids under their labels' prompts and conditions the tracker
    on exactly those masks (encoded into its memory)."""
    tracker = Sam3Tracker(sam3_model, "cpu")
    masks = PackedMasks(truth.tracks_arrays["masks"], (64, 96))[:, 2]
    low = tracker.model.low_res_mask_size
    logits = F.interpolate(torch.from_numpy(masks[:2]).float()[:, None], size=(low, low), mode="nearest")[:, 0]
    logits = logits * 20 - 10
    session = tracker.session(LazyFrames(lambda i: truth.scene_arrays["frames"][i], 6, tracker.size, preprocess_frame), (64, 96),
                              LABELS)
    with torch.inference_mode():
        tracker.seed(session, 2, {5: _Live("ball", 0.9, logits[0], 0, 30, []),
                                  7: _Live("cup", 0.8, logits[1], 1, 29, [1])}, 7, {(5, 7): [0, 1], (3, 7): [0]})
    assert session.obj_ids == [5, 7] and session.max_obj_id == 7
    assert session.obj_first_frame_idx == {5: 0, 7: 1} and session.trk_keep_alive == {5: 30, 7: 29}
    assert dict(session.overlap_pair_to_frame_inds) == {(5, 7): [0, 1]}  # object 3 is gone
    assert [session.prompts[session.obj_id_to_prompt_id[i]] for i in (5, 7)] == ["ball", "cup"]
    for idx in range(2):
        out = session.output_dict_per_obj[idx]["cond_frame_outputs"][2]
        assert torch.equal(out["pred_masks"][0, 0] > 0, logits[idx] > 0)
        assert out["maskmem_features"] is not None


def test_sam3_cli_end_to_end(sam3_model, synth_scene, cli):
    args = ["track", synth_scene, "--backend", "sam3", "--sam3-model", sam3_model, "--labels", ",".join(LABELS),
            "--sam3-threshold", "0.1", "--chunk-frames", "3", "--device", "cpu", "--quiet", "--overwrite"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    scene = store.open_scene(synth_scene)
    tracks = scene.open_group("tracks")  # validates against the schema
    attrs = tracks.attrs
    assert attrs["backend"] == "sam3" and attrs["sam3_model"] == sam3_model
    assert attrs["labels"] == [{"label": "cup", "source": "user"}, {"label": "ball", "source": "user"}]
    objects = attrs["objects"]
    assert objects and all(o["label"] in LABELS and o["found_by"] == "sam3" for o in objects)
    assert all(o["completion"] in ("sphere", "cylinder", "extent") for o in objects)
    visible = tracks.read("visible")
    assert visible.shape == (len(objects), scene.n_frames)
    assert visible.all(axis=1).any()  # an id held over the whole video, across the chunk boundary
    for o in range(len(objects)):
        for f in range(scene.n_frames):
            assert store.read_mask(tracks, o, f, scene.hw).any() == visible[o, f]
    centroid = tracks.read("centroid")
    assert np.isfinite(centroid[visible]).all() and np.isnan(centroid[~visible]).all()
    result = cli(*args[:-1])  # same config: a cache hit
    assert result.exit_code == 0, result.output


def test_sam3_missing_model_fails_fast(synth_scene, cli, tmp_path):
    for missing in (str(tmp_path / "no-such-model"), "facebook/sam3"):
        start = time.perf_counter()
        result = cli("track", synth_scene, "--backend", "sam3", "--sam3-model", missing, "--labels", "cup",
                     "--overwrite", "--quiet")
        assert time.perf_counter() - start < 2.0
        assert result.exit_code == 2  # refused before any work
        assert "huggingface-cli download facebook/sam3" in result.output and "--sam3-model" in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_sam3_bad_options_are_usage_errors(synth_scene, cli):
    assert cli("track", synth_scene, "--backend", "sam9", "--quiet").exit_code == 2
    assert cli("track", synth_scene, "--backend", "sam3", "--chunk-frames", "1", "--quiet").exit_code == 2
    assert cli("track", synth_scene, "--backend", "sam3", "--sam3-threshold", "2", "--quiet").exit_code == 2


def test_tagger_scores_match_clip_forward(clip_model, truth):
    """The tagger's label scores equal the softmax of CLIP's own ``logits_per_image`` (same random weights), best
    over frames; the proposal is their top labels."""
    from transformers import CLIPModel, CLIPProcessor

    frames = [truth.scene_arrays["frames"][i] for i in range(6)]
    tagger = Tagger(clip_model, "cpu")
    got = tagger.scores(frames)
    model, processor = CLIPModel.from_pretrained(clip_model).eval(), CLIPProcessor.from_pretrained(clip_model)
    with torch.no_grad():
        inputs = processor(text=[TEMPLATE.format(v) for v in VOCABULARY], images=frames, return_tensors="pt",
                           padding=True, truncation=True)
        want = model(**inputs).logits_per_image.softmax(-1).max(0).values.numpy()
    assert np.allclose(got, want, atol=1e-5)
    picked = tagger.propose(lambda i: frames[i], 6, max_labels=3, min_score=0.0)
    assert [label for label, _ in picked] == [VOCABULARY[i] for i in np.argsort(-want, kind="stable")[:3]]
    # Nothing reaches an impossible score: the best label is still proposed.
    assert len(tagger.propose(lambda i: frames[i], 6, max_labels=3, min_score=1.0)) == 1


def test_labels_auto_cli(sam3_model, clip_model, synth_scene, cli):
    result = cli("track", synth_scene, "--backend", "sam3", "--sam3-model", sam3_model, "--labels", "auto",
                 "--tagger-model", clip_model, "--auto-max-labels", "3", "--sam3-threshold", "0.1", "--device", "cpu",
                 "--quiet", "--overwrite")
    assert result.exit_code == 0, result.output
    attrs = store.open_scene(synth_scene).open_group("tracks").attrs
    labels = attrs["labels"]
    assert 1 <= len(labels) <= 3
    assert all(entry["source"] == "auto" and entry["tagger"] == clip_model and entry["label"] in VOCABULARY
               for entry in labels)
    assert attrs["objects"] and {o["label"] for o in attrs["objects"]} <= {e["label"] for e in labels}


def test_kernels_absence_logged_once(monkeypatch, caplog):
    import importlib.util

    from spatialctl.stages.track import sam3

    monkeypatch.setattr(sam3, "_kernels_logged", False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "kernels" else real(name, *a))
    with caplog.at_level("WARNING", logger="spatialctl.track"):
        assert sam3.log_kernels_once() is False and sam3.log_kernels_once() is False
    assert sum("pip install kernels" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(sam3, "_kernels_logged", False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "kernels" else real(name, *a))
    caplog.clear()
    with caplog.at_level("WARNING", logger="spatialctl.track"):
        assert sam3.log_kernels_once() is True
    assert not caplog.records


def test_sam3_memory_follows_the_chunk(sam3_model, monkeypatch):
    """Over 12 frames in chunks of 8, the tracker keeps no more past frames than its horizon (set to 3 here so a
    short video passes it; the model's own is 16) and a session's per-frame tables never span more than its chunk."""
    from spatialctl.stages.track import sam3

    _, long = generate(SynthConfig(seed=1, frames=12, width=64, height=48))
    tracker = Sam3Tracker(sam3_model, "cpu", threshold=0.1)
    tracker.horizon = 3
    stored, spans = [], []
    real = sam3.Sam3Tracker.forget

    def forget(self, session, frame_idx):
        real(self, session, frame_idx)
        stored.append(max((len(o["non_cond_frame_outputs"]) for o in session.output_dict_per_obj.values()),
                          default=0))
        spans.append(len(session.obj_id_to_tracker_score_frame_wise))

    monkeypatch.setattr(sam3.Sam3Tracker, "forget", forget)
    frames = long.scene_arrays["frames"]
    track_video(tracker, lambda i: frames[i], 12, (48, 64), LABELS, chunk_frames=8)
    assert len(stored) >= 3 and max(stored) <= tracker.horizon + 1
    assert max(spans) <= 8
