"""Decoding limits that configs name (importable without torch)."""

DEFAULT_MAX_PIXELS = 100_000_000  # the decoders' pixel budget per image (`decode`): 10k × 10k
