"""Data: sources (folders / CSV → samples), decoding, asymmetric views, training datasets."""

from .decode import DecodeError, load_image_file
from .sources import DataError, DataIndex, Sample, load_index
from .views import ViewConfig, Views

__all__ = ["DataError", "DataIndex", "DecodeError", "Sample", "ViewConfig", "Views", "load_image_file", "load_index"]
