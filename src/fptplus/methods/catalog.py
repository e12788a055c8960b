"""Every built-in method, declared without loading its model code: names, summaries, configs, default learning
rates and inputs here; builders and training hooks are named by module and imported on first call (`Lazy`), so the
command line's `--help` and its config checks load no torch. A new method is one `register` call here (or in the
user's own code) plus the module that builds its model."""

from __future__ import annotations

from functools import partial

from .configs import (
    AdaLoraMethodConfig,
    AdapterConfig,
    BaselineConfig,
    FPTConfig,
    KNNProbeConfig,
    LinearProbeConfig,
    LoraMethodConfig,
    VPTConfig,
)
from .inputs import PooledFeatures, SideViewFeatures
from .registry import Lazy, Method, register

_PKG = __package__


def _lazy(module: str, name: str) -> Lazy:
    return Lazy(f"{_PKG}.{module}", name)


# The paper's FPT+ and FPT (`fpt.py`, `fptplus.model`).
register(Method("fpt_plus", "FPT+: side ViT + fine-grained prompts over the frozen LPM's selected K/V", FPTConfig,
                FPTConfig.fpt_plus, _lazy("fpt", "build"), inputs=SideViewFeatures(),
                default_lr=2e-3))  # FPT's lr in the authors' configs (their FPT+ configs: 5e-5 to 5e-3)  # fmt: skip
register(Method("fpt", "FPT: all LPM layers fused, D/k prompts with an in-projector, 224 px side input", FPTConfig,
                FPTConfig.fpt, _lazy("fpt", "build"), inputs=SideViewFeatures(),
                default_lr=2e-3))  # the authors' FPT configs (AdamW, wd 0.1)  # fmt: skip

# Baselines that choose which existing parameters train (`simple.py`).
for _name, _summary, _lr in [
    ("full_ft", "full fine-tuning: every ViT parameter trains", 1e-4),
    ("linear_adamw", "the paper's linear probing: a new head on the frozen CLS, AdamW on augmented online views", 1e-3),
    ("attn_tune", "attention tuning: only the attention layers' weights (and the head) train", 1e-4),
    ("bitfit", "BitFit: only the biases (and the head) train", 1e-3),
]:
    register(Method(_name, _summary, BaselineConfig, BaselineConfig,
                    partial(_lazy("simple", "build_simple"), rule=_name), default_lr=_lr))  # fmt: skip

# Baselines that add parameters to the frozen ViT.
register(Method("adapter", "Adapter: a D/8 bottleneck per block, parallel to its MLP", AdapterConfig, AdapterConfig,
                _lazy("adapter", "build_adapter"), default_lr=1e-3))  # fmt: skip
register(Method("vpt_deep", "VPT-deep: 16 prompt tokens per block, frozen ViT", VPTConfig, VPTConfig,
                _lazy("vpt", "build_vpt"), default_lr=1e-3))  # fmt: skip
register(Method("lora", "LoRA (peft): r = 16, α = 16 on the query and value projections", LoraMethodConfig,
                LoraMethodConfig, _lazy("lora", "build_lora"), default_lr=1e-3))  # fmt: skip
register(Method("adalora", "AdaLoRA (peft): rank 12 → 8 budget on the query and value projections",
                AdaLoraMethodConfig, AdaLoraMethodConfig, _lazy("lora", "build_adalora"), default_lr=1e-3,
                prepare=_lazy("lora", "adalora_schedule"), after_step=_lazy("lora", "adalora_allocate")))  # fmt: skip

# Frozen-feature probes fitted in closed form (`probe.py`).
PROBES = PooledFeatures()
register(Method("linear", "linear probing done as the field does it: L2 logistic regression to convergence on the "
                "frozen CLS ⊕ mean patch token, C chosen by cross-validation", LinearProbeConfig, LinearProbeConfig,
                _lazy("probe", "build_linear"), inputs=PROBES, fitter=_lazy("probe", "linear_fitter")))  # fmt: skip
register(Method("knn", "kNN probe: cosine k-nearest neighbours on the frozen CLS ⊕ mean patch token, k chosen by "
                "cross-validation", KNNProbeConfig, KNNProbeConfig, _lazy("probe", "build_knn"), inputs=PROBES,
                fitter=_lazy("probe", "knn_fitter")))  # fmt: skip
