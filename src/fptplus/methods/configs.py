"""The methods' typed configs: plain dataclasses, importable without torch (the command line builds its flags and
checks its values from them before any model code loads). Each method's model code lives in its own module;
FPT/FPT+'s config is `fptplus.model_config.FPTConfig` (below the model, the frozen LPM and the store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .._utils import Size, to_hw
from ..errors import ConfigError
from ..model_config import FPTConfig

__all__ = ["AdaLoraMethodConfig", "AdapterConfig", "BaselineConfig", "FPTConfig", "KNNProbeConfig",
           "LinearProbeConfig", "LoraMethodConfig", "ProbeConfig", "VPTConfig"]  # fmt: skip


@dataclass
class BaselineConfig:
    """A frozen-or-tuned ViT with a new head, fed one (augmented) image view.

    Attributes:
        backbone: a timm model name, or hf:<folder or Hub id> for a transformers ViTModel/Dinov2Model.
        backbone_kwargs: architecture overrides (timm kwargs, or transformers config fields for hf:), e.g.
            {"depth": 2, "embed_dim": 32} for a tiny timm test ViT.
        weights: ViT weights: a local .safetensors / weights-only torch file, "builtin:dinov2_vits14" (real
            DINOv2 ViT-S/14, offline), "hub" (timm's pretrained weights), or "none" (random init, tests only).
            The command line requires it; in Python, None means random init.
        img_size: input resolution, int or (H, W), a multiple of the patch size.
        num_classes: classifier outputs.
    """

    backbone: str = "vit_base_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    img_size: Size = 512
    num_classes: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.img_size, list):
            self.img_size = tuple(self.img_size)
        to_hw(self.img_size, "img_size")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {self.num_classes}")


@dataclass
class AdapterConfig(BaselineConfig):
    """Bottleneck adapters.

    Attributes:
        adapter_dim: bottleneck width (None: D / 8, 96 for ViT-B as in the paper).
        adapter_scale: scale of the adapter branch.
    """

    adapter_dim: int | None = None
    adapter_scale: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adapter_dim is not None and self.adapter_dim < 1:
            raise ConfigError(f"adapter_dim must be >= 1, got {self.adapter_dim}")


@dataclass
class LoraMethodConfig(BaselineConfig):
    """LoRA on q and v (paper: r = 16, α = 16).

    Attributes:
        lora_r: rank.
        lora_alpha: scaling α (the update is scaled by α / r).
        lora_dropout: dropout on the LoRA input.
        lora_targets: projections to adapt, among "q", "k", "v".
    """

    lora_r: int = 16
    lora_alpha: float = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lora_targets = tuple(self.lora_targets)
        if self.lora_r < 1 or not set(self.lora_targets) <= {"q", "k", "v"} or not self.lora_targets:
            raise ConfigError(f"lora_r must be >= 1 and lora_targets a non-empty subset of q/k/v, got {self}")


@dataclass
class AdaLoraMethodConfig(BaselineConfig):
    """AdaLoRA on q and v: ranks start at `adalora_init_r` and are pruned to an average `adalora_target_r`.

    Attributes:
        adalora_init_r: initial rank per projection (paper's 0.52 %: 12).
        adalora_target_r: average rank after budget allocation.
        adalora_alpha: scaling α.
        adalora_tinit: steps of warm-up before pruning starts.
        adalora_tfinal: final steps with the budget fixed.
        adalora_delta_t: steps between budget allocations.
        total_step: total optimizer steps (set by the trainer; required).
        lora_targets: projections to adapt, among "q", "k", "v".
    """

    adalora_init_r: int = 12
    adalora_target_r: int = 8
    adalora_alpha: float = 16
    adalora_tinit: int = 0
    adalora_tfinal: int = 0
    adalora_delta_t: int = 1
    total_step: int | None = None
    lora_targets: tuple[str, ...] = ("q", "v")

    def __post_init__(self) -> None:
        super().__post_init__()
        self.lora_targets = tuple(self.lora_targets)
        if not 1 <= self.adalora_target_r <= self.adalora_init_r:
            raise ConfigError(f"need 1 <= adalora_target_r <= adalora_init_r, got {self.adalora_target_r}, "
                              f"{self.adalora_init_r}")  # fmt: skip


@dataclass
class VPTConfig(BaselineConfig):
    """VPT-deep.

    Attributes:
        vpt_prompts: prompt tokens per block (paper: 16).
        vpt_dropout: dropout on the prompts.
    """

    vpt_prompts: int = 16
    vpt_dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.vpt_prompts < 1:
            raise ConfigError(f"vpt_prompts must be >= 1, got {self.vpt_prompts}")


FEATURES = {"cls+patch_mean": ("cls", "patch_mean"), "cls": ("cls",)}  # feature name -> stored pooled fields


@dataclass
class ProbeConfig(BaselineConfig):
    """A probe on the frozen ViT's pooled features.

    Attributes:
        features: "cls+patch_mean" (the final-normed CLS token concatenated with the mean of the final-normed patch
            tokens, DINOv2's linear evaluation) or "cls" (the CLS token alone, the paper's linear probing).
        cv_folds: folds of the cross-validation on train + val that chooses the probe's hyper-parameter
            (patient-grouped, class-stratified, seeded by the run seed; fewer when a class has fewer images or
            groups, at least 2).
    """

    features: Literal["cls+patch_mean", "cls"] = "cls+patch_mean"
    cv_folds: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.features not in FEATURES:
            raise ConfigError(f"features must be one of {sorted(FEATURES)}, got {self.features!r}")
        if self.cv_folds < 2:
            raise ConfigError(f"cv_folds must be >= 2, got {self.cv_folds}")

    @property
    def fields(self) -> tuple[str, ...]:
        """The stored pooled fields the features concatenate."""
        return FEATURES[self.features]


def _c_grid() -> list[float]:
    return [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0]


@dataclass
class LinearProbeConfig(ProbeConfig):
    """The logistic-regression probe.

    Attributes:
        c_grid: inverse regularisation strengths tried (scikit-learn's C: larger = weaker L2 penalty on the
            standardised features), most regularised first; the cross-validation keeps the best.
    """

    c_grid: list[float] = field(default_factory=_c_grid)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.c_grid or any(not c > 0 for c in self.c_grid):
            raise ConfigError(f"c_grid must be a non-empty list of numbers > 0, got {self.c_grid}")
        self.c_grid = sorted(float(c) for c in self.c_grid)


@dataclass
class KNNProbeConfig(ProbeConfig):
    """The k-nearest-neighbour probe.

    Attributes:
        k_grid: neighbour counts tried (those above the fit rows of a fold are left out); the cross-validation keeps
            the best.
    """

    k_grid: list[int] = field(default_factory=lambda: [1, 3, 5, 10, 20, 50])

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.k_grid or any(k < 1 for k in self.k_grid):
            raise ConfigError(f"k_grid must be a non-empty list of integers >= 1, got {self.k_grid}")
        self.k_grid = sorted(set(int(k) for k in self.k_grid), reverse=True)  # most smoothing first
