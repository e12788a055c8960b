"""Data: sources (folders / CSV → samples), decoding, asymmetric views, training datasets."""

from .._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(  # imported on first use: the command line's `--help` loads no torch
    __name__,
    globals(),
    {
        ".decode": ["DecodeError", "load_image_file"],
        ".sources": ["DataError", "DataIndex", "Sample", "load_index"],
        ".views": ["ViewConfig", "Views"],
    },
)

__all__ = ["DataError", "DataIndex", "DecodeError", "Sample", "ViewConfig", "Views", "load_image_file", "load_index"]
