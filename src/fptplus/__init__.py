"""fptplus: FPT+ (fine-grained prompt tuning plus) for high-resolution medical image classification."""

from .backbone import FrozenLPM, LPMFeatures, LPMSpec
from .errors import ConfigError, FPTPlusError, WeightsError
from .model import FPTConfig, FPTModel, build_fpt
from .params import ParamCount, count_parameters
from .weights import create_vit

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "FPTConfig",
    "FPTModel",
    "FPTPlusError",
    "FrozenLPM",
    "LPMFeatures",
    "LPMSpec",
    "ParamCount",
    "WeightsError",
    "build_fpt",
    "count_parameters",
    "create_vit",
]
