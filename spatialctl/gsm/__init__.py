"""The Geometry Selection Module (DSR Suite) and everything around it, one concern a module:

- ``module``: :class:`GSMConfig` and the torch modules (:class:`GeometrySelectionModule`);
- ``tokens``: geometry tokens from a scene store (:func:`load_geometry`, :func:`pointmap_tokens`);
- ``examples``: QA records -> model inputs (:func:`prepare_example`) and batches (:func:`collate`);
- ``vlm``: :class:`GeometryVLM`, Qwen2.5-VL with the GSM's tokens in its geometry slots;
- ``adapter``: adapter folders and scale-experts X-LoRA (:func:`save_adapter`, :func:`load_adapter`).

The names below are the package's public face; stages use only these.
"""

from spatialctl.gsm.adapter import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    GSM_CONFIG,
    GSM_WEIGHTS,
    PROMPT_CONFIG,
    adapter_base,
    adapter_prompt_suffix,
    adapter_views,
    build_xlora,
    load_adapter,
    load_gsm_config,
    load_xlora,
    read_adapter_config,
    save_adapter,
    save_xlora,
    trainable_state,
)
from spatialctl.gsm.examples import (
    add_gen_tokens,
    collate,
    frames_example,
    grid_positions,
    prepare_example,
    select_frames,
)
from spatialctl.gsm.module import (
    GEOMETRY_SOURCES,
    POS_FEATURES,
    Attention,
    GeometrySelectionModule,
    GSMBlock,
    GSMConfig,
    RMSNorm,
)
from spatialctl.gsm.tokens import geometry_dims, load_geometry, pointmap_tokens, pool_grid
from spatialctl.gsm.vlm import GeometryVLM

__all__ = [
    "ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "GSM_CONFIG", "GSM_WEIGHTS", "PROMPT_CONFIG", "GEOMETRY_SOURCES",
    "POS_FEATURES", "Attention", "GeometrySelectionModule", "GeometryVLM", "GSMBlock", "GSMConfig", "RMSNorm",
    "add_gen_tokens", "adapter_base", "adapter_prompt_suffix", "adapter_views", "build_xlora", "collate", "frames_example", "geometry_dims",
    "grid_positions", "load_adapter", "load_geometry", "load_gsm_config", "load_xlora", "pointmap_tokens",
    "pool_grid", "prepare_example", "read_adapter_config", "save_adapter", "save_xlora", "select_frames",
    "trainable_state",
]
