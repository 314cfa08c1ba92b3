"""Small DSR-Bench and SpaceVista-Bench files in their published schemas, with media made on the spot.

Shared by the tests and by `golden/make_released_golden.py` (which runs the benchmarks' own harness code on the
same entries). Field names are the released ones: DSR-Bench's benchmark.parquet as DSR Suite's VLMEvalKit reads it
(videoID, question, options, answer; `type` as `eval qa` groups it), SpaceVista-Bench entries as its
evaluate_api_video.py reads them (id, input_type, question, answer, videos, annotations, metadata).
"""

from __future__ import annotations

import json
import os

import numpy as np

DSR_ROWS = [
    {"videoID": "koala_a", "question": "From the camera's viewpoint, how does the distance between the car and the "
     "person change?", "options": ["A. (1) getting closer", "B. (1) getting farther", "C. (1) staying about the same",
                                   "D. (1) getting closer (2) getting farther"], "answer": "B", "type": "abs_distance"},
    {"videoID": "koala_b", "question": "Which direction does the dog move relative to the tree?",
     "options": ["A. left", "B. right", "C. front", "D. behind"], "answer": "D", "type": "rel_direction"},
    {"videoID": "koala_a", "question": "Is the person faster than the car?",
     "options": ["A. yes", "B. no", "C. same speed", "D. cannot tell"], "answer": "A", "type": "speed_comparison"},
]
DSR_FRAMES = {"koala_a": 45, "koala_b": 20}  # frame counts: one above the harness's 32, one below


def frame_image(h: int, w: int, index: int) -> np.ndarray:
    """A frame of vertical bars (rows repeat, so golden copies compress) whose blue channel carries its index."""
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w) // 16 * 37 % 256).astype(np.uint8)
    img[..., 1] = 128
    img[..., 2] = (index * 6) % 256
    return img


# (id, input_type, answer, frames, (h, w), question)
SV_SPECS = [
    (0, "image_text", "B", 40, (120, 460), "Which object is closer? A. cup B. box C. pen D. lamp"),
    (1, "image_point_text", "2.5", 10, (100, 150), "How far is the red point from the blue point in meters?"),
    (2, "image_bbox_text", "chair", 25, (150, 500), "What is the object in the red box?"),
    (3, "image_mask_text", "A", 20, (90, 120), "Is the red object taller than the blue one? A. yes B. no"),
]
SV_META = {0: ("Tabletop", "cm", "DISTANCE_COMPARISON"), 1: ("Indoor", "m", "OBJECT_DISTANCE"),
           2: ("Outdoor", "km", "OBJECT_RECOGNITION"), 3: ("TinyTabletop", "mm", "HEIGHT_COMPARISON")}


def spacevista_bench(root: str, prefix: str | None = None) -> list[dict]:
    """Frames (PNG), masks (.npy) and the entries under `root`. Paths in the entries are `prefix` + relative path
    (prefix None: relative to `root`, as the test reads them with --videos root; the golden script passes root
    itself, since the harness opens paths as given)."""
    from PIL import Image

    def name(rel: str) -> str:
        return rel if prefix is None else os.path.join(prefix, rel)

    entries = []
    for sid, kind, answer, n, (h, w), question in SV_SPECS:
        paths = []
        for i in range(n):
            rel = f"image_data/scene{sid}/images/frame_{i:04d}.png"
            os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
            Image.fromarray(frame_image(h, w, i)).save(os.path.join(root, rel))
            paths.append(name(rel))
        ann = {"points": None, "bboxes": None, "masks": None, "dual_bbox": None}
        if sid == 1:  # [y, x]; one nested, one outside the frame; image 3 sampled, 7 sampled
            ann["points"] = [{"coords": [40, 70], "image_index": 3, "color": None},
                             {"coords": [[20, 30]], "image_index": 7, "color": "green"},
                             {"coords": [500, 5], "image_index": 0, "color": "red"}]
        if sid == 2:  # frame 5 is not sampled (nearest), a reversed box, a dict box, a dual box
            ann["bboxes"] = [{"coords": [10, 20, 200, 140], "image_index": 5, "color": None},
                             {"coords": [480, 100, 300, 30], "image_index": 24, "color": "yellow"}]
            ann["dual_bbox"] = {"source_image": paths[0], "source_bbox": [50, 10, 150, 90],
                                "target_image": paths[24], "target_bboxes": [[0, 0, 60, 60],
                                                                            {"x": 100, "y": 50, "w": 40, "h": 30}]}
        if sid == 3:  # a label map at half size (found through images_8), a (K, H, W) stack (found by file name)
            labels = np.zeros((h // 2, w // 2), np.int32)
            labels[5:20, 10:30] = 2
            labels[25:40, 5:15] = 1
            stack = np.zeros((3, h, w), bool)
            stack[0, 10:30, 10:40] = True
            stack[1, 50:70, 60:100] = True
            stack[2, 60:80, 5:25] = True
            os.makedirs(os.path.join(root, "masks"), exist_ok=True)
            np.save(os.path.join(root, "masks/labels3.npy"), labels)
            np.save(os.path.join(root, "masks/stack3.npy"), stack)
            ann["masks"] = [
                {"mask_path": name("masks/labels3.npy"), "object_ids": [2],
                 "image_path": paths[4].replace("/images/", "/images_8/")},
                {"mask_path": name("masks/stack3.npy"), "object_ids": [True, False, True],
                 "image_path": "elsewhere/" + os.path.basename(paths[12])},
            ]
        category, scale, original = SV_META[sid]
        entries.append({"id": sid, "input_type": kind, "question": question, "answer": answer, "videos": [paths],
                        "annotations": ann,
                        "metadata": {"category": category, "scale": scale, "original_type": original,
                                     "scene_source": f"scene{sid}"}})
    with open(os.path.join(root, "bench_final.json"), "w") as f:
        json.dump(entries, f)
    return entries
