"""Exceptions that speak to the user: each names the offending thing and the fix."""


class FPTPlusError(Exception):
    """Base class of every error fptplus raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(FPTPlusError, ValueError):
    """An impossible or inconsistent setting."""


class WeightsError(FPTPlusError, RuntimeError):
    """Pretrained weights that cannot be obtained or do not fit the model."""


class DataError(FPTPlusError, ValueError):
    """The dataset on disk does not fit what fptplus expects."""


class RunError(FPTPlusError):
    """A run folder that is missing, damaged, or not a run."""


class DivergedError(FPTPlusError, ArithmeticError):
    """Non-finite numbers where a model's scores, loss or weights must be finite (a diverged run, damaged inputs)."""
