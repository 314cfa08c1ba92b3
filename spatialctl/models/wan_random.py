"""A randomly initialised Wan2.1 T2V checkpoint in diffusers layout, of any size, built offline.

Tests and benchmarks write one with ``save_random_wan`` and load it back through the same
``from_pretrained(path, subfolder=...)`` calls a user's real checkpoint goes through.
Layout: vae/, transformer/, text_encoder/ (UMT5), tokenizer/ (a small word-level fast tokenizer
whose "" encodes to [</s>] like UMT5's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class RandomWanSpec:
    """Sizes of a random Wan2.1 (the arguments of diffusers' and transformers' own constructors)."""

    # VAE (AutoencoderKLWan); z_dim is also the DiT's channel count
    z_dim: int = 4
    vae_base_dim: int = 8
    vae_dim_mult: tuple[int, ...] = (1, 1, 1, 1)  # four stages = 8x spatial compression, as in Wan
    vae_res_blocks: int = 1
    # DiT (WanTransformer3DModel)
    heads: int = 2
    head_dim: int = 12  # multiple of 6 keeps Wan's 3-axis rope split even
    ffn_dim: int = 32
    num_layers: int = 4
    freq_dim: int = 16
    # text encoder (UMT5); text_dim is also the DiT's context width
    text_dim: int = 16
    text_layers: int = 1
    vocab_size: int = 64
    seed: int = 0


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate("a an the room chair".split())}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def random_vae(spec: RandomWanSpec):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(spec.seed)
    return AutoencoderKLWan(base_dim=spec.vae_base_dim, z_dim=spec.z_dim, dim_mult=list(spec.vae_dim_mult),
                            num_res_blocks=spec.vae_res_blocks, temperal_downsample=[False, True, True],
                            latents_mean=[0.1 * i for i in range(spec.z_dim)],
                            latents_std=[1.0 + 0.5 * i for i in range(spec.z_dim)])


def random_transformer(spec: RandomWanSpec):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(spec.seed + 1)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=spec.heads, attention_head_dim=spec.head_dim,
        in_channels=spec.z_dim, out_channels=spec.z_dim, text_dim=spec.text_dim, freq_dim=spec.freq_dim,
        ffn_dim=spec.ffn_dim, num_layers=spec.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024)


def save_random_wan(path: str | Path, spec: RandomWanSpec | None = None, *, text_encoder: bool = True) -> Path:
    spec = spec or RandomWanSpec()
    path = Path(path)
    random_vae(spec).save_pretrained(path / "vae")
    random_transformer(spec).save_pretrained(path / "transformer")
    if text_encoder:
        from transformers import UMT5Config, UMT5EncoderModel

        torch.manual_seed(spec.seed + 2)
        cfg = UMT5Config(vocab_size=spec.vocab_size, d_model=spec.text_dim, d_kv=8, d_ff=2 * spec.text_dim,
                         num_layers=spec.text_layers, num_heads=2, relative_attention_num_buckets=8,
                         pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        UMT5EncoderModel(cfg).save_pretrained(path / "text_encoder")
        _tokenizer().save_pretrained(path / "tokenizer")
    return path


# Wan2.1-T2V-1.3B's own sizes (its diffusers config), for full-size benchmarks with random weights.
WAN_1_3B = RandomWanSpec(z_dim=16, vae_base_dim=96, vae_dim_mult=(1, 2, 4, 4), vae_res_blocks=2,
                         heads=12, head_dim=128, ffn_dim=8960,
                         num_layers=30, text_dim=4096, freq_dim=256)
