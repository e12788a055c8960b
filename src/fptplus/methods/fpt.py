"""FPT+ and FPT: two configurations of one model (`fptplus.model`)."""

from __future__ import annotations

from ..model import FPTConfig, build_fpt
from . import Method, register
from .inputs import SideViewFeatures


def _build(cfg: FPTConfig, device=None, source: str = "online"):
    return build_fpt(cfg, with_lpm=source == "online", device=device)


register(
    Method(
        "fpt_plus",
        "FPT+: side ViT + fine-grained prompts over the frozen LPM's selected K/V",
        FPTConfig,
        FPTConfig.fpt_plus,
        _build,
        default_lr=2e-3,  # FPT's lr in the authors' configs; their FPT+ configs range 5e-5 to 5e-3 per dataset
        inputs=SideViewFeatures(),
    )
)
register(
    Method(
        "fpt",
        "FPT: all LPM layers fused, D/k prompts with an in-projector, 224 px side input",
        FPTConfig,
        FPTConfig.fpt,
        _build,
        default_lr=2e-3,  # the authors' FPT configs (AdamW, wd 0.1)
        inputs=SideViewFeatures(),
    )
)
