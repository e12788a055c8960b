"""fptplus: FPT+ (fine-grained prompt tuning plus) for high-resolution medical image classification.

    model = fptplus.create_model("fpt_plus", backbone=..., weights=..., img_size=518, num_classes=2)
    fptplus.preload("data/", model_config, "store/")   # the frozen model's selected K/V, once
    fptplus.train(fptplus.RunConfig(...), "runs/x")     # what `fptplus train` runs

`fptplus.train` is the function (the trainer's components live in the subpackage of the same name, imported as
`from fptplus.trainer.run import ...`).
"""

import os as _os

# Idle OpenMP threads sleep instead of spinning (set before torch loads its OpenMP runtime; a user's setting wins).
# On a busy 2-core machine FPT+ from its store took 118 s per epoch with two spinning threads, 6.4 s with two
# passive ones (`benchmarks/threads.py`).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._lazy import lazy_exports

# Public names, imported from their module on first use (PEP 562): `import fptplus` and the command line's
# `--help` load no torch, timm or peft (`tests/test_cli_startup.py`).
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        ".backbones": ["BackboneFamily", "LPMSpec", "create_backbone", "family_of", "register_family"],
        ".backbones.timm_vit": ["create_vit"],
        ".config": ["DataConfig", "RunConfig", "TrainConfig"],
        ".errors": ["ConfigError", "FPTPlusError", "WeightsError"],
        ".lpm": ["FrozenLPM", "LPMFeatures"],
        ".methods": ["Method", "available_methods", "get_method", "register"],
        ".model": ["FPTConfig", "FPTModel", "build_fpt"],
        ".params": ["ParamCount", "count_parameters"],
        ".workflow": ["create_model", "evaluate", "preload", "train"],
    },
)

__version__ = "0.1.0"

__all__ = [
    "BackboneFamily",
    "ConfigError",
    "DataConfig",
    "FPTConfig",
    "FPTModel",
    "FPTPlusError",
    "FrozenLPM",
    "LPMFeatures",
    "LPMSpec",
    "Method",
    "ParamCount",
    "RunConfig",
    "TrainConfig",
    "WeightsError",
    "available_methods",
    "build_fpt",
    "count_parameters",
    "create_backbone",
    "create_model",
    "create_vit",
    "evaluate",
    "family_of",
    "get_method",
    "preload",
    "register",
    "register_family",
    "train",
]
