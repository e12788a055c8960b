"""The preloading feature store: selected LPM K/V per sample, memory-mapped, fingerprinted, resumable."""

from .format import StoreError
from .reader import FeatureStore, open_store
from .writer import PreloadOptions, PreloadReport, preload

__all__ = ["FeatureStore", "PreloadOptions", "PreloadReport", "StoreError", "open_store", "preload"]
