"""FPT+ and FPT: two configurations of one model (`fptplus.model`)."""

from __future__ import annotations

from ..model import FPTModel, build_fpt
from .configs import FPTConfig


def build(cfg: FPTConfig, device=None, source: str = "online") -> FPTModel:
    return build_fpt(cfg, with_lpm=source == "online", device=device)
