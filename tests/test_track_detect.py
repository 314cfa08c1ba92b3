"""Detection (label parsing, duplicate suppression, both detectors through their saved tiny models) and SAM 2
frame preparation / box prompts without torchvision."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from track_models import build_grounding_dino, build_owlv2, build_sam2_video

from spatialctl.errors import SpatialctlError, UsageError
from spatialctl.stages.track.detect import (
    DEFAULT_VOCABULARY,
    Detection,
    Detector,
    nms,
    parse_labels,
    suppress_duplicates,
)
from spatialctl.stages.track.propagate import IMAGENET_MEAN, IMAGENET_STD, Segmenter, preprocess_frame


def test_parse_labels(tmp_path):
    assert parse_labels(" Person, car ,,cup, car", None) == ["person", "car", "cup"]
    f = tmp_path / "labels.txt"
    f.write_text("traffic  light\nchair, table\n")
    assert parse_labels(None, str(f)) == ["traffic light", "chair", "table"]
    assert parse_labels(None, None) == list(DEFAULT_VOCABULARY)
    with pytest.raises(UsageError):
        parse_labels("cup", str(f))
    with pytest.raises(SpatialctlError, match="missing.txt"):
        parse_labels(None, str(tmp_path / "missing.txt"))


def test_nms_and_duplicate_suppression():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    dets = [Detection(np.array([0, 0, 10, 10.0]), 0.9, "cup"), Detection(np.array([1, 1, 10, 10.0]), 0.8, "cup"),
            Detection(np.array([0, 0, 10, 10.0]), 0.6, "mug"), Detection(np.array([20, 20, 30, 30.0]), 0.5, "cup")]
    kept = suppress_duplicates(dets, 0.5)
    # Same cup twice: one kept; named "mug" too: its best name wins; the other cup stays.
    assert [(d.label, d.score) for d in kept] == [("cup", 0.9), ("cup", 0.5)]


@pytest.mark.parametrize("kind", ["grounding-dino", "owlv2"])
def test_detector_from_saved_tiny_model(tmp_path, kind):
    build = build_grounding_dino if kind == "grounding-dino" else build_owlv2
    path = build(tmp_path / kind)
    labels = ["cup", "ball", "book"]
    image = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    det = Detector(kind, path, labels, box_threshold=0.0, text_threshold=0.0, max_detections=5)
    found = det(image)
    assert 1 <= len(found) <= 5
    for d in found:
        assert d.label in labels
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 79 and 0 <= y0 < y1 <= 47
    assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
    assert Detector(kind, path, labels, box_threshold=1.0, text_threshold=1.0)(image) == []


def test_grounding_dino_label_spans(tmp_path):
    det = Detector("grounding-dino", build_grounding_dino(tmp_path / "g"), ["cup", "ball", "book"])
    ids = det.processor.tokenizer(det.prompt)["input_ids"]
    words = [det.processor.tokenizer.convert_ids_to_tokens([ids[i] for i in s]) for s in det.spans]
    assert words == [["cup"], ["ball"], ["book"]]


def test_missing_detector_model_says_how_to_fetch(tmp_path):
    with pytest.raises(SpatialctlError, match="huggingface-cli download"):
        Detector("grounding-dino", str(tmp_path / "nothing"), ["cup"])


def test_preprocess_frame_matches_sam2_normalisation():
    frame = np.zeros((30, 50, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 255, 128, 0
    x = preprocess_frame(frame, 64)
    assert x.shape == (3, 64, 64)
    want = (np.array([255, 128, 0]) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x.mean(dim=(1, 2)).numpy(), want, atol=1e-5)


def test_segmenter_box_prompt_in_model_coordinates(tmp_path):
    seg = Segmenter(build_sam2_video(tmp_path / "sam2", size=64))
    frames = np.random.default_rng(1).integers(0, 255, (3, 40, 80, 3), dtype=np.uint8)
    seg.open(lambda i: frames[i], 3, (40, 80))
    session = seg.session()
    seg.add_boxes(session, 0, [7], np.array([[10.0, 5.0, 50.0, 30.0]]))
    coords = session.point_inputs_per_obj[session.obj_id_to_idx(7)][0]["point_coords"]
    assert torch.allclose(coords.view(2, 2), torch.tensor([[8.0, 8.0], [40.0, 48.0]]))
    ids, masks = seg.step(session, 0)
    assert ids == [7] and masks.shape == (1, 40, 80) and masks.dtype == bool
    ids, masks = seg.step(session, 1)  # propagation from memory
    assert ids == [7] and masks.shape == (1, 40, 80)
