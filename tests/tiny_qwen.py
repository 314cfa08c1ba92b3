"""A tiny random Qwen2.5-VL, its tokenizer and processor files, built offline and saved like a hub checkpoint.

``make_tiny_qwen(path)`` writes a folder that loads through the same code a user's hub id goes through
(``spatialctl.qwen.load_model`` / ``load_tokenizer`` / ``VideoProcessorConfig.from_model_dir``).
"""

from __future__ import annotations

import json
import os

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Qwen2.5-VL's chat template, reduced to what spatialctl uses (system, user text/video/image, assistant).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

TINY_FRAME_PIXELS = (56 * 56, 112 * 112)  # min/max pixels per frame: 56x56 frames -> 2x2 merged tokens


# What the tiny tokenizer's merges are learnt from: the words of spatialctl's prompts, so a prompt is tens of
# tokens rather than hundreds of bytes (any text still encodes, byte by byte at worst).
CORPUS = [
    "You are a helpful assistant.",
    "Answer with the option's letter from the given choices directly.",
    "Please answer the question using a single word or phrase.",
    "Options: A. B. C. D. Which object is closer to the camera? How far is the chair from the table in meters?",
    "What is the distance, direction, orientation, speed of the red blue green yellow cube sphere box car person?",
    "How many objects are there? What is the size of the room in square meters? left right front behind up down",
    "Measuring from the closest point of each object, which of these is the closest to the",
    "one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 0.5 1.5 2.5 cm m km",
]


def make_tokenizer():
    """Byte-level BPE (learnt offline from a few prompt sentences) plus Qwen's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=448, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def make_tiny_qwen(path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> str:
    """Build and save a tiny random Qwen2_5_VLForConditionalGeneration + tokenizer + processor configs."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = str(path)
    os.makedirs(path, exist_ok=True)
    tok = make_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab_size = (len(tok) + 31) // 32 * 32  # spare rows, as the real checkpoint has
    heads = 4
    head_dim = hidden_size // heads
    half = head_dim // 2  # mrope sections (t, h, w) must add up to half the head dimension
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=2,
            max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
            fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    # A trained LM head is sharp; a random one at std 0.02 caps every logit near 1, so a frozen head (LoRA)
    # could never become confident and nothing could be shown to overfit.
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 0.5)
    _save_model(model, tok, ids, path)
    min_pixels, max_pixels = TINY_FRAME_PIXELS
    Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels).save_pretrained(path)
    video_cfg = {
        "video_processor_type": "Qwen2VLVideoProcessor", "patch_size": 14, "temporal_patch_size": 2,
        "merge_size": 2, "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_resize": True, "resample": 3,
    }
    _save_processor_files(path, video_cfg)
    return path


def make_tiny_qwen3(path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> str:
    """Build and save a tiny random Qwen3VLForConditionalGeneration + tokenizer + processor configs (patch 16,
    per-frame timestamps in the prompt, deepstack features from the first vision block)."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    path = str(path)
    os.makedirs(path, exist_ok=True)
    tok = make_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab_size = (len(tok) + 31) // 32 * 32
    heads, head_dim = 4, hidden_size // 4
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=2, head_dim=head_dim,
            max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope,
                             "mrope_interleaved": True},
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64,
                           deepstack_visual_indexes=[0]),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    with torch.no_grad():  # a sharp random LM head, as in make_tiny_qwen
        model.lm_head.weight.normal_(0.0, 0.5)
    _save_model(model, tok, ids, path)
    min_pixels, max_pixels = 64 * 64, 8 * 64 * 64  # over all frames: up to 8 frames of 64x64
    # images (multi-view records): Qwen3-VL's image processor is Qwen2-VL's at patch 16, mean/std 0.5
    Qwen2VLImageProcessorPil(patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3, min_pixels=64 * 64,
                             max_pixels=64 * 64).save_pretrained(path)
    video_cfg = {
        "video_processor_type": "Qwen3VLVideoProcessor", "patch_size": 16, "temporal_patch_size": 2,
        "merge_size": 2, "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels},
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_resize": True, "resample": 3,
    }
    _save_processor_files(path, video_cfg)
    return path


def _save_model(model, tok, ids: dict, path: str) -> None:
    """Greedy generation stopping at <|im_end|>, then the weights and tokenizer, as a released checkpoint."""
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        do_sample=False,
    )
    model.save_pretrained(path)
    tok.save_pretrained(path)


def _save_processor_files(path: str, video_cfg: dict) -> None:
    # The video processor classes need torchvision; their config files are what loaders read.
    with open(os.path.join(path, "video_preprocessor_config.json"), "w") as f:
        json.dump(video_cfg, f, indent=2)
    with open(os.path.join(path, "chat_template.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE}, f)
