"""timm <-> transformers (>= 5) state dicts for plain ViTs and DINOv2 (test helper: the same weights in both forms)."""

from __future__ import annotations

import torch


def hf_config(kind: str, timm_state: dict, img: int, heads: int):
    """A ViTConfig / Dinov2Config matching a timm state dict (pre-norm ViT, GELU, eps 1e-6, qkv bias)."""
    import transformers

    D = timm_state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in timm_state if k.startswith("blocks."))
    patch = timm_state["patch_embed.proj.weight"].shape[-1]
    hidden = timm_state["blocks.0.mlp.fc1.weight"].shape[0]
    common = dict(hidden_size=D, num_hidden_layers=depth, num_attention_heads=heads, image_size=img, patch_size=patch,
                  layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True)  # fmt: skip
    if kind == "vit":
        return transformers.ViTConfig(intermediate_size=hidden, **common)
    return transformers.Dinov2Config(mlp_ratio=hidden // D, layerscale_value=1e-5, **common)


def _layer_names(kind: str) -> tuple[str, dict[str, str]]:
    if kind == "vit":
        return "layers", {"norm1": "layernorm_before", "norm2": "layernorm_after"}
    return "encoder.layer", {"norm1": "norm1", "norm2": "norm2", "ls1.gamma": "layer_scale1.lambda1",
                             "ls2.gamma": "layer_scale2.lambda1"}  # fmt: skip


def timm_to_hf(state: dict, kind: str) -> dict:
    stem, names = _layer_names(kind)
    out = {"embeddings.cls_token": state["cls_token"], "embeddings.position_embeddings": state["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
           "layernorm.weight": state["norm.weight"], "layernorm.bias": state["norm.bias"]}  # fmt: skip
    if kind == "dinov2":
        out["embeddings.mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    for key, value in state.items():
        if not key.startswith("blocks."):
            continue
        _, i, rest = key.split(".", 2)
        layer = f"{stem}.{i}"
        if rest.startswith("attn.qkv."):
            for name, part in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                out[f"{layer}.attention.{name}_proj.{rest.rsplit('.', 1)[1]}"] = part.clone()
        elif rest.startswith("attn.proj."):
            out[f"{layer}.attention.o_proj.{rest.rsplit('.', 1)[1]}"] = value
        elif rest.startswith("mlp."):
            out[f"{layer}.{rest}"] = value
        else:
            base, _, leaf = rest.rpartition(".")
            mapped = names.get(rest) or f"{names[base]}.{leaf}"
            out[f"{layer}.{mapped}"] = value
    return out


def hf_to_timm(state: dict, kind: str) -> dict:
    stem, names = _layer_names(kind)
    back = {v: k for k, v in names.items()}
    out = {"cls_token": state["embeddings.cls_token"], "pos_embed": state["embeddings.position_embeddings"],
           "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
           "norm.weight": state["layernorm.weight"], "norm.bias": state["layernorm.bias"]}  # fmt: skip
    layers = {int(k[len(stem) + 1 :].split(".")[0]) for k in state if k.startswith(stem + ".")}
    for i in sorted(layers):
        p = f"{stem}.{i}."
        for leaf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{leaf}"] = torch.cat([state[f"{p}attention.{n}_proj.{leaf}"] for n in "qkv"])
            out[f"blocks.{i}.attn.proj.{leaf}"] = state[f"{p}attention.o_proj.{leaf}"]
            for fc in ("fc1", "fc2"):
                out[f"blocks.{i}.mlp.{fc}.{leaf}"] = state[f"{p}mlp.{fc}.{leaf}"]
        for key, value in state.items():
            if not key.startswith(p) or key.startswith((p + "attention.", p + "mlp.")):
                continue
            rest = key[len(p) :]
            if rest in back:
                out[f"blocks.{i}.{back[rest]}"] = value
            else:
                base, _, leaf = rest.rpartition(".")
                out[f"blocks.{i}.{back[base]}.{leaf}"] = value
    return out
