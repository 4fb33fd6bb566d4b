"""Hugging Face ``transformers`` ViT / DINOv2 state dicts -> timm ``VisionTransformer`` keys.

Phikon (``ViTModel``) and Phikon-v2 (``Dinov2Model``) publish their weights with
``transformers`` names; timm's ViT fuses query, key and value into one ``attn.qkv`` tensor, so
the mapping cannot be done by order alone. :func:`convert_hf_vit` renames every tensor, fuses
q/k/v per block, drops the pooler and the mask token, and resamples the position embeddings
when their grid differs from the model's.
"""

from __future__ import annotations

import torch

_HF_BLOCK = {
    "layernorm_before": "norm1",  # ViTModel
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "norm1": "norm1",  # Dinov2Model
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_DROPPED = ("embeddings.mask_token", "pooler.")
_PROBE = "embeddings.patch_embeddings.projection.weight"


def is_hf_vit(state: dict[str, torch.Tensor]) -> bool:
    """True when ``state`` holds a ``transformers`` ViT / DINOv2 (optionally under ``vit.``)."""
    return any(p + _PROBE in state for p in ("", "vit.", "model.", "backbone."))


def convert_hf_vit(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` with timm names when it is a ``transformers`` ViT and ``target`` a timm ViT;
    else ``state`` unchanged.

    Examples
    --------
    >>> import torch
    >>> hf = {"embeddings.cls_token": torch.zeros(1, 1, 4)}
    >>> convert_hf_vit(hf, {"x": torch.zeros(1)}) is hf
    True
    """
    prefix = next((p for p in ("", "vit.", "model.", "backbone.") if p + _PROBE in state), None)
    if prefix is None or "patch_embed.proj.weight" not in target:
        return state
    plain = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    out: dict[str, torch.Tensor] = {}
    for key, value in plain.items():
        if key.startswith(_HF_DROPPED) or ".attention.attention." in key:
            continue  # query/key/value are fused below
        out[_timm_name(key)] = value
    _fuse_qkv(plain, out)
    if "pos_embed" in out and "pos_embed" in target:
        out["pos_embed"] = _resample_pos_embed(out["pos_embed"], target["pos_embed"])
    return out


def _timm_name(key: str) -> str:
    """The timm name of one non-q/k/v tensor (unknown names are kept, to be reported)."""
    if key in _HF_TOP:
        return _HF_TOP[key]
    parts = key.split(".")
    if parts[:2] != ["encoder", "layer"] or len(parts) < 4:
        return key
    block, rest = parts[2], ".".join(parts[3:])
    if rest in _HF_BLOCK:  # layer scales: one tensor, no weight/bias leaf
        return f"blocks.{block}.{_HF_BLOCK[rest]}"
    stem, leaf = rest.rsplit(".", 1)
    return f"blocks.{block}.{_HF_BLOCK[stem]}.{leaf}" if stem in _HF_BLOCK else key


def _fuse_qkv(plain: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> None:
    blocks = {k.split(".")[2] for k in plain if ".attention.attention.query." in k}
    for block in sorted(blocks, key=int):
        base = f"encoder.layer.{block}.attention.attention"
        for leaf in ("weight", "bias"):
            parts = [plain.get(f"{base}.{n}.{leaf}") for n in ("query", "key", "value")]
            present = [p for p in parts if p is not None]
            if len(present) == 3:
                out[f"blocks.{block}.attn.qkv.{leaf}"] = torch.cat(present, dim=0)


def _resample_pos_embed(source: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    if tuple(source.shape) == tuple(want.shape) or source.shape[-1] != want.shape[-1]:
        return source
    from timm.layers import resample_abs_pos_embed

    side = round((want.shape[1] - 1) ** 0.5)
    if side * side + 1 != want.shape[1]:
        return source  # not a one-class-token square grid: the mapping reports the mismatch
    return resample_abs_pos_embed(source, new_size=[side, side], num_prefix_tokens=1)


def timm_to_hf_vit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`convert_hf_vit` for a plain ViT (``ViTModel`` names): what a
    ``transformers`` checkpoint of the same weights holds (tests and conversions)."""
    inverse_top = {v: k for k, v in _HF_TOP.items()}
    vit_block = {
        "norm1": "layernorm_before",
        "norm2": "layernorm_after",
        "mlp.fc1": "intermediate.dense",
        "mlp.fc2": "output.dense",
        "attn.proj": "attention.output.dense",
        "ls1.gamma": "layer_scale1.lambda1",
        "ls2.gamma": "layer_scale2.lambda1",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in inverse_top:
            out[inverse_top[key]] = value
            continue
        _, block, rest = key.split(".", 2)
        if rest.startswith("attn.qkv."):
            leaf = rest.rsplit(".", 1)[1]
            for name, part in zip(("query", "key", "value"), value.chunk(3), strict=True):
                out[f"encoder.layer.{block}.attention.attention.{name}.{leaf}"] = part.clone()
            continue
        stem, _, leaf = rest.rpartition(".")
        if rest in vit_block:
            out[f"encoder.layer.{block}.{vit_block[rest]}"] = value
        else:
            out[f"encoder.layer.{block}.{vit_block[stem]}.{leaf}"] = value
    return out
