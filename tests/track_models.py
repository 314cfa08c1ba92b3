"""Tiny random detectors and SAM 2 video models for track tests, built from transformers' own config classes and
saved with ``save_pretrained`` (tokenizers and processors built offline), to be loaded back by path."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "box", "sphere", "cylinder", "ball", "cup", "can",
         "book", "bottle", "person", "car", "chair", "table"]


def build_grounding_dino(folder: Path, seed: int = 0) -> str:
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessorPil,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                   image_size=64, out_features=["stage2", "stage3", "stage4"]),
        text_config=BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=64),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, num_queries=30, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2, max_text_len=32,
    )
    GroundingDinoForObjectDetection(config).eval().save_pretrained(folder)
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 96})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def build_sam2_video(folder: Path, seed: int = 0, size: int = 128, present: bool = False) -> str:
    """A Sam2VideoModel at a ``size`` x ``size`` input; hidden sizes satisfy the model's constraints (memory
    channels hard-wired to 64 in its memory attention, and the object pointer split needs hidden > 64).
    ``present``: objects are never judged absent (their masks are not emptied), as in ``build_sam3_video``."""
    from transformers import Sam2VideoConfig, Sam2VideoModel

    torch.manual_seed(seed)
    s = size
    config = Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=8, image_size=[s, s], blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[8, 16, 32, 64], num_attention_heads_per_stage=[1, 1, 1, 1],
                window_size_per_stage=[4, 4, 4, 2], global_attention_blocks=[3],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[64, 32, 16, 8],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=128,
        ),
        prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=s, memory_attention_hidden_size=128, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128, memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
    )
    model = Sam2VideoModel(config).eval()
    if present:
        torch.nn.init.constant_(model.mask_decoder.pred_obj_score_head.proj_out.bias, 10.0)
    model.save_pretrained(folder)
    return str(folder)


def build_owlv2(folder: Path, seed: int = 0) -> str:
    """A tiny OWLv2 with a character-level CLIP tokenizer (vocab.json + empty merges) written offline."""

    from transformers import (
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessorPil,
        Owlv2Processor,
    )

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, bos, eos = _char_clip_tokenizer(folder)
    config = Owlv2Config(
        text_config=dict(vocab_size=eos + 1, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32,
    )
    model = Owlv2ForObjectDetection(config).eval()
    # Random box heads emit degenerate corner boxes; a zero last layer leaves OWLv2's own prior, one box per patch.
    torch.nn.init.zeros_(model.box_head.dense2.weight)
    torch.nn.init.zeros_(model.box_head.dense2.bias)
    model.save_pretrained(folder)
    image_processor = Owlv2ImageProcessorPil(size={"height": 64, "width": 64})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


def _char_clip_tokenizer(folder: Path):
    """A character-level CLIP tokenizer (vocab.json + empty merges) written offline; (tokenizer, bos, eos)."""
    import json

    from transformers import CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {c: i for i, c in enumerate(letters)}
    vocab.update({c + "</w>": len(letters) + i for i, c in enumerate(letters)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")), bos, eos


def build_sam3_video(folder: Path, seed: int = 0, size: int = 112, **video_config) -> str:
    """A Sam3VideoModel at a ``size`` x ``size`` input (patch 14) and its tokenizer, saved to ``folder``.

    Widths follow the model's constraints: the tracker's memory channels are hard-wired to 64 and its object
    pointer split needs hidden > 64; the detector's FPN width is the tracker's. ``video_config`` overrides
    Sam3VideoConfig fields (thresholds, hot-start)."""
    from transformers import Sam3VideoConfig, Sam3VideoModel

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, bos, eos = _char_clip_tokenizer(folder)
    vit = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=2, image_size=size, patch_size=14, window_size=4, global_attn_indexes=[1],
               pretrain_image_size=56)
    vision = dict(model_type="sam3_vision_model", backbone_config=vit, fpn_hidden_size=128)
    detector = dict(
        model_type="sam3", vision_config=vision,
        text_config=dict(vocab_size=eos + 1, hidden_size=32, intermediate_size=64, projection_dim=128,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32, bos_token_id=bos,
                         eos_token_id=eos, pad_token_id=eos),
        geometry_encoder_config=dict(hidden_size=128, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_encoder_config=dict(hidden_size=128, num_layers=1, num_attention_heads=2, intermediate_size=64),
        detr_decoder_config=dict(hidden_size=128, num_layers=1, num_queries=4, num_attention_heads=2,
                                 intermediate_size=64),
        mask_decoder_config=dict(hidden_size=128, num_attention_heads=2),
    )
    tracker = dict(
        model_type="sam3_tracker_video", vision_config=vision, prompt_encoder_config=dict(hidden_size=128),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=64,
        memory_encoder_hidden_size=128, memory_encoder_output_channels=64, mask_downsampler_embed_dim=128,
        memory_fuser_embed_dim=128, memory_fuser_intermediate_dim=64,
    )
    config = Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * size // 14,
                             **video_config)
    config.image_size = size
    model = Sam3VideoModel(config).eval()
    # Random object-score heads call a tracked object absent about half the time, and an absent object's mask is
    # emptied; a positive bias keeps tracked objects present, so tracks (and their ids) run through the video.
    torch.nn.init.constant_(model.tracker_model.mask_decoder.pred_obj_score_head.proj_out.bias, 10.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def build_clip(folder: Path, seed: int = 0) -> str:
    """A tiny CLIP with a character-level tokenizer and a PIL image processor, saved as a user's download is."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    torch.manual_seed(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer, bos, eos = _char_clip_tokenizer(folder)
    config = CLIPConfig(
        text_config=dict(vocab_size=eos + 1, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=bos, eos_token_id=eos,
                         pad_token_id=eos),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(folder)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)
