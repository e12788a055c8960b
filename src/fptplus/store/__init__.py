"""The preloading feature store: selected LPM K/V per sample, memory-mapped, fingerprinted, resumable."""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(  # imported on first use: the command line's `--help` loads no torch
    __name__,
    globals(),
    {
        ".format": ["StoreError"],
        ".reader": ["FeatureStore", "open_store"],
        ".options": ["PreloadOptions"],
        ".writer": ["PreloadReport", "preload"],
    },
)

__all__ = ["FeatureStore", "PreloadOptions", "PreloadReport", "StoreError", "open_store", "preload"]
